#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import XCTest
import PerformerCore

/// FAVOR+ as an estimator of the softmax kernel exp(s·qᵀk) (ALGORITHMS.md §4): unbiasedness,
/// orthogonal vs iid, positive vs trigonometric, convergence to exact attention.
final class FavorStatisticsTests: XCTestCase {
    /// Kernel estimates φ(q)ᵀφ(k) for seeds 0..<seeds, one per seed.
    func estimates(q: [Double], k: [Double], numFeatures m: Int, projection kind: FavorProjectionKind,
                   features: FavorFeatureKind, seeds: Int, firstSeed: UInt64 = 0) throws -> [Double] {
        let d = q.count
        let x = try Tensor<Double>(shape: SIMD4(1, 1, 2, d), elements: q + k)
        let options = FavorFeatureOptions(kind: features)
        return try (0..<seeds).map { seed in
            let w = try FavorProjection(dim: d, numFeatures: m, kind: kind, seed: firstSeed + UInt64(seed))
            let phi = try favorFeatures(x, w, options)
            let c = phi.shape[3]
            return (0..<c).reduce(0.0) { $0 + phi[0, 0, 0, $1] * phi[0, 0, 1, $1] }
        }
    }

    func meanAndVariance(_ values: [Double]) -> (Double, Double) {
        let n = Double(values.count)
        let mean = values.reduce(0, +) / n
        return (mean, values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / (n - 1))
    }

    func testKernelEstimateIsUnbiased() throws {
        let q = [0.8, -0.3, 0.5, 0.2], k = [0.4, 0.6, -0.2, 0.9]
        let exact = exp(zip(q, k).reduce(0) { $0 + $1.0 * $1.1 } / 2)  // s = 1/√4
        let seeds = 4000
        for features in [FavorFeatureKind.positive, .hyperbolic, .trigonometric] {
            for kind in FavorProjectionKind.allCases {
                let values = try estimates(q: q, k: k, numFeatures: 8, projection: kind, features: features, seeds: seeds)
                let (mean, variance) = meanAndVariance(values)
                // 4.5 standard errors: a false failure has probability below 1e-5.
                let tolerance = 4.5 * (variance / Double(seeds)).squareRoot()
                XCTAssertEqual(mean, exact, accuracy: tolerance, "\(features), \(kind)")
                XCTAssertGreaterThan(variance, 0)
            }
        }
    }

    func testEstimateIsBiasedWhenTheFormulaIsWrong() throws {
        // The unbiasedness test can fail: the same statistic for exp(s·qᵀk) with a doubled
        // exponent is far outside its tolerance.
        let q = [0.8, -0.3, 0.5, 0.2], k = [0.4, 0.6, -0.2, 0.9]
        let wrong = exp(zip(q, k).reduce(0) { $0 + $1.0 * $1.1 })
        let values = try estimates(q: q, k: k, numFeatures: 8, projection: .orthogonal, features: .positive, seeds: 4000)
        let (mean, variance) = meanAndVariance(values)
        XCTAssertGreaterThan(abs(mean - wrong), 4.5 * (variance / 4000).squareRoot())
    }

    /// Mean squared error of the kernel estimate over seeds, summed over a few (q, k) pairs.
    func meanSquaredError(pairs: [([Double], [Double])], m: Int, projection: FavorProjectionKind,
                          features: FavorFeatureKind, seeds: Int) throws -> Double {
        var total = 0.0
        for (q, k) in pairs {
            let exact = exp(zip(q, k).reduce(0) { $0 + $1.0 * $1.1 } / Double(q.count).squareRoot())
            let values = try estimates(q: q, k: k, numFeatures: m, projection: projection, features: features,
                                       seeds: seeds, firstSeed: 1000)
            total += values.reduce(0) { $0 + ($1 - exact) * ($1 - exact) } / Double(seeds)
        }
        return total
    }

    func testOrthogonalHasLowerErrorThanIID() throws {
        var rng = FavorTestRandom(5)
        let d = 16
        let pairs = (0..<4).map { _ in (rng.normals(d, scale: 0.5), rng.normals(d, scale: 0.5)) }
        for features in [FavorFeatureKind.positive, .trigonometric] {
            let orthogonal = try meanSquaredError(pairs: pairs, m: d, projection: .orthogonal, features: features, seeds: 1500)
            let iid = try meanSquaredError(pairs: pairs, m: d, projection: .iid, features: features, seeds: 1500)
            XCTAssertLessThan(orthogonal, 0.9 * iid, "\(features): orthogonal \(orthogonal), iid \(iid)")
        }
    }

    func testPositiveBeatsTrigonometricWhereTheKernelIsSmall() throws {
        // q ≈ −k: exp(s·qᵀk) is small, where sin/cos features have their largest relative error.
        var rng = FavorTestRandom(6)
        let d = 16
        let pairs = (0..<3).map { _ -> ([Double], [Double]) in
            let q = rng.normals(d, scale: 0.6)
            return (q, q.map { -$0 + 0.05 * rng.normal() })
        }
        let positive = try meanSquaredError(pairs: pairs, m: 32, projection: .orthogonal, features: .positive, seeds: 800)
        let trig = try meanSquaredError(pairs: pairs, m: 32, projection: .orthogonal, features: .trigonometric, seeds: 800)
        XCTAssertLessThan(positive, 0.5 * trig, "positive \(positive), trigonometric \(trig)")
    }

    /// Mean over 4 seeds of the relative error of bidirectional FAVOR+ attention (positive,
    /// orthogonal, chi; from materialized features) against exact softmax attention, both in
    /// float64: N = L = 48, D = M = 64, q and k with entries of standard deviation `inputScale`.
    func attentionErrors(inputScale: Double) throws -> [Int: Double] {
        let (n, d) = (48, 64)
        var rng = FavorTestRandom(8)
        let q = try Tensor<Double>(shape: SIMD4(1, 1, n, d), elements: rng.normals(n * d, scale: inputScale))
        let k = try Tensor<Double>(shape: SIMD4(1, 1, n, d), elements: rng.normals(n * d, scale: inputScale))
        let v = rng.normals(n * d)
        func attention(_ scores: (Int, Int) -> Double) -> [Double] {
            var out = [Double](repeating: 0, count: n * d)
            for i in 0..<n {
                var den = 0.0
                for j in 0..<n {
                    let p = scores(i, j)
                    den += p
                    for c in 0..<d { out[i * d + c] += p * v[j * d + c] }
                }
                for c in 0..<d { out[i * d + c] /= den }
            }
            return out
        }
        let exact = attention { i, j in
            exp((0..<d).reduce(0.0) { $0 + q[0, 0, i, $1] * k[0, 0, j, $1] } / Double(d).squareRoot())
        }
        var errors = [Int: Double]()
        for m in [16, 64, 256] {
            var total = 0.0
            let seeds = 4
            for seed in 0..<seeds {
                let w = try FavorProjection(dim: d, numFeatures: m, seed: UInt64(seed))
                let pq = try favorFeatures(q, w), pk = try favorFeatures(k, w)
                let approx = attention { i, j in (0..<m).reduce(0.0) { $0 + pq[0, 0, i, $1] * pk[0, 0, j, $1] } }
                total += relativeError(approx, exact)
            }
            errors[m] = total / Double(seeds)
        }
        return errors
    }

    func testAttentionFromFeaturesApproachesSoftmax() throws {
        for inputScale in [1.0, 0.5, 0.25] {
            let errors = try attentionErrors(inputScale: inputScale)
            print("FAVOR+ vs softmax relative error, N = 48, D = 64, input sd \(inputScale):", errors.sorted { $0.key < $1.key })
            XCTAssertLessThan(errors[64]!, errors[16]!)
            XCTAssertLessThan(errors[256]!, errors[64]!)
        }
        // Measured 0.047 (sd 0.25), 0.31 (sd 0.5), 1.58 (sd 1) at m = 256: the estimator's
        // variance grows like exp(‖q̂ + k̂‖²), see docs/FAVOR.md. Error ∝ 1/√m at sd 0.25.
        let small = try attentionErrors(inputScale: 0.25)
        XCTAssertLessThan(small[256]!, 0.08)
        XCTAssertLessThan(small[256]!, 0.7 * small[64]!)
    }
}

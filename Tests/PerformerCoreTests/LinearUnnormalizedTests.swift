import XCTest
import PerformerCore

/// normalize = false (o_i = Σ_{visible j} (φ(q_i)·φ(k_j)) v_j + φ(q_i)ᵀS_0) and the denominators
/// output, against the float64 reference's explicit N × L similarity matrices, and by finite
/// differences; plus non-causal calls with a memory state (normalized or not).
final class LinearUnnormalizedTests: XCTestCase {
    static var cases: [LinearCase] {
        var cases: [LinearCase] = []
        for map in LinearAttentionOptions.FeatureMap.allCases {
            for causal in [false, true] {
                cases.append(LinearCase(b: 2, h: 2, hk: 2, n: 7, l: 7, d: 5, m: 3, causal: causal, featureMap: map,
                                        normalize: false))
                cases.append(LinearCase(b: 2, h: 4, hk: 2, n: 9, l: 9, d: 3, m: 6, causal: causal, featureMap: map,
                                        keyLengths: [9, 4], withState: true, strided: true, normalize: false))
            }
        }
        cases += [
            // Mixed-sign features: no denominator, so nothing to guard.
            LinearCase(b: 1, h: 2, hk: 1, n: 70, l: 70, d: 4, m: 3, causal: true, featureMap: .identity, withState: true,
                       normalize: false, mixedSigns: true),
            LinearCase(b: 1, h: 2, hk: 1, n: 5, l: 133, d: 4, m: 3, featureMap: .identity, withState: true,
                       normalize: false, mixedSigns: true),
            // No visible key (kv_len 0) and relu rows with zero features: zero denominators.
            LinearCase(b: 2, h: 1, hk: 1, n: 6, l: 6, d: 2, m: 3, causal: true, featureMap: .relu, keyLengths: [0, 3],
                       normalize: false),
            LinearCase(b: 2, h: 1, hk: 1, n: 6, l: 6, d: 2, m: 3, causal: false, featureMap: .relu, keyLengths: [0, 3],
                       normalize: false),
            // Memory (non-causal with a state), normalized, L = 0 included.
            LinearCase(b: 2, h: 4, hk: 2, n: 9, l: 11, d: 3, m: 6, keyLengths: [11, 2], withState: true, strided: true),
            LinearCase(b: 1, h: 2, hk: 1, n: 5, l: 0, d: 3, m: 2, withState: true),
            LinearCase(b: 1, h: 2, hk: 1, n: 5, l: 0, d: 3, m: 2, withState: true, normalize: false),
            LinearCase(b: 1, h: 1, hk: 1, n: 150, l: 150, d: 9, m: 4, causal: true, keyLengths: [97], withState: true,
                       normalize: false),
        ]
        return cases
    }

    func testFloat64MatchesDirectReference() throws {
        for (index, c) in Self.cases.enumerated() {
            let x = LinearInputs(c, seed: UInt64(900 + index))
            let got = try runLinear(c, x, as: Double.self)
            assertClose(got, linearReference(c, x), tolerance: 1e-12, "\(c)")
        }
    }

    func testFloat32MatchesReferenceOnEveryISA() throws {
        let original = Runtime.kernelISA
        defer { try? Runtime.selectKernels(original) }
        for isa in Runtime.supportedISAs {
            try Runtime.selectKernels(isa)
            for (index, c) in Self.cases.enumerated() {
                let x = LinearInputs(c, seed: UInt64(950 + index)).rounded(to: Float.self)
                let got = try runLinear(c, x, as: Float.self)
                assertClose(got, linearReference(c, x), tolerance: 2e-5, "\(isa) \(c)")
            }
        }
    }

    /// Rows with no visible key give output φ(q_i)ᵀS_0 (here no state: exactly 0) and a zero
    /// denominator, with no NaN anywhere.
    func testZeroDenominatorRowsAreFinite() throws {
        let c = LinearCase(b: 1, h: 1, hk: 1, n: 4, l: 4, d: 2, m: 3, causal: false, featureMap: .relu, epsilon: 0,
                           keyLengths: [0], normalize: false)
        let got = try runLinear(c, LinearInputs(c, seed: 3), as: Double.self)
        XCTAssertEqual(got.out, [Double](repeating: 0, count: got.out.count))
        XCTAssertEqual(got.den, [Double](repeating: 0, count: got.den.count))
        XCTAssert((got.dq + got.dk + got.dv).allSatisfy { $0.isFinite })
    }

    /// The library's float64 gradients against central differences of its own forward, for
    /// L = Σ W∘out + Σ W_S∘S_N + Σ W_z∘z_N.
    func testFloat64GradientsMatchFiniteDifferences() throws {
        var cases: [LinearCase] = []
        for map in LinearAttentionOptions.FeatureMap.allCases {
            cases.append(LinearCase(b: 1, h: 2, hk: 1, n: 5, l: 5, d: 3, m: 2, causal: true, featureMap: map,
                                    keyLengths: [4], withState: true, normalize: false, mixedSigns: true))
            cases.append(LinearCase(b: 1, h: 2, hk: 1, n: 4, l: 6, d: 3, m: 2, causal: false, featureMap: map,
                                    withState: true, normalize: false, mixedSigns: true))
        }
        // Memory, normalized.
        cases.append(LinearCase(b: 1, h: 2, hk: 1, n: 4, l: 3, d: 3, m: 2, causal: false, epsilon: 1e-3,
                                keyLengths: [2], withState: true))
        for (index, c) in cases.enumerated() {
            let x = LinearInputs(c, seed: UInt64(700 + index))
            let analytic = try runLinear(c, x, as: Double.self)
            func loss(_ y: LinearInputs) throws -> Double {
                let r = try runLinear(c, y, as: Double.self)
                return zip(r.out, x.dout).reduce(0) { $0 + $1.0 * $1.1 } + zip(r.sN, x.dsN).reduce(0) { $0 + $1.0 * $1.1 }
                    + zip(r.zN, x.dzN).reduce(0) { $0 + $1.0 * $1.1 }
            }
            let fields: [(String, WritableKeyPath<LinearInputs, [Double]>, [Double])] = [
                ("dq", \.q, analytic.dq), ("dk", \.k, analytic.dk), ("dv", \.v, analytic.dv),
                ("dS0", \.s0, analytic.ds0), ("dz0", \.z0, analytic.dz0),
            ]
            for (name, path, gradient) in fields {
                var numeric = [Double](repeating: 0, count: gradient.count)
                for i in 0..<gradient.count {
                    var plus = x, minus = x
                    plus[keyPath: path][i] += 1e-6
                    minus[keyPath: path][i] -= 1e-6
                    numeric[i] = (try loss(plus) - loss(minus)) / 2e-6
                }
                XCTAssertLessThan(linearRelativeError(gradient, numeric), 1e-6, "\(name) vs finite differences: \(c)")
            }
        }
    }
}

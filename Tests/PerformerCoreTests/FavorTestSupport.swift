#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerCore

/// Test helpers for the FAVOR+ tests: a small deterministic input generator (independent of
/// the library's), float64 reference features written from ALGORITHMS.md §3, and norms.
struct FavorTestRandom {
    var state: UInt64
    init(_ seed: UInt64) { state = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407 }
    /// xorshift64* uniform in [0, 1).
    mutating func uniform() -> Double {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return Double((state &* 2_685_821_657_736_338_717) >> 11) * 0x1p-53
    }
    /// Standard normal (Marsaglia polar method).
    mutating func normal() -> Double {
        while true {
            let a = 2 * uniform() - 1, b = 2 * uniform() - 1
            let r = a * a + b * b
            if r > 0 && r < 1 { return a * (-2 * log(r) / r).squareRoot() }
        }
    }
    mutating func normals(_ count: Int, scale: Double = 1) -> [Double] {
        (0..<count).map { _ in normal() * scale }
    }
}

/// φ(x) for one row, float64, straight from ALGORITHMS.md §3.
func referenceFeatures(_ x: [Double], _ w: FavorProjection, kind: FavorFeatureKind, scale: Double? = nil,
                       kappa: Double = 1e-3) -> [Double] {
    let d = w.dim, m = w.numFeatures
    let s = scale ?? 1 / Double(d).squareRoot()
    let xHat = x.map { $0 * s.squareRoot() }
    let n = xHat.reduce(0) { $0 + $1 * $1 }
    let u = (0..<m).map { i in (0..<d).reduce(0.0) { $0 + w[i, $1] * xHat[$1] } }
    let md = Double(m)
    switch kind {
    case .positive: return u.map { exp($0 - n / 2) / md.squareRoot() }
    case .hyperbolic:
        return u.map { exp($0 - n / 2) / (2 * md).squareRoot() } + u.map { exp(-$0 - n / 2) / (2 * md).squareRoot() }
    case .trigonometric:
        return u.map { exp(n / 2) * sin($0) / md.squareRoot() } + u.map { exp(n / 2) * cos($0) / md.squareRoot() }
    case .relu: return u.map { max($0, 0) + kappa }
    }
}

func relativeError(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count)
    var diff = 0.0, norm = 0.0
    for i in a.indices {
        diff += (a[i] - b[i]) * (a[i] - b[i])
        norm += b[i] * b[i]
    }
    return norm > 0 ? (diff / norm).squareRoot() : diff.squareRoot()
}

/// φ for a B×H×N×D tensor through the public API, contiguous.
func favorFeatures<T: AttentionScalar>(_ x: Tensor<T>, _ w: FavorProjection, _ options: FavorFeatureOptions = FavorFeatureOptions())
    throws -> Tensor<T> {
    let c = FavorFeatures.featureCount(w, options: options)
    var out = try Tensor<T>(shape: SIMD4(x.shape[0], x.shape[1], x.shape[2], c))
    try x.withView { xv throws(PerformerError) in
        try out.withMutableView { ov throws(PerformerError) in
            try FavorFeatures.forward(input: xv, projection: w, output: ov, options: options)
        }
    }
    return out
}

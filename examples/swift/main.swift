// Exact softmax attention from Swift: one head, 4 queries over 6 keys, causal.
import PerformerCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

func run() throws(PerformerError) {
    let (n, l, d, m) = (4, 6, 8, 8)
    func values(_ count: Int, _ seed: Int) -> [Float] { (0..<count).map { Float(($0 * 37 + seed) % 17) / 17 - 0.5 } }
    let q = try Tensor<Float>(shape: SIMD4(1, 1, n, d), elements: values(n * d, 1))
    let k = try Tensor<Float>(shape: SIMD4(1, 1, l, d), elements: values(l * d, 2))
    let v = try Tensor<Float>(shape: SIMD4(1, 1, l, m), elements: values(l * m, 3))
    var out = try Tensor<Float>(shape: SIMD4(1, 1, n, m))
    var lse = try Tensor<Float>(shape: SIMD4(1, 1, n, 1))
    try q.withView { (q) throws(PerformerError) in
        try k.withView { (k) throws(PerformerError) in
            try v.withView { (v) throws(PerformerError) in
                try out.withMutableView { (o) throws(PerformerError) in
                    try lse.withMutableView { (lseView) throws(PerformerError) in
                        try SoftmaxAttention.forward(query: q, key: k, value: v, output: o, logSumExp: lseView,
                                                     options: SoftmaxAttentionOptions(causal: true))
                    }
                }
            }
        }
    }
    // Bottom-right causal alignment: the last query sees all 6 keys, the first sees 3.
    print("kernels: \(Runtime.kernelISA.rawValue), threads: \(Runtime.numThreads)")
    var largestError = 0.0
    for i in 0..<n {
        let row = (0..<m).map { String(format3(out[0, 0, i, $0])) }.joined(separator: " ")
        print("out[\(i)] = \(row)   lse = \(format3(lse[0, 0, i, 0]))")
        // The same row computed directly in Double: softmax over the visible keys.
        let visible = 0...(i + l - n)
        let scores = visible.map { j in (0..<d).reduce(0.0) { $0 + Double(q[0, 0, i, $1]) * Double(k[0, 0, j, $1]) } / Double(d).squareRoot() }
        let top = scores.max()!
        let weights = scores.map { exp($0 - top) }
        let total = weights.reduce(0, +)
        largestError = max(largestError, abs(top + log(total) - Double(lse[0, 0, i, 0])))
        for c in 0..<m {
            let expected = zip(visible, weights).reduce(0.0) { $0 + $1.1 * Double(v[0, 0, $1.0, c]) } / total
            largestError = max(largestError, abs(expected - Double(out[0, 0, i, c])))
        }
    }
    print("largest difference from a direct Double computation: \(largestError)")
    guard largestError < 1e-5 else { print("MISMATCH"); exit(1) }
}

func format3(_ x: Float) -> String {
    let scaled = (Double(x) * 1000).rounded() / 1000
    return "\(scaled)"
}

do { try run() } catch { print("error: \(error)"); exit(1) }

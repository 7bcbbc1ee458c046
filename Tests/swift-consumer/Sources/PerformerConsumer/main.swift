// A package outside libperformer calling its Swift API: causal linear attention without
// normalization, out_i = Σ_{j≤i} (q_i·k_j) v_j (identity features), in Double, checked
// against that sum computed directly. Exits 1 on a mismatch or an error.
import PerformerCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

let (heads, n, d, m) = (2, 7, 5, 3)
func values(_ count: Int, _ seed: Int) -> [Double] { (0..<count).map { Double(($0 * 29 + seed) % 13) / 13 - 0.5 } }

do {
    let q = try Tensor<Double>(shape: SIMD4(1, heads, n, d), elements: values(heads * n * d, 1))
    let k = try Tensor<Double>(shape: SIMD4(1, heads, n, d), elements: values(heads * n * d, 4))
    let v = try Tensor<Double>(shape: SIMD4(1, heads, n, m), elements: values(heads * n * m, 7))
    var out = try Tensor<Double>(shape: SIMD4(1, heads, n, m))
    let options = LinearAttentionOptions(causal: true, featureMap: .identity, normalize: false)
    try q.withView { (q) throws(PerformerError) in
        try k.withView { (k) throws(PerformerError) in
            try v.withView { (v) throws(PerformerError) in
                try out.withMutableView { (o) throws(PerformerError) in
                    try LinearAttention.forward(query: q, key: k, value: v, output: o, options: options)
                }
            }
        }
    }
    var largest = 0.0
    for h in 0..<heads {
        for i in 0..<n {
            for c in 0..<m {
                var expected = 0.0
                for j in 0...i {
                    let score = (0..<d).reduce(0.0) { $0 + q[0, h, i, $1] * k[0, h, j, $1] }
                    expected += score * v[0, h, j, c]
                }
                largest = max(largest, abs(expected - out[0, h, i, c]))
            }
        }
    }
    print("kernels: \(Runtime.kernelISA.rawValue) (supported: \(Runtime.supportedISAs.map(\.rawValue).joined(separator: ", ")))")
    print("largest difference from the direct sum: \(largest)")
    if largest > 1e-12 { print("MISMATCH"); exit(1) }
} catch {
    print("error: \(error)")
    exit(1)
}

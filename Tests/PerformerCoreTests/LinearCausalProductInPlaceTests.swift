import XCTest
import PerformerCore

/// The causal un-normalized identity product (fast-transformers' causal_dot_product) runs on the
/// caller's rows when no denominator or final state is asked for (LinearCausalProduct.swift).
/// Against the packed kernel, which the same call takes once denominators are requested, it
/// must give the same bits (same products in the same order), and both match a float64 sum.
final class LinearCausalProductInPlaceTests: XCTestCase {
    func testInPlaceProductMatchesPackedKernelBitForBit() throws {
        let original = Runtime.kernelISA
        defer { try? Runtime.selectKernels(original) }
        let h = 2
        for isa in Runtime.supportedISAs {
            try Runtime.selectKernels(isa)
            // N past the direct form's 64 keys, not a multiple of any chunk; M whole tiles. The
            // last shape is large enough to prefetch rows (linearPrefetchMinimumBytes) and has
            // K_cᵀ in whole 16 × 16 blocks (the vector transpose).
            for (n, d, m) in [(70, 5, 32), (100, 5, 64), (700, 64, 64)] {
                for withState in [false, true] {
                    var seed: UInt64 = UInt64(n * 131 + d * 17 + m + (withState ? 7 : 0))
                    func random(_ count: Int) -> [Float] {
                        (0..<count).map { _ in
                            seed = seed &* 6364136223846793005 &+ 1442695040888963407
                            return Float(Int64(bitPattern: seed >> 11) % 2001 - 1000) / 1000
                        }
                    }
                    let q = random(h * n * d), k = random(h * n * d), v = random(h * n * m)
                    let s0 = random(h * d * m), z0 = [Float](repeating: 0, count: h * d)
                    let options = LinearAttentionOptions(causal: true, featureMap: .identity, normalize: false)
                    func run(withDenominators: Bool) throws -> [Float] {
                        var out = [Float](repeating: .nan, count: h * n * m)
                        var den = [Float](repeating: 0, count: h * n)
                        try q.withUnsafeBufferPointer { qp in
                            try k.withUnsafeBufferPointer { kp in
                                try v.withUnsafeBufferPointer { vp in
                                    try s0.withUnsafeBufferPointer { sp in
                                        try z0.withUnsafeBufferPointer { zp in
                                            try out.withUnsafeMutableBufferPointer { op in
                                                try den.withUnsafeMutableBufferPointer { dp in
                                                    let state = LinearStateView(
                                                        s: TensorView(base: sp.baseAddress!, shape: SIMD4(1, h, d, m)),
                                                        z: TensorView(base: zp.baseAddress!, shape: SIMD4(1, h, d, 1)))
                                                    try LinearAttention.forward(
                                                        query: TensorView(base: qp.baseAddress!, shape: SIMD4(1, h, n, d)),
                                                        key: TensorView(base: kp.baseAddress!, shape: SIMD4(1, h, n, d)),
                                                        value: TensorView(base: vp.baseAddress!, shape: SIMD4(1, h, n, m)),
                                                        output: MutableTensorView(base: op.baseAddress!, shape: SIMD4(1, h, n, m)),
                                                        initialState: withState ? state : nil,
                                                        denominators: withDenominators
                                                            ? MutableTensorView(base: dp.baseAddress!, shape: SIMD4(1, h, n, 1)) : nil,
                                                        options: options)
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        return out
                    }
                    let inPlace = try run(withDenominators: false), packed = try run(withDenominators: true)
                    let context = "\(isa) N=\(n) D=\(d) M=\(m) state=\(withState)"
                    XCTAssertEqual(inPlace.map(\.bitPattern), packed.map(\.bitPattern), context)
                    // o_i = Σ_{j ≤ i} (q_i·k_j) v_j + q_iᵀS_0 in float64.
                    var diff = 0.0, norm = 0.0
                    for head in 0..<h {
                        for i in 0..<n {
                            var sums = [Double](repeating: 0, count: m)
                            for j in 0...i {
                                var a = 0.0
                                for f in 0..<d { a += Double(q[(head * n + i) * d + f]) * Double(k[(head * n + j) * d + f]) }
                                for col in 0..<m { sums[col] += a * Double(v[(head * n + j) * m + col]) }
                            }
                            for col in 0..<m {
                                var sum = sums[col]
                                if withState {
                                    for f in 0..<d { sum += Double(q[(head * n + i) * d + f]) * Double(s0[(head * d + f) * m + col]) }
                                }
                                let got = Double(inPlace[(head * n + i) * m + col])
                                diff += (got - sum) * (got - sum)
                                norm += sum * sum
                            }
                        }
                    }
                    XCTAssertLessThanOrEqual((diff / norm).squareRoot(), 1e-5, context)
                }
            }
        }
    }
}

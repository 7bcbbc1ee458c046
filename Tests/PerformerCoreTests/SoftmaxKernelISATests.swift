import XCTest
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerCore

/// Every kernel build (portable, AVX2, AVX-512 where the CPU has them) against a float64
/// direct implementation (materialized scores), forward and backward, on adversarial shapes
/// and strided layouts.
final class SoftmaxKernelISATests: XCTestCase {
    /// A strided rank-4 buffer: logical B×H×N×D seen through a permuted / flipped / broadcast layout.
    struct Strided<T: AttentionScalar> {
        var storage: UnsafeMutablePointer<T>
        var count: Int
        var base: UnsafeMutablePointer<T>
        var shape: SIMD4<Int>
        var strides: SIMD4<Int>

        /// layout 0: contiguous; 1: B×N×H×D memory order; 2: rows (axis 2) reversed;
        /// 3: broadcast over the batch (stride 0, inputs only) with a padded row pitch.
        init(shape: SIMD4<Int>, layout: Int, fill: (Int) -> T) {
            let (b, h, n, d) = (shape[0], shape[1], shape[2], shape[3])
            var strides: SIMD4<Int>
            var offset = 0
            switch layout {
            case 1: strides = SIMD4(n * h * d, d, h * d, 1)
            case 2: strides = contiguousStrides(shape); strides[2] = -d; offset = (n - 1) * d
            case 3: strides = SIMD4(0, n * (d + 3), d + 3, 1)
            default: strides = contiguousStrides(shape)
            }
            count = Swift.max(1, layout == 3 ? h * n * (d + 3) : b * h * n * d)
            storage = .allocate(capacity: count)
            for i in 0..<count { storage[i] = fill(i) }
            base = storage + offset
            self.shape = shape
            self.strides = strides
        }
        func at(_ i: Int, _ j: Int, _ k: Int, _ l: Int) -> T {
            base[i * strides[0] + j * strides[1] + k * strides[2] + l * strides[3]]
        }
        func set(_ i: Int, _ j: Int, _ k: Int, _ l: Int, _ x: T) {
            base[i * strides[0] + j * strides[1] + k * strides[2] + l * strides[3]] = x
        }
        var view: TensorView<T> { TensorView(base: UnsafePointer(base), shape: shape, strides: strides) }
        var mutableView: MutableTensorView<T> { MutableTensorView(base: base, shape: shape, strides: strides) }
        func free() { storage.deallocate() }
    }

    struct Case: CustomStringConvertible {
        var b = 1, h = 1, hk = 1, n = 1, l = 1, d = 1, m = 1
        var causal = false
        var keyLengths: [Int]? = nil
        var layout = 0
        var description: String {
            "B=\(b) H=\(h) Hk=\(hk) N=\(n) L=\(l) D=\(d) M=\(m) causal=\(causal) kv=\(keyLengths.map { "\($0)" } ?? "-") layout=\(layout)"
        }
    }

    static let cases: [Case] = [
        Case(n: 1, l: 1, d: 1, m: 1),
        Case(n: 1, l: 37, d: 5, m: 3, causal: true),
        Case(n: 37, l: 1, d: 3, m: 7, causal: true),
        Case(n: 37, l: 1, d: 3, m: 7),
        Case(b: 2, h: 2, hk: 1, n: 67, l: 131, d: 13, m: 9, causal: true, layout: 1),
        Case(b: 2, h: 4, hk: 2, n: 129, l: 70, d: 64, m: 64, causal: true, layout: 2),
        Case(b: 2, h: 2, hk: 2, n: 100, l: 200, d: 32, m: 48, keyLengths: [0, 113], layout: 3),
        Case(b: 2, h: 1, hk: 1, n: 150, l: 97, d: 17, m: 20, causal: true, keyLengths: [50, 97]),
        Case(n: 70, l: 90, d: 256, m: 256, causal: true),
        Case(n: 200, l: 300, d: 64, m: 64, layout: 1),
        Case(h: 3, hk: 1, n: 65, l: 65, d: 1, m: 33, causal: true, layout: 2),
    ]

    func testEveryISAMatchesFloat64Reference() throws {
        // 1 thread: the fused backward (one task per key head); 3 threads: mostly the split
        // key pass + query pass.
        for threads in [1, 3] {
            try Runtime.setNumThreads(threads)
            for isa in Runtime.supportedISAs {
                try Runtime.selectKernels(isa)
                for c in Self.cases {
                    try check(c, Float.self, tolerance: 1e-5, label: "\(isa) threads=\(threads) float32 \(c)")
                    try check(c, Double.self, tolerance: 1e-12, label: "\(isa) threads=\(threads) float64 \(c)")
                }
            }
        }
        try Runtime.setNumThreads(0)
        try Runtime.selectKernels(Runtime.supportedISAs.last!)
    }

    func check<T: AttentionScalar>(_ c: Case, _: T.Type, tolerance: Double, label: String) throws {
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15 &* UInt64(c.n * 31 + c.l * 7 + c.d)
        func random() -> T {
            seed = seed &* 6364136223846793005 &+ 1442695040888963407
            return T(Double(seed >> 11) / Double(1 << 53) * 2 - 1)
        }
        let inputLayout = c.layout
        let q = Strided<T>(shape: SIMD4(c.b, c.h, c.n, c.d), layout: inputLayout, fill: { _ in random() * 2 })
        let k = Strided<T>(shape: SIMD4(c.b, c.hk, c.l, c.d), layout: inputLayout, fill: { _ in random() * 2 })
        let v = Strided<T>(shape: SIMD4(c.b, c.hk, c.l, c.m), layout: inputLayout, fill: { _ in random() })
        let dO = Strided<T>(shape: SIMD4(c.b, c.h, c.n, c.m), layout: inputLayout, fill: { _ in random() })
        let outLayout = c.layout == 3 ? 1 : c.layout
        let out = Strided<T>(shape: SIMD4(c.b, c.h, c.n, c.m), layout: outLayout, fill: { _ in .nan })
        let lse = Strided<T>(shape: SIMD4(c.b, c.h, c.n, 1), layout: 0, fill: { _ in .nan })
        let dq = Strided<T>(shape: q.shape, layout: outLayout, fill: { _ in .nan })
        let dk = Strided<T>(shape: k.shape, layout: outLayout, fill: { _ in .nan })
        let dv = Strided<T>(shape: v.shape, layout: outLayout, fill: { _ in .nan })
        defer { for x in [q, k, v, dO, out, lse, dq, dk, dv] { x.free() } }
        let options = SoftmaxAttentionOptions(causal: c.causal, keyLengths: c.keyLengths)
        try SoftmaxAttention.forward(query: q.view, key: k.view, value: v.view, output: out.mutableView,
                                     logSumExp: lse.mutableView, options: options)
        try SoftmaxAttention.backward(query: q.view, key: k.view, value: v.view, output: out.view,
                                      logSumExp: lse.view, outputGradient: dO.view, queryGradient: dq.mutableView,
                                      keyGradient: dk.mutableView, valueGradient: dv.mutableView, options: options)

        // float64 reference with materialized P.
        let scale = 1 / Double(c.d).squareRoot()
        let group = c.h / c.hk
        var refOut = [Double](repeating: 0, count: c.b * c.h * c.n * c.m)
        var refLSE = [Double](repeating: 0, count: c.b * c.h * c.n)
        var refDQ = [Double](repeating: 0, count: c.b * c.h * c.n * c.d)
        var refDK = [Double](repeating: 0, count: c.b * c.hk * c.l * c.d)
        var refDV = [Double](repeating: 0, count: c.b * c.hk * c.l * c.m)
        for b in 0..<c.b {
            let limit = c.keyLengths?[b] ?? c.l
            for h in 0..<c.h {
                let hk = h / group
                for i in 0..<c.n {
                    let visible = c.causal ? max(0, min(limit, i + c.l - c.n + 1)) : limit
                    var s = [Double](repeating: 0, count: visible)
                    for j in 0..<visible {
                        var dot = 0.0
                        for x in 0..<c.d { dot += Double(q.at(b, h, i, x)) * Double(k.at(b, hk, j, x)) }
                        s[j] = dot * scale
                    }
                    let rowIndex = (b * c.h + h) * c.n + i
                    guard visible > 0 else { refLSE[rowIndex] = -.infinity; continue }
                    let mx = s.max()!
                    let sum = s.reduce(0) { $0 + exponential($1 - mx) }
                    refLSE[rowIndex] = mx + logarithm(sum)
                    let p = s.map { exponential($0 - mx) / sum }
                    var o = [Double](repeating: 0, count: c.m)
                    for j in 0..<visible { for y in 0..<c.m { o[y] += p[j] * Double(v.at(b, hk, j, y)) } }
                    for y in 0..<c.m { refOut[rowIndex * c.m + y] = o[y] }
                    var delta = 0.0
                    for y in 0..<c.m { delta += Double(dO.at(b, h, i, y)) * o[y] }
                    for j in 0..<visible {
                        var dp = 0.0
                        for y in 0..<c.m { dp += Double(dO.at(b, h, i, y)) * Double(v.at(b, hk, j, y)) }
                        let ds = p[j] * (dp - delta)
                        let keyRow = (b * c.hk + hk) * c.l + j
                        for x in 0..<c.d {
                            refDQ[rowIndex * c.d + x] += scale * ds * Double(k.at(b, hk, j, x))
                            refDK[keyRow * c.d + x] += scale * ds * Double(q.at(b, h, i, x))
                        }
                        for y in 0..<c.m { refDV[keyRow * c.m + y] += p[j] * Double(dO.at(b, h, i, y)) }
                    }
                }
            }
        }
        func compare(_ name: String, _ got: Strided<T>, _ ref: [Double]) {
            var err = 0.0, norm = 0.0, bad = false
            let s = got.shape
            for i0 in 0..<s[0] { for i1 in 0..<s[1] { for i2 in 0..<s[2] { for i3 in 0..<s[3] {
                let r = ref[((i0 * s[1] + i1) * s[2] + i2) * s[3] + i3]
                let g = Double(got.at(i0, i1, i2, i3))
                if r == -.infinity { if g != -.infinity { bad = true }; continue }
                if !g.isFinite { bad = true; continue }
                err += (g - r) * (g - r); norm += r * r
            } } } }
            XCTAssertFalse(bad, "\(label): \(name) has a non-finite or wrong −inf entry")
            let relative = norm > 0 ? (err / norm).squareRoot() : err.squareRoot()
            XCTAssertLessThanOrEqual(relative, tolerance, "\(label): \(name) relative error \(relative)")
        }
        compare("out", out, refOut)
        compare("lse", lse, refLSE)
        compare("dq", dq, refDQ)
        compare("dk", dk, refDK)
        compare("dv", dv, refDV)
    }
}

@inline(__always) private func exponential(_ x: Double) -> Double { exp(x) }
@inline(__always) private func logarithm(_ x: Double) -> Double { log(x) }

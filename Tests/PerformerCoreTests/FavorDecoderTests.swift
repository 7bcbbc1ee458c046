#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import XCTest
import PerformerCore

final class FavorDecoderTests: XCTestCase {
    /// Causal FAVOR attention in float64 from materialized mathematical features:
    /// o_i = Σ_{j≤i} (φ(q_i)·φ(k_j)) v_j / (Σ_{j≤i} φ(q_i)·φ(k_j) + ε). Rows: [b][h][n][·].
    func reference(q: Tensor<Double>, k: Tensor<Double>, v: Tensor<Double>, w: FavorProjection,
                   options: FavorFeatureOptions, eps: Double) throws -> [Double] {
        let pq = try favorFeatures(q, w, options), pk = try favorFeatures(k, w, options)
        let (b, h, n, mv) = (v.shape[0], v.shape[1], v.shape[2], v.shape[3])
        let c = pq.shape[3]
        var out = [Double]()
        for bi in 0..<b { for hi in 0..<h { for i in 0..<n {
            var num = [Double](repeating: 0, count: mv), den = eps
            for j in 0...i {
                let kernel = (0..<c).reduce(0.0) { $0 + pq[bi, hi, i, $1] * pk[bi, hi, j, $1] }
                den += kernel
                for x in 0..<mv { num[x] += kernel * v[bi, hi, j, x] }
            }
            out += num.map { den != 0 ? $0 / den : 0 }
        } } }
        return out
    }

    /// Runs the decoder over all N tokens; returns outputs in [b][h][n][·] order.
    func decode<T: AttentionScalar>(_ decoder: FavorDecoder<T>, q: Tensor<T>, k: Tensor<T>, v: Tensor<T>,
                                    from start: Int = 0, to end: Int? = nil) throws -> [T] {
        let (b, h, n, d, mv) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3], v.shape[3])
        let end = end ?? n
        var out = [T](repeating: .nan, count: b * h * n * mv)
        for t in start..<end {
            var o = try Tensor<T>(shape: SIMD4(b, h, 1, mv))
            // Token t seen through strided views into the full tensors.
            try q.elements.withUnsafeBufferPointer { qp in
                try k.elements.withUnsafeBufferPointer { kp in
                    try v.elements.withUnsafeBufferPointer { vp in
                        try o.withMutableView { ov throws(PerformerError) in
                            let qv = TensorView(base: qp.baseAddress! + t * d, shape: SIMD4(b, h, 1, d), strides: q.shape.strides)
                            let kv = TensorView(base: kp.baseAddress! + t * d, shape: SIMD4(b, h, 1, d), strides: k.shape.strides)
                            let vv = TensorView(base: vp.baseAddress! + t * mv, shape: SIMD4(b, h, 1, mv), strides: v.shape.strides)
                            try decoder.step(query: qv, key: kv, value: vv, output: ov)
                        }
                    }
                }
            }
            for bi in 0..<b { for hi in 0..<h { for x in 0..<mv {
                out[((bi * h + hi) * n + t) * mv + x] = o[bi, hi, 0, x]
            } } }
        }
        return out
    }

    func inputs(_ shape: SIMD4<Int>, valueDim: Int, seed: UInt64, norm: Double? = nil) throws
        -> (Tensor<Double>, Tensor<Double>, Tensor<Double>) {
        var rng = FavorTestRandom(seed)
        func make(_ s: SIMD4<Int>, normalize: Bool) throws -> Tensor<Double> {
            var values = rng.normals(s[0] * s[1] * s[2] * s[3])
            if normalize, let norm {
                let d = s[3]
                for r in 0..<(values.count / d) {
                    let length = values[(r * d)..<((r + 1) * d)].reduce(0) { $0 + $1 * $1 }.squareRoot()
                    for c in 0..<d { values[r * d + c] *= norm / length }
                }
            }
            return try Tensor(shape: s, elements: values)
        }
        var vShape = shape
        vShape[3] = valueDim
        return (try make(shape, normalize: true), try make(shape, normalize: true), try make(vShape, normalize: false))
    }

    func testEveryKindMatchesTheMathematicalCausalAttention() throws {
        let shape = SIMD4(2, 2, 7, 5)
        let (q, k, v) = try inputs(shape, valueDim: 3, seed: 1)
        let w = try FavorProjection(dim: 5, numFeatures: 6, seed: 4)
        for kind in FavorFeatureKind.allCases {
            for eps in [0.0, 1e-3] {
                let options = FavorFeatureOptions(kind: kind)
                let expected = try reference(q: q, k: k, v: v, w: w, options: options, eps: eps)
                let decoder = try FavorDecoder<Double>(projection: w, batch: 2, heads: 2, valueDim: 3, options: options, epsilon: eps)
                let got = try decode(decoder, q: q, k: k, v: v)
                XCTAssertLessThan(relativeError(got, expected), 1e-12, "\(kind), eps \(eps)")
                let decoder32 = try FavorDecoder<Float>(projection: w, batch: 2, heads: 2, valueDim: 3, options: options, epsilon: eps)
                let got32 = try decode(decoder32, q: q.float, k: k.float, v: v.float).map { Double($0) }
                XCTAssertLessThan(relativeError(got32, expected), 1e-5, "\(kind) float32, eps \(eps)")
            }
        }
    }

    func testLargeNormsStayFiniteAndAccurate() throws {
        // ‖q‖ = ‖k‖ = 30: kernel values exp(a(q) + a(k)) are around e^-110, far below float32's
        // range; the scaled state keeps the float32 output equal to the float64 function.
        let shape = SIMD4(1, 2, 24, 64)
        let (q, k, v) = try inputs(shape, valueDim: 8, seed: 2, norm: 30)
        let w = try FavorProjection(dim: 64, numFeatures: 64, seed: 9)
        for kind in [FavorFeatureKind.positive, .hyperbolic] {
            let options = FavorFeatureOptions(kind: kind)
            let expected = try reference(q: q.float.double, k: k.float.double, v: v.float.double, w: w, options: options, eps: 0)
            XCTAssertTrue(expected.allSatisfy { $0.isFinite })
            let decoder = try FavorDecoder<Float>(projection: w, batch: 1, heads: 2, valueDim: 8, options: options)
            let got = try decode(decoder, q: q.float, k: k.float, v: v.float).map { Double($0) }
            XCTAssertTrue(got.allSatisfy { $0.isFinite })
            XCTAssertLessThan(relativeError(got, expected), 1e-4, "\(kind)")
            // Mathematical φ in float32 underflows here (the case the scaled form exists for).
            let phiK = try favorFeatures(k.float, w, options)
            XCTAssertTrue(phiK.elements.contains(0) || phiK.elements.contains { $0 < 1e-30 }, "\(kind)")
        }
    }

    func testThreadedStepsEqualOneThreadBitForBit() throws {
        // B·H·C·M = 2·5·128·64 is above the decoder's threading threshold: heads are split into
        // one group per thread (uneven here), each with its own scratch slot.
        let shape = SIMD4(2, 5, 6, 16)
        let (q, k, v) = try inputs(shape, valueDim: 64, seed: 12)
        let w = try FavorProjection(dim: 16, numFeatures: 128, seed: 3)
        let original = Runtime.numThreads
        defer { try! Runtime.setNumThreads(original) }
        for kind in [FavorFeatureKind.positive, .relu] {
            let options = FavorFeatureOptions(kind: kind)
            var results: [[Float]] = []
            for threads in [1, 2, 3] {
                try Runtime.setNumThreads(threads)
                let decoder = try FavorDecoder<Float>(projection: w, batch: 2, heads: 5, valueDim: 64, options: options)
                let out = try decode(decoder, q: q.float, k: k.float, v: v.float)
                results.append(out + decoder.stateS + decoder.stateZ + decoder.stateC)
            }
            XCTAssertEqual(results[0], results[1], "\(kind), 2 threads")
            XCTAssertEqual(results[0], results[2], "\(kind), 3 threads")
        }
    }

    func testStateCarriesAcrossDecodersAndResetForgets() throws {
        let shape = SIMD4(1, 3, 9, 4)
        let (q, k, v) = try inputs(shape, valueDim: 5, seed: 3)
        let w = try FavorProjection(dim: 4, numFeatures: 5, seed: 1)
        for kind in FavorFeatureKind.allCases {
            let options = FavorFeatureOptions(kind: kind)
            let whole = try FavorDecoder<Double>(projection: w, batch: 1, heads: 3, valueDim: 5, options: options)
            let all = try decode(whole, q: q, k: k, v: v)
            let first = try FavorDecoder<Double>(projection: w, batch: 1, heads: 3, valueDim: 5, options: options)
            _ = try decode(first, q: q, k: k, v: v, to: 4)
            let second = try FavorDecoder<Double>(projection: w, batch: 1, heads: 3, valueDim: 5, options: options)
            try second.setState(s: first.stateS, z: first.stateZ, c: first.stateC)
            let rest = try decode(second, q: q, k: k, v: v, from: 4)
            for i in 0..<all.count where !rest[i].isNaN { XCTAssertEqual(rest[i], all[i], "\(kind)") }
            XCTAssertEqual(rest.filter { !$0.isNaN }.count, 3 * 5 * 5)
            whole.reset()
            XCTAssertEqual(try decode(whole, q: q, k: k, v: v), all)
            if kind.isExponential {
                // The shift is the per-feature running max: every z̃ row holds a key at exp(0)·ν.
                let nu = 1 / Double(kind.featureCount(numFeatures: 5)).squareRoot()
                for z in whole.stateZ { XCTAssertGreaterThanOrEqual(z, nu * (1 - 1e-12)) }
            }
        }
    }

    func testMathematicalStateIsAcceptedWithZeroShift() throws {
        // (S, z, c = 0) is the unscaled state: continuing from it equals continuing from the scaled one.
        let shape = SIMD4(1, 1, 6, 3)
        let (q, k, v) = try inputs(shape, valueDim: 2, seed: 5)
        let w = try FavorProjection(dim: 3, numFeatures: 4, seed: 2)
        let a = try FavorDecoder<Double>(projection: w, batch: 1, heads: 1, valueDim: 2)
        _ = try decode(a, q: q, k: k, v: v, to: 3)
        let c = a.stateC.map { exp($0) }
        let s = (0..<a.stateS.count).map { a.stateS[$0] * c[$0 / 2] }
        let z = zip(a.stateZ, c).map { $0 * $1 }
        let b = try FavorDecoder<Double>(projection: w, batch: 1, heads: 1, valueDim: 2)
        try b.setState(s: s, z: z, c: [Double](repeating: 0, count: 4))
        let fromScaled = try decode(a, q: q, k: k, v: v, from: 3)
        let fromPlain = try decode(b, q: q, k: k, v: v, from: 3)
        XCTAssertLessThan(relativeError(fromPlain.filter { !$0.isNaN }, fromScaled.filter { !$0.isNaN }), 1e-13)
    }

    func testBadInput() throws {
        let w = try FavorProjection(dim: 4, numFeatures: 3)
        func expect(_ status: PerformerStatus, _ fragment: String, _ body: () throws -> Void, line: UInt = #line) {
            XCTAssertThrowsError(try body(), line: line) { error in
                let e = error as? PerformerError
                XCTAssertEqual(e?.status, status, line: line)
                XCTAssertTrue(e?.message.contains(fragment) ?? false, "\(String(describing: e))", line: line)
            }
        }
        expect(.invalidArgument, "eps = -1.0") { _ = try FavorDecoder<Float>(projection: w, batch: 1, heads: 1, valueDim: 2, epsilon: -1) }
        expect(.invalidArgument, "heads = -1") { _ = try FavorDecoder<Float>(projection: w, batch: 1, heads: -1, valueDim: 2) }
        let decoder = try FavorDecoder<Double>(projection: w, batch: 1, heads: 2, valueDim: 2)
        expect(.invalidArgument, "c[1] = inf") {
            try decoder.setState(s: [Double](repeating: 0, count: 12), z: [Double](repeating: 0, count: 6),
                                 c: [0, .infinity, 0, 0, 0, 0])
        }
        expect(.shapeMismatch, "z has 5 entries") {
            try decoder.setState(s: [Double](repeating: 0, count: 12), z: [Double](repeating: 0, count: 5),
                                 c: [Double](repeating: 0, count: 6))
        }
        let q = try Tensor<Double>(shape: SIMD4(1, 2, 1, 5))
        let v = try Tensor<Double>(shape: SIMD4(1, 2, 1, 2))
        var o = try Tensor<Double>(shape: SIMD4(1, 2, 1, 2), repeating: 3)
        expect(.shapeMismatch, "q.shape[3] = 5 but expected 4") {
            try q.withView { qv throws(PerformerError) in
                try v.withView { vv throws(PerformerError) in
                    try o.withMutableView { ov throws(PerformerError) in
                        try decoder.step(query: qv, key: qv, value: vv, output: ov)
                    }
                }
            }
        }
        XCTAssertEqual(o.elements, [3, 3, 3, 3])
        XCTAssertEqual(decoder.stateC, [Double](repeating: -.infinity, count: 6))
    }
}

extension Tensor where Element == Double {
    var float: Tensor<Float> { try! Tensor<Float>(shape: shape, elements: elements.map { Float($0) }) }
}

extension Tensor where Element == Float {
    var double: Tensor<Double> { try! Tensor<Double>(shape: shape, elements: elements.map { Double($0) }) }
}

extension SIMD4 where Scalar == Int {
    var strides: SIMD4<Int> { SIMD4(self[1] * self[2] * self[3], self[2] * self[3], self[3], 1) }
}

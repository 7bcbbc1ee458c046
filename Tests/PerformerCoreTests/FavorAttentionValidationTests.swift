#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import XCTest
import PerformerCore

/// Bad input gives the right status and leaves every output untouched; and how well FAVOR+
/// approximates exact softmax attention at m = 256, D = 64.
final class FavorAttentionValidationTests: XCTestCase {
    func expect(_ status: PerformerStatus, _ fragment: String, line: UInt = #line, _ body: () throws -> Void) {
        XCTAssertThrowsError(try body(), line: line) { error in
            let e = error as? PerformerError
            XCTAssertEqual(e?.status, status, "\(String(describing: e))", line: line)
            XCTAssertTrue(e?.message.contains(fragment) ?? false, "\(String(describing: e)) lacks \"\(fragment)\"", line: line)
        }
    }

    func testBadInputIsRejectedWithoutWriting() throws {
        let fc = FavorCase(b: 1, h: 2, hk: 1, n: 5, l: 5, d: 4, m: 3, mv: 2, causal: true, withState: true)
        let w = try FavorProjection(dim: 4, numFeatures: 3, seed: 1)
        let x = FavorInputs(fc, projection: w)
        let q = LinearTestTensor<Double>(shape: fc.qShape, values: x.q)
        let k = LinearTestTensor<Double>(shape: fc.kShape, values: x.k)
        let v = LinearTestTensor<Double>(shape: fc.vShape, values: x.v)
        let dout = LinearTestTensor<Double>(shape: fc.oShape, values: x.dout)
        let s0 = LinearTestTensor<Double>(shape: fc.sShape, values: x.s0)
        let z0 = LinearTestTensor<Double>(shape: fc.zShape, values: x.z0)
        let c0 = LinearTestTensor<Double>(shape: fc.zShape, values: x.c0)
        let fill = [Double](repeating: 7, count: 1)
        func filled(_ shape: SIMD4<Int>) -> LinearTestTensor<Double> {
            LinearTestTensor<Double>(shape: shape, values: [Double](repeating: fill[0], count: shape[0] * shape[1] * shape[2] * shape[3]))
        }
        let out = filled(fc.oShape), dq = filled(fc.qShape), dk = filled(fc.kShape), dv = filled(fc.vShape)
        let sN = filled(fc.sShape), zN = filled(fc.zShape), cN = filled(fc.zShape)
        let ds0 = filled(fc.sShape), dz0 = filled(fc.zShape)
        defer { withExtendedLifetime([q, k, v, dout, s0, z0, c0, out, dq, dk, dv, sN, zN, cN, ds0, dz0]) {} }
        let outputs = [out, dq, dk, dv, sN, zN, cN, ds0, dz0]
        let initial = FavorStateView(s: s0.view, z: z0.view, c: c0.view)
        let final = MutableFavorStateView(s: sN.mutableView, z: zN.mutableView, c: cN.mutableView)

        func forward(_ projection: FavorProjection = w, options: FavorAttentionOptions = fc.options,
                     initialState: FavorStateView<Double>? = nil, query: TensorView<Double>? = nil) throws {
            try FavorAttention.forward(query: query ?? q.view, key: k.view, value: v.view, projection: projection,
                                       output: out.mutableView, initialState: initialState ?? initial,
                                       finalState: final, options: options)
        }
        func backward(options: FavorAttentionOptions = fc.options, initialState: FavorStateView<Double>?? = .some(nil),
                      dS0: MutableLinearStateView<Double>? = nil) throws {
            try FavorAttention.backward(query: q.view, key: k.view, value: v.view, projection: w, outputGradient: dout.view,
                                        queryGradient: dq.mutableView, keyGradient: dk.mutableView, valueGradient: dv.mutableView,
                                        initialState: initialState ?? initial, finalStateGradient: nil,
                                        initialStateGradient: dS0 ?? MutableLinearStateView(s: ds0.mutableView, z: dz0.mutableView),
                                        options: options)
        }

        let w5 = try FavorProjection(dim: 5, numFeatures: 3, seed: 1)
        expect(.shapeMismatch, "projection.dim = 5") { try forward(w5) }
        // m mismatch with the state: a projection with m = 4 makes C = 4, the state has C = 3.
        let w4 = try FavorProjection(dim: 4, numFeatures: 4, seed: 1)
        expect(.shapeMismatch, "S0.shape[2] = 3 but expected 4") { try forward(w4) }
        // Hyperbolic features double C.
        var hyperbolic = fc.options
        hyperbolic.features.kind = .hyperbolic
        expect(.shapeMismatch, "S0.shape[2] = 3 but expected 6") { try forward(options: hyperbolic) }
        // Unknown kinds never reach the attention: their codes and names are rejected.
        expect(.invalidArgument, "features = 7") { _ = try FavorFeatureKind(code: 7) }
        expect(.invalidArgument, "\"softmax\"") { _ = try FavorFeatureKind(name: "softmax") }
        var options = fc.options
        options.epsilon = -1
        expect(.invalidArgument, "eps = -1.0") { try forward(options: options) }
        options.epsilon = .nan
        expect(.invalidArgument, "eps = nan") { try forward(options: options) }
        options = fc.options
        options.features.scale = -1
        expect(.invalidArgument, "scale = -1.0") { try forward(options: options) }
        options = fc.options
        options.keyLengths = [6]
        expect(.invalidArgument, "kv_lengths[0] = 6") { try forward(options: options) }
        // State values: c = +inf, c = −inf over a nonzero row, relu with c ≠ 0, trig with two c per head.
        let badC = LinearTestTensor<Double>(shape: fc.zShape, values: x.c0.enumerated().map { $0.offset == 1 ? .infinity : $0.element })
        let minusInf = LinearTestTensor<Double>(shape: fc.zShape, values: x.c0.enumerated().map { $0.offset == 2 ? -.infinity : $0.element })
        let badS = LinearTestTensor<Double>(shape: fc.sShape, values: x.s0.enumerated().map { $0.offset == 3 ? .nan : $0.element })
        defer { withExtendedLifetime([badC, minusInf, badS]) {} }
        expect(.invalidArgument, "c0[0, 0, 1] = inf") { try forward(initialState: FavorStateView(s: s0.view, z: z0.view, c: badC.view)) }
        expect(.invalidArgument, "c0[0, 0, 2] = -inf but its S0 row") {
            try forward(initialState: FavorStateView(s: s0.view, z: z0.view, c: minusInf.view))
        }
        expect(.invalidArgument, "S0[0, 0, 1, 1] = nan") { try forward(initialState: FavorStateView(s: badS.view, z: z0.view, c: c0.view)) }
        options = fc.options
        options.features.kind = .relu
        expect(.invalidArgument, "relu features need c = 0") { try forward(options: options) }
        options.features.kind = .trigonometric
        let trigS = LinearTestTensor<Double>(shape: SIMD4(1, 2, 6, 2), values: [Double](repeating: 0, count: 24))
        let trigZ = LinearTestTensor<Double>(shape: SIMD4(1, 2, 6, 1), values: [Double](repeating: 0, count: 12))
        let trigC = LinearTestTensor<Double>(shape: SIMD4(1, 2, 6, 1), values: (0..<12).map { $0 == 8 ? 1 : 0 })
        defer { withExtendedLifetime([trigS, trigZ, trigC]) {} }
        expect(.invalidArgument, "c0[0, 1, 2] = 1.0: trigonometric features need one c per head") {
            try FavorAttention.forward(query: q.view, key: k.view, value: v.view, projection: w, output: out.mutableView,
                                       initialState: FavorStateView(s: trigS.view, z: trigZ.view, c: trigC.view),
                                       options: options)
        }
        // State shapes.
        expect(.shapeMismatch, "z0.shape[3] = 2") {
            try forward(initialState: FavorStateView(s: s0.view, z: s0.view, c: c0.view))
        }
        // Causal needs N = L; outputs must not alias inputs.
        let shortQ = LinearTestTensor<Double>(shape: SIMD4(1, 2, 4, 4), values: [Double](repeating: 0, count: 32))
        defer { withExtendedLifetime(shortQ) {} }
        expect(.shapeMismatch, "as many queries as keys") { try forward(query: shortQ.view) }
        expect(.aliasing, "output out overlaps input q") {
            try FavorAttention.forward(query: q.view, key: k.view, value: v.view, projection: w,
                                       output: MutableTensorView(base: q.storage, shape: fc.oShape), options: FavorAttentionOptions())
        }
        XCTAssertEqual(q.values, x.q)
        // Backward: dS0 without an initial state.
        expect(.invalidArgument, "no initial state") { try backward(initialState: .some(nil)) }

        for t in outputs { XCTAssertTrue(t.values.allSatisfy { $0 == 7 }, "an output was written on error") }
        // And a valid call does write them.
        try forward()
        try backward(initialState: initial)
        for t in outputs { XCTAssertFalse(t.values.allSatisfy { $0 == 7 }) }
    }

    /// FAVOR+ (positive, orthogonal, chi norms, m = 256) against exact softmax attention, both in
    /// float64, D = M = 64, N = L = 256, q and k entries of standard deviation sd, four seeds.
    /// The figures go into docs/FAVOR.md §5.
    func testApproximationOfSoftmaxAttention() throws {
        let (n, d, m) = (256, 64, 256)
        var errors: [Double] = []
        for sd in [0.25, 0.5, 1.0] {
            var total = 0.0
            for seed in 0..<4 {
                let fc = FavorCase(b: 1, h: 1, hk: 1, n: n, l: n, d: d, m: m, mv: d, inputScale: sd, seed: UInt64(50 + seed))
                let w = try FavorProjection(dim: d, numFeatures: m, seed: UInt64(500 + seed))
                let x = FavorInputs(fc, projection: w, prefix: 0)
                let favor = try runFavor(fc, x, w, as: Double.self, backward: false).out
                let exact = SoftmaxReference.evaluate(
                    q: DenseTensor(shape: fc.qShape, values: x.q), k: DenseTensor(shape: fc.kShape, values: x.k),
                    v: DenseTensor(shape: fc.vShape, values: x.v)).out.values
                total += linearRelativeError(favor, exact)
            }
            errors.append(total / 4)
            print("FAVOR+ vs softmax, m = \(m), D = \(d), N = \(n), sd = \(sd): relative error \(total / 4)")
        }
        // The estimator's variance grows like exp(‖q̂ + k̂‖²): the error grows with sd.
        XCTAssertLessThan(errors[0], 0.1)
        XCTAssertLessThan(errors[0], errors[1])
        XCTAssertLessThan(errors[1], errors[2])
    }
}

import XCTest
import PerformerCore

/// LinearAttention.initialStateGradient: the query-side ∂L/∂(S_0, z_0) from q, out, dout and
/// the forward's denominators equals the backward's initial-state gradient (no final-state
/// gradient) and the float64 reference; un-normalized without denominators; zero denominators;
/// bad arguments rejected without writing.
final class LinearInitialStateGradientTests: XCTestCase {
    /// (dS0, dz0) of the call on the forward's own results (`forward`: out and den in T).
    private func queryGradient<T: AttentionScalar>(
        _ c: LinearCase, _ x: LinearInputs, _ forward: LinearResults, as _: T.Type
    ) throws -> ([Double], [Double]) {
        let q = LinearTestTensor<T>(shape: c.qShape, strided: c.strided, values: x.q)
        let out = LinearTestTensor<T>(shape: c.oShape, values: forward.out)
        let dout = LinearTestTensor<T>(shape: c.oShape, strided: c.strided, values: x.dout)
        let den = LinearTestTensor<T>(shape: c.denShape, values: forward.den)
        let ds0 = LinearTestTensor<T>(shape: c.sShape, strided: true), dz0 = LinearTestTensor<T>(shape: c.zShape)
        try LinearAttention.initialStateGradient(
            query: q.view, output: out.view, outputGradient: dout.view, denominators: c.normalize ? den.view : nil,
            initialStateGradient: MutableLinearStateView(s: ds0.mutableView, z: dz0.mutableView), options: c.options)
        XCTAssert(ds0.paddingUntouched)
        return (ds0.values, dz0.values)
    }

    private func check<T: AttentionScalar>(_ c: LinearCase, seed: UInt64, as type: T.Type, tolerance: Double) throws {
        var x = LinearInputs(c, seed: seed)
        x.dsN = [Double](repeating: 0, count: x.dsN.count)
        x.dzN = [Double](repeating: 0, count: x.dzN.count)
        let library = try runLinear(c, x, as: T.self)
        let reference = linearReference(c, x.rounded(to: T.self))
        let (ds0, dz0) = try queryGradient(c, x.rounded(to: T.self), library, as: T.self)
        XCTAssertLessThan(linearRelativeError(ds0, library.ds0), tolerance, "dS0 vs backward: \(c)")
        XCTAssertLessThan(linearRelativeError(dz0, library.dz0), tolerance, "dz0 vs backward: \(c)")
        XCTAssertLessThan(linearRelativeError(ds0, reference.ds0), tolerance, "dS0 vs reference: \(c)")
        XCTAssertLessThan(linearRelativeError(dz0, reference.dz0), tolerance, "dz0 vs reference: \(c)")
    }

    /// Every feature map, causal or not, GQA, key lengths (which it ignores: the forward's
    /// out and den carry them), strided q and dout, N from 1 to past one chunk.
    func testEqualsBackwardAndReference() throws {
        for map in LinearAttentionOptions.FeatureMap.allCases {
            for causal in [true, false] {
                for n in [1, 37, 300] {
                    let c = LinearCase(b: 2, h: 4, hk: 2, n: n, l: n, d: 5, m: 7, causal: causal, featureMap: map,
                                       epsilon: 0.01, keyLengths: [n, (n + 1) / 2], withState: true, strided: n == 37)
                    try check(c, seed: UInt64(n) + 3, as: Double.self, tolerance: 1e-12)
                    try check(c, seed: UInt64(n) + 5, as: Float.self, tolerance: 2e-5)
                }
            }
        }
    }

    /// normalize = false: no denominators, dS0 = Σ φ(q_i) dout_iᵀ and dz0 = 0.
    func testUnnormalizedNeedsNoDenominators() throws {
        let c = LinearCase(b: 1, h: 2, hk: 1, n: 50, l: 50, d: 4, m: 3, causal: true, featureMap: .identity,
                           withState: true, normalize: false, mixedSigns: true)
        try check(c, seed: 9, as: Double.self, tolerance: 1e-12)
    }

    /// relu, ε = 0, a query with no positive feature: its denominator is 0, its output row 0,
    /// and it adds nothing (as in the backward), never NaN.
    func testZeroDenominatorAddsNothing() throws {
        let c = LinearCase(b: 1, h: 1, hk: 1, n: 6, l: 6, d: 3, m: 2, causal: true, featureMap: .relu, epsilon: 0,
                           withState: true)
        var x = LinearInputs(c, seed: 4)
        x.dsN = [Double](repeating: 0, count: x.dsN.count)
        x.dzN = [Double](repeating: 0, count: x.dzN.count)
        for f in 0..<3 { x.q[2 * 3 + f] = -1 - Double(f) }
        let library = try runLinear(c, x, as: Double.self)
        XCTAssertEqual(library.den[2], 0)
        let (ds0, dz0) = try queryGradient(c, x, library, as: Double.self)
        XCTAssert((ds0 + dz0).allSatisfy(\.isFinite))
        XCTAssertLessThan(linearRelativeError(ds0, library.ds0), 1e-13)
        XCTAssertLessThan(linearRelativeError(dz0, library.dz0), 1e-13)
    }

    /// Bad arguments: the right status, a message naming the argument, nothing written.
    func testBadArgumentsAreRejectedWithoutWriting() throws {
        let q = LinearTestTensor<Float>(shape: SIMD4(2, 4, 5, 3)), out = LinearTestTensor<Float>(shape: SIMD4(2, 4, 5, 2))
        let den = LinearTestTensor<Float>(shape: SIMD4(2, 4, 5, 1))
        let s = LinearTestTensor<Float>(shape: SIMD4(2, 4, 3, 2), values: [Double](repeating: 42, count: 48))
        let z = LinearTestTensor<Float>(shape: SIMD4(2, 4, 3, 1), values: [Double](repeating: 42, count: 24))
        let gradient = MutableLinearStateView(s: s.mutableView, z: z.mutableView)
        func expect(_ status: PerformerStatus, _ naming: String, _ body: () throws(PerformerError) -> Void) {
            assertThrowsPerformerError(status, containing: naming, naming) { try body() }
            XCTAssert(s.values.allSatisfy { $0 == 42 } && z.values.allSatisfy { $0 == 42 }, "\(naming): wrote the gradient")
        }
        expect(.nullPointer, "denominators") { () throws(PerformerError) in
            try LinearAttention.initialStateGradient(query: q.view, output: out.view, outputGradient: out.view,
                                                     denominators: nil, initialStateGradient: gradient)
        }
        expect(.shapeMismatch, "out.shape[1]") { () throws(PerformerError) in
            try LinearAttention.initialStateGradient(query: q.view, output: LinearTestTensor<Float>(shape: SIMD4(2, 2, 5, 2)).view,
                                                     outputGradient: out.view, denominators: den.view, initialStateGradient: gradient)
        }
        expect(.shapeMismatch, "dout.shape[3]") { () throws(PerformerError) in
            try LinearAttention.initialStateGradient(query: q.view, output: out.view, outputGradient: q.view,
                                                     denominators: den.view, initialStateGradient: gradient)
        }
        expect(.shapeMismatch, "denominators.shape[3]") { () throws(PerformerError) in
            try LinearAttention.initialStateGradient(query: q.view, output: out.view, outputGradient: out.view,
                                                     denominators: q.view, initialStateGradient: gradient)
        }
        expect(.shapeMismatch, "dz0.shape[2]") { () throws(PerformerError) in
            try LinearAttention.initialStateGradient(query: q.view, output: out.view, outputGradient: out.view,
                                                     denominators: den.view,
                                                     initialStateGradient: MutableLinearStateView(s: s.mutableView, z: den.mutableView))
        }
        expect(.invalidArgument, "eps") { () throws(PerformerError) in
            try LinearAttention.initialStateGradient(query: q.view, output: out.view, outputGradient: out.view,
                                                     denominators: den.view, initialStateGradient: gradient,
                                                     options: LinearAttentionOptions(epsilon: .nan))
        }
        expect(.aliasing, "dS0") { () throws(PerformerError) in
            // dS0's memory (48 elements) read as the denominators (40).
            try LinearAttention.initialStateGradient(query: q.view, output: out.view, outputGradient: out.view,
                                                     denominators: TensorView(base: s.storage, shape: SIMD4(2, 4, 5, 1)),
                                                     initialStateGradient: gradient)
        }
    }
}

import PerformerCore
import XCTest

/// The FAVOR+ decoder on float16 / bfloat16 tokens (docs/HALF_PRECISION.md), every feature
/// kind, on every kernel build the CPU runs. The contract, checked bit for bit: each half
/// step's output is the float32 decoder's output on the widened tokens, rounded once to H,
/// and the state (S̃, z̃, c) is the float32 decoder's. Beside that: the steps agree with the
/// half causal forward over the same tokens to one rounding of the output, and meet the
/// accuracy rule (≤ 2× the error of the straightforward float32 evaluation, rounded) against
/// float64.
final class FavorDecoderHalfPrecisionTests: XCTestCase {
    private func problem(_ kind: FavorFeatureKind, withState: Bool) -> FavorCase {
        let trigonometric = kind == .trigonometric
        return FavorCase(b: 2, h: 2, hk: 2, n: 17, l: 17, d: 8, m: 16, mv: 6, causal: true, kind: kind,
                         epsilon: trigonometric ? 1e-3 : 0, withState: withState, strided: true,
                         inputScale: trigonometric ? 0.3 : 0.7, seed: 11)
    }

    /// W as the float32 kernels use it, so the references see the same W.
    private func projection(_ fc: FavorCase) throws -> FavorProjection {
        let w = try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: 123)
        return try FavorProjection(matrix: w.matrixFloat, numFeatures: w.numFeatures, dim: w.dim)
    }

    private func check<H: HalfTestScalar>(_: H.Type, kind: FavorFeatureKind) throws {
        for withState in [false, true] {
            let fc = problem(kind, withState: withState)
            let w = try projection(fc)
            let x = FavorInputs(fc, projection: w).roundedToHalf(H.self)
            let exact = favorExplicit(fc, x, w, arithmetic: Double.self)
            let straightforward = favorExplicit(fc, x, w, arithmetic: Float.self).out.map { Double(H(rounding: Float($0)).float) }
            try forEachSupportedISA { isa in
                let label = "\(H.dtype.name) \(kind.name) state=\(withState) \(isa)"
                let q = HalfTestTensor<H>(shape: fc.qShape, strided: true, values: x.q)
                let k = HalfTestTensor<H>(shape: fc.kShape, strided: true, values: x.k)
                let v = HalfTestTensor<H>(shape: fc.vShape, strided: true, values: x.v)
                let q32 = LinearTestTensor<Float>(shape: fc.qShape, values: x.q)
                let k32 = LinearTestTensor<Float>(shape: fc.kShape, values: x.k)
                let v32 = LinearTestTensor<Float>(shape: fc.vShape, values: x.v)
                let make = { () throws -> FavorDecoder<Float> in
                    let decoder = try FavorDecoder<Float>(projection: w, batch: fc.b, heads: fc.h, valueDim: fc.mv,
                                                          options: FavorFeatureOptions(kind: kind), epsilon: fc.epsilon)
                    if withState {
                        try decoder.setState(s: x.s0.map { Float($0) }, z: x.z0.map { Float($0) }, c: x.c0.map { Float($0) })
                    }
                    return decoder
                }
                let half = try make(), single = try make()
                let out = HalfTestTensor<H>(shape: fc.oShape, strided: true), out32 = LinearTestTensor<Float>(shape: fc.oShape)
                for t in 0..<fc.n {
                    try half.step(query: q.token(t), key: k.token(t), value: v.token(t), output: out.mutableToken(t))
                    try single.step(query: q32.token(t), key: k32.token(t), value: v32.token(t), output: out32.mutableToken(t))
                }
                XCTAssertEqual(out.bits, out32.values.map { H(rounding: Float($0)).bits }, "\(label): step = float32 step rounded")
                XCTAssertEqual(half.stateS, single.stateS, "\(label): S̃")
                XCTAssertEqual(half.stateZ, single.stateZ, "\(label): z̃")
                XCTAssertEqual(half.stateC, single.stateC, "\(label): c")
                XCTAssertTrue(out.paddingUntouched, label)
                let forward = try runFavorHalf(fc, x, w, as: H.self)[0]
                assertWithinOneRounding(out.values, forward, H.self, "\(label): steps vs the causal forward")
                if !withState {
                    assertHalfAccuracy("decoder out", ours: out.values, exact: exact.out, straightforward: straightforward, label)
                }
            }
        }
    }

    func testEveryFeatureKind() throws {
        for kind in [FavorFeatureKind.positive, .hyperbolic, .trigonometric, .relu] {
            try check(Float16.self, kind: kind)
            try check(BFloat16.self, kind: kind)
        }
    }

    /// A bad token is refused with the float32 step's message; nothing written, state unchanged.
    func testErrorsWriteNothing() throws {
        let fc = problem(.positive, withState: false)
        let w = try projection(fc)
        let x = FavorInputs(fc, projection: w).roundedToHalf(BFloat16.self)
        let decoder = try FavorDecoder<Float>(projection: w, batch: fc.b, heads: fc.h, valueDim: fc.mv)
        let q = HalfTestTensor<BFloat16>(shape: fc.qShape, values: x.q), k = HalfTestTensor<BFloat16>(shape: fc.kShape, values: x.k)
        let v = HalfTestTensor<BFloat16>(shape: fc.vShape, values: x.v)
        let out = HalfTestTensor<BFloat16>(shape: fc.oShape)
        try decoder.step(query: q.token(0), key: k.token(0), value: v.token(0), output: out.mutableToken(0))
        let (s, z, c, bits) = (decoder.stateS, decoder.stateZ, decoder.stateC, out.bits)
        XCTAssertThrowsError(try decoder.step(query: q.token(1), key: k.token(1), value: q.token(1), output: out.mutableToken(1))) {
            let error = $0 as! PerformerError
            XCTAssertEqual(error.status, .shapeMismatch)
            XCTAssertTrue(error.message.hasPrefix("v.shape[3] = 8"), error.message)
        }
        XCTAssertEqual(out.bits, bits)
        XCTAssertEqual(decoder.stateS, s)
        XCTAssertEqual(decoder.stateZ, z)
        XCTAssertEqual(decoder.stateC, c)
    }
}

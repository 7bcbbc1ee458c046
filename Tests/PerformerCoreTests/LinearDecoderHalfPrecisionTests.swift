import PerformerCore
import XCTest

/// The linear-attention decoder on float16 / bfloat16 tokens (docs/HALF_PRECISION.md), on
/// every kernel build the CPU runs. The contract checked bit for bit: a half decoder is a
/// float32 one whose tokens are widened exactly and whose outputs are rounded once, so each
/// half output is the float32 decoder's output on the widened tokens rounded to H, and its
/// float32 state is the float32 decoder's state. Beside that: the steps agree with the half
/// causal forward over the same tokens to one rounding of the output, and meet the accuracy
/// rule (≤ 2× the error of the straightforward float32 evaluation, rounded) against float64.
final class LinearDecoderHalfPrecisionTests: XCTestCase {
    /// GQA (H = 4, Hk = 2), D = C = 5, M = 19, padded token rows, an initial state.
    private func problem(_ map: LinearAttentionOptions.FeatureMap) -> LinearCase {
        LinearCase(b: 2, h: 4, hk: 2, n: 23, l: 23, d: 5, m: 19, causal: true, featureMap: map, withState: true,
                   strided: true)
    }

    private func decoder(_ c: LinearCase, state x: LinearInputs? = nil) throws -> LinearAttentionDecoder<Float> {
        let decoder = try LinearAttentionDecoder<Float>(batch: c.b, heads: c.h, keyHeads: c.hk, headDim: c.d, valueDim: c.m,
                                                        featureMap: c.featureMap, epsilon: c.epsilon)
        if let x {
            let s0 = LinearTestTensor<Float>(shape: c.sShape, values: x.s0), z0 = LinearTestTensor<Float>(shape: c.zShape, values: x.z0)
            try decoder.loadState(LinearStateView(s: s0.view, z: z0.view))
        }
        return decoder
    }

    /// The decoder's state, row-major (S then z).
    private func state(_ decoder: LinearAttentionDecoder<Float>, _ c: LinearCase) throws -> [Float] {
        let s = LinearTestTensor<Float>(shape: c.sShape), z = LinearTestTensor<Float>(shape: c.zShape)
        try decoder.storeState(into: MutableLinearStateView(s: s.mutableView, z: z.mutableView))
        return s.rawValues + z.rawValues
    }

    private func check<H: HalfTestScalar>(_: H.Type, map: LinearAttentionOptions.FeatureMap) throws {
        let c = problem(map)
        let x = LinearInputs(c, seed: 41).roundedToHalf(H.self)
        let exact = linearReference(c, x)
        let straightforward = linearReference(c, x, arithmetic: Float.self).roundingTokens(to: H.self)
        try forEachSupportedISA { isa in
            let label = "\(H.dtype.name) \(map) \(isa)"
            let q = HalfTestTensor<H>(shape: c.qShape, strided: true, values: x.q)
            let k = HalfTestTensor<H>(shape: c.kShape, strided: true, values: x.k)
            let v = HalfTestTensor<H>(shape: c.vShape, strided: true, values: x.v)
            let q32 = LinearTestTensor<Float>(shape: c.qShape, values: x.q), k32 = LinearTestTensor<Float>(shape: c.kShape, values: x.k)
            let v32 = LinearTestTensor<Float>(shape: c.vShape, values: x.v)
            let rounded: ([Double]) -> [UInt16] = { $0.map { H(rounding: Float($0)).bits } }

            // Steps from a loaded state, against the float32 decoder on the widened tokens.
            let half = try decoder(c, state: x), single = try decoder(c, state: x)
            let out = HalfTestTensor<H>(shape: c.oShape, strided: true), out32 = LinearTestTensor<Float>(shape: c.oShape)
            for t in 0..<c.n {
                try half.step(query: q.token(t), key: k.token(t), value: v.token(t), output: out.mutableToken(t))
                try single.step(query: q32.token(t), key: k32.token(t), value: v32.token(t), output: out32.mutableToken(t))
            }
            XCTAssertEqual(out.bits, rounded(out32.values), "\(label): step = float32 step rounded once")
            XCTAssertEqual(try state(half, c), try state(single, c), "\(label): the float32 state")
            XCTAssertTrue(out.paddingUntouched, label)
            assertHalfAccuracy("decoder out", ours: out.values, exact: exact.out, straightforward: straightforward.out, label)
            // The half causal forward over the same tokens: the same values to one rounding.
            let (forward, _) = try runLinearHalf(c, x, as: H.self)
            assertWithinOneRounding(out.values, forward.out, H.self, "\(label): steps vs the causal forward")

            // Prefill 9 tokens, then step: the float32 decoder's bits, rounded.
            let prefilled = try decoder(c, state: x), prefilled32 = try decoder(c, state: x)
            let out2 = HalfTestTensor<H>(shape: c.oShape, strided: true), out2f = LinearTestTensor<Float>(shape: c.oShape)
            try prefilled.prefill(query: q.slice(0, 9), key: k.slice(0, 9), value: v.slice(0, 9), output: out2.mutableSlice(0, 9))
            try prefilled32.prefill(query: q32.slice(0, 9), key: k32.slice(0, 9), value: v32.slice(0, 9),
                                    output: out2f.mutableSlice(0, 9))
            for t in 9..<c.n {
                try prefilled.step(query: q.token(t), key: k.token(t), value: v.token(t), output: out2.mutableToken(t))
                try prefilled32.step(query: q32.token(t), key: k32.token(t), value: v32.token(t), output: out2f.mutableToken(t))
            }
            XCTAssertEqual(out2.bits, rounded(out2f.values), "\(label): prefill + steps = float32 rounded once")
            XCTAssertEqual(try state(prefilled, c), try state(prefilled32, c), "\(label): state after prefill + steps")
            assertWithinOneRounding(out2.values, out.values, H.self, "\(label): prefill + steps vs steps")

            // A caller-owned float32 state (padded rows): the decoder's own state's bits.
            let owner = try decoder(c)
            let s = LinearTestTensor<Float>(shape: c.sShape, strided: true, values: x.s0)
            let z = LinearTestTensor<Float>(shape: c.zShape, strided: true, values: x.z0)
            let out3 = HalfTestTensor<H>(shape: c.oShape, strided: true)
            for t in 0..<c.n {
                try owner.step(query: q.token(t), key: k.token(t), value: v.token(t), output: out3.mutableToken(t),
                               state: MutableLinearStateView(s: s.mutableView, z: z.mutableView))
            }
            XCTAssertEqual(out3.bits, out.bits, "\(label): caller state = own state")
            XCTAssertEqual(s.rawValues + z.rawValues, try state(half, c), "\(label): caller state's final value")
            XCTAssertTrue(s.paddingUntouched && z.paddingUntouched, label)
            XCTAssertTrue(try state(owner, c).allSatisfy { $0 == 0 }, "\(label): the decoder's own state untouched")
        }
    }

    func testStepsPrefillAndCallerStateEveryFeatureMap() throws {
        for map in LinearAttentionOptions.FeatureMap.allCases {
            try check(Float16.self, map: map)
            try check(BFloat16.self, map: map)
        }
    }

    /// Bad tokens are refused with the float32 call's messages; nothing is written and the
    /// state does not change.
    func testErrorsWriteNothing() throws {
        let c = problem(.eluPlusOne)
        let x = LinearInputs(c, seed: 42).roundedToHalf(Float16.self)
        let d = try decoder(c, state: x)
        let before = try state(d, c)
        let q = HalfTestTensor<Float16>(shape: c.qShape, values: x.q), v = HalfTestTensor<Float16>(shape: c.vShape, values: x.v)
        let wrongK = HalfTestTensor<Float16>(shape: SIMD4(c.b, c.h, c.n, c.d))
        let out = HalfTestTensor<Float16>(shape: c.oShape)
        let sentinel = out.bits
        XCTAssertThrowsError(try d.step(query: q.token(0), key: wrongK.token(0), value: v.token(0), output: out.mutableToken(0))) {
            let error = $0 as! PerformerError
            XCTAssertEqual(error.status, .shapeMismatch)
            XCTAssertTrue(error.message.hasPrefix("k.shape[1] = 4"), error.message)
        }
        // out over q: aliasing, found before anything is widened or written.
        let overlapping = MutableTensorView(base: UnsafeMutablePointer(mutating: q.token(0).base), shape: SIMD4(c.b, c.h, 1, c.m))
        let k = HalfTestTensor<Float16>(shape: c.kShape, values: x.k)
        XCTAssertThrowsError(try d.step(query: q.token(0), key: k.token(0), value: v.token(0), output: overlapping)) {
            XCTAssertEqual(($0 as! PerformerError).status, .aliasing)
        }
        XCTAssertThrowsError(try d.prefill(query: q.view, key: wrongK.view, value: v.view, output: out.mutableView)) {
            XCTAssertEqual(($0 as! PerformerError).status, .shapeMismatch)
        }
        XCTAssertEqual(out.bits, sentinel)
        XCTAssertEqual(try state(d, c), before)
    }
}

/// Fails unless a and b differ by at most one spacing of H at their magnitude plus the float32
/// rounding two summation orders may leave: the same float32 value up to float32 rounding, each
/// rounded once to H. The float32 part is 2^-20 of the largest |b| (16 float32 roundings of the
/// tensor's scale): an output that cancels to near zero (trigonometric features) keeps the
/// float32 error of its O(scale) terms, which can exceed one half-type spacing at its own
/// magnitude; every spacing at the tensor's scale is still 2^12 (bfloat16) or more times wider.
func assertWithinOneRounding<H: HalfTestScalar>(_ a: [Double], _ b: [Double], _: H.Type, _ label: String,
                                               file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, label, file: file, line: line)
    let mantissa = H.dtype == .float16 ? 10 : 7, smallest = H.dtype == .float16 ? 0x1p-24 : 0x1p-133
    let float32Slack = 0x1p-20 * (b.map(abs).max() ?? 0)
    for (index, (x, y)) in zip(a, b).enumerated() {
        let magnitude = max(abs(x), abs(y))
        let spacing = magnitude == 0 ? smallest : max(smallest, Double(sign: .plus, exponent: magnitude.exponent - mantissa, significand: 1))
        if !(abs(x - y) <= spacing + float32Slack) {
            XCTFail("\(label): [\(index)] \(x) vs \(y), more than one rounding (\(spacing)) + \(float32Slack) apart", file: file, line: line)
            return
        }
    }
}

import PerformerCore
import XCTest

/// Linear attention on float16 and bfloat16 storage (docs/HALF_PRECISION.md), on every kernel
/// build the CPU runs. The accuracy rule is FlashAttention's: against the float64 reference on
/// the same (half) inputs, our output, every gradient, the float32 states and denominators have a
/// max error at most twice that of the straightforward evaluation (`linearReference` in float32
/// arithmetic, the half results rounded to half).
final class LinearHalfPrecisionTests: XCTestCase {
    private func check<H: HalfTestScalar>(_ c: LinearCase, as _: H.Type, seed: UInt64, scale: (q: Double, v: Double) = (1, 1),
                                          file: StaticString = #filePath, line: UInt = #line) throws {
        var inputs = LinearInputs(c, seed: seed)
        inputs.q = inputs.q.map { $0 * scale.q }
        inputs.k = inputs.k.map { $0 * scale.q }
        inputs.v = inputs.v.map { $0 * scale.v }
        let x = inputs.roundedToHalf(H.self)
        let exact = linearReference(c, x)
        let straightforward = linearReference(c, x, arithmetic: Float.self).roundingTokens(to: H.self)
        try forEachSupportedISA { isa in
            let (ours, _) = try runLinearHalf(c, x, as: H.self, file: file, line: line)
            for ((name, got), ((_, want), (_, base))) in zip(ours.named, zip(exact.named, straightforward.named)) {
                assertHalfAccuracy(name, ours: got, exact: want, straightforward: base, "\(H.dtype.name) \(isa) \(c)",
                                   file: file, line: line)
            }
        }
    }

    private func checkBoth(_ c: LinearCase, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) throws {
        try check(c, as: Float16.self, seed: seed, file: file, line: line)
        try check(c, as: BFloat16.self, seed: seed, file: file, line: line)
    }

    func testNotCausalGroupedHeadsWithStateStrided() throws {
        try checkBoth(LinearCase(b: 2, h: 4, hk: 2, n: 37, l: 45, d: 8, m: 6, withState: true, strided: true), seed: 1)
    }

    /// N past the kernels' chunk length, so the chunked causal path carries states across chunks.
    func testCausalChunkedWithState() throws {
        try checkBoth(LinearCase(b: 1, h: 2, hk: 1, n: 150, l: 150, d: 16, m: 8, causal: true, withState: true), seed: 2)
    }

    func testCausalReluKeyLengthsAndStarts() throws {
        try checkBoth(LinearCase(b: 3, h: 2, hk: 2, n: 70, l: 70, d: 8, m: 8, causal: true, featureMap: .relu,
                                 keyLengths: [70, 41, 9], keyStarts: [0, 12, 9]), seed: 3)
    }

    func testNotCausalKeyRangesWithState() throws {
        try checkBoth(LinearCase(b: 2, h: 2, hk: 1, n: 20, l: 33, d: 8, m: 4, keyLengths: [33, 17], keyStarts: [5, 0],
                                 withState: true), seed: 4)
    }

    func testUnnormalizedMixedSignIdentityFeatures() throws {
        try checkBoth(LinearCase(b: 1, h: 2, hk: 1, n: 90, l: 90, d: 8, m: 8, causal: true, featureMap: .identity,
                                 withState: true, normalize: false, mixedSigns: true), seed: 5)
        try checkBoth(LinearCase(b: 1, h: 1, hk: 1, n: 30, l: 40, d: 8, m: 8, featureMap: .identity, normalize: false,
                                 mixedSigns: true), seed: 6)
    }

    /// Values near float16's largest (65504): the states (float32) pass it by far, outputs
    /// (weighted averages of v) do not, and nothing becomes infinite.
    func testFloat16LargeValuesStayFinite() throws {
        let c = LinearCase(b: 1, h: 2, hk: 1, n: 80, l: 80, d: 8, m: 8, causal: true, withState: true)
        try check(c, as: Float16.self, seed: 7, scale: (1, 20000))
        var inputs = LinearInputs(c, seed: 7)
        inputs.v = inputs.v.map { $0 * 20000 }
        let x = inputs.roundedToHalf(Float16.self)
        let (ours, _) = try runLinearHalf(c, x, as: Float16.self)
        XCTAssertGreaterThan(ours.sN.map(abs).max()!, 65504, "the state must pass float16's range")
        XCTAssertGreaterThan(ours.out.map(abs).max()!, 10000, "outputs must be large")
        for ((name, got), (_, want)) in zip(ours.named, linearReference(c, x).named) {
            for (a, e) in zip(got, want) where abs(e) < 65000 {
                XCTAssertTrue(a.isFinite, "\(name): \(a) where the exact value is \(e)")
            }
        }
    }

    /// bfloat16 values in float32's denormal range (below 2^-126): widened exactly, computed
    /// with gradual underflow, rounded once.
    func testBFloat16DenormalValues() throws {
        let c = LinearCase(b: 1, h: 1, hk: 1, n: 40, l: 40, d: 8, m: 8, causal: true)
        try check(c, as: BFloat16.self, seed: 8, scale: (1, 1e-39))
        var inputs = LinearInputs(c, seed: 8)
        inputs.v = inputs.v.map { $0 * 1e-39 }
        let (ours, _) = try runLinearHalf(c, inputs.roundedToHalf(BFloat16.self), as: BFloat16.self)
        XCTAssertTrue(ours.out.contains { $0 != 0 && abs($0) < 0x1p-126 }, "outputs must be denormal, not flushed")
    }

    func testBitIdenticalAcrossThreadCounts() throws {
        let c = LinearCase(b: 1, h: 4, hk: 2, n: 300, l: 300, d: 16, m: 16, causal: true, withState: true)
        let x = LinearInputs(c, seed: 9).roundedToHalf(BFloat16.self)
        let original = Runtime.numThreads
        defer { try! Runtime.setNumThreads(original) }
        var runs: [[[UInt16]]] = []
        for threads in [1, 2, 3] {
            try Runtime.setNumThreads(threads)
            runs.append(try runLinearHalf(c, x, as: BFloat16.self).1)
        }
        for run in runs.dropFirst() { XCTAssertEqual(run, runs[0]) }
    }

    /// State-only calls: the state of half keys and values (float32, in place over the initial
    /// state) and its backward are the float32 calls' on the widened tensors (dk, dv rounded once).
    func testStateOnlyCallsAreTheFloat32CallsRounded() throws {
        for type in [DType.float16, .bfloat16] {
            if type == .float16 { try checkStateOnly(Float16.self) } else { try checkStateOnly(BFloat16.self) }
        }
    }

    private func checkStateOnly<H: HalfTestScalar>(_: H.Type) throws {
        let c = LinearCase(b: 2, h: 4, hk: 2, n: 1, l: 75, d: 8, m: 6, keyLengths: [75, 30], keyStarts: [3, 0],
                           withState: true, strided: true)
        let x = LinearInputs(c, seed: 12).roundedToHalf(H.self)
        let k = HalfTestTensor<H>(shape: c.kShape, strided: true, values: x.k)
        let v = HalfTestTensor<H>(shape: c.vShape, strided: true, values: x.v)
        let k32 = LinearTestTensor<Float>(shape: c.kShape, values: x.k), v32 = LinearTestTensor<Float>(shape: c.vShape, values: x.v)
        let s = LinearTestTensor<Float>(shape: c.sShape, values: x.s0), z = LinearTestTensor<Float>(shape: c.zShape, values: x.z0)
        let s32 = LinearTestTensor<Float>(shape: c.sShape, values: x.s0), z32 = LinearTestTensor<Float>(shape: c.zShape, values: x.z0)
        let ds = LinearTestTensor<Float>(shape: c.sShape, values: x.dsN), dz = LinearTestTensor<Float>(shape: c.zShape, values: x.dzN)
        let dk = HalfTestTensor<H>(shape: c.kShape, strided: true), dv = HalfTestTensor<H>(shape: c.vShape, strided: true)
        let dk32 = LinearTestTensor<Float>(shape: c.kShape), dv32 = LinearTestTensor<Float>(shape: c.vShape)
        let ds0 = LinearTestTensor<Float>(shape: c.sShape), dz0 = LinearTestTensor<Float>(shape: c.zShape)
        let ds032 = LinearTestTensor<Float>(shape: c.sShape), dz032 = LinearTestTensor<Float>(shape: c.zShape)
        defer { withExtendedLifetime((k, v, dk, dv, [k32, v32, s, z, s32, z32, ds, dz, dk32, dv32, ds0, dz0, ds032, dz032])) {} }
        let options = c.options
        try forEachSupportedISA { isa in
            s.set(x.s0); z.set(x.z0); s32.set(x.s0); z32.set(x.z0)
            try LinearAttention.state(key: k.view, value: v.view, initialState: LinearStateView(s: s.view, z: z.view),
                                      finalState: MutableLinearStateView(s: s.mutableView, z: z.mutableView), options: options)
            try LinearAttention.state(key: k32.view, value: v32.view, initialState: LinearStateView(s: s32.view, z: z32.view),
                                      finalState: MutableLinearStateView(s: s32.mutableView, z: z32.mutableView), options: options)
            XCTAssertEqual(s.rawValues, s32.rawValues, "\(H.dtype.name) \(isa) S_out")
            XCTAssertEqual(z.rawValues, z32.rawValues, "\(H.dtype.name) \(isa) z_out")
            try LinearAttention.stateBackward(key: k.view, value: v.view, finalStateGradient: LinearStateView(s: ds.view, z: dz.view),
                                              keyGradient: dk.mutableView, valueGradient: dv.mutableView,
                                              initialStateGradient: MutableLinearStateView(s: ds0.mutableView, z: dz0.mutableView),
                                              options: options)
            try LinearAttention.stateBackward(key: k32.view, value: v32.view,
                                              finalStateGradient: LinearStateView(s: ds.view, z: dz.view),
                                              keyGradient: dk32.mutableView, valueGradient: dv32.mutableView,
                                              initialStateGradient: MutableLinearStateView(s: ds032.mutableView, z: dz032.mutableView),
                                              options: options)
            XCTAssertEqual(dk.bits, dk32.rawValues.map { H(rounding: $0).bits }, "\(H.dtype.name) \(isa) dk")
            XCTAssertEqual(dv.bits, dv32.rawValues.map { H(rounding: $0).bits }, "\(H.dtype.name) \(isa) dv")
            XCTAssertEqual(ds0.rawValues, ds032.rawValues)
            XCTAssertEqual(dz0.rawValues, dz032.rawValues)
            XCTAssertTrue(dk.paddingUntouched && dv.paddingUntouched)
        }
    }

    /// The half tensors get the float32 checks and messages; nothing is written on error.
    func testInvalidArgumentsGiveFloat32MessagesAndWriteNothing() throws {
        let c = LinearCase(b: 1, h: 1, hk: 1, n: 4, l: 5, d: 8, m: 8, causal: false)
        let q = HalfTestTensor<Float16>(shape: c.qShape, values: [Double](repeating: 0.5, count: 32))
        let badKey = HalfTestTensor<Float16>(shape: SIMD4(1, 1, 5, 6))
        let k = HalfTestTensor<Float16>(shape: c.kShape), v = HalfTestTensor<Float16>(shape: c.vShape)
        let out = HalfTestTensor<Float16>(shape: c.oShape)
        let untouched = out.bits
        assertThrowsPerformerError(.shapeMismatch, containing: "k.shape[3] = 6 but q.shape[3] = 8 (head dim)") {
            try LinearAttention.forward(query: q.view, key: badKey.view, value: v.view, output: out.mutableView)
        }
        let badState = LinearTestTensor<Float>(shape: SIMD4(1, 1, 7, 8)), z = LinearTestTensor<Float>(shape: c.zShape)
        assertThrowsPerformerError(.shapeMismatch, containing: "S0") {
            try LinearAttention.forward(query: q.view, key: k.view, value: v.view, output: out.mutableView,
                                        initialState: LinearStateView(s: badState.view, z: z.view))
        }
        assertThrowsPerformerError(.invalidArgument, containing: "kv_lengths[0] = 6") {
            try LinearAttention.forward(query: q.view, key: k.view, value: v.view, output: out.mutableView,
                                        options: LinearAttentionOptions(keyLengths: [6]))
        }
        assertThrowsPerformerError(.aliasing, containing: "overlaps") {
            try LinearAttention.forward(query: out.view, key: k.view, value: v.view, output: out.mutableView)
        }
        XCTAssertEqual(out.bits, untouched)
        let dq = HalfTestTensor<Float16>(shape: SIMD4(1, 1, 4, 7)), dk = HalfTestTensor<Float16>(shape: c.kShape)
        let dv = HalfTestTensor<Float16>(shape: c.vShape)
        assertThrowsPerformerError(.shapeMismatch, containing: "dq") {
            try LinearAttention.backward(query: q.view, key: k.view, value: v.view, outputGradient: out.view,
                                         queryGradient: dq.mutableView, keyGradient: dk.mutableView, valueGradient: dv.mutableView)
        }
        withExtendedLifetime((q, badKey, k, v, out, badState, z, dq, dk, dv)) {}
    }
}

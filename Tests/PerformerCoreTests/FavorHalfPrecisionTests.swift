import PerformerCore
import XCTest

/// FAVOR+ attention and its feature map on float16 and bfloat16 storage
/// (docs/HALF_PRECISION.md), on every kernel build the CPU runs. The accuracy rule is
/// FlashAttention's: against the float64 evaluation on the same (half) inputs, our output and
/// every gradient have a max error at most twice that of the straightforward evaluation
/// (`favorExplicit` / `favorRow` in float32 arithmetic, results rounded to half). Calls with a
/// state are checked against the contract instead: the bits of the float32 call on the widened
/// inputs, the half results rounded once, the float32 state untouched by rounding.
final class FavorHalfPrecisionTests: XCTestCase {
    /// W as the float32 kernels use it (rounded to float32), so the reference sees the same W.
    private func projection(_ fc: FavorCase) throws -> FavorProjection {
        let w = try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: fc.seed &+ 100)
        return try FavorProjection(matrix: w.matrixFloat, numFeatures: w.numFeatures, dim: w.dim)
    }

    private func check<H: HalfTestScalar>(_ fc: FavorCase, as _: H.Type, file: StaticString = #filePath, line: UInt = #line) throws {
        let w = try projection(fc)
        let x = FavorInputs(fc, projection: w).roundedToHalf(H.self)
        let exact = favorExplicit(fc, x, w, arithmetic: Double.self)
        let float = favorExplicit(fc, x, w, arithmetic: Float.self)
        let half: ([Double]) -> [Double] = { $0.map { Double(H(rounding: Float($0)).float) } }
        let expected = [("out", exact.out, half(float.out)), ("dq", exact.dq, half(float.dq)), ("dk", exact.dk, half(float.dk)),
                        ("dv", exact.dv, half(float.dv))]
        try forEachSupportedISA { isa in
            let ours = try runFavorHalf(fc, x, w, as: H.self, file: file, line: line)
            for (index, (name, want, straightforward)) in expected.enumerated() {
                assertHalfAccuracy(name, ours: ours[index], exact: want, straightforward: straightforward,
                                   "\(H.dtype.name) \(isa) \(fc)", file: file, line: line)
            }
        }
    }

    private func checkBoth(_ fc: FavorCase, file: StaticString = #filePath, line: UInt = #line) throws {
        try check(fc, as: Float16.self, file: file, line: line)
        try check(fc, as: BFloat16.self, file: file, line: line)
    }

    func testPositiveNotCausalGroupedHeadsStrided() throws {
        try checkBoth(FavorCase(b: 2, h: 4, hk: 2, n: 23, l: 31, d: 8, m: 16, mv: 6, strided: true, seed: 1))
    }

    func testPositiveCausalChunked() throws {
        try checkBoth(FavorCase(b: 1, h: 2, hk: 1, n: 150, l: 150, d: 16, m: 32, mv: 8, causal: true, seed: 2))
    }

    func testHyperbolicCausalKeyLengthsAndStarts() throws {
        try checkBoth(FavorCase(b: 3, h: 2, hk: 2, n: 40, l: 40, d: 8, m: 16, mv: 8, causal: true, kind: .hyperbolic,
                                keyLengths: [40, 25, 6], keyStarts: [0, 7, 6], seed: 3))
    }

    func testTrigonometricNotCausal() throws {
        try checkBoth(FavorCase(b: 1, h: 2, hk: 1, n: 20, l: 30, d: 8, m: 16, mv: 4, kind: .trigonometric, epsilon: 1e-3,
                                inputScale: 0.3, seed: 4))
    }

    func testReluCausalAndNotCausal() throws {
        try checkBoth(FavorCase(b: 1, h: 2, hk: 2, n: 70, l: 70, d: 8, m: 16, mv: 8, causal: true, kind: .relu, seed: 5))
        try checkBoth(FavorCase(b: 2, h: 1, hk: 1, n: 15, l: 25, d: 8, m: 16, mv: 8, kind: .relu, keyLengths: [25, 10], seed: 6))
    }

    /// With a state (every feature kind): out, dq, dk, dv are the float32 call's on the widened
    /// inputs, rounded once; the float32 state, its shift and the state gradients are its bits.
    func testStatesAreTheFloat32CallsBits() throws {
        for kind in FavorFeatureKind.allCases {
            let fc = FavorCase(b: 1, h: 2, hk: 1, n: 70, l: 70, d: 8, m: 8, mv: 4, causal: true, kind: kind,
                               withState: true, inputScale: 0.4, seed: 7)
            try matches(fc, as: Float16.self)
            try matches(fc, as: BFloat16.self)
        }
    }

    private func matches<H: HalfTestScalar>(_ fc: FavorCase, as _: H.Type) throws {
        let w = try projection(fc)
        let x = FavorInputs(fc, projection: w).roundedToHalf(H.self)
        let single = try runFavor(fc, x, w, as: Float.self)
        let half: ([Double]) -> [Double] = { $0.map { Double(H(rounding: Float($0)).float) } }
        let expected = [half(single.out), half(single.dq), half(single.dk), half(single.dv), single.sTilde, single.zTilde,
                        single.cN, single.ds0, single.dz0]
        let ours = try runFavorHalf(fc, x, w, as: H.self)
        for (index, name) in ["out", "dq", "dk", "dv", "S_N", "z_N", "c_N", "dS0", "dz0"].enumerated() {
            XCTAssertEqual(ours[index], expected[index], "\(H.dtype.name) \(fc) \(name)")
        }
    }

    func testBitIdenticalAcrossThreadCounts() throws {
        let fc = FavorCase(b: 1, h: 4, hk: 2, n: 200, l: 200, d: 16, m: 32, mv: 16, causal: true, withState: true, seed: 8)
        let w = try projection(fc)
        let x = FavorInputs(fc, projection: w).roundedToHalf(Float16.self)
        let original = Runtime.numThreads
        defer { try! Runtime.setNumThreads(original) }
        var runs: [[[Double]]] = []
        for threads in [1, 2, 3] {
            try Runtime.setNumThreads(threads)
            runs.append(try runFavorHalf(fc, x, w, as: Float16.self))
        }
        for run in runs.dropFirst() { XCTAssertEqual(run, runs[0]) }
    }

    // MARK: state-only calls

    /// The state of half keys and values (every feature kind; float32 triple, updated in place)
    /// and its backward are the float32 calls' on the widened tensors, dk and dv rounded once.
    func testStateOnlyCallsAreTheFloat32CallsRounded() throws {
        for kind in FavorFeatureKind.allCases {
            try checkStateOnly(kind, as: Float16.self)
            try checkStateOnly(kind, as: BFloat16.self)
        }
    }

    private func checkStateOnly<H: HalfTestScalar>(_ kind: FavorFeatureKind, as _: H.Type) throws {
        let fc = FavorCase(b: 1, h: 2, hk: 1, n: 1, l: 50, d: 8, m: 8, mv: 4, causal: true, kind: kind,
                           keyLengths: [41], keyStarts: [2], withState: true, inputScale: 0.5, seed: 9)
        let w = try projection(fc)
        let x = FavorInputs(fc, projection: w).roundedToHalf(H.self)
        let k = HalfTestTensor<H>(shape: fc.kShape, strided: true, values: x.k)
        let v = HalfTestTensor<H>(shape: fc.vShape, values: x.v)
        let k32 = LinearTestTensor<Float>(shape: fc.kShape, values: x.k), v32 = LinearTestTensor<Float>(shape: fc.vShape, values: x.v)
        func triple() -> [LinearTestTensor<Float>] {
            [LinearTestTensor<Float>(shape: fc.sShape, values: x.s0), LinearTestTensor<Float>(shape: fc.zShape, values: x.z0),
             LinearTestTensor<Float>(shape: fc.zShape, values: x.c0)]
        }
        let (ours, theirs) = (triple(), triple())
        let ds = LinearTestTensor<Float>(shape: fc.sShape, values: x.dsN), dz = LinearTestTensor<Float>(shape: fc.zShape, values: x.dzN)
        let dk = HalfTestTensor<H>(shape: fc.kShape), dv = HalfTestTensor<H>(shape: fc.vShape)
        let dk32 = LinearTestTensor<Float>(shape: fc.kShape), dv32 = LinearTestTensor<Float>(shape: fc.vShape)
        defer { withExtendedLifetime((k, v, dk, dv, [k32, v32, ds, dz, dk32, dv32] + ours + theirs)) {} }
        let options = FavorAttentionOptions(features: FavorFeatureOptions(kind: kind), keyLengths: fc.keyLengths,
                                            keyStarts: fc.keyStarts)
        let initial = { (t: [LinearTestTensor<Float>]) in FavorStateView(s: t[0].view, z: t[1].view, c: t[2].view) }
        // The backward reads the initial state: take it before the in-place update.
        try FavorAttention.stateBackward(key: k.view, value: v.view, projection: w, finalStateGradient: LinearStateView(s: ds.view, z: dz.view),
                                         keyGradient: dk.mutableView, valueGradient: dv.mutableView, initialState: initial(ours),
                                         options: options)
        try FavorAttention.stateBackward(key: k32.view, value: v32.view, projection: w,
                                         finalStateGradient: LinearStateView(s: ds.view, z: dz.view),
                                         keyGradient: dk32.mutableView, valueGradient: dv32.mutableView, initialState: initial(theirs),
                                         options: options)
        XCTAssertEqual(dk.bits, dk32.rawValues.map { H(rounding: $0).bits }, "\(H.dtype.name) \(kind.name) dk")
        XCTAssertEqual(dv.bits, dv32.rawValues.map { H(rounding: $0).bits }, "\(H.dtype.name) \(kind.name) dv")
        for t in [ours, theirs] {
            let final = MutableFavorStateView(s: t[0].mutableView, z: t[1].mutableView, c: t[2].mutableView)
            if t[0] === ours[0] {
                try FavorAttention.state(key: k.view, value: v.view, projection: w, initialState: initial(t), finalState: final,
                                         options: options)
            } else {
                try FavorAttention.state(key: k32.view, value: v32.view, projection: w, initialState: initial(t), finalState: final,
                                         options: options)
            }
        }
        for index in 0..<3 { XCTAssertEqual(ours[index].rawValues, theirs[index].rawValues, "\(H.dtype.name) \(kind.name) state") }
    }

    // MARK: the feature map

    private func checkFeatures<H: HalfTestScalar>(_ kind: FavorFeatureKind, as _: H.Type, seed: UInt64) throws {
        let (rows, d, m) = (37, 8, 12)
        let fc = FavorCase(b: 1, h: 1, n: rows, l: 1, d: d, m: m, kind: kind, seed: seed)
        let w = try projection(fc)
        let c = kind.featureCount(numFeatures: m)
        var random = LinearTestRandom(seed: seed)
        let half: ([Double]) -> [Double] = { $0.map { Double(H(rounding: Float($0)).float) } }
        let xs = half(random.array(rows * d).map { $0 * 0.7 }), gs = half(random.array(rows * c))
        var exact: (phi: [Double], dx: [Double]) = ([], []), float: (phi: [Double], dx: [Double]) = ([], [])
        for r in 0..<rows {
            let xRow = Array(xs[(r * d)..<((r + 1) * d)]), gRow = Array(gs[(r * c)..<((r + 1) * c)])
            let e = favorRow(xRow, w, kind: kind, featureGradient: gRow)
            let f = favorRow(xRow.map { Float($0) }, w, kind: kind, featureGradient: gRow.map { Float($0) })
            exact.phi += e.phi; exact.dx += e.dx
            float.phi += f.phi.map { Double($0) }; float.dx += f.dx.map { Double($0) }
        }
        let x = HalfTestTensor<H>(shape: SIMD4(1, 1, rows, d), strided: true, values: xs)
        let g = HalfTestTensor<H>(shape: SIMD4(1, 1, rows, c), values: gs)
        let phi = HalfTestTensor<H>(shape: SIMD4(1, 1, rows, c), strided: true)
        let dx = HalfTestTensor<H>(shape: SIMD4(1, 1, rows, d))
        defer { withExtendedLifetime((x, g, phi, dx)) {} }
        let options = FavorFeatureOptions(kind: kind)
        try forEachSupportedISA { isa in
            try FavorFeatures.forward(input: x.view, projection: w, output: phi.mutableView, options: options)
            try FavorFeatures.backward(input: x.view, featureGradient: g.view, projection: w, inputGradient: dx.mutableView,
                                       options: options)
            let label = "\(H.dtype.name) \(isa) \(kind.name)"
            XCTAssertTrue(phi.paddingUntouched, label)
            assertHalfAccuracy("features", ours: phi.values, exact: exact.phi, straightforward: half(float.phi), label)
            assertHalfAccuracy("dx", ours: dx.values, exact: exact.dx, straightforward: half(float.dx), label)
        }
    }

    func testFeatureMapEveryKind() throws {
        for (index, kind) in FavorFeatureKind.allCases.enumerated() {
            try checkFeatures(kind, as: Float16.self, seed: 20 + UInt64(index))
            try checkFeatures(kind, as: BFloat16.self, seed: 30 + UInt64(index))
        }
    }

    /// The half tensors get the float32 checks and messages; nothing is written on error.
    func testInvalidArgumentsGiveFloat32MessagesAndWriteNothing() throws {
        // M = D, so out has q's shape and can be laid over it.
        let fc = FavorCase(b: 1, h: 1, hk: 1, n: 4, l: 4, d: 8, m: 8, mv: 8, causal: false)
        let w = try projection(fc)
        let q = HalfTestTensor<BFloat16>(shape: fc.qShape), k = HalfTestTensor<BFloat16>(shape: fc.kShape)
        let badKey = HalfTestTensor<BFloat16>(shape: SIMD4(1, 1, 4, 6)), v = HalfTestTensor<BFloat16>(shape: fc.vShape)
        let out = HalfTestTensor<BFloat16>(shape: fc.oShape)
        let untouched = out.bits
        assertThrowsPerformerError(.shapeMismatch, containing: "k.shape[3] = 6 but q.shape[3] = 8 (head dim)") {
            try FavorAttention.forward(query: q.view, key: badKey.view, value: v.view, projection: w, output: out.mutableView)
        }
        let s = LinearTestTensor<Float>(shape: fc.sShape), z = LinearTestTensor<Float>(shape: fc.zShape)
        let c = LinearTestTensor<Float>(shape: fc.zShape)
        let badZ = LinearTestTensor<Float>(shape: SIMD4(fc.zShape[0], fc.zShape[1], fc.zShape[2] + 1, fc.zShape[3]))
        assertThrowsPerformerError(.shapeMismatch, containing: "z0") {
            try FavorAttention.forward(query: q.view, key: k.view, value: v.view, projection: w, output: out.mutableView,
                                       initialState: FavorStateView(s: s.view, z: badZ.view, c: c.view))
        }
        assertThrowsPerformerError(.aliasing, containing: "overlaps") {
            try FavorAttention.forward(query: out.view, key: k.view, value: v.view, projection: w, output: out.mutableView)
        }
        XCTAssertEqual(out.bits, untouched)
        let phi = HalfTestTensor<BFloat16>(shape: SIMD4(1, 1, 4, 9))
        assertThrowsPerformerError(.shapeMismatch, containing: "features") {
            try FavorFeatures.forward(input: q.view, projection: w, output: phi.mutableView)
        }
        withExtendedLifetime((q, k, badKey, v, out, s, z, badZ, c, phi)) {}
    }
}

import XCTest
import PerformerCore

/// The decoder stepping a state the caller owns: the same bits as its own state, in every
/// layout (contiguous, padded rows, transposed S, which goes through the staged copy), the
/// decoder's own state untouched, and bad states refused before anything is written.
final class LinearDecoderCallerStateTests: XCTestCase {
    /// B=2, H=4, Hk=2 (GQA), D=C=5, M=19 (vector and scalar tails of the step's column blocks).
    let c = LinearCase(b: 2, h: 4, hk: 2, n: 23, l: 23, d: 5, m: 19, causal: true, withState: true)

    /// A B×H×C×M state whose M axis is the slow one (stride C): not kernel-readable.
    private final class TransposedState<T: AttentionScalar> {
        let shape: SIMD4<Int>, strides: SIMD4<Int>
        let storage: UnsafeMutablePointer<T>
        init(shape: SIMD4<Int>, values: [Double]) {
            self.shape = shape
            strides = SIMD4(shape[1] * shape[2] * shape[3], shape[2] * shape[3], 1, shape[2])
            storage = .allocate(capacity: values.count)
            for b in 0..<shape[0] { for h in 0..<shape[1] { for f in 0..<shape[2] { for j in 0..<shape[3] {
                let i = ((b * shape[1] + h) * shape[2] + f) * shape[3] + j
                storage[b * strides[0] + h * strides[1] + f * strides[2] + j * strides[3]] = T(values[i])
            } } } }
        }
        deinit { storage.deallocate() }
        var mutableView: MutableTensorView<T> { MutableTensorView(base: storage, shape: shape, strides: strides) }
        var rawValues: [T] {
            var result: [T] = []
            for b in 0..<shape[0] { for h in 0..<shape[1] { for f in 0..<shape[2] { for j in 0..<shape[3] {
                result.append(storage[b * strides[0] + h * strides[1] + f * strides[2] + j * strides[3]])
            } } } }
            return result
        }
    }

    private func check<T: AttentionScalar>(_: T.Type, map: LinearAttentionOptions.FeatureMap) throws {
        let x = LinearInputs(c, seed: 31)
        let q = LinearTestTensor<T>(shape: c.qShape, values: x.q), k = LinearTestTensor<T>(shape: c.kShape, values: x.k)
        let v = LinearTestTensor<T>(shape: c.vShape, values: x.v)
        let positiveZ = x.z0.map { abs($0) + 0.5 }
        let own = try LinearAttentionDecoder<T>(batch: c.b, heads: c.h, keyHeads: c.hk, headDim: c.d, valueDim: c.m,
                                                featureMap: map, epsilon: c.epsilon)
        let caller = try LinearAttentionDecoder<T>(batch: c.b, heads: c.h, keyHeads: c.hk, headDim: c.d, valueDim: c.m,
                                                   featureMap: map, epsilon: c.epsilon)
        let s0 = LinearTestTensor<T>(shape: c.sShape, values: x.s0), z0 = LinearTestTensor<T>(shape: c.zShape, values: positiveZ)
        try own.loadState(LinearStateView(s: s0.view, z: z0.view))
        // Three caller layouts: contiguous, padded rows (unit stride, gaps), transposed S.
        let plain = (LinearTestTensor<T>(shape: c.sShape, values: x.s0), LinearTestTensor<T>(shape: c.zShape, values: positiveZ))
        let padded = (LinearTestTensor<T>(shape: c.sShape, strided: true, values: x.s0),
                      LinearTestTensor<T>(shape: c.zShape, strided: true, values: positiveZ))
        let transposed = (TransposedState<T>(shape: c.sShape, values: x.s0), LinearTestTensor<T>(shape: c.zShape, values: positiveZ))
        let states = [
            MutableLinearStateView(s: plain.0.mutableView, z: plain.1.mutableView),
            MutableLinearStateView(s: padded.0.mutableView, z: padded.1.mutableView),
            MutableLinearStateView(s: transposed.0.mutableView, z: transposed.1.mutableView),
        ]
        let expected = LinearTestTensor<T>(shape: c.oShape)
        let outputs = states.map { _ in LinearTestTensor<T>(shape: c.oShape) }
        for t in 0..<c.n {
            try own.step(query: q.token(t), key: k.token(t), value: v.token(t), output: expected.mutableToken(t))
            for (state, out) in zip(states, outputs) {
                try caller.step(query: q.token(t), key: k.token(t), value: v.token(t), output: out.mutableToken(t), state: state)
            }
        }
        for (index, out) in outputs.enumerated() {
            XCTAssertEqual(out.rawValues, expected.rawValues, "\(T.self) \(map) layout \(index): outputs")
        }
        let ownS = LinearTestTensor<T>(shape: c.sShape), ownZ = LinearTestTensor<T>(shape: c.zShape)
        try own.storeState(into: MutableLinearStateView(s: ownS.mutableView, z: ownZ.mutableView))
        XCTAssertEqual(plain.0.rawValues, ownS.rawValues, "\(T.self) \(map): contiguous S")
        XCTAssertEqual(padded.0.rawValues, ownS.rawValues, "\(T.self) \(map): padded S")
        XCTAssertEqual(transposed.0.rawValues, ownS.rawValues, "\(T.self) \(map): transposed S")
        for z in [plain.1, padded.1, transposed.1] { XCTAssertEqual(z.rawValues, ownZ.rawValues, "\(T.self) \(map): z") }
        XCTAssertTrue(padded.0.paddingUntouched && padded.1.paddingUntouched)
        // The caller-state decoder's own state stayed zero.
        try caller.storeState(into: MutableLinearStateView(s: ownS.mutableView, z: ownZ.mutableView))
        XCTAssertTrue(ownS.values.allSatisfy { $0 == 0 } && ownZ.values.allSatisfy { $0 == 0 })
    }

    func testCallerStateMatchesOwnStateBitForBit() throws {
        for map in LinearAttentionOptions.FeatureMap.allCases {
            try check(Float.self, map: map)
            try check(Double.self, map: map)
        }
    }

    func testBadCallerStateIsRefusedBeforeAnyWrite() throws {
        let x = LinearInputs(c, seed: 32)
        let q = LinearTestTensor<Float>(shape: c.qShape, values: x.q), k = LinearTestTensor<Float>(shape: c.kShape, values: x.k)
        let v = LinearTestTensor<Float>(shape: c.vShape, values: x.v)
        let decoder = try LinearAttentionDecoder<Float>(batch: c.b, heads: c.h, keyHeads: c.hk, headDim: c.d, valueDim: c.m)
        let s = LinearTestTensor<Float>(shape: c.sShape, values: x.s0), z = LinearTestTensor<Float>(shape: c.zShape, values: x.z0)
        let out = LinearTestTensor<Float>(shape: c.oShape)
        let before = (s.rawValues, z.rawValues, out.rawValues)
        func expectError(_ status: PerformerStatus, _ fragment: String, _ state: MutableLinearStateView<Float>,
                         line: UInt = #line) {
            XCTAssertThrowsError(try decoder.step(query: q.token(0), key: k.token(0), value: v.token(0),
                                                  output: out.mutableToken(0), state: state), line: line) { error in
                let error = error as! PerformerError
                XCTAssertEqual(error.status, status, error.message, line: line)
                XCTAssertTrue(error.message.contains(fragment), error.message, line: line)
            }
            XCTAssertEqual(s.rawValues, before.0, line: line)
            XCTAssertEqual(z.rawValues, before.1, line: line)
            XCTAssertEqual(out.rawValues, before.2, line: line)
        }
        let wrongS = MutableTensorView(base: s.storage, shape: SIMD4(c.b, c.h, c.d, c.m - 1))
        expectError(.shapeMismatch, "S.shape[3]", MutableLinearStateView(s: wrongS, z: z.mutableView))
        let wrongZ = MutableTensorView(base: z.storage, shape: SIMD4(c.b, c.hk, c.d, 1))
        expectError(.shapeMismatch, "z.shape[1]", MutableLinearStateView(s: s.mutableView, z: wrongZ))
        // z inside S's memory, S over q's memory, S with overlapping rows.
        let zInS = MutableTensorView(base: s.storage + 3, shape: c.zShape)
        expectError(.aliasing, "z", MutableLinearStateView(s: s.mutableView, z: zInS))
        precondition(c.b * c.h * c.d * c.m <= c.b * c.h * c.n * c.d, "S must fit inside q's buffer")
        let sOverQ = MutableTensorView(base: q.storage, shape: c.sShape)
        expectError(.aliasing, "q", MutableLinearStateView(s: sOverQ, z: z.mutableView))
        let folded = MutableTensorView(base: s.storage, shape: c.sShape, strides: SIMD4(c.h * c.m, c.m, 1, 1))
        expectError(.aliasing, "S", MutableLinearStateView(s: folded, z: z.mutableView))
    }
}

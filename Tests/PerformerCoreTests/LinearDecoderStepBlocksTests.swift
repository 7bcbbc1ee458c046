import XCTest
import PerformerCore

/// The decoder step's state pass walks S in blocks of four vectors of columns, then single
/// vectors, then scalars: value dims that reach every block kind (and several blocks) on every
/// ISA (vectors of 2 to 16 elements), float32 and float64, against the float64 causal reference.
final class LinearDecoderStepBlocksTests: XCTestCase {
    private func check<T: AttentionScalar>(_: T.Type, m: Int, map: LinearAttentionOptions.FeatureMap) throws {
        let c = LinearCase(b: 1, h: 2, hk: 1, n: 6, l: 6, d: 7, m: m, causal: true, featureMap: map,
                           withState: true)
        // A carried state (the reference fills the final state only with one), z0 > 0: well-conditioned rows.
        var inputs = LinearInputs(c, seed: 40 + UInt64(m))
        inputs.z0 = inputs.z0.map { abs($0) + 0.5 }
        let x = inputs.rounded(to: T.self)
        let expected = linearReference(c, x)
        let q = LinearTestTensor<T>(shape: c.qShape, values: x.q), k = LinearTestTensor<T>(shape: c.kShape, values: x.k)
        let v = LinearTestTensor<T>(shape: c.vShape, values: x.v)
        let decoder = try LinearAttentionDecoder<T>(batch: c.b, heads: c.h, keyHeads: c.hk, headDim: c.d, valueDim: m,
                                                    featureMap: map, epsilon: c.epsilon)
        let s0 = LinearTestTensor<T>(shape: c.sShape, values: x.s0), z0 = LinearTestTensor<T>(shape: c.zShape, values: x.z0)
        try decoder.loadState(LinearStateView(s: s0.view, z: z0.view))
        let out = LinearTestTensor<T>(shape: c.oShape)
        for t in 0..<c.n {
            try decoder.step(query: q.token(t), key: k.token(t), value: v.token(t), output: out.mutableToken(t))
        }
        let s = LinearTestTensor<T>(shape: c.sShape), z = LinearTestTensor<T>(shape: c.zShape)
        try decoder.storeState(into: MutableLinearStateView(s: s.mutableView, z: z.mutableView))
        let tolerance = T.self == Float.self ? 2e-5 : 1e-12
        XCTAssertLessThan(linearRelativeError(out.values, expected.out), tolerance, "\(T.self) M = \(m) \(map): out")
        XCTAssertLessThan(linearRelativeError(s.values, expected.sN), tolerance, "\(T.self) M = \(m) \(map): S")
        XCTAssertLessThan(linearRelativeError(z.values, expected.zN), tolerance, "\(T.self) M = \(m) \(map): z")
    }

    /// The state pass goes in 256-bit sweep vectors over rows aligned to them (the decoder's own
    /// state), in a peeled layout over float32 rows 16 bytes off (xmm head and tail; AVX-512), and
    /// in native vectors over others (one element off): every element gets the same arithmetic in
    /// each, so they give the same bits, on every ISA (value dims whose blocks, tails and peeled
    /// sweeps differ).
    private func checkAlignmentsAgree<T: AttentionScalar>(_: T.Type, m: Int, offset: Int) throws {
        let c = LinearCase(b: 1, h: 2, hk: 1, n: 5, l: 5, d: 8, m: m, causal: true, withState: true)
        let x = LinearInputs(c, seed: 60 + UInt64(m))
        let q = LinearTestTensor<T>(shape: c.qShape, values: x.q), k = LinearTestTensor<T>(shape: c.kShape, values: x.k)
        let v = LinearTestTensor<T>(shape: c.vShape, values: x.v)
        let own = try LinearAttentionDecoder<T>(batch: c.b, heads: c.h, keyHeads: c.hk, headDim: c.d, valueDim: m)
        let caller = try LinearAttentionDecoder<T>(batch: c.b, heads: c.h, keyHeads: c.hk, headDim: c.d, valueDim: m)
        // `offset` elements past a 64-byte boundary: never aligned to a sweep vector.
        let sCount = c.b * c.h * c.d * m, zCount = c.b * c.h * c.d
        let memory = UnsafeMutableRawPointer.allocate(byteCount: (sCount + zCount + offset + 1) * MemoryLayout<T>.stride,
                                                      alignment: 64)
        defer { memory.deallocate() }
        let s = memory.bindMemory(to: T.self, capacity: sCount + zCount + offset + 1) + offset, z = s + sCount + 1
        s.initialize(repeating: 0, count: sCount)
        z.initialize(repeating: 0, count: zCount)
        let state = MutableLinearStateView(s: MutableTensorView(base: s, shape: c.sShape),
                                           z: MutableTensorView(base: z, shape: c.zShape))
        let expected = LinearTestTensor<T>(shape: c.oShape), out = LinearTestTensor<T>(shape: c.oShape)
        for t in 0..<c.n {
            try own.step(query: q.token(t), key: k.token(t), value: v.token(t), output: expected.mutableToken(t))
            try caller.step(query: q.token(t), key: k.token(t), value: v.token(t), output: out.mutableToken(t), state: state)
        }
        // XCTAssertTrue, not XCTAssertEqual: a failure names the case without printing every value.
        XCTAssertTrue(out.rawValues == expected.rawValues, "\(T.self) M = \(m) offset \(offset) \(Runtime.kernelISA): outputs differ")
        let ownS = LinearTestTensor<T>(shape: c.sShape), ownZ = LinearTestTensor<T>(shape: c.zShape)
        try own.storeState(into: MutableLinearStateView(s: ownS.mutableView, z: ownZ.mutableView))
        XCTAssertTrue(Array(UnsafeBufferPointer(start: s, count: sCount)) == ownS.rawValues,
                      "\(T.self) M = \(m) offset \(offset) \(Runtime.kernelISA): S differs")
        XCTAssertTrue(Array(UnsafeBufferPointer(start: z, count: zCount)) == ownZ.rawValues,
                      "\(T.self) M = \(m) offset \(offset) \(Runtime.kernelISA): z differs")
    }

    func testSweepAndNativeVectorsGiveTheSameBits() throws {
        let original = Runtime.kernelISA
        defer { try? Runtime.selectKernels(original) }
        for isa in Runtime.supportedISAs {
            try Runtime.selectKernels(isa)
            for m in [8, 24, 36, 40, 44, 48, 56, 64, 72, 99] {
                for offset in [1, 4] { try checkAlignmentsAgree(Float.self, m: m, offset: offset) }
                for offset in [1, 2] { try checkAlignmentsAgree(Double.self, m: m, offset: offset) }
            }
        }
    }

    func testEveryColumnBlockAgainstFloat64Reference() throws {
        for m in [1, 5, 19, 64, 96, 115, 243] {
            for map in LinearAttentionOptions.FeatureMap.allCases {
                try check(Float.self, m: m, map: map)
                try check(Double.self, m: m, map: map)
            }
        }
    }
}

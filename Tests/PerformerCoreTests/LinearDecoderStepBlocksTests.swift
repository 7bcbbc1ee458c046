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

    func testEveryColumnBlockAgainstFloat64Reference() throws {
        for m in [1, 5, 19, 64, 96, 115, 243] {
            for map in LinearAttentionOptions.FeatureMap.allCases {
                try check(Float.self, m: m, map: map)
                try check(Double.self, m: m, map: map)
            }
        }
    }
}

import XCTest
import PerformerCore

/// One call = pieces with a carried state = token-by-token decoder, for outputs and gradients
/// (float32, to float32 rounding).
final class LinearStateTests: XCTestCase {
    /// B=2, H=4, Hk=2 (GQA), N=150 (crosses chunk boundaries), D=5, M=7.
    let c = LinearCase(b: 2, h: 4, hk: 2, n: 150, l: 150, d: 5, m: 7, causal: true, withState: true)

    private func tensors(_ x: LinearInputs) -> (q: LinearTestTensor<Float>, k: LinearTestTensor<Float>, v: LinearTestTensor<Float>,
                                                dout: LinearTestTensor<Float>, s0: LinearTestTensor<Float>, z0: LinearTestTensor<Float>) {
        (LinearTestTensor(shape: c.qShape, values: x.q), LinearTestTensor(shape: c.kShape, values: x.k),
         LinearTestTensor(shape: c.vShape, values: x.v), LinearTestTensor(shape: c.oShape, values: x.dout),
         LinearTestTensor(shape: c.sShape, values: x.s0), LinearTestTensor(shape: c.zShape, values: x.z0))
    }

    func testPiecesWithCarriedStateEqualOneCall() throws {
        let x = LinearInputs(c, seed: 7).rounded(to: Float.self)
        let whole = try runLinear(c, x, as: Float.self)
        let (q, k, v, dout, s0, z0) = tensors(x)
        defer { withExtendedLifetime([q, k, v, dout, s0, z0]) {} }
        let dsN = LinearTestTensor<Float>(shape: c.sShape, values: x.dsN)
        let dzN = LinearTestTensor<Float>(shape: c.zShape, values: x.dzN)
        // Pieces of length 1, 0, 3, 64, 1, 81: single tokens, an empty piece, chunk-sized ones.
        let bounds = [0, 1, 1, 4, 68, 69, 150]
        let out = LinearTestTensor<Float>(shape: c.oShape)
        var states = [(LinearTestTensor<Float>(shape: c.sShape, values: x.s0), LinearTestTensor<Float>(shape: c.zShape, values: x.z0))]
        for p in 0..<(bounds.count - 1) {
            let (start, length) = (bounds[p], bounds[p + 1] - bounds[p])
            let next = (LinearTestTensor<Float>(shape: c.sShape), LinearTestTensor<Float>(shape: c.zShape))
            try LinearAttention.forward(
                query: q.slice(start, length), key: k.slice(start, length), value: v.slice(start, length),
                output: out.mutableSlice(start, length),
                initialState: LinearStateView(s: states[p].0.view, z: states[p].1.view),
                finalState: MutableLinearStateView(s: next.0.mutableView, z: next.1.mutableView), options: c.options)
            states.append(next)
        }
        XCTAssertLessThan(linearRelativeError(out.values, whole.out), 1e-5)
        XCTAssertLessThan(linearRelativeError(states.last!.0.values, whole.sN), 1e-5)
        XCTAssertLessThan(linearRelativeError(states.last!.1.values, whole.zN), 1e-5)

        // Backward from the last piece to the first: each piece's dS0 is the previous piece's dS_N.
        let dq = LinearTestTensor<Float>(shape: c.qShape), dk = LinearTestTensor<Float>(shape: c.kShape)
        let dv = LinearTestTensor<Float>(shape: c.vShape)
        var carried = (dsN, dzN)
        for p in stride(from: bounds.count - 2, through: 0, by: -1) {
            let (start, length) = (bounds[p], bounds[p + 1] - bounds[p])
            let previous = (LinearTestTensor<Float>(shape: c.sShape), LinearTestTensor<Float>(shape: c.zShape))
            try LinearAttention.backward(
                query: q.slice(start, length), key: k.slice(start, length), value: v.slice(start, length),
                outputGradient: dout.slice(start, length), queryGradient: dq.mutableSlice(start, length),
                keyGradient: dk.mutableSlice(start, length), valueGradient: dv.mutableSlice(start, length),
                initialState: LinearStateView(s: states[p].0.view, z: states[p].1.view),
                finalStateGradient: LinearStateView(s: carried.0.view, z: carried.1.view),
                initialStateGradient: MutableLinearStateView(s: previous.0.mutableView, z: previous.1.mutableView),
                options: c.options)
            carried = previous
        }
        XCTAssertLessThan(linearRelativeError(dq.values, whole.dq), 1e-5)
        XCTAssertLessThan(linearRelativeError(dk.values, whole.dk), 1e-5)
        XCTAssertLessThan(linearRelativeError(dv.values, whole.dv), 1e-5)
        XCTAssertLessThan(linearRelativeError(carried.0.values, whole.ds0), 1e-5)
        XCTAssertLessThan(linearRelativeError(carried.1.values, whole.dz0), 1e-5)
    }

    func testDecoderStepsEqualCausalForward() throws {
        for map in LinearAttentionOptions.FeatureMap.allCases {
            var c = self.c
            c.featureMap = map
            let x = LinearInputs(c, seed: 11).rounded(to: Float.self)
            let whole = try runLinear(c, x, as: Float.self)
            let (q, k, v, _, s0, z0) = tensors(x)
            defer { withExtendedLifetime([q, k, v, s0, z0]) {} }
            let decoder = try LinearAttentionDecoder<Float>(batch: c.b, heads: c.h, keyHeads: c.hk, headDim: c.d,
                                                            valueDim: c.m, featureMap: map, epsilon: c.epsilon)
            try withExtendedLifetime((s0, z0)) {
                try decoder.loadState(LinearStateView(s: s0.view, z: z0.view))
            }
            let out = LinearTestTensor<Float>(shape: c.oShape)
            for t in 0..<c.n {
                try decoder.step(query: q.token(t), key: k.token(t), value: v.token(t), output: out.mutableToken(t))
            }
            XCTAssertLessThan(linearRelativeError(out.values, whole.out), 1e-5, "\(map)")
            let s = LinearTestTensor<Float>(shape: c.sShape), z = LinearTestTensor<Float>(shape: c.zShape)
            try decoder.storeState(into: MutableLinearStateView(s: s.mutableView, z: z.mutableView))
            XCTAssertLessThan(linearRelativeError(s.values, whole.sN), 1e-5, "\(map)")
            XCTAssertLessThan(linearRelativeError(z.values, whole.zN), 1e-5, "\(map)")
        }
    }

    /// Prefill a prompt (from a zero state), then decode the rest: the same as one causal forward;
    /// `reset` starts over; `loadState` of a forward's final state continues it.
    func testPrefillThenDecodeAndReset() throws {
        var c = self.c
        c.withState = false
        let x = LinearInputs(c, seed: 12).rounded(to: Float.self)
        let whole = try runLinear(c, x, as: Float.self)
        let (q, k, v, _, _, _) = tensors(x)
        defer { withExtendedLifetime([q, k, v]) {} }
        let decoder = try LinearAttentionDecoder<Float>(batch: c.b, heads: c.h, keyHeads: c.hk, headDim: c.d, valueDim: c.m)
        for _ in 0..<2 {
            let out = LinearTestTensor<Float>(shape: c.oShape)
            let prompt = 70
            try decoder.prefill(query: q.slice(0, prompt), key: k.slice(0, prompt), value: v.slice(0, prompt),
                                output: out.mutableSlice(0, prompt))
            for t in prompt..<c.n {
                try decoder.step(query: q.token(t), key: k.token(t), value: v.token(t), output: out.mutableToken(t))
            }
            XCTAssertLessThan(linearRelativeError(out.values, whole.out), 1e-5)
            decoder.reset()
        }
        // A forward's final state primes a decoder.
        let s = LinearTestTensor<Float>(shape: c.sShape), z = LinearTestTensor<Float>(shape: c.zShape)
        let head = LinearTestTensor<Float>(shape: SIMD4(c.b, c.h, 100, c.m))
        try LinearAttention.forward(query: q.slice(0, 100), key: k.slice(0, 100), value: v.slice(0, 100),
                                    output: head.mutableView,
                                    finalState: MutableLinearStateView(s: s.mutableView, z: z.mutableView), options: c.options)
        try decoder.loadState(LinearStateView(s: s.view, z: z.view))
        let out = LinearTestTensor<Float>(shape: c.oShape)
        for t in 100..<c.n {
            try decoder.step(query: q.token(t), key: k.token(t), value: v.token(t), output: out.mutableToken(t))
        }
        let tail = (0..<c.b * c.h).flatMap { bh in (100 * c.m..<c.n * c.m).map { bh * c.n * c.m + $0 } }
        XCTAssertLessThan(linearRelativeError(tail.map { out.values[$0] }, tail.map { whole.out[$0] }), 1e-5)
    }
}

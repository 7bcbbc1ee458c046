import XCTest
import PerformerCore

/// Causality (bit for bit), key padding, and bad input.
final class LinearPropertyTests: XCTestCase {
    private func forward(_ c: LinearCase, _ x: LinearInputs) throws -> [Float] {
        let q = LinearTestTensor<Float>(shape: c.qShape, values: x.q), k = LinearTestTensor<Float>(shape: c.kShape, values: x.k)
        let v = LinearTestTensor<Float>(shape: c.vShape, values: x.v), out = LinearTestTensor<Float>(shape: c.oShape)
        defer { withExtendedLifetime([q, k, v]) {} }
        try LinearAttention.forward(query: q.view, key: k.view, value: v.view, output: out.mutableView, options: c.options)
        return out.rawValues
    }

    private func backward(_ c: LinearCase, _ x: LinearInputs) throws -> (dq: [Float], dk: [Float], dv: [Float]) {
        let q = LinearTestTensor<Float>(shape: c.qShape, values: x.q), k = LinearTestTensor<Float>(shape: c.kShape, values: x.k)
        let v = LinearTestTensor<Float>(shape: c.vShape, values: x.v), dout = LinearTestTensor<Float>(shape: c.oShape, values: x.dout)
        let dq = LinearTestTensor<Float>(shape: c.qShape), dk = LinearTestTensor<Float>(shape: c.kShape)
        let dv = LinearTestTensor<Float>(shape: c.vShape)
        defer { withExtendedLifetime([q, k, v, dout]) {} }
        try LinearAttention.backward(query: q.view, key: k.view, value: v.view, outputGradient: dout.view,
                                     queryGradient: dq.mutableView, keyGradient: dk.mutableView, valueGradient: dv.mutableView,
                                     options: c.options)
        return (dq.rawValues, dk.rawValues, dv.rawValues)
    }

    /// Changing q, k, v (and dout) at positions > i leaves outputs and dq at positions ≤ i
    /// unchanged, bit for bit, across chunk boundaries.
    func testCausalityBitForBit() throws {
        for map in LinearAttentionOptions.FeatureMap.allCases {
            let c = LinearCase(b: 1, h: 2, hk: 1, n: 150, l: 150, d: 6, m: 5, causal: true, featureMap: map)
            let x = LinearInputs(c, seed: 21).rounded(to: Float.self)
            let base = try forward(c, x)
            let baseGradients = try backward(c, x)
            for cut in [0, 63, 64, 100, 148] {
                var y = x
                var random = LinearTestRandom(seed: UInt64(cut))
                for h in 0..<c.h { for n in (cut + 1)..<c.n {
                    for j in 0..<c.d { y.q[(h * c.n + n) * c.d + j] = Double(Float(random.normal() * 5)) }
                    for j in 0..<c.m { y.dout[(h * c.n + n) * c.m + j] = Double(Float(random.normal())) }
                } }
                for n in (cut + 1)..<c.n {
                    for j in 0..<c.d { y.k[n * c.d + j] = Double(Float(random.normal() * 5)) }
                    for j in 0..<c.m { y.v[n * c.m + j] = Double(Float(random.normal() * 5)) }
                }
                let changed = try forward(c, y)
                let changedGradients = try backward(c, y)
                for h in 0..<c.h {
                    let outRows = (h * c.n * c.m)..<((h * c.n + cut + 1) * c.m)
                    XCTAssertEqual(Array(changed[outRows]), Array(base[outRows]), "\(map) cut \(cut) head \(h)")
                    let qRows = (h * c.n * c.d)..<((h * c.n + cut + 1) * c.d)
                    XCTAssertEqual(Array(changedGradients.dq[qRows]), Array(baseGradients.dq[qRows]), "dq \(map) cut \(cut)")
                }
                XCTAssertNotEqual(changed, base, "the change must reach later outputs")
            }
        }
    }

    /// Keys at or past kv_lengths[b] do nothing: changing their k and v changes no output and no
    /// dq; their dk, dv are zero; non-causal equals the call on the truncated keys.
    func testPaddedKeysHaveNoEffect() throws {
        for map in LinearAttentionOptions.FeatureMap.allCases {
            for causal in [false, true] {
                let c = LinearCase(b: 2, h: 2, hk: 1, n: 80, l: 80, d: 4, m: 3, causal: causal, featureMap: map,
                                   keyLengths: [80, 37])
                let x = LinearInputs(c, seed: 31).rounded(to: Float.self)
                var y = x
                var random = LinearTestRandom(seed: 32)
                for n in 37..<80 {
                    for j in 0..<c.d { y.k[(1 * c.l + n) * c.d + j] = Double(Float(random.normal() * 3)) }
                    for j in 0..<c.m { y.v[(1 * c.l + n) * c.m + j] = Double(Float(random.normal() * 3)) }
                }
                XCTAssertEqual(try forward(c, x), try forward(c, y), "\(map) causal=\(causal)")
                let (gx, gy) = (try backward(c, x), try backward(c, y))
                XCTAssertEqual(gx.dq, gy.dq)
                for n in 37..<80 {
                    for j in 0..<c.d { XCTAssertEqual(gy.dk[(1 * c.l + n) * c.d + j], 0) }
                    for j in 0..<c.m { XCTAssertEqual(gy.dv[(1 * c.l + n) * c.m + j], 0) }
                }
                if !causal {
                    // Batch 1 with L = 37 and no key lengths.
                    var t = LinearCase(b: 1, h: 2, hk: 1, n: 80, l: 37, d: 4, m: 3, featureMap: map)
                    t.keyLengths = nil
                    var z = LinearInputs(t, seed: 1)
                    z.q = Array(x.q[(2 * 80 * 4)...])
                    z.k = Array(x.k[(80 * 4)..<(80 * 4 + 37 * 4)])
                    z.v = Array(x.v[(80 * 3)..<(80 * 3 + 37 * 3)])
                    let truncated = try forward(t, z)
                    let full = try forward(c, x)
                    XCTAssertLessThan(linearRelativeError(truncated.map(Double.init), Array(full[(2 * 80 * 3)...]).map(Double.init)), 1e-6)
                }
            }
        }
    }

    /// Zeroing v at padded positions is not key padding: with elu+1, φ(k) > 0 still adds to the
    /// denominator. The library removes the key (zeroes φ(k)), so the two differ.
    func testZeroingValuesAloneIsNotPadding() throws {
        let padded = LinearCase(b: 1, h: 1, hk: 1, n: 20, l: 20, d: 4, m: 3, keyLengths: [8])
        var zeroed = padded
        zeroed.keyLengths = nil
        var x = LinearInputs(padded, seed: 41).rounded(to: Float.self)
        for n in 8..<20 { for j in 0..<3 { x.v[n * 3 + j] = 0 } }
        let a = try forward(padded, x), b = try forward(zeroed, x)
        XCTAssertGreaterThan(linearRelativeError(b.map(Double.init), a.map(Double.init)), 0.1)
        // And the padded result is the one over the first 8 keys only (direct reference).
        var truncated = padded
        truncated.l = 8
        truncated.keyLengths = nil
        var t = x
        t.k = Array(x.k[0..<32]); t.v = Array(x.v[0..<24])
        XCTAssertLessThan(linearRelativeError(a.map(Double.init), linearReference(truncated, t).out), 1e-6)
    }

    /// Every bad argument gives the right status and writes nothing.
    func testBadInputIsRejectedWithoutWriting() throws {
        let c = LinearCase(b: 2, h: 2, hk: 1, n: 5, l: 5, d: 3, m: 4, causal: true)
        let x = LinearInputs(c, seed: 51).rounded(to: Float.self)
        let q = LinearTestTensor<Float>(shape: c.qShape, values: x.q), k = LinearTestTensor<Float>(shape: c.kShape, values: x.k)
        let v = LinearTestTensor<Float>(shape: c.vShape, values: x.v), dout = LinearTestTensor<Float>(shape: c.oShape, values: x.dout)
        let sentinel = [Double](repeating: 42, count: c.b * c.h * c.n * c.m)
        let out = LinearTestTensor<Float>(shape: c.oShape, values: sentinel)
        let dq = LinearTestTensor<Float>(shape: c.qShape, values: x.q.map { _ in 42 })
        let dk = LinearTestTensor<Float>(shape: c.kShape, values: x.k.map { _ in 42 })
        let dv = LinearTestTensor<Float>(shape: c.vShape, values: x.v.map { _ in 42 })
        let s = LinearTestTensor<Float>(shape: c.sShape), z = LinearTestTensor<Float>(shape: c.zShape)
        let sN = LinearTestTensor<Float>(shape: c.sShape, values: [Double](repeating: 42, count: 2 * 2 * 3 * 4))
        let zN = LinearTestTensor<Float>(shape: c.zShape, values: [Double](repeating: 42, count: 2 * 2 * 3))
        let badS = LinearTestTensor<Float>(shape: SIMD4(2, 2, 3, 3)), badZ = LinearTestTensor<Float>(shape: SIMD4(2, 2, 3, 2))
        let badZ2 = LinearTestTensor<Float>(shape: SIMD4(2, 1, 3, 1))
        let shortK = LinearTestTensor<Float>(shape: SIMD4(2, 1, 4, 3)), shortV = LinearTestTensor<Float>(shape: SIMD4(2, 1, 4, 4))
        let threeHeads = LinearTestTensor<Float>(shape: SIMD4(2, 3, 5, 3))
        let wideV = LinearTestTensor<Float>(shape: SIMD4(2, 2, 5, 4))
        defer { withExtendedLifetime([q, k, v, dout, s, z, badS, badZ, badZ2, shortK, shortV, threeHeads, wideV]) {} }

        func expect(_ status: PerformerStatus, _ what: String, _ body: () throws(PerformerError) -> Void) {
            do throws(PerformerError) {
                try body()
                XCTFail("\(what): no error")
            } catch {
                XCTAssertEqual(error.status, status, "\(what): \(error)")
                XCTAssertFalse(error.message.isEmpty)
            }
            XCTAssertEqual(out.values, sentinel, "\(what) wrote out")
            XCTAssert(dq.values.allSatisfy { $0 == 42 } && dk.values.allSatisfy { $0 == 42 } && dv.values.allSatisfy { $0 == 42 },
                      "\(what) wrote a gradient")
            XCTAssert(sN.values.allSatisfy { $0 == 42 } && zN.values.allSatisfy { $0 == 42 }, "\(what) wrote the final state")
        }
        func options(_ change: (inout LinearAttentionOptions) -> Void) -> LinearAttentionOptions {
            var o = c.options
            change(&o)
            return o
        }
        let final = MutableLinearStateView(s: sN.mutableView, z: zN.mutableView)
        func fwd(_ o: LinearAttentionOptions = c.options, k kk: TensorView<Float>? = nil, v vv: TensorView<Float>? = nil,
                 q qq: TensorView<Float>? = nil, initial: LinearStateView<Float>? = nil,
                 final f: MutableLinearStateView<Float>? = nil, output: MutableTensorView<Float>? = nil)
            throws(PerformerError) {
            try LinearAttention.forward(query: qq ?? q.view, key: kk ?? k.view, value: vv ?? v.view,
                                        output: output ?? out.mutableView, initialState: initial, finalState: f ?? final, options: o)
        }
        expect(.invalidArgument, "negative eps") { () throws(PerformerError) in try fwd(options { $0.epsilon = -1e-9 }) }
        expect(.invalidArgument, "NaN eps") { () throws(PerformerError) in try fwd(options { $0.epsilon = .nan }) }
        expect(.invalidArgument, "infinite eps") { () throws(PerformerError) in try fwd(options { $0.epsilon = .infinity }) }
        expect(.shapeMismatch, "kv_lengths count") { () throws(PerformerError) in try fwd(options { $0.keyLengths = [5] }) }
        expect(.invalidArgument, "kv_lengths range") { () throws(PerformerError) in try fwd(options { $0.keyLengths = [5, 6] }) }
        expect(.invalidArgument, "kv_lengths negative") { () throws(PerformerError) in try fwd(options { $0.keyLengths = [-1, 2] }) }
        expect(.shapeMismatch, "causal N != L") { () throws(PerformerError) in try fwd(k: shortK.view, v: shortV.view) }
        expect(.shapeMismatch, "H not a multiple of Hk") { () throws(PerformerError) in
            try fwd(options { $0.causal = true }, k: LinearTestTensor<Float>(shape: SIMD4(2, 2, 5, 3)).view, q: threeHeads.view, final: nil)
        }
        expect(.shapeMismatch, "v head count") { () throws(PerformerError) in try fwd(v: wideV.view) }
        expect(.shapeMismatch, "S0 shape") { () throws(PerformerError) in try fwd(initial: LinearStateView(s: badS.view, z: z.view)) }
        expect(.shapeMismatch, "z0 shape") { () throws(PerformerError) in try fwd(initial: LinearStateView(s: s.view, z: badZ.view)) }
        expect(.shapeMismatch, "z0 heads") { () throws(PerformerError) in try fwd(initial: LinearStateView(s: s.view, z: badZ2.view)) }
        expect(.shapeMismatch, "S_N shape") { () throws(PerformerError) in
            try fwd(final: MutableLinearStateView(s: badS.mutableView, z: zN.mutableView))
        }
        expect(.shapeMismatch, "denominators shape") { () throws(PerformerError) in
            try LinearAttention.forward(query: q.view, key: k.view, value: v.view, output: out.mutableView,
                                        finalState: final, denominators: badZ.mutableView, options: c.options)
        }
        expect(.aliasing, "denominators overlap out") { () throws(PerformerError) in
            try LinearAttention.forward(query: q.view, key: k.view, value: v.view, output: out.mutableView,
                                        finalState: final,
                                        denominators: MutableTensorView(base: out.storage, shape: SIMD4(2, 2, 5, 1)),
                                        options: c.options)
        }
        expect(.aliasing, "out overlaps q") { () throws(PerformerError) in
            try fwd(q: TensorView(base: out.storage, shape: c.qShape), final: nil)
        }
        expect(.aliasing, "S_N overlaps S0") { () throws(PerformerError) in
            try fwd(initial: LinearStateView(s: sN.view, z: z.view))
        }
        expect(.sizeOverflow, "negative size") { () throws(PerformerError) in
            try fwd(q: TensorView(base: q.storage, shape: SIMD4(2, 2, -5, 3)), final: nil)
        }
        func bwd(_ o: LinearAttentionOptions = c.options, initial: LinearStateView<Float>? = nil,
                 finalGradient: LinearStateView<Float>? = nil, initialGradient: MutableLinearStateView<Float>? = nil,
                 dout d: TensorView<Float>? = nil) throws(PerformerError) {
            try LinearAttention.backward(query: q.view, key: k.view, value: v.view, outputGradient: d ?? dout.view,
                                         queryGradient: dq.mutableView, keyGradient: dk.mutableView, valueGradient: dv.mutableView,
                                         initialState: initial, finalStateGradient: finalGradient,
                                         initialStateGradient: initialGradient, options: o)
        }
        expect(.invalidArgument, "backward negative eps") { () throws(PerformerError) in try bwd(options { $0.epsilon = -1 }) }
        expect(.shapeMismatch, "dS_N shape") { () throws(PerformerError) in
            try bwd(finalGradient: LinearStateView(s: badS.view, z: z.view))
        }
        expect(.shapeMismatch, "dz_N shape") { () throws(PerformerError) in
            try bwd(finalGradient: LinearStateView(s: s.view, z: badZ.view))
        }
        expect(.shapeMismatch, "dS0 shape") { () throws(PerformerError) in
            try bwd(initialGradient: MutableLinearStateView(s: badS.mutableView, z: zN.mutableView))
        }
        expect(.shapeMismatch, "dout shape") { () throws(PerformerError) in try bwd(dout: badS.view) }
        expect(.aliasing, "dS0 overlaps dS_N") { () throws(PerformerError) in
            try bwd(finalGradient: LinearStateView(s: sN.view, z: z.view),
                    initialGradient: MutableLinearStateView(s: sN.mutableView, z: zN.mutableView))
        }

        // The decoder: bad construction, bad token shapes (state unchanged), bad state shapes.
        expect(.invalidArgument, "decoder eps") { () throws(PerformerError) in
            _ = try LinearAttentionDecoder<Float>(batch: 1, heads: 2, headDim: 3, valueDim: 4, epsilon: -1)
        }
        expect(.invalidArgument, "decoder heads") { () throws(PerformerError) in
            _ = try LinearAttentionDecoder<Float>(batch: 1, heads: 3, keyHeads: 2, headDim: 3, valueDim: 4)
        }
        let decoder = try LinearAttentionDecoder<Float>(batch: 2, heads: 2, keyHeads: 1, headDim: 3, valueDim: 4)
        try decoder.step(query: q.token(0), key: k.token(0), value: v.token(0), output: out.mutableToken(0).copyTarget())
        let before = LinearTestTensor<Float>(shape: c.sShape)
        try decoder.storeState(into: MutableLinearStateView(s: before.mutableView, z: z.mutableView))
        expect(.shapeMismatch, "step with two tokens") { () throws(PerformerError) in
            try decoder.step(query: q.slice(0, 2), key: k.slice(0, 2), value: v.slice(0, 2), output: out.mutableSlice(0, 2))
        }
        expect(.shapeMismatch, "step with wrong key heads") { () throws(PerformerError) in
            try decoder.step(query: q.token(0), key: q.token(0), value: v.token(0), output: out.mutableToken(0))
        }
        expect(.aliasing, "step output over q") { () throws(PerformerError) in
            try decoder.step(query: TensorView(base: out.storage, shape: SIMD4(2, 2, 1, 3)), key: k.token(0), value: v.token(0),
                             output: out.mutableToken(0))
        }
        expect(.shapeMismatch, "loadState shape") { () throws(PerformerError) in
            try decoder.loadState(LinearStateView(s: badS.view, z: z.view))
        }
        let after = LinearTestTensor<Float>(shape: c.sShape)
        try decoder.storeState(into: MutableLinearStateView(s: after.mutableView, z: z.mutableView))
        XCTAssertEqual(after.rawValues, before.rawValues, "a rejected step changed the decoder state")
    }
}

private extension MutableTensorView {
    /// A fresh buffer of the same shape (so a setup step does not touch the sentinel output).
    func copyTarget() -> MutableTensorView<Element> {
        let count = shape[0] * shape[1] * shape[2] * shape[3]
        return MutableTensorView(base: .allocate(capacity: count), shape: shape)  // leaked: test only, tiny
    }
}

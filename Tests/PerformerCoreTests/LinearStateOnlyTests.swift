import XCTest
import PerformerCore

/// LinearAttention.state / stateBackward: the state of keys without queries equals a causal
/// forward's final state; its gradients by finite differences; a non-causal call against that
/// state (a memory) equals the call on the concatenated keys; aliasing and shape errors.
final class LinearStateOnlyTests: XCTestCase {
    /// A state of `heads` heads from `k`, `v` (B×Hk×L×·), optionally starting from s0/z0.
    private func state(_ k: LinearTestTensor<Double>, _ v: LinearTestTensor<Double>, heads: Int,
                       s0: LinearTestTensor<Double>? = nil, z0: LinearTestTensor<Double>? = nil,
                       options: LinearAttentionOptions) throws -> (LinearTestTensor<Double>, LinearTestTensor<Double>) {
        let (b, d, m) = (k.shape[0], k.shape[3], v.shape[3])
        let s = LinearTestTensor<Double>(shape: SIMD4(b, heads, d, m), strided: true)
        let z = LinearTestTensor<Double>(shape: SIMD4(b, heads, d, 1))
        try LinearAttention.state(key: k.view, value: v.view,
                                  initialState: s0.map { LinearStateView(s: $0.view, z: z0!.view) },
                                  finalState: MutableLinearStateView(s: s.mutableView, z: z.mutableView), options: options)
        return (s, z)
    }

    /// Equal to the final state of a causal forward (GQA with Hs = H, initial state, key lengths).
    func testStateEqualsFinalStateOfCausalForward() throws {
        for map in LinearAttentionOptions.FeatureMap.allCases {
            let c = LinearCase(b: 2, h: 4, hk: 2, n: 150, l: 150, d: 5, m: 7, causal: true, featureMap: map,
                               keyLengths: [150, 61], withState: true, strided: true)
            let x = LinearInputs(c, seed: 31)
            let whole = try runLinear(c, x, as: Double.self)
            let k = LinearTestTensor<Double>(shape: c.kShape, strided: true, values: x.k)
            let v = LinearTestTensor<Double>(shape: c.vShape, values: x.v)
            let s0 = LinearTestTensor<Double>(shape: c.sShape, values: x.s0), z0 = LinearTestTensor<Double>(shape: c.zShape, values: x.z0)
            // causal = true in the options is ignored by a state call.
            let (s, z) = try state(k, v, heads: c.h, s0: s0, z0: z0, options: c.options)
            XCTAssertLessThan(linearRelativeError(s.values, whole.sN), 1e-13, "\(map)")
            XCTAssertLessThan(linearRelativeError(z.values, whole.zN), 1e-13, "\(map)")
            XCTAssert(s.paddingUntouched)

            // Hs = Hk: one state per key head, the keys' sum (the H-head state of any query head of
            // the group, started from zeros).
            let (sk, zk) = try state(k, v, heads: c.hk, options: c.options)
            let (sh, zh) = try state(k, v, heads: c.h, options: c.options)
            let (cm, group) = (c.d * c.m, c.h / c.hk)
            for b in 0..<c.b {
                for h in 0..<c.h {
                    let hk = h / group
                    XCTAssertEqual(Array(sk.values[((b * c.hk + hk) * cm)..<((b * c.hk + hk + 1) * cm)]),
                                   Array(sh.values[((b * c.h + h) * cm)..<((b * c.h + h + 1) * cm)]))
                    XCTAssertEqual(Array(zk.values[((b * c.hk + hk) * c.d)..<((b * c.hk + hk + 1) * c.d)]),
                                   Array(zh.values[((b * c.h + h) * c.d)..<((b * c.h + h + 1) * c.d)]))
                }
            }
        }
    }

    /// In place (S_out is S0's memory, same layout) gives the out-of-place result.
    func testInPlaceUpdate() throws {
        let c = LinearCase(b: 1, h: 2, hk: 1, n: 40, l: 40, d: 3, m: 4, withState: true)
        let x = LinearInputs(c, seed: 5)
        let k = LinearTestTensor<Double>(shape: c.kShape, values: x.k), v = LinearTestTensor<Double>(shape: c.vShape, values: x.v)
        let s0 = LinearTestTensor<Double>(shape: c.sShape, values: x.s0), z0 = LinearTestTensor<Double>(shape: c.zShape, values: x.z0)
        let (s, z) = try state(k, v, heads: 2, s0: s0, z0: z0, options: c.options)
        try LinearAttention.state(key: k.view, value: v.view, initialState: LinearStateView(s: s0.view, z: z0.view),
                                  finalState: MutableLinearStateView(s: s0.mutableView, z: z0.mutableView), options: c.options)
        XCTAssertEqual(s0.values, s.values)
        XCTAssertEqual(z0.values, z.values)
    }

    /// stateBackward against central differences of state, for L = Σ W_S∘S + Σ W_z∘z, with GQA
    /// (Hs = H sums over the group, Hs = Hk does not), key lengths, every feature map.
    func testStateBackwardMatchesFiniteDifferences() throws {
        for map in LinearAttentionOptions.FeatureMap.allCases {
            for heads in [1, 2] {
                let c = LinearCase(b: 2, h: heads, hk: 1, n: 5, l: 5, d: 3, m: 2, featureMap: map, keyLengths: [5, 3])
                let x = LinearInputs(c, seed: 77)
                let k = LinearTestTensor<Double>(shape: c.kShape, values: x.k), v = LinearTestTensor<Double>(shape: c.vShape, values: x.v)
                let ws = LinearTestTensor<Double>(shape: c.sShape, values: x.dsN), wz = LinearTestTensor<Double>(shape: c.zShape, values: x.dzN)
                let dk = LinearTestTensor<Double>(shape: c.kShape, strided: true), dv = LinearTestTensor<Double>(shape: c.vShape)
                let ds0 = LinearTestTensor<Double>(shape: c.sShape), dz0 = LinearTestTensor<Double>(shape: c.zShape)
                try LinearAttention.stateBackward(
                    key: k.view, value: v.view, finalStateGradient: LinearStateView(s: ws.view, z: wz.view),
                    keyGradient: dk.mutableView, valueGradient: dv.mutableView,
                    initialStateGradient: MutableLinearStateView(s: ds0.mutableView, z: dz0.mutableView), options: c.options)
                XCTAssertEqual(ds0.values, x.dsN)
                XCTAssertEqual(dz0.values, x.dzN)
                XCTAssert(dk.paddingUntouched)
                func loss(_ kk: [Double], _ vv: [Double]) throws -> Double {
                    let (s, z) = try state(LinearTestTensor(shape: c.kShape, values: kk), LinearTestTensor(shape: c.vShape, values: vv),
                                           heads: heads, options: c.options)
                    return zip(s.values, x.dsN).reduce(0) { $0 + $1.0 * $1.1 } + zip(z.values, x.dzN).reduce(0) { $0 + $1.0 * $1.1 }
                }
                var nk = [Double](repeating: 0, count: x.k.count), nv = [Double](repeating: 0, count: x.v.count)
                for i in 0..<x.k.count {
                    var p = x.k, m = x.k
                    p[i] += 1e-6; m[i] -= 1e-6
                    nk[i] = (try loss(p, x.v) - loss(m, x.v)) / 2e-6
                }
                for i in 0..<x.v.count {
                    var p = x.v, m = x.v
                    p[i] += 1e-6; m[i] -= 1e-6
                    nv[i] = (try loss(x.k, p) - loss(x.k, m)) / 2e-6
                }
                XCTAssertLessThan(linearRelativeError(dk.values, nk), 1e-6, "\(map) Hs=\(heads)")
                XCTAssertLessThan(linearRelativeError(dv.values, nv), 1e-6, "\(map) Hs=\(heads)")
            }
        }
    }

    /// A non-causal call against a memory (the state of earlier keys, Hs = H) equals the call on
    /// the concatenated keys, forward and backward; the memory keys' gradients are the state
    /// backward of the memory gradient dS0, dz0. Normalized and not, with GQA and key lengths.
    func testMemoryEqualsConcatenatedKeys() throws {
        for normalize in [true, false] {
            // 128 memory keys: one chunk of the non-causal forward, so the sums run in the same order.
            let (lm, ln) = (128, 37)
            let c = LinearCase(b: 2, h: 4, hk: 2, n: 9, l: lm + ln, d: 5, m: 3, keyLengths: [lm + ln, lm + 20],
                               normalize: normalize)
            let x = LinearInputs(c, seed: 12)
            let whole = try runLinear(c, x, as: Double.self)
            let k = LinearTestTensor<Double>(shape: c.kShape, values: x.k), v = LinearTestTensor<Double>(shape: c.vShape, values: x.v)
            // Memory: keys 0 ..< lm; the call: keys lm ..< lm + ln against it.
            var memoryOptions = c.options
            memoryOptions.keyLengths = nil
            let s = LinearTestTensor<Double>(shape: c.sShape), z = LinearTestTensor<Double>(shape: c.zShape)
            try LinearAttention.state(key: k.slice(0, lm), value: v.slice(0, lm),
                                      finalState: MutableLinearStateView(s: s.mutableView, z: z.mutableView), options: memoryOptions)
            var callOptions = c.options
            callOptions.keyLengths = c.keyLengths!.map { $0 - lm }
            let q = LinearTestTensor<Double>(shape: c.qShape, values: x.q), dout = LinearTestTensor<Double>(shape: c.oShape, values: x.dout)
            let out = LinearTestTensor<Double>(shape: c.oShape)
            try LinearAttention.forward(query: q.view, key: k.slice(lm, ln), value: v.slice(lm, ln), output: out.mutableView,
                                        initialState: LinearStateView(s: s.view, z: z.view), options: callOptions)
            XCTAssertEqual(out.values, whole.out, "normalize=\(normalize)")

            let dq = LinearTestTensor<Double>(shape: c.qShape), dk = LinearTestTensor<Double>(shape: c.kShape)
            let dv = LinearTestTensor<Double>(shape: c.vShape)
            let ds0 = LinearTestTensor<Double>(shape: c.sShape), dz0 = LinearTestTensor<Double>(shape: c.zShape)
            try LinearAttention.backward(
                query: q.view, key: k.slice(lm, ln), value: v.slice(lm, ln), outputGradient: dout.view,
                queryGradient: dq.mutableView, keyGradient: dk.mutableSlice(lm, ln), valueGradient: dv.mutableSlice(lm, ln),
                initialState: LinearStateView(s: s.view, z: z.view),
                initialStateGradient: MutableLinearStateView(s: ds0.mutableView, z: dz0.mutableView), options: callOptions)
            try LinearAttention.stateBackward(
                key: k.slice(0, lm), value: v.slice(0, lm), finalStateGradient: LinearStateView(s: ds0.view, z: dz0.view),
                keyGradient: dk.mutableSlice(0, lm), valueGradient: dv.mutableSlice(0, lm), options: memoryOptions)
            XCTAssertLessThan(linearRelativeError(dq.values, whole.dq), 1e-13, "normalize=\(normalize)")
            XCTAssertLessThan(linearRelativeError(dk.values, whole.dk), 1e-13, "normalize=\(normalize)")
            XCTAssertLessThan(linearRelativeError(dv.values, whole.dv), 1e-13, "normalize=\(normalize)")
        }
    }

    /// Bad arguments: the right status, a message naming the argument, nothing written.
    func testBadArgumentsAreRejectedWithoutWriting() throws {
        let k = LinearTestTensor<Float>(shape: SIMD4(2, 2, 5, 3)), v = LinearTestTensor<Float>(shape: SIMD4(2, 2, 5, 4))
        let s = LinearTestTensor<Float>(shape: SIMD4(2, 4, 3, 4), values: [Double](repeating: 42, count: 96))
        let z = LinearTestTensor<Float>(shape: SIMD4(2, 4, 3, 1), values: [Double](repeating: 42, count: 24))
        let s3 = LinearTestTensor<Float>(shape: SIMD4(2, 3, 3, 4)), z3 = LinearTestTensor<Float>(shape: SIMD4(2, 3, 3, 1))
        let dk = LinearTestTensor<Float>(shape: k.shape, values: [Double](repeating: 42, count: 60))
        let dv = LinearTestTensor<Float>(shape: v.shape, values: [Double](repeating: 42, count: 80))
        func expect(_ status: PerformerStatus, _ naming: String, _ body: () throws(PerformerError) -> Void) {
            assertThrowsPerformerError(status, containing: naming, naming) { try body() }
            XCTAssert(s.values.allSatisfy { $0 == 42 } && z.values.allSatisfy { $0 == 42 }, "\(naming): wrote the state")
            XCTAssert(dk.values.allSatisfy { $0 == 42 } && dv.values.allSatisfy { $0 == 42 }, "\(naming): wrote a gradient")
        }
        let final = MutableLinearStateView(s: s.mutableView, z: z.mutableView)
        expect(.shapeMismatch, "S_out.shape[1]") { () throws(PerformerError) in
            try LinearAttention.state(key: k.view, value: v.view, finalState: MutableLinearStateView(s: s3.mutableView, z: z3.mutableView))
        }
        expect(.shapeMismatch, "z_out.shape[3]") { () throws(PerformerError) in
            try LinearAttention.state(key: k.view, value: v.view, finalState: MutableLinearStateView(s: s.mutableView, z: s.mutableView))
        }
        expect(.shapeMismatch, "v.shape[1]") { () throws(PerformerError) in
            try LinearAttention.state(key: k.view, value: LinearTestTensor<Float>(shape: SIMD4(2, 1, 5, 4)).view, finalState: final)
        }
        expect(.invalidArgument, "kv_lengths[1]") { () throws(PerformerError) in
            try LinearAttention.state(key: k.view, value: v.view, finalState: final,
                                      options: LinearAttentionOptions(keyLengths: [5, 6]))
        }
        expect(.shapeMismatch, "S0.shape[1]") { () throws(PerformerError) in
            try LinearAttention.state(key: k.view, value: v.view, initialState: LinearStateView(s: s3.view, z: z3.view), finalState: final)
        }
        expect(.aliasing, "S_out") { () throws(PerformerError) in
            try LinearAttention.state(key: TensorView(base: s.storage, shape: k.shape), value: v.view, finalState: final)
        }
        // The same memory with other strides is not an in-place update.
        let transposed = TensorView(base: UnsafePointer(s.storage), shape: SIMD4(2, 4, 3, 4), strides: SIMD4(48, 12, 1, 3))
        expect(.aliasing, "S0") { () throws(PerformerError) in
            try LinearAttention.state(key: k.view, value: v.view, initialState: LinearStateView(s: transposed, z: z.view), finalState: final)
        }
        let gradient = LinearStateView(s: s.view, z: z.view)
        expect(.shapeMismatch, "dS_out.shape[1]") { () throws(PerformerError) in
            try LinearAttention.stateBackward(key: k.view, value: v.view, finalStateGradient: LinearStateView(s: s3.view, z: z3.view),
                                              keyGradient: dk.mutableView, valueGradient: dv.mutableView)
        }
        expect(.shapeMismatch, "dk.shape[2]") { () throws(PerformerError) in
            try LinearAttention.stateBackward(key: k.view, value: v.view, finalStateGradient: gradient,
                                              keyGradient: MutableTensorView(base: dk.storage, shape: SIMD4(2, 2, 4, 3)),
                                              valueGradient: dv.mutableView)
        }
        expect(.aliasing, "dk") { () throws(PerformerError) in
            try LinearAttention.stateBackward(key: k.view, value: v.view, finalStateGradient: gradient,
                                              keyGradient: dk.mutableView, valueGradient: dv.mutableView,
                                              initialStateGradient: MutableLinearStateView(
                                                  s: MutableTensorView(base: dk.storage, shape: SIMD4(2, 4, 3, 4)), z: z.mutableView))
        }
        withExtendedLifetime([k, v, s, z, s3, z3, dk, dv]) {}
    }
}

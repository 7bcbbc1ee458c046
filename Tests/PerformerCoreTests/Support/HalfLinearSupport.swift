import XCTest
import PerformerCore

/// A half-precision twin of `LinearTestTensor`: the same placements (contiguous, or
/// B × N × H × (D + 1) with padded rows), padding holding a sentinel.
final class HalfTestTensor<H: HalfTestScalar> {
    let shape: SIMD4<Int>
    let strides: SIMD4<Int>
    let storage: UnsafeMutablePointer<H>
    let capacity: Int
    let sentinel = H(rounding: 4242)

    init(shape: SIMD4<Int>, strided: Bool = false, values: [Double]? = nil) {
        let model = LinearTestTensor<Float>(shape: shape, strided: strided)
        self.shape = shape
        strides = model.strides
        capacity = model.capacity
        storage = .allocate(capacity: capacity)
        storage.initialize(repeating: sentinel, count: capacity)
        if let values { set(values) } else { set([Double](repeating: 0, count: count)) }
    }

    deinit { storage.deallocate() }

    var count: Int { shape[0] * shape[1] * shape[2] * shape[3] }

    private func offset(_ i: Int) -> Int {
        let d = i % shape[3], n = (i / shape[3]) % shape[2], h = (i / (shape[3] * shape[2])) % shape[1]
        let b = i / (shape[3] * shape[2] * shape[1])
        return b * strides[0] + h * strides[1] + n * strides[2] + d * strides[3]
    }

    /// Logical elements in row-major order, and their storage bits.
    var values: [Double] { (0..<count).map { Double(storage[offset($0)].float) } }
    var bits: [UInt16] { (0..<count).map { storage[offset($0)].bits } }

    func set(_ values: [Double]) {
        precondition(values.count == count)
        for i in 0..<count { storage[offset(i)] = H(rounding: Float(values[i])) }
    }

    var paddingUntouched: Bool {
        var used = [Bool](repeating: false, count: capacity)
        for i in 0..<count { used[offset(i)] = true }
        return (0..<capacity).allSatisfy { used[$0] || storage[$0].bits == sentinel.bits }
    }

    var view: TensorView<H> { TensorView(base: storage, shape: shape, strides: strides) }
    var mutableView: MutableTensorView<H> { MutableTensorView(base: storage, shape: shape, strides: strides) }
}

extension LinearInputs {
    /// What a half call sees: q, k, v, dout rounded to H (through float32, as a user's float32
    /// data would be), the states to float32.
    func roundedToHalf<H: HalfTestScalar>(_: H.Type) -> LinearInputs {
        var copy = self
        let half: ([Double]) -> [Double] = { $0.map { Double(H(rounding: Float($0)).float) } }
        let single: ([Double]) -> [Double] = { $0.map { Double(Float($0)) } }
        copy.q = half(q); copy.k = half(k); copy.v = half(v); copy.dout = half(dout)
        copy.s0 = single(s0); copy.z0 = single(z0); copy.dsN = single(dsN); copy.dzN = single(dzN)
        return copy
    }
}

extension LinearResults {
    /// The half outputs (out, dq, dk, dv) rounded to H; states and denominators stay float32.
    func roundingTokens<H: HalfTestScalar>(to _: H.Type) -> LinearResults {
        var copy = self
        let half: ([Double]) -> [Double] = { $0.map { Double(H(rounding: Float($0)).float) } }
        let single: ([Double]) -> [Double] = { $0.map { Double(Float($0)) } }
        copy.out = half(out); copy.dq = half(dq); copy.dk = half(dk); copy.dv = half(dv)
        copy.sN = single(sN); copy.zN = single(zN); copy.ds0 = single(ds0); copy.dz0 = single(dz0); copy.den = single(den)
        return copy
    }

    var named: [(String, [Double])] {
        [("out", out), ("S_N", sN), ("z_N", zN), ("dq", dq), ("dk", dk), ("dv", dv), ("dS0", ds0), ("dz0", dz0),
         ("denominators", den)]
    }
}

/// The library's half-precision linear forward and backward on `x` (already half-rounded):
/// q, k, v, dout, out, dq, dk, dv in H; states and denominators float32. Also returns the
/// storage bits of out, dq, dk, dv.
func runLinearHalf<H: HalfTestScalar>(_ c: LinearCase, _ x: LinearInputs, as _: H.Type,
                                      file: StaticString = #filePath, line: UInt = #line) throws -> (LinearResults, [[UInt16]]) {
    let q = HalfTestTensor<H>(shape: c.qShape, strided: c.strided, values: x.q)
    let k = HalfTestTensor<H>(shape: c.kShape, strided: c.strided, values: x.k)
    let v = HalfTestTensor<H>(shape: c.vShape, strided: c.strided, values: x.v)
    let dout = HalfTestTensor<H>(shape: c.oShape, strided: c.strided, values: x.dout)
    let out = HalfTestTensor<H>(shape: c.oShape, strided: c.strided)
    let dq = HalfTestTensor<H>(shape: c.qShape, strided: c.strided)
    let dk = HalfTestTensor<H>(shape: c.kShape, strided: c.strided)
    let dv = HalfTestTensor<H>(shape: c.vShape, strided: c.strided)
    let s0 = LinearTestTensor<Float>(shape: c.sShape, strided: c.strided, values: x.s0)
    let z0 = LinearTestTensor<Float>(shape: c.zShape, strided: c.strided, values: x.z0)
    let dsN = LinearTestTensor<Float>(shape: c.sShape, strided: c.strided, values: x.dsN)
    let dzN = LinearTestTensor<Float>(shape: c.zShape, strided: c.strided, values: x.dzN)
    let sN = LinearTestTensor<Float>(shape: c.sShape, strided: c.strided)
    let zN = LinearTestTensor<Float>(shape: c.zShape, strided: c.strided)
    let ds0 = LinearTestTensor<Float>(shape: c.sShape, strided: c.strided)
    let dz0 = LinearTestTensor<Float>(shape: c.zShape, strided: c.strided)
    let den = LinearTestTensor<Float>(shape: c.denShape, strided: c.strided)
    defer { withExtendedLifetime((q, k, v, dout, out, dq, dk, dv, [s0, z0, dsN, dzN, sN, zN, ds0, dz0, den])) {} }
    let state = c.withState
    try LinearAttention.forward(
        query: q.view, key: k.view, value: v.view, output: out.mutableView,
        initialState: state ? LinearStateView(s: s0.view, z: z0.view) : nil,
        finalState: state ? MutableLinearStateView(s: sN.mutableView, z: zN.mutableView) : nil,
        denominators: den.mutableView, options: c.options)
    try LinearAttention.backward(
        query: q.view, key: k.view, value: v.view, outputGradient: dout.view,
        queryGradient: dq.mutableView, keyGradient: dk.mutableView, valueGradient: dv.mutableView,
        initialState: state ? LinearStateView(s: s0.view, z: z0.view) : nil,
        finalStateGradient: state ? LinearStateView(s: dsN.view, z: dzN.view) : nil,
        initialStateGradient: state ? MutableLinearStateView(s: ds0.mutableView, z: dz0.mutableView) : nil,
        options: c.options)
    for (name, t) in [("out", out), ("dq", dq), ("dk", dk), ("dv", dv)] {
        XCTAssert(t.paddingUntouched, "\(name) written outside its view: \(c)", file: file, line: line)
    }
    for (name, t) in [("S_N", sN), ("z_N", zN), ("dS0", ds0), ("dz0", dz0), ("denominators", den)] {
        XCTAssert(t.paddingUntouched, "\(name) written outside its view: \(c)", file: file, line: line)
    }
    let zeros: (Int) -> [Double] = { [Double](repeating: 0, count: $0) }
    let results = LinearResults(out: out.values, sN: state ? sN.values : zeros(sN.count), zN: state ? zN.values : zeros(zN.count),
                                dq: dq.values, dk: dk.values, dv: dv.values,
                                ds0: state ? ds0.values : zeros(ds0.count), dz0: state ? dz0.values : zeros(dz0.count),
                                den: den.values)
    return (results, [out.bits, dq.bits, dk.bits, dv.bits])
}

/// The accuracy rule for one named result: max |ours − exact| ≤ 2 · max |straightforward −
/// exact|, plus 1e-6 of the result's scale (so an exactly representable result, both errors
/// 0, does not fail on float32 noise).
func assertHalfAccuracy(_ name: String, ours: [Double], exact: [Double], straightforward: [Double], _ label: String,
                        file: StaticString = #filePath, line: UInt = #line) {
    let error: ([Double]) -> Double = { values in
        zip(values, exact).reduce(0.0) { worst, pair in
            pair.0.isFinite ? max(worst, abs(pair.0 - pair.1)) : .infinity
        }
    }
    let scale = exact.reduce(1.0) { max($0, abs($1)) }
    let ourError = error(ours), baselineError = error(straightforward)
    XCTAssertLessThanOrEqual(ourError, 2 * baselineError + 1e-6 * scale,
                             "\(label) \(name): max error \(ourError), straightforward half \(baselineError)",
                             file: file, line: line)
}

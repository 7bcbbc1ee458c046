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

    /// Position `n` of axis 2 as a B×H×1×D view (one token).
    func token(_ n: Int) -> TensorView<H> {
        TensorView(base: storage + n * strides[2], shape: SIMD4(shape[0], shape[1], 1, shape[3]), strides: strides)
    }
    func mutableToken(_ n: Int) -> MutableTensorView<H> {
        MutableTensorView(base: storage + n * strides[2], shape: SIMD4(shape[0], shape[1], 1, shape[3]), strides: strides)
    }
    /// Positions start ..< start + length of axis 2.
    func slice(_ start: Int, _ length: Int) -> TensorView<H> {
        TensorView(base: storage + start * strides[2], shape: SIMD4(shape[0], shape[1], length, shape[3]), strides: strides)
    }
    func mutableSlice(_ start: Int, _ length: Int) -> MutableTensorView<H> {
        MutableTensorView(base: storage + start * strides[2], shape: SIMD4(shape[0], shape[1], length, shape[3]), strides: strides)
    }
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
    let t = LinearCallTensors<HalfTestTensor<H>, LinearTestTensor<Float>>(c, x)
    let state = c.withState
    try LinearAttention.forward(
        query: t.q.view, key: t.k.view, value: t.v.view, output: t.out.mutableView,
        initialState: state ? t.initialState : nil, finalState: state ? t.finalState : nil,
        denominators: t.den.mutableView, options: c.options)
    try LinearAttention.backward(
        query: t.q.view, key: t.k.view, value: t.v.view, outputGradient: t.dout.view,
        queryGradient: t.dq.mutableView, keyGradient: t.dk.mutableView, valueGradient: t.dv.mutableView,
        initialState: state ? t.initialState : nil, finalStateGradient: state ? t.finalStateGradient : nil,
        initialStateGradient: state ? t.initialStateGradient : nil, options: c.options)
    t.checkPadding(c, file: file, line: line)
    return (t.results(c), [t.out.bits, t.dq.bits, t.dk.bits, t.dv.bits])
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

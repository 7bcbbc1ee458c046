import Foundation
import PerformerCore

/// What the half-precision tests need of Float16 and BFloat16: rounding from float32 (the
/// library's rule: nearest, ties to even) and the exact float32 value.
protocol HalfTestScalar: HalfPrecisionScalar, Equatable {
    init(rounding value: Float)
    var float: Float { get }
    /// Identical storage bits (NaN equals NaN of the same bits).
    var bits: UInt16 { get }
}

extension Float16: HalfTestScalar {
    init(rounding value: Float) { self.init(value) }
    var float: Float { Float(self) }
    var bits: UInt16 { bitPattern }
}

extension BFloat16: HalfTestScalar {
    init(rounding value: Float) { self.init(value) }
    var float: Float { Float(self) }
    var bits: UInt16 { bitPattern }
}

extension DenseTensor {
    /// The values rounded to H (through float32, as a user's float32 data would be) and back.
    func rounded<H: HalfTestScalar>(toHalf _: H.Type) -> DenseTensor {
        DenseTensor(shape: shape, values: values.map { Double(H(rounding: Float($0)).float) })
    }
}

/// Half-precision storage for one strided view (any Layout: permuted, reversed, broadcast,
/// gaps), guard elements around it holding a sentinel.
struct HalfBuffer<H: HalfTestScalar> {
    var storage: [H]
    let baseOffset: Int
    let shape: SIMD4<Int>
    let strides: SIMD4<Int>
    let sentinel = H(rounding: 1234.5)

    init(shape: SIMD4<Int>, layout: Layout = .contiguous) {
        // The same placement as StridedBuffer, for 2-byte elements.
        let model = StridedBuffer<Float>(shape: shape, layout: layout)
        self.shape = shape
        self.strides = model.strides
        self.baseOffset = model.baseOffset
        self.storage = Array(repeating: sentinel, count: model.storage.count)
    }

    static func holding(_ dense: DenseTensor, layout: Layout = .contiguous) -> HalfBuffer<H> {
        var buffer = HalfBuffer(shape: dense.shape, layout: layout)
        for (index, offset) in buffer.viewOffsets.enumerated() { buffer.storage[offset] = H(rounding: Float(dense.values[index])) }
        return buffer
    }

    var viewOffsets: [Int] {
        var offsets: [Int] = []
        for i0 in 0..<shape[0] { for i1 in 0..<shape[1] { for i2 in 0..<shape[2] { for i3 in 0..<shape[3] {
            offsets.append(baseOffset + i0 * strides[0] + i1 * strides[1] + i2 * strides[2] + i3 * strides[3])
        } } } }
        return offsets
    }

    func load() -> DenseTensor { DenseTensor(shape: shape, values: viewOffsets.map { Double(storage[$0].float) }) }
    /// The view's storage bits in logical order.
    var viewBits: [UInt16] { viewOffsets.map { storage[$0].bits } }
    var untouchedOutsideView: Bool {
        let covered = Set(viewOffsets)
        return storage.indices.allSatisfy { covered.contains($0) || storage[$0].bits == sentinel.bits }
    }
    var viewHoldsSentinel: Bool { viewOffsets.allSatisfy { storage[$0].bits == sentinel.bits } }

    func withView<R>(_ body: (TensorView<H>) throws -> R) rethrows -> R {
        try storage.withUnsafeBufferPointer { try body(TensorView(base: $0.baseAddress! + baseOffset, shape: shape, strides: strides)) }
    }

    mutating func withMutableView<R>(_ body: (MutableTensorView<H>) throws -> R) rethrows -> R {
        let (shape, strides, baseOffset) = (self.shape, self.strides, self.baseOffset)
        return try storage.withUnsafeMutableBufferPointer {
            try body(MutableTensorView(base: $0.baseAddress! + baseOffset, shape: shape, strides: strides))
        }
    }
}

/// The results of a half-precision forward + backward through the library.
struct HalfSoftmaxRun<H: HalfTestScalar> {
    var out: HalfBuffer<H>, lse: StridedBuffer<Float>
    var dq: HalfBuffer<H>, dk: HalfBuffer<H>, dv: HalfBuffer<H>

    /// Forward, then backward from the forward's own out and lse, every tensor in its layout.
    init(_ spec: SoftmaxCase, _ inputs: SoftmaxInputs, as _: H.Type, layouts: SoftmaxLayouts = SoftmaxLayouts()) throws {
        let q = HalfBuffer<H>.holding(inputs.q, layout: layouts.q), k = HalfBuffer<H>.holding(inputs.k, layout: layouts.k)
        let v = HalfBuffer<H>.holding(inputs.v, layout: layouts.v), dout = HalfBuffer<H>.holding(inputs.dout, layout: layouts.dout)
        out = HalfBuffer(shape: spec.outputShape, layout: layouts.out)
        lse = StridedBuffer(shape: spec.logSumExpShape, layout: layouts.lse)
        dq = HalfBuffer(shape: spec.queryShape, layout: layouts.dq)
        dk = HalfBuffer(shape: spec.keyShape, layout: layouts.dk)
        dv = HalfBuffer(shape: spec.valueShape, layout: layouts.dv)
        try q.withView { q in try k.withView { k in try v.withView { v in
            try out.withMutableView { out in try lse.withMutableView { lse in
                try SoftmaxAttention.forward(query: q, key: k, value: v, output: out, logSumExp: lse, options: spec.options)
            } }
        } } }
        let (outValue, lseValue) = (out, lse)
        try q.withView { q in try k.withView { k in try v.withView { v in try dout.withView { dout in
            try outValue.withView { out in try lseValue.withView { lse in
                try dq.withMutableView { dq in try dk.withMutableView { dk in try dv.withMutableView { dv in
                    try SoftmaxAttention.backward(query: q, key: k, value: v, output: out, logSumExp: lse, outputGradient: dout,
                                                  queryGradient: dq, keyGradient: dk, valueGradient: dv, options: spec.options)
                } } }
            } }
        } } } }
    }

    var wroteOnlyInsideViews: Bool {
        out.untouchedOutsideView && lse.untouchedOutsideView && dq.untouchedOutsideView && dk.untouchedOutsideView
            && dv.untouchedOutsideView
    }
}

/// The straightforward half-precision implementation the accuracy rule compares against
/// (FlashAttention's): inputs in H, scores and probabilities materialized in float32, every
/// sum in float32, each output rounded to H. Its backward starts from its own rounded output.
enum HalfSoftmaxBaseline {
    static func evaluate<H: HalfTestScalar>(_ spec: SoftmaxCase, _ inputs: SoftmaxInputs, as _: H.Type) -> SoftmaxReference.Result {
        func half(_ t: DenseTensor) -> [Float] { t.values.map { H(rounding: Float($0)).float } }
        func round(_ x: Float) -> Double { Double(H(rounding: x).float) }
        let (q, k, v, dout) = (half(inputs.q), half(inputs.k), half(inputs.v), half(inputs.dout))
        let (batch, heads, keyHeads, n, l) = (spec.batch, spec.heads, spec.keyHeads, spec.queries, spec.keys)
        let (d, m) = (spec.headDim, spec.valueDim)
        let group = heads / keyHeads
        let scale = Float(spec.scale ?? 1 / Double(d).squareRoot())
        var out = [Float](repeating: 0, count: batch * heads * n * m), lse = [Float](repeating: 0, count: batch * heads * n)
        var dq = [Float](repeating: 0, count: q.count), dk = [Float](repeating: 0, count: k.count)
        var dv = [Float](repeating: 0, count: v.count)
        for b in 0..<batch {
            let limit = spec.keyLengths?[b] ?? l, start = spec.keyStarts?[b] ?? 0
            for h in 0..<heads {
                let hk = h / group
                let qh = (b * heads + h) * n, kh = (b * keyHeads + hk) * l
                var p = [Float](repeating: 0, count: n * l)
                for i in 0..<n {
                    var rowMax = -Float.infinity
                    for j in 0..<l where SoftmaxReference.isVisible(query: i, key: j, queries: n, keys: l, causal: spec.causal,
                                                                      keyLimit: limit, keyStart: start) {
                        var s: Float = 0
                        for c in 0..<d { s += q[(qh + i) * d + c] * k[(kh + j) * d + c] }
                        p[i * l + j] = s * scale
                        rowMax = max(rowMax, s * scale)
                    }
                    guard rowMax > -.infinity else {
                        for j in 0..<l { p[i * l + j] = 0 }
                        lse[qh + i] = -.infinity
                        continue
                    }
                    var sum: Float = 0
                    for j in 0..<l {
                        let seen = SoftmaxReference.isVisible(query: i, key: j, queries: n, keys: l, causal: spec.causal,
                                                              keyLimit: limit, keyStart: start)
                        p[i * l + j] = seen ? Foundation.exp(p[i * l + j] - rowMax) : 0
                        sum += p[i * l + j]
                    }
                    for j in 0..<l { p[i * l + j] /= sum }
                    lse[qh + i] = rowMax + Foundation.log(sum)
                    for c in 0..<m {
                        var o: Float = 0
                        for j in 0..<l { o += p[i * l + j] * v[(kh + j) * m + c] }
                        out[(qh + i) * m + c] = H(rounding: o).float
                    }
                }
                for i in 0..<n {
                    var delta: Float = 0
                    for c in 0..<m { delta += dout[(qh + i) * m + c] * out[(qh + i) * m + c] }
                    for j in 0..<l where p[i * l + j] != 0 {
                        var dp: Float = 0
                        for c in 0..<m {
                            dp += dout[(qh + i) * m + c] * v[(kh + j) * m + c]
                            dv[(kh + j) * m + c] += p[i * l + j] * dout[(qh + i) * m + c]
                        }
                        let ds = p[i * l + j] * (dp - delta) * scale
                        for c in 0..<d {
                            dq[(qh + i) * d + c] += ds * k[(kh + j) * d + c]
                            dk[(kh + j) * d + c] += ds * q[(qh + i) * d + c]
                        }
                    }
                }
            }
        }
        return SoftmaxReference.Result(
            out: DenseTensor(shape: spec.outputShape, values: out.map { Double($0) }),
            lse: DenseTensor(shape: spec.logSumExpShape, values: lse.map { Double($0) }),
            dq: DenseTensor(shape: spec.queryShape, values: dq.map(round)),
            dk: DenseTensor(shape: spec.keyShape, values: dk.map(round)),
            dv: DenseTensor(shape: spec.valueShape, values: dv.map(round)))
    }
}

/// The largest |actual − expected| (−inf must match −inf; any other non-finite value is infinite error).
func maxAbsoluteError(_ actual: DenseTensor, _ expected: DenseTensor) -> Double {
    precondition(actual.shape == expected.shape)
    var worst = 0.0
    for (a, e) in zip(actual.values, expected.values) {
        if e == -.infinity { if a != -.infinity { return .infinity }; continue }
        guard a.isFinite, e.isFinite else { return .infinity }
        worst = max(worst, abs(a - e))
    }
    return worst
}

// Exact softmax attention (performer.h: "Exact softmax attention"): descriptors and options
// in, PerformerCore's SoftmaxAttention does the rest.
import CPerformerABI
import PerformerCore

/// The options sizes this library understands: the struct before kv_starts, and today's.
private let knownSoftmaxOptionsSizes = knownOptionsSizes(performer_softmax_options_t.self, appended: [\.kv_starts])

@_cdecl("performer_softmax_options_init")
public func performer_softmax_options_init(_ options: UnsafeMutablePointer<performer_softmax_options_t>?) {
    guard let options else { return }
    options.pointee = performer_softmax_options_t(
        size: MemoryLayout<performer_softmax_options_t>.size, causal: 0, has_scale: 0, scale: 0, kv_lengths: nil,
        kv_starts: nil)
}

/// Reads `*options` (NULL means the defaults). `tensors` are all of the call's tensors, q
/// first: kv_lengths and kv_starts have one entry per batch (`readPerBatch`).
private func softmaxOptions(_ options: UnsafePointer<performer_softmax_options_t>?, tensors: [TensorArgument])
    throws(PerformerError) -> SoftmaxAttentionOptions {
    guard let options else { return SoftmaxAttentionOptions() }
    try checkOptionsSize(options, knownSizes: knownSoftmaxOptionsSizes, type: "performer_softmax_options_t", initializer: "performer_softmax_options_init")
    var defaults = performer_softmax_options_t()
    performer_softmax_options_init(&defaults)
    let fields = readOptions(options, defaults: defaults)
    var result = SoftmaxAttentionOptions(causal: fields.causal != 0, scale: fields.has_scale != 0 ? fields.scale : nil)
    result.keyLengths = try readPerBatch(fields.kv_lengths, name: "options->kv_lengths", tensors: tensors)
    result.keyStarts = try readPerBatch(fields.kv_starts, name: "options->kv_starts", tensors: tensors)
    return result
}

@_cdecl("performer_softmax_forward")
public func performer_softmax_forward(
    _ q: UnsafePointer<performer_tensor_t>?, _ k: UnsafePointer<performer_tensor_t>?,
    _ v: UnsafePointer<performer_tensor_t>?, _ out: UnsafeMutablePointer<performer_tensor_t>?,
    _ lse: UnsafeMutablePointer<performer_tensor_t>?, _ options: UnsafePointer<performer_softmax_options_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let q = try TensorArgument(q, name: "q"), k = try TensorArgument(k, name: "k")
        let v = try TensorArgument(v, name: "v"), out = try TensorArgument(out, name: "out")
        var lseArgument: TensorArgument?
        if lse != nil { lseArgument = try TensorArgument(lse, name: "lse") }
        try TensorArgument.expectSameDType([k, v, out], as: q)
        if let lseArgument {
            // A half call's log-sum-exp is float32 (performer.h, "Half precision").
            if q.dtype.isHalf { try lseArgument.expectFloat32(in: q) } else { try TensorArgument.expectSameDType([lseArgument], as: q) }
        }
        let options = try softmaxOptions(options, tensors: [q, k, v, out] + (lseArgument.map { [$0] } ?? []))
        switch q.dtype {
        case .float32: try forward(Float.self, q, k, v, out, lseArgument, options)
        case .float64: try forward(Double.self, q, k, v, out, lseArgument, options)
        case .float16: try forwardHalf(Float16.self, q, k, v, out, lseArgument, options)
        case .bfloat16: try forwardHalf(BFloat16.self, q, k, v, out, lseArgument, options)
        }
    }
}

private func forward<T: AttentionScalar>(
    _: T.Type, _ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument, _ out: TensorArgument,
    _ lse: TensorArgument?, _ options: SoftmaxAttentionOptions
) throws(PerformerError) {
    try SoftmaxAttention.forward(
        query: q.view(T.self), key: k.view(T.self), value: v.view(T.self), output: out.mutableView(T.self),
        logSumExp: lse?.mutableView(T.self), options: options)
}

private func forwardHalf<H: HalfPrecisionScalar>(
    _: H.Type, _ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument, _ out: TensorArgument,
    _ lse: TensorArgument?, _ options: SoftmaxAttentionOptions
) throws(PerformerError) {
    try SoftmaxAttention.forward(
        query: q.view(H.self), key: k.view(H.self), value: v.view(H.self), output: out.mutableView(H.self),
        logSumExp: lse?.mutableView(Float.self), options: options)
}

@_cdecl("performer_softmax_backward")
public func performer_softmax_backward(
    _ q: UnsafePointer<performer_tensor_t>?, _ k: UnsafePointer<performer_tensor_t>?,
    _ v: UnsafePointer<performer_tensor_t>?, _ out: UnsafePointer<performer_tensor_t>?,
    _ lse: UnsafePointer<performer_tensor_t>?, _ dout: UnsafePointer<performer_tensor_t>?,
    _ dq: UnsafeMutablePointer<performer_tensor_t>?, _ dk: UnsafeMutablePointer<performer_tensor_t>?,
    _ dv: UnsafeMutablePointer<performer_tensor_t>?, _ options: UnsafePointer<performer_softmax_options_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let q = try TensorArgument(q, name: "q"), k = try TensorArgument(k, name: "k")
        let v = try TensorArgument(v, name: "v"), out = try TensorArgument(out, name: "out")
        let lse = try TensorArgument(lse, name: "lse"), dout = try TensorArgument(dout, name: "dout")
        let dq = try TensorArgument(dq, name: "dq"), dk = try TensorArgument(dk, name: "dk")
        let dv = try TensorArgument(dv, name: "dv")
        try TensorArgument.expectSameDType([k, v, out] + (q.dtype.isHalf ? [] : [lse]) + [dout, dq, dk, dv], as: q)
        if q.dtype.isHalf { try lse.expectFloat32(in: q) }
        let options = try softmaxOptions(options, tensors: [q, k, v, out, lse, dout, dq, dk, dv])
        switch q.dtype {
        case .float32: try backward(Float.self, lse: Float.self, q, k, v, out, lse, dout, dq, dk, dv, options, SoftmaxAttention.backward)
        case .float64: try backward(Double.self, lse: Double.self, q, k, v, out, lse, dout, dq, dk, dv, options, SoftmaxAttention.backward)
        case .float16: try backward(Float16.self, lse: Float.self, q, k, v, out, lse, dout, dq, dk, dv, options, SoftmaxAttention.backward)
        case .bfloat16: try backward(BFloat16.self, lse: Float.self, q, k, v, out, lse, dout, dq, dk, dv, options, SoftmaxAttention.backward)
        }
    }
}

/// The views of a backward call in element type T, its lse in L (T, or float32 for a half T),
/// handed to `call`: `SoftmaxAttention.backward` for that T.
private func backward<T: TensorElement, L: TensorElement>(
    _: T.Type, lse _: L.Type, _ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument, _ out: TensorArgument,
    _ lse: TensorArgument, _ dout: TensorArgument, _ dq: TensorArgument, _ dk: TensorArgument,
    _ dv: TensorArgument, _ options: SoftmaxAttentionOptions,
    _ call: (TensorView<T>, TensorView<T>, TensorView<T>, TensorView<T>, TensorView<L>, TensorView<T>,
             MutableTensorView<T>, MutableTensorView<T>, MutableTensorView<T>, SoftmaxAttentionOptions) throws(PerformerError) -> Void
) throws(PerformerError) {
    try call(q.view(T.self), k.view(T.self), v.view(T.self), out.view(T.self), lse.view(L.self), dout.view(T.self),
             dq.mutableView(T.self), dk.mutableView(T.self), dv.mutableView(T.self), options)
}

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
        try ForwardCall(q: q, k: k, v: v, out: out, lse: lseArgument, options: options).run(as: q.dtype)
    }
}

/// performer_softmax_forward's checked arguments. The calls are direct (no view builder taking
/// the function): tiny forwards are the ones a caller makes in a loop.
private struct ForwardCall: TypedAttentionCall {
    let q, k, v, out: TensorArgument, lse: TensorArgument?, options: SoftmaxAttentionOptions

    func run<T: AttentionScalar>(_: T.Type) throws(PerformerError) {
        try SoftmaxAttention.forward(
            query: q.view(T.self), key: k.view(T.self), value: v.view(T.self), output: out.mutableView(T.self),
            logSumExp: lse?.mutableView(T.self), options: options)
    }

    func runHalf<H: HalfPrecisionScalar>(_: H.Type) throws(PerformerError) {
        try SoftmaxAttention.forward(
            query: q.view(H.self), key: k.view(H.self), value: v.view(H.self), output: out.mutableView(H.self),
            logSumExp: lse?.mutableView(Float.self), options: options)
    }
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
        try BackwardCall(q: q, k: k, v: v, out: out, lse: lse, dout: dout, dq: dq, dk: dk, dv: dv, options: options)
            .run(as: q.dtype)
    }
}

/// performer_softmax_backward's checked arguments.
private struct BackwardCall: TypedAttentionCall {
    let q, k, v, out, lse, dout, dq, dk, dv: TensorArgument, options: SoftmaxAttentionOptions

    func run<T: AttentionScalar>(_: T.Type) throws(PerformerError) { try views(T.self, lse: T.self, SoftmaxAttention.backward) }
    func runHalf<H: HalfPrecisionScalar>(_: H.Type) throws(PerformerError) { try views(H.self, lse: Float.self, SoftmaxAttention.backward) }

    /// The views in element type T, the lse in L (as `ForwardCall`), handed to `call`:
    /// `SoftmaxAttention.backward` for that T.
    private func views<T: TensorElement, L: TensorElement>(
        _: T.Type, lse _: L.Type,
        _ call: (TensorView<T>, TensorView<T>, TensorView<T>, TensorView<T>, TensorView<L>, TensorView<T>,
                 MutableTensorView<T>, MutableTensorView<T>, MutableTensorView<T>, SoftmaxAttentionOptions)
            throws(PerformerError) -> Void
    ) throws(PerformerError) {
        try call(q.view(T.self), k.view(T.self), v.view(T.self), out.view(T.self), lse.view(L.self), dout.view(T.self),
                 dq.mutableView(T.self), dk.mutableView(T.self), dv.mutableView(T.self), options)
    }
}

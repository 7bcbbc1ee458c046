// Linear attention (performer.h: "Linear attention"): descriptors and options in,
// PerformerCore's LinearAttention does the rest.
import CPerformerABI
import PerformerCore

/// The options sizes this library understands: ABI 1's struct (ending at kv_lengths), the one
/// ending at kv_starts, and today's (normalize appended).
private let knownLinearOptionsSizes = knownOptionsSizes(performer_linear_options_t.self,
                                                        appended: [\.kv_starts, \.normalize])

@_cdecl("performer_linear_options_init")
public func performer_linear_options_init(_ options: UnsafeMutablePointer<performer_linear_options_t>?) {
    guard let options else { return }
    options.pointee = performer_linear_options_t(
        size: MemoryLayout<performer_linear_options_t>.size, causal: 0,
        feature_map: Int32(PERFORMER_FEATURE_ELU_PLUS_ONE.rawValue), eps: 1e-6, kv_lengths: nil, kv_starts: nil,
        normalize: 1)
}

/// A C feature-map code as the Swift enum, or an invalid-argument error naming `name`.
func linearFeatureMap(_ code: Int64, name: String) throws(PerformerError) -> LinearAttentionOptions.FeatureMap {
    guard let raw = Int32(exactly: code), let map = LinearAttentionOptions.FeatureMap(rawValue: raw) else {
        throw PerformerError(.invalidArgument, "\(name) = \(code) is not a performer_feature_map (0 = elu+1, 1 = relu, 2 = identity)")
    }
    return map
}

/// Reads `*options` (NULL means the defaults). `tensors` are all of the call's tensors, q
/// (or k, for state-only calls) first: kv_lengths and kv_starts have one entry per batch
/// (`readPerBatch`).
func linearOptions(_ options: UnsafePointer<performer_linear_options_t>?, tensors: [TensorArgument])
    throws(PerformerError) -> LinearAttentionOptions {
    guard let options else { return LinearAttentionOptions() }
    try checkOptionsSize(options, knownSizes: knownLinearOptionsSizes, type: "performer_linear_options_t", initializer: "performer_linear_options_init")
    var defaults = performer_linear_options_t()
    performer_linear_options_init(&defaults)
    let fields = readOptions(options, defaults: defaults)
    var result = LinearAttentionOptions(
        causal: fields.causal != 0,
        featureMap: try linearFeatureMap(Int64(fields.feature_map), name: "options->feature_map"),
        epsilon: fields.eps, normalize: fields.normalize != 0)
    result.keyLengths = try readPerBatch(fields.kv_lengths, name: "options->kv_lengths", tensors: tensors)
    result.keyStarts = try readPerBatch(fields.kv_starts, name: "options->kv_starts", tensors: tensors)
    return result
}

@_cdecl("performer_linear_forward")
public func performer_linear_forward(
    _ q: UnsafePointer<performer_tensor_t>?, _ k: UnsafePointer<performer_tensor_t>?,
    _ v: UnsafePointer<performer_tensor_t>?, _ out: UnsafeMutablePointer<performer_tensor_t>?,
    _ initial_state_s: UnsafePointer<performer_tensor_t>?, _ initial_state_z: UnsafePointer<performer_tensor_t>?,
    _ final_state_s: UnsafeMutablePointer<performer_tensor_t>?, _ final_state_z: UnsafeMutablePointer<performer_tensor_t>?,
    _ options: UnsafePointer<performer_linear_options_t>?
) -> performer_status {
    performer_linear_forward_with_denominators(q, k, v, out, initial_state_s, initial_state_z,
                                               final_state_s, final_state_z, nil, options)
}

@_cdecl("performer_linear_forward_with_denominators")
public func performer_linear_forward_with_denominators(
    _ q: UnsafePointer<performer_tensor_t>?, _ k: UnsafePointer<performer_tensor_t>?,
    _ v: UnsafePointer<performer_tensor_t>?, _ out: UnsafeMutablePointer<performer_tensor_t>?,
    _ initial_state_s: UnsafePointer<performer_tensor_t>?, _ initial_state_z: UnsafePointer<performer_tensor_t>?,
    _ final_state_s: UnsafeMutablePointer<performer_tensor_t>?, _ final_state_z: UnsafeMutablePointer<performer_tensor_t>?,
    _ denominators: UnsafeMutablePointer<performer_tensor_t>?,
    _ options: UnsafePointer<performer_linear_options_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let q = try TensorArgument(q, name: "q"), k = try TensorArgument(k, name: "k")
        let v = try TensorArgument(v, name: "v"), out = try TensorArgument(out, name: "out")
        let initial = try statePair(initial_state_s, initial_state_z, names: ("S0", "z0"))
        let final = try statePair(UnsafePointer(final_state_s), UnsafePointer(final_state_z),
                                  names: ("S_N", "z_N"))
        let denominators = denominators == nil ? nil : try TensorArgument(denominators, name: "denominators")
        let extra = denominators.map { [$0] } ?? []
        try TensorArgument.expectDTypes(tokens: [k, v, out], states: tensors(initial, final) + extra, as: q)
        let options = try linearOptions(options, tensors: [q, k, v, out] + tensors(initial, final) + extra)
        try ForwardCall(q: q, k: k, v: v, out: out, initial: initial, final: final, denominators: denominators,
                        options: options)
            .run(as: q.dtype)
    }
}

/// performer_linear_forward(_with_denominators)'s checked arguments.
private struct ForwardCall: TypedAttentionCall {
    let q, k, v, out: TensorArgument, initial, final: StatePair?, denominators: TensorArgument?
    let options: LinearAttentionOptions

    func run<T: AttentionScalar>(_: T.Type) throws(PerformerError) { try views(T.self, state: T.self, LinearAttention.forward) }
    func runHalf<H: HalfPrecisionScalar>(_: H.Type) throws(PerformerError) { try views(H.self, state: Float.self, LinearAttention.forward) }

    /// The views in token type T and state type S (T, or float32 for a half T), handed to
    /// `call`: `LinearAttention.forward` for that T.
    private func views<T: TensorElement, S: AttentionScalar>(
        _: T.Type, state _: S.Type,
        _ call: (TensorView<T>, TensorView<T>, TensorView<T>, MutableTensorView<T>, LinearStateView<S>?,
                 MutableLinearStateView<S>?, MutableTensorView<S>?, LinearAttentionOptions) throws(PerformerError) -> Void
    ) throws(PerformerError) {
        try call(q.view(T.self), k.view(T.self), v.view(T.self), out.mutableView(T.self),
                 initial.map { stateView($0, S.self) }, final.map { mutableStateView($0, S.self) },
                 denominators?.mutableView(S.self), options)
    }
}

@_cdecl("performer_linear_backward")
public func performer_linear_backward(
    _ q: UnsafePointer<performer_tensor_t>?, _ k: UnsafePointer<performer_tensor_t>?,
    _ v: UnsafePointer<performer_tensor_t>?, _ dout: UnsafePointer<performer_tensor_t>?,
    _ dq: UnsafeMutablePointer<performer_tensor_t>?, _ dk: UnsafeMutablePointer<performer_tensor_t>?,
    _ dv: UnsafeMutablePointer<performer_tensor_t>?,
    _ initial_state_s: UnsafePointer<performer_tensor_t>?, _ initial_state_z: UnsafePointer<performer_tensor_t>?,
    _ dfinal_state_s: UnsafePointer<performer_tensor_t>?, _ dfinal_state_z: UnsafePointer<performer_tensor_t>?,
    _ dinitial_state_s: UnsafeMutablePointer<performer_tensor_t>?,
    _ dinitial_state_z: UnsafeMutablePointer<performer_tensor_t>?,
    _ options: UnsafePointer<performer_linear_options_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let q = try TensorArgument(q, name: "q"), k = try TensorArgument(k, name: "k")
        let v = try TensorArgument(v, name: "v"), dout = try TensorArgument(dout, name: "dout")
        let dq = try TensorArgument(dq, name: "dq"), dk = try TensorArgument(dk, name: "dk")
        let dv = try TensorArgument(dv, name: "dv")
        let initial = try statePair(initial_state_s, initial_state_z, names: ("S0", "z0"))
        let dfinal = try statePair(dfinal_state_s, dfinal_state_z, names: ("dS_N", "dz_N"))
        let dinitial = try statePair(UnsafePointer(dinitial_state_s), UnsafePointer(dinitial_state_z),
                                     names: ("dS0", "dz0"))
        try TensorArgument.expectDTypes(tokens: [k, v, dout, dq, dk, dv], states: tensors(initial, dfinal, dinitial), as: q)
        let options = try linearOptions(options, tensors: [q, k, v, dout, dq, dk, dv] + tensors(initial, dfinal, dinitial))
        try BackwardCall(q: q, k: k, v: v, dout: dout, dq: dq, dk: dk, dv: dv, initial: initial, dfinal: dfinal,
                         dinitial: dinitial, options: options)
            .run(as: q.dtype)
    }
}

/// performer_linear_backward's checked arguments.
private struct BackwardCall: TypedAttentionCall {
    let q, k, v, dout, dq, dk, dv: TensorArgument, initial, dfinal, dinitial: StatePair?
    let options: LinearAttentionOptions

    func run<T: AttentionScalar>(_: T.Type) throws(PerformerError) { try views(T.self, state: T.self, LinearAttention.backward) }
    func runHalf<H: HalfPrecisionScalar>(_: H.Type) throws(PerformerError) { try views(H.self, state: Float.self, LinearAttention.backward) }

    /// The views in token type T and state type S (as `ForwardCall`), handed to `call`:
    /// `LinearAttention.backward` for that T.
    private func views<T: TensorElement, S: AttentionScalar>(
        _: T.Type, state _: S.Type,
        _ call: (TensorView<T>, TensorView<T>, TensorView<T>, TensorView<T>, MutableTensorView<T>, MutableTensorView<T>,
                 MutableTensorView<T>, LinearStateView<S>?, LinearStateView<S>?, MutableLinearStateView<S>?,
                 LinearAttentionOptions) throws(PerformerError) -> Void
    ) throws(PerformerError) {
        try call(q.view(T.self), k.view(T.self), v.view(T.self), dout.view(T.self), dq.mutableView(T.self),
                 dk.mutableView(T.self), dv.mutableView(T.self), initial.map { stateView($0, S.self) },
                 dfinal.map { stateView($0, S.self) }, dinitial.map { mutableStateView($0, S.self) }, options)
    }
}

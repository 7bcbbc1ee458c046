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
        let call = (q, k, v, out, initial, final, denominators, options)
        switch q.dtype {
        case .float32: try forward(Float.self, state: Float.self, call, LinearAttention.forward)
        case .float64: try forward(Double.self, state: Double.self, call, LinearAttention.forward)
        case .float16: try forward(Float16.self, state: Float.self, call, LinearAttention.forward)
        case .bfloat16: try forward(BFloat16.self, state: Float.self, call, LinearAttention.forward)
        }
    }
}

private typealias ForwardArguments = (
    q: TensorArgument, k: TensorArgument, v: TensorArgument, out: TensorArgument, initial: StatePair?,
    final: StatePair?, denominators: TensorArgument?, options: LinearAttentionOptions)

/// The views of a forward in token type T and state type S (T, or float32 for a half T),
/// handed to `call`: `LinearAttention.forward` for that T.
private func forward<T: TensorElement, S: AttentionScalar>(
    _: T.Type, state _: S.Type, _ a: ForwardArguments,
    _ call: (TensorView<T>, TensorView<T>, TensorView<T>, MutableTensorView<T>, LinearStateView<S>?,
             MutableLinearStateView<S>?, MutableTensorView<S>?, LinearAttentionOptions) throws(PerformerError) -> Void
) throws(PerformerError) {
    try call(a.q.view(T.self), a.k.view(T.self), a.v.view(T.self), a.out.mutableView(T.self),
             a.initial.map { LinearStateView(s: $0.s.view(S.self), z: $0.z.view(S.self)) },
             a.final.map { MutableLinearStateView(s: $0.s.mutableView(S.self), z: $0.z.mutableView(S.self)) },
             a.denominators?.mutableView(S.self), a.options)
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
        let call = (q, k, v, dout, dq, dk, dv, initial, dfinal, dinitial, options)
        switch q.dtype {
        case .float32: try backward(Float.self, state: Float.self, call, LinearAttention.backward)
        case .float64: try backward(Double.self, state: Double.self, call, LinearAttention.backward)
        case .float16: try backward(Float16.self, state: Float.self, call, LinearAttention.backward)
        case .bfloat16: try backward(BFloat16.self, state: Float.self, call, LinearAttention.backward)
        }
    }
}

private typealias BackwardArguments = (
    q: TensorArgument, k: TensorArgument, v: TensorArgument, dout: TensorArgument, dq: TensorArgument,
    dk: TensorArgument, dv: TensorArgument, initial: StatePair?, dfinal: StatePair?, dinitial: StatePair?,
    options: LinearAttentionOptions)

/// The views of a backward in token type T and state type S (as `forward`), handed to `call`:
/// `LinearAttention.backward` for that T.
private func backward<T: TensorElement, S: AttentionScalar>(
    _: T.Type, state _: S.Type, _ a: BackwardArguments,
    _ call: (TensorView<T>, TensorView<T>, TensorView<T>, TensorView<T>, MutableTensorView<T>, MutableTensorView<T>,
             MutableTensorView<T>, LinearStateView<S>?, LinearStateView<S>?, MutableLinearStateView<S>?,
             LinearAttentionOptions) throws(PerformerError) -> Void
) throws(PerformerError) {
    try call(a.q.view(T.self), a.k.view(T.self), a.v.view(T.self), a.dout.view(T.self), a.dq.mutableView(T.self),
             a.dk.mutableView(T.self), a.dv.mutableView(T.self),
             a.initial.map { LinearStateView(s: $0.s.view(S.self), z: $0.z.view(S.self)) },
             a.dfinal.map { LinearStateView(s: $0.s.view(S.self), z: $0.z.view(S.self)) },
             a.dinitial.map { MutableLinearStateView(s: $0.s.mutableView(S.self), z: $0.z.mutableView(S.self)) },
             a.options)
}

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
        try TensorArgument.expectSameDType([k, v, out] + tensors(initial, final) + extra, as: q)
        let options = try linearOptions(options, tensors: [q, k, v, out] + tensors(initial, final) + extra)
        switch q.dtype {
        case .float32: try forward(Float.self, q, k, v, out, initial, final, denominators, options)
        case .float64: try forward(Double.self, q, k, v, out, initial, final, denominators, options)
        case .float16, .bfloat16: throw q.unsupportedHalf(in: "performer_linear_forward(_with_denominators)")
        }
    }
}

private func forward<T: AttentionScalar>(
    _: T.Type, _ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument, _ out: TensorArgument,
    _ initial: (s: TensorArgument, z: TensorArgument)?, _ final: (s: TensorArgument, z: TensorArgument)?,
    _ denominators: TensorArgument?, _ options: LinearAttentionOptions
) throws(PerformerError) {
    try LinearAttention.forward(
        query: q.view(T.self), key: k.view(T.self), value: v.view(T.self), output: out.mutableView(T.self),
        initialState: initial.map { LinearStateView(s: $0.s.view(T.self), z: $0.z.view(T.self)) },
        finalState: final.map { MutableLinearStateView(s: $0.s.mutableView(T.self), z: $0.z.mutableView(T.self)) },
        denominators: denominators?.mutableView(T.self),
        options: options)
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
        try TensorArgument.expectSameDType([k, v, dout, dq, dk, dv] + tensors(initial, dfinal, dinitial), as: q)
        let options = try linearOptions(options, tensors: [q, k, v, dout, dq, dk, dv] + tensors(initial, dfinal, dinitial))
        switch q.dtype {
        case .float32: try backward(Float.self, q, k, v, dout, dq, dk, dv, initial, dfinal, dinitial, options)
        case .float64: try backward(Double.self, q, k, v, dout, dq, dk, dv, initial, dfinal, dinitial, options)
        case .float16, .bfloat16: throw q.unsupportedHalf(in: "performer_linear_backward")
        }
    }
}

private func backward<T: AttentionScalar>(
    _: T.Type, _ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument, _ dout: TensorArgument,
    _ dq: TensorArgument, _ dk: TensorArgument, _ dv: TensorArgument,
    _ initial: (s: TensorArgument, z: TensorArgument)?, _ dfinal: (s: TensorArgument, z: TensorArgument)?,
    _ dinitial: (s: TensorArgument, z: TensorArgument)?, _ options: LinearAttentionOptions
) throws(PerformerError) {
    try LinearAttention.backward(
        query: q.view(T.self), key: k.view(T.self), value: v.view(T.self), outputGradient: dout.view(T.self),
        queryGradient: dq.mutableView(T.self), keyGradient: dk.mutableView(T.self), valueGradient: dv.mutableView(T.self),
        initialState: initial.map { LinearStateView(s: $0.s.view(T.self), z: $0.z.view(T.self)) },
        finalStateGradient: dfinal.map { LinearStateView(s: $0.s.view(T.self), z: $0.z.view(T.self)) },
        initialStateGradient: dinitial.map { MutableLinearStateView(s: $0.s.mutableView(T.self), z: $0.z.mutableView(T.self)) },
        options: options)
}

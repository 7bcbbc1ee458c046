// FAVOR+ attention (performer.h: "FAVOR+ attention"): descriptors and options in,
// PerformerCore's FavorAttention does the rest.
import CPerformerABI
import PerformerCore

/// performer_favor_options_t -> FavorAttentionOptions. `tensors` are all of the call's
/// tensors, q first: kv_lengths and kv_starts have one entry per batch (`readPerBatch`).
func favorAttentionOptions(_ options: UnsafePointer<performer_favor_options_t>?, tensors: [TensorArgument])
    throws(PerformerError) -> FavorAttentionOptions {
    let call = try FavorCallOptions(options)
    var result = FavorAttentionOptions(causal: call.causal, features: call.features, epsilon: call.epsilon)
    result.keyLengths = try readPerBatch(call.keyLengths, name: "options->kv_lengths", tensors: tensors)
    result.keyStarts = try readPerBatch(call.keyStarts, name: "options->kv_starts", tensors: tensors)
    return result
}

@_cdecl("performer_favor_forward")
public func performer_favor_forward(
    _ q: UnsafePointer<performer_tensor_t>?, _ k: UnsafePointer<performer_tensor_t>?,
    _ v: UnsafePointer<performer_tensor_t>?, _ projection: performer_favor_projection_t?,
    _ out: UnsafeMutablePointer<performer_tensor_t>?,
    _ initial_state_s: UnsafePointer<performer_tensor_t>?, _ initial_state_z: UnsafePointer<performer_tensor_t>?,
    _ initial_state_c: UnsafePointer<performer_tensor_t>?,
    _ final_state_s: UnsafeMutablePointer<performer_tensor_t>?, _ final_state_z: UnsafeMutablePointer<performer_tensor_t>?,
    _ final_state_c: UnsafeMutablePointer<performer_tensor_t>?,
    _ options: UnsafePointer<performer_favor_options_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let q = try TensorArgument(q, name: "q"), k = try TensorArgument(k, name: "k")
        let v = try TensorArgument(v, name: "v")
        let p = try FavorProjectionHandle.from(projection).snapshot
        let out = try TensorArgument(out, name: "out")
        let initial = try stateTriple(initial_state_s, initial_state_z, initial_state_c, names: ("S0", "z0", "c0"))
        let final = try stateTriple(UnsafePointer(final_state_s), UnsafePointer(final_state_z),
                                    UnsafePointer(final_state_c), names: ("S_N", "z_N", "c_N"))
        try TensorArgument.expectSameDType([k, v, out] + tensors(initial) + tensors(final), as: q)
        let options = try favorAttentionOptions(options, tensors: [q, k, v, out] + tensors(initial) + tensors(final))
        switch q.dtype {
        case .float32: try forward(Float.self, q, k, v, p, out, initial, final, options)
        case .float64: try forward(Double.self, q, k, v, p, out, initial, final, options)
        case .float16, .bfloat16: throw q.unsupportedHalf(in: "performer_favor_forward")
        }
    }
}

private func forward<T: AttentionScalar>(
    _: T.Type, _ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument, _ p: FavorProjection,
    _ out: TensorArgument, _ initial: StateTriple?, _ final: StateTriple?, _ options: FavorAttentionOptions
) throws(PerformerError) {
    try FavorAttention.forward(
        query: q.view(T.self), key: k.view(T.self), value: v.view(T.self), projection: p,
        output: out.mutableView(T.self),
        initialState: initial.map { FavorStateView(s: $0.s.view(T.self), z: $0.z.view(T.self), c: $0.c.view(T.self)) },
        finalState: final.map {
            MutableFavorStateView(s: $0.s.mutableView(T.self), z: $0.z.mutableView(T.self), c: $0.c.mutableView(T.self))
        },
        options: options)
}

@_cdecl("performer_favor_backward")
public func performer_favor_backward(
    _ q: UnsafePointer<performer_tensor_t>?, _ k: UnsafePointer<performer_tensor_t>?,
    _ v: UnsafePointer<performer_tensor_t>?, _ dout: UnsafePointer<performer_tensor_t>?,
    _ projection: performer_favor_projection_t?,
    _ dq: UnsafeMutablePointer<performer_tensor_t>?, _ dk: UnsafeMutablePointer<performer_tensor_t>?,
    _ dv: UnsafeMutablePointer<performer_tensor_t>?,
    _ initial_state_s: UnsafePointer<performer_tensor_t>?, _ initial_state_z: UnsafePointer<performer_tensor_t>?,
    _ initial_state_c: UnsafePointer<performer_tensor_t>?,
    _ dfinal_state_s: UnsafePointer<performer_tensor_t>?, _ dfinal_state_z: UnsafePointer<performer_tensor_t>?,
    _ dinitial_state_s: UnsafeMutablePointer<performer_tensor_t>?,
    _ dinitial_state_z: UnsafeMutablePointer<performer_tensor_t>?,
    _ options: UnsafePointer<performer_favor_options_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let q = try TensorArgument(q, name: "q"), k = try TensorArgument(k, name: "k")
        let v = try TensorArgument(v, name: "v"), dout = try TensorArgument(dout, name: "dout")
        let p = try FavorProjectionHandle.from(projection).snapshot
        let dq = try TensorArgument(dq, name: "dq"), dk = try TensorArgument(dk, name: "dk")
        let dv = try TensorArgument(dv, name: "dv")
        let initial = try stateTriple(initial_state_s, initial_state_z, initial_state_c, names: ("S0", "z0", "c0"))
        let dfinal = try statePair(dfinal_state_s, dfinal_state_z, names: ("dS_N", "dz_N"))
        let dinitial = try statePair(UnsafePointer(dinitial_state_s), UnsafePointer(dinitial_state_z),
                                     names: ("dS0", "dz0"))
        try TensorArgument.expectSameDType(
            [k, v, dout, dq, dk, dv] + tensors(initial) + tensors(dfinal, dinitial), as: q)
        let options = try favorAttentionOptions(
            options, tensors: [q, k, v, dout, dq, dk, dv] + tensors(initial) + tensors(dfinal, dinitial))
        switch q.dtype {
        case .float32: try backward(Float.self, q, k, v, dout, p, dq, dk, dv, initial, dfinal, dinitial, options)
        case .float64: try backward(Double.self, q, k, v, dout, p, dq, dk, dv, initial, dfinal, dinitial, options)
        case .float16, .bfloat16: throw q.unsupportedHalf(in: "performer_favor_backward")
        }
    }
}

private func backward<T: AttentionScalar>(
    _: T.Type, _ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument, _ dout: TensorArgument,
    _ p: FavorProjection, _ dq: TensorArgument, _ dk: TensorArgument, _ dv: TensorArgument,
    _ initial: StateTriple?, _ dfinal: StatePair?, _ dinitial: StatePair?, _ options: FavorAttentionOptions
) throws(PerformerError) {
    try FavorAttention.backward(
        query: q.view(T.self), key: k.view(T.self), value: v.view(T.self), projection: p,
        outputGradient: dout.view(T.self),
        queryGradient: dq.mutableView(T.self), keyGradient: dk.mutableView(T.self), valueGradient: dv.mutableView(T.self),
        initialState: initial.map { FavorStateView(s: $0.s.view(T.self), z: $0.z.view(T.self), c: $0.c.view(T.self)) },
        finalStateGradient: dfinal.map { LinearStateView(s: $0.s.view(T.self), z: $0.z.view(T.self)) },
        initialStateGradient: dinitial.map {
            MutableLinearStateView(s: $0.s.mutableView(T.self), z: $0.z.mutableView(T.self))
        },
        options: options)
}

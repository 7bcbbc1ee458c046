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
        try TensorArgument.expectDTypes(tokens: [k, v, out], states: tensors(initial) + tensors(final), as: q)
        let options = try favorAttentionOptions(options, tensors: [q, k, v, out] + tensors(initial) + tensors(final))
        let call = (q, k, v, p, out, initial, final, options)
        switch q.dtype {
        case .float32: try forward(Float.self, state: Float.self, call, FavorAttention.forward)
        case .float64: try forward(Double.self, state: Double.self, call, FavorAttention.forward)
        case .float16: try forward(Float16.self, state: Float.self, call, FavorAttention.forward)
        case .bfloat16: try forward(BFloat16.self, state: Float.self, call, FavorAttention.forward)
        }
    }
}

private typealias ForwardArguments = (
    q: TensorArgument, k: TensorArgument, v: TensorArgument, p: FavorProjection, out: TensorArgument,
    initial: StateTriple?, final: StateTriple?, options: FavorAttentionOptions)

/// The views of a forward in token type T and state type S (T, or float32 for a half T),
/// handed to `call`: `FavorAttention.forward` for that T.
private func forward<T: TensorElement, S: AttentionScalar>(
    _: T.Type, state _: S.Type, _ a: ForwardArguments,
    _ call: (TensorView<T>, TensorView<T>, TensorView<T>, FavorProjection, MutableTensorView<T>, FavorStateView<S>?,
             MutableFavorStateView<S>?, FavorAttentionOptions) throws(PerformerError) -> Void
) throws(PerformerError) {
    try call(a.q.view(T.self), a.k.view(T.self), a.v.view(T.self), a.p, a.out.mutableView(T.self),
             a.initial.map { FavorStateView(s: $0.s.view(S.self), z: $0.z.view(S.self), c: $0.c.view(S.self)) },
             a.final.map {
                 MutableFavorStateView(s: $0.s.mutableView(S.self), z: $0.z.mutableView(S.self), c: $0.c.mutableView(S.self))
             },
             a.options)
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
        try TensorArgument.expectDTypes(
            tokens: [k, v, dout, dq, dk, dv], states: tensors(initial) + tensors(dfinal, dinitial), as: q)
        let options = try favorAttentionOptions(
            options, tensors: [q, k, v, dout, dq, dk, dv] + tensors(initial) + tensors(dfinal, dinitial))
        let call = (q, k, v, dout, p, dq, dk, dv, initial, dfinal, dinitial, options)
        switch q.dtype {
        case .float32: try backward(Float.self, state: Float.self, call, FavorAttention.backward)
        case .float64: try backward(Double.self, state: Double.self, call, FavorAttention.backward)
        case .float16: try backward(Float16.self, state: Float.self, call, FavorAttention.backward)
        case .bfloat16: try backward(BFloat16.self, state: Float.self, call, FavorAttention.backward)
        }
    }
}

private typealias BackwardArguments = (
    q: TensorArgument, k: TensorArgument, v: TensorArgument, dout: TensorArgument, p: FavorProjection,
    dq: TensorArgument, dk: TensorArgument, dv: TensorArgument, initial: StateTriple?, dfinal: StatePair?,
    dinitial: StatePair?, options: FavorAttentionOptions)

/// The views of a backward in token type T and state type S (as `forward`), handed to `call`:
/// `FavorAttention.backward` for that T.
private func backward<T: TensorElement, S: AttentionScalar>(
    _: T.Type, state _: S.Type, _ a: BackwardArguments,
    _ call: (TensorView<T>, TensorView<T>, TensorView<T>, FavorProjection, TensorView<T>, MutableTensorView<T>,
             MutableTensorView<T>, MutableTensorView<T>, FavorStateView<S>?, LinearStateView<S>?,
             MutableLinearStateView<S>?, FavorAttentionOptions) throws(PerformerError) -> Void
) throws(PerformerError) {
    try call(a.q.view(T.self), a.k.view(T.self), a.v.view(T.self), a.p, a.dout.view(T.self),
             a.dq.mutableView(T.self), a.dk.mutableView(T.self), a.dv.mutableView(T.self),
             a.initial.map { FavorStateView(s: $0.s.view(S.self), z: $0.z.view(S.self), c: $0.c.view(S.self)) },
             a.dfinal.map { LinearStateView(s: $0.s.view(S.self), z: $0.z.view(S.self)) },
             a.dinitial.map { MutableLinearStateView(s: $0.s.mutableView(S.self), z: $0.z.mutableView(S.self)) },
             a.options)
}

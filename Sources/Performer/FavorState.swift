// State-only FAVOR+ attention (performer.h: performer_favor_state and its backward):
// descriptors and options in, PerformerCore's FavorAttention.state / stateBackward do the rest.
import CPerformerABI
import PerformerCore

@_cdecl("performer_favor_state")
public func performer_favor_state(
    _ k: UnsafePointer<performer_tensor_t>?, _ v: UnsafePointer<performer_tensor_t>?,
    _ projection: performer_favor_projection_t?,
    _ initial_state_s: UnsafePointer<performer_tensor_t>?, _ initial_state_z: UnsafePointer<performer_tensor_t>?,
    _ initial_state_c: UnsafePointer<performer_tensor_t>?,
    _ state_s: UnsafeMutablePointer<performer_tensor_t>?, _ state_z: UnsafeMutablePointer<performer_tensor_t>?,
    _ state_c: UnsafeMutablePointer<performer_tensor_t>?,
    _ options: UnsafePointer<performer_favor_options_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let k = try TensorArgument(k, name: "k"), v = try TensorArgument(v, name: "v")
        let p = try FavorProjectionHandle.from(projection).snapshot
        let initial = try stateTriple(initial_state_s, initial_state_z, initial_state_c, names: ("S0", "z0", "c0"))
        let final: StateTriple = (try TensorArgument(state_s, name: "S_out"), try TensorArgument(state_z, name: "z_out"),
                                  try TensorArgument(state_c, name: "c_out"))
        try TensorArgument.expectDTypes(tokens: [v], states: tensors(initial) + tensors(final), as: k)
        let options = try favorAttentionOptions(options, tensors: [k, v] + tensors(initial) + tensors(final))
        let call = (k, v, p, initial, final, options)
        switch k.dtype {
        case .float32: try state(Float.self, state: Float.self, call, FavorAttention.state)
        case .float64: try state(Double.self, state: Double.self, call, FavorAttention.state)
        case .float16: try state(Float16.self, state: Float.self, call, FavorAttention.state)
        case .bfloat16: try state(BFloat16.self, state: Float.self, call, FavorAttention.state)
        }
    }
}

private typealias StateArguments = (
    k: TensorArgument, v: TensorArgument, p: FavorProjection, initial: StateTriple?, final: StateTriple,
    options: FavorAttentionOptions)

/// The views of a state call in token type T and state type S (T, or float32 for a half T),
/// handed to `call`: `FavorAttention.state` for that T.
private func state<T: TensorElement, S: AttentionScalar>(
    _: T.Type, state _: S.Type, _ a: StateArguments,
    _ call: (TensorView<T>, TensorView<T>, FavorProjection, FavorStateView<S>?, MutableFavorStateView<S>,
             FavorAttentionOptions) throws(PerformerError) -> Void
) throws(PerformerError) {
    try call(a.k.view(T.self), a.v.view(T.self), a.p,
             a.initial.map { FavorStateView(s: $0.s.view(S.self), z: $0.z.view(S.self), c: $0.c.view(S.self)) },
             MutableFavorStateView(s: a.final.s.mutableView(S.self), z: a.final.z.mutableView(S.self),
                                   c: a.final.c.mutableView(S.self)),
             a.options)
}

@_cdecl("performer_favor_state_backward")
public func performer_favor_state_backward(
    _ k: UnsafePointer<performer_tensor_t>?, _ v: UnsafePointer<performer_tensor_t>?,
    _ projection: performer_favor_projection_t?,
    _ dstate_s: UnsafePointer<performer_tensor_t>?, _ dstate_z: UnsafePointer<performer_tensor_t>?,
    _ dk: UnsafeMutablePointer<performer_tensor_t>?, _ dv: UnsafeMutablePointer<performer_tensor_t>?,
    _ dinitial_state_s: UnsafeMutablePointer<performer_tensor_t>?,
    _ dinitial_state_z: UnsafeMutablePointer<performer_tensor_t>?,
    _ initial_state_s: UnsafePointer<performer_tensor_t>?, _ initial_state_z: UnsafePointer<performer_tensor_t>?,
    _ initial_state_c: UnsafePointer<performer_tensor_t>?,
    _ options: UnsafePointer<performer_favor_options_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let k = try TensorArgument(k, name: "k"), v = try TensorArgument(v, name: "v")
        let p = try FavorProjectionHandle.from(projection).snapshot
        let ds = try TensorArgument(dstate_s, name: "dS_out"), dz = try TensorArgument(dstate_z, name: "dz_out")
        let dk = try TensorArgument(dk, name: "dk"), dv = try TensorArgument(dv, name: "dv")
        let dinitial = try statePair(UnsafePointer(dinitial_state_s), UnsafePointer(dinitial_state_z),
                                     names: ("dS0", "dz0"))
        let initial = try stateTriple(initial_state_s, initial_state_z, initial_state_c, names: ("S0", "z0", "c0"))
        let all = [k, v, ds, dz, dk, dv] + tensors(dinitial) + tensors(initial)
        try TensorArgument.expectDTypes(tokens: [v, dk, dv], states: [ds, dz] + tensors(dinitial) + tensors(initial), as: k)
        let options = try favorAttentionOptions(options, tensors: all)
        let call = (k, v, p, (ds, dz), dk, dv, dinitial, initial, options)
        switch k.dtype {
        case .float32: try stateBackward(Float.self, state: Float.self, call, FavorAttention.stateBackward)
        case .float64: try stateBackward(Double.self, state: Double.self, call, FavorAttention.stateBackward)
        case .float16: try stateBackward(Float16.self, state: Float.self, call, FavorAttention.stateBackward)
        case .bfloat16: try stateBackward(BFloat16.self, state: Float.self, call, FavorAttention.stateBackward)
        }
    }
}

private typealias StateBackwardArguments = (
    k: TensorArgument, v: TensorArgument, p: FavorProjection, dfinal: StatePair, dk: TensorArgument,
    dv: TensorArgument, dinitial: StatePair?, initial: StateTriple?, options: FavorAttentionOptions)

/// The views of a state backward in token type T and state type S (as `state`), handed to
/// `call`: `FavorAttention.stateBackward` for that T.
private func stateBackward<T: TensorElement, S: AttentionScalar>(
    _: T.Type, state _: S.Type, _ a: StateBackwardArguments,
    _ call: (TensorView<T>, TensorView<T>, FavorProjection, LinearStateView<S>, MutableTensorView<T>,
             MutableTensorView<T>, FavorStateView<S>?, MutableLinearStateView<S>?, FavorAttentionOptions)
        throws(PerformerError) -> Void
) throws(PerformerError) {
    try call(a.k.view(T.self), a.v.view(T.self), a.p,
             LinearStateView(s: a.dfinal.s.view(S.self), z: a.dfinal.z.view(S.self)),
             a.dk.mutableView(T.self), a.dv.mutableView(T.self),
             a.initial.map { FavorStateView(s: $0.s.view(S.self), z: $0.z.view(S.self), c: $0.c.view(S.self)) },
             a.dinitial.map { MutableLinearStateView(s: $0.s.mutableView(S.self), z: $0.z.mutableView(S.self)) },
             a.options)
}

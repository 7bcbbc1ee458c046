// State-only linear attention (performer.h: performer_linear_state and its backward):
// descriptors and options in, PerformerCore's LinearAttention.state / stateBackward do the rest.
import CPerformerABI
import PerformerCore

@_cdecl("performer_linear_state")
public func performer_linear_state(
    _ k: UnsafePointer<performer_tensor_t>?, _ v: UnsafePointer<performer_tensor_t>?,
    _ initial_state_s: UnsafePointer<performer_tensor_t>?, _ initial_state_z: UnsafePointer<performer_tensor_t>?,
    _ state_s: UnsafeMutablePointer<performer_tensor_t>?, _ state_z: UnsafeMutablePointer<performer_tensor_t>?,
    _ options: UnsafePointer<performer_linear_options_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let k = try TensorArgument(k, name: "k"), v = try TensorArgument(v, name: "v")
        let initial = try statePair(initial_state_s, initial_state_z, names: ("S0", "z0"))
        let s = try TensorArgument(state_s, name: "S_out"), z = try TensorArgument(state_z, name: "z_out")
        try TensorArgument.expectDTypes(tokens: [v], states: [s, z] + tensors(initial), as: k)
        let options = try linearOptions(options, tensors: [k, v, s, z] + tensors(initial))
        let call = (k, v, initial, (s, z), options)
        switch k.dtype {
        case .float32: try state(Float.self, state: Float.self, call, LinearAttention.state)
        case .float64: try state(Double.self, state: Double.self, call, LinearAttention.state)
        case .float16: try state(Float16.self, state: Float.self, call, LinearAttention.state)
        case .bfloat16: try state(BFloat16.self, state: Float.self, call, LinearAttention.state)
        }
    }
}

private typealias StateArguments = (
    k: TensorArgument, v: TensorArgument, initial: StatePair?, final: StatePair, options: LinearAttentionOptions)

/// The views of a state call in token type T and state type S (T, or float32 for a half T),
/// handed to `call`: `LinearAttention.state` for that T.
private func state<T: TensorElement, S: AttentionScalar>(
    _: T.Type, state _: S.Type, _ a: StateArguments,
    _ call: (TensorView<T>, TensorView<T>, LinearStateView<S>?, MutableLinearStateView<S>, LinearAttentionOptions)
        throws(PerformerError) -> Void
) throws(PerformerError) {
    try call(a.k.view(T.self), a.v.view(T.self), a.initial.map { LinearStateView(s: $0.s.view(S.self), z: $0.z.view(S.self)) },
             MutableLinearStateView(s: a.final.s.mutableView(S.self), z: a.final.z.mutableView(S.self)), a.options)
}

@_cdecl("performer_linear_state_backward")
public func performer_linear_state_backward(
    _ k: UnsafePointer<performer_tensor_t>?, _ v: UnsafePointer<performer_tensor_t>?,
    _ dstate_s: UnsafePointer<performer_tensor_t>?, _ dstate_z: UnsafePointer<performer_tensor_t>?,
    _ dk: UnsafeMutablePointer<performer_tensor_t>?, _ dv: UnsafeMutablePointer<performer_tensor_t>?,
    _ dinitial_state_s: UnsafeMutablePointer<performer_tensor_t>?,
    _ dinitial_state_z: UnsafeMutablePointer<performer_tensor_t>?,
    _ options: UnsafePointer<performer_linear_options_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let k = try TensorArgument(k, name: "k"), v = try TensorArgument(v, name: "v")
        let ds = try TensorArgument(dstate_s, name: "dS_out"), dz = try TensorArgument(dstate_z, name: "dz_out")
        let dk = try TensorArgument(dk, name: "dk"), dv = try TensorArgument(dv, name: "dv")
        let dinitial = try statePair(UnsafePointer(dinitial_state_s), UnsafePointer(dinitial_state_z),
                                     names: ("dS0", "dz0"))
        try TensorArgument.expectDTypes(tokens: [v, dk, dv], states: [ds, dz] + tensors(dinitial), as: k)
        let options = try linearOptions(options, tensors: [k, v, ds, dz, dk, dv] + tensors(dinitial))
        let call = (k, v, (ds, dz), dk, dv, dinitial, options)
        switch k.dtype {
        case .float32: try stateBackward(Float.self, state: Float.self, call, LinearAttention.stateBackward)
        case .float64: try stateBackward(Double.self, state: Double.self, call, LinearAttention.stateBackward)
        case .float16: try stateBackward(Float16.self, state: Float.self, call, LinearAttention.stateBackward)
        case .bfloat16: try stateBackward(BFloat16.self, state: Float.self, call, LinearAttention.stateBackward)
        }
    }
}

private typealias StateBackwardArguments = (
    k: TensorArgument, v: TensorArgument, dfinal: StatePair, dk: TensorArgument, dv: TensorArgument,
    dinitial: StatePair?, options: LinearAttentionOptions)

/// The views of a state backward in token type T and state type S (as `state`), handed to
/// `call`: `LinearAttention.stateBackward` for that T.
private func stateBackward<T: TensorElement, S: AttentionScalar>(
    _: T.Type, state _: S.Type, _ a: StateBackwardArguments,
    _ call: (TensorView<T>, TensorView<T>, LinearStateView<S>, MutableTensorView<T>, MutableTensorView<T>,
             MutableLinearStateView<S>?, LinearAttentionOptions) throws(PerformerError) -> Void
) throws(PerformerError) {
    try call(a.k.view(T.self), a.v.view(T.self), LinearStateView(s: a.dfinal.s.view(S.self), z: a.dfinal.z.view(S.self)),
             a.dk.mutableView(T.self), a.dv.mutableView(T.self),
             a.dinitial.map { MutableLinearStateView(s: $0.s.mutableView(S.self), z: $0.z.mutableView(S.self)) }, a.options)
}

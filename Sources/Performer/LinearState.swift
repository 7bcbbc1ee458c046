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
        try StateCall(k: k, v: v, initial: initial, final: (s, z), options: options).run(as: k.dtype)
    }
}

/// performer_linear_state's checked arguments.
private struct StateCall: TypedAttentionCall {
    let k, v: TensorArgument, initial: StatePair?, final: StatePair, options: LinearAttentionOptions

    func run<T: AttentionScalar>(_: T.Type) throws(PerformerError) { try views(T.self, state: T.self, LinearAttention.state) }
    func runHalf<H: HalfPrecisionScalar>(_: H.Type) throws(PerformerError) { try views(H.self, state: Float.self, LinearAttention.state) }

    /// The views in token type T and state type S (T, or float32 for a half T), handed to
    /// `call`: `LinearAttention.state` for that T.
    private func views<T: TensorElement, S: AttentionScalar>(
        _: T.Type, state _: S.Type,
        _ call: (TensorView<T>, TensorView<T>, LinearStateView<S>?, MutableLinearStateView<S>, LinearAttentionOptions)
            throws(PerformerError) -> Void
    ) throws(PerformerError) {
        try call(k.view(T.self), v.view(T.self), initial.map { stateView($0, S.self) }, mutableStateView(final, S.self),
                 options)
    }
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
        try StateBackwardCall(k: k, v: v, dfinal: (ds, dz), dk: dk, dv: dv, dinitial: dinitial, options: options)
            .run(as: k.dtype)
    }
}

/// performer_linear_state_backward's checked arguments.
private struct StateBackwardCall: TypedAttentionCall {
    let k, v: TensorArgument, dfinal: StatePair, dk, dv: TensorArgument, dinitial: StatePair?
    let options: LinearAttentionOptions

    func run<T: AttentionScalar>(_: T.Type) throws(PerformerError) { try views(T.self, state: T.self, LinearAttention.stateBackward) }
    func runHalf<H: HalfPrecisionScalar>(_: H.Type) throws(PerformerError) {
        try views(H.self, state: Float.self, LinearAttention.stateBackward)
    }

    /// The views in token type T and state type S (as `StateCall`), handed to `call`:
    /// `LinearAttention.stateBackward` for that T.
    private func views<T: TensorElement, S: AttentionScalar>(
        _: T.Type, state _: S.Type,
        _ call: (TensorView<T>, TensorView<T>, LinearStateView<S>, MutableTensorView<T>, MutableTensorView<T>,
                 MutableLinearStateView<S>?, LinearAttentionOptions) throws(PerformerError) -> Void
    ) throws(PerformerError) {
        try call(k.view(T.self), v.view(T.self), stateView(dfinal, S.self), dk.mutableView(T.self), dv.mutableView(T.self),
                 dinitial.map { mutableStateView($0, S.self) }, options)
    }
}

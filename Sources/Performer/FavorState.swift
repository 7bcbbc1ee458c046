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
        try StateCall(k: k, v: v, p: p, initial: initial, final: final, options: options).run(as: k.dtype)
    }
}

/// performer_favor_state's checked arguments.
private struct StateCall: TypedAttentionCall {
    let k, v: TensorArgument, p: FavorProjection, initial: StateTriple?, final: StateTriple
    let options: FavorAttentionOptions

    func run<T: AttentionScalar>(_: T.Type) throws(PerformerError) { try views(T.self, state: T.self, FavorAttention.state) }
    func runHalf<H: HalfPrecisionScalar>(_: H.Type) throws(PerformerError) { try views(H.self, state: Float.self, FavorAttention.state) }

    /// The views in token type T and state type S (T, or float32 for a half T), handed to
    /// `call`: `FavorAttention.state` for that T.
    private func views<T: TensorElement, S: AttentionScalar>(
        _: T.Type, state _: S.Type,
        _ call: (TensorView<T>, TensorView<T>, FavorProjection, FavorStateView<S>?, MutableFavorStateView<S>,
                 FavorAttentionOptions) throws(PerformerError) -> Void
    ) throws(PerformerError) {
        try call(k.view(T.self), v.view(T.self), p, initial.map { favorStateView($0, S.self) },
                 mutableFavorStateView(final, S.self), options)
    }
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
        try StateBackwardCall(k: k, v: v, p: p, dfinal: (ds, dz), dk: dk, dv: dv, dinitial: dinitial, initial: initial,
                              options: options)
            .run(as: k.dtype)
    }
}

/// performer_favor_state_backward's checked arguments.
private struct StateBackwardCall: TypedAttentionCall {
    let k, v: TensorArgument, p: FavorProjection, dfinal: StatePair, dk, dv: TensorArgument
    let dinitial: StatePair?, initial: StateTriple?, options: FavorAttentionOptions

    func run<T: AttentionScalar>(_: T.Type) throws(PerformerError) { try views(T.self, state: T.self, FavorAttention.stateBackward) }
    func runHalf<H: HalfPrecisionScalar>(_: H.Type) throws(PerformerError) {
        try views(H.self, state: Float.self, FavorAttention.stateBackward)
    }

    /// The views in token type T and state type S (as `StateCall`), handed to `call`:
    /// `FavorAttention.stateBackward` for that T.
    private func views<T: TensorElement, S: AttentionScalar>(
        _: T.Type, state _: S.Type,
        _ call: (TensorView<T>, TensorView<T>, FavorProjection, LinearStateView<S>, MutableTensorView<T>,
                 MutableTensorView<T>, FavorStateView<S>?, MutableLinearStateView<S>?, FavorAttentionOptions)
            throws(PerformerError) -> Void
    ) throws(PerformerError) {
        try call(k.view(T.self), v.view(T.self), p, stateView(dfinal, S.self), dk.mutableView(T.self),
                 dv.mutableView(T.self), initial.map { favorStateView($0, S.self) },
                 dinitial.map { mutableStateView($0, S.self) }, options)
    }
}

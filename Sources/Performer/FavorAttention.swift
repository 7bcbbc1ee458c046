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
    performer_favor_forward_with_row_scales(q, k, v, projection, out, initial_state_s, initial_state_z, initial_state_c,
                                            final_state_s, final_state_z, final_state_c, nil, nil, options)
}

@_cdecl("performer_favor_forward_with_row_scales")
public func performer_favor_forward_with_row_scales(
    _ q: UnsafePointer<performer_tensor_t>?, _ k: UnsafePointer<performer_tensor_t>?,
    _ v: UnsafePointer<performer_tensor_t>?, _ projection: performer_favor_projection_t?,
    _ out: UnsafeMutablePointer<performer_tensor_t>?,
    _ initial_state_s: UnsafePointer<performer_tensor_t>?, _ initial_state_z: UnsafePointer<performer_tensor_t>?,
    _ initial_state_c: UnsafePointer<performer_tensor_t>?,
    _ final_state_s: UnsafeMutablePointer<performer_tensor_t>?, _ final_state_z: UnsafeMutablePointer<performer_tensor_t>?,
    _ final_state_c: UnsafeMutablePointer<performer_tensor_t>?,
    _ row_units: UnsafeMutablePointer<performer_tensor_t>?, _ row_denominators: UnsafeMutablePointer<performer_tensor_t>?,
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
        let scales = try statePair(UnsafePointer(row_units), UnsafePointer(row_denominators),
                                   names: ("row_units", "row_denominators"))
        let extra = tensors(scales)
        try TensorArgument.expectDTypes(tokens: [k, v, out], states: tensors(initial) + tensors(final) + extra, as: q)
        let options = try favorAttentionOptions(options, tensors: [q, k, v, out] + tensors(initial) + tensors(final) + extra)
        try ForwardCall(q: q, k: k, v: v, p: p, out: out, initial: initial, final: final, scales: scales, options: options)
            .run(as: q.dtype)
    }
}

/// performer_favor_forward's checked arguments.
private struct ForwardCall: TypedAttentionCall {
    let q, k, v: TensorArgument, p: FavorProjection, out: TensorArgument
    let initial, final: StateTriple?, scales: StatePair?, options: FavorAttentionOptions

    func run<T: AttentionScalar>(_: T.Type) throws(PerformerError) { try views(T.self, state: T.self, FavorAttention.forward) }
    func runHalf<H: HalfPrecisionScalar>(_: H.Type) throws(PerformerError) { try views(H.self, state: Float.self, FavorAttention.forward) }

    /// The views in token type T and state type S, handed to `call`: `FavorAttention.forward`
    /// for that T.
    private func views<T: TensorElement, S: AttentionScalar>(
        _: T.Type, state _: S.Type,
        _ call: (TensorView<T>, TensorView<T>, TensorView<T>, FavorProjection, MutableTensorView<T>, FavorStateView<S>?,
                 MutableFavorStateView<S>?, FavorRowScalesView<S>?, FavorAttentionOptions) throws(PerformerError) -> Void
    ) throws(PerformerError) {
        let rowScales = scales.map { FavorRowScalesView(units: $0.s.mutableView(S.self), denominators: $0.z.mutableView(S.self)) }
        try call(q.view(T.self), k.view(T.self), v.view(T.self), p, out.mutableView(T.self),
                 initial.map { favorStateView($0, S.self) }, final.map { mutableFavorStateView($0, S.self) }, rowScales,
                 options)
    }
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
        try BackwardCall(q: q, k: k, v: v, dout: dout, p: p, dq: dq, dk: dk, dv: dv, initial: initial,
                         dfinal: dfinal, dinitial: dinitial, options: options)
            .run(as: q.dtype)
    }
}

/// performer_favor_backward's checked arguments.
private struct BackwardCall: TypedAttentionCall {
    let q, k, v, dout: TensorArgument, p: FavorProjection, dq, dk, dv: TensorArgument
    let initial: StateTriple?, dfinal, dinitial: StatePair?, options: FavorAttentionOptions

    func run<T: AttentionScalar>(_: T.Type) throws(PerformerError) { try views(T.self, state: T.self, FavorAttention.backward) }
    func runHalf<H: HalfPrecisionScalar>(_: H.Type) throws(PerformerError) { try views(H.self, state: Float.self, FavorAttention.backward) }

    /// The views in token type T and state type S (as `ForwardCall`), handed to `call`:
    /// `FavorAttention.backward` for that T.
    private func views<T: TensorElement, S: AttentionScalar>(
        _: T.Type, state _: S.Type,
        _ call: (TensorView<T>, TensorView<T>, TensorView<T>, FavorProjection, TensorView<T>, MutableTensorView<T>,
                 MutableTensorView<T>, MutableTensorView<T>, FavorStateView<S>?, LinearStateView<S>?,
                 MutableLinearStateView<S>?, FavorAttentionOptions) throws(PerformerError) -> Void
    ) throws(PerformerError) {
        try call(q.view(T.self), k.view(T.self), v.view(T.self), p, dout.view(T.self),
                 dq.mutableView(T.self), dk.mutableView(T.self), dv.mutableView(T.self),
                 initial.map { favorStateView($0, S.self) }, dfinal.map { stateView($0, S.self) },
                 dinitial.map { mutableStateView($0, S.self) }, options)
    }
}

// The query-side gradient of a linear forward's initial state (performer.h:
// performer_linear_initial_state_gradient): descriptors and options in,
// PerformerCore's LinearAttention.initialStateGradient does the rest.
import CPerformerABI
import PerformerCore

@_cdecl("performer_linear_initial_state_gradient")
public func performer_linear_initial_state_gradient(
    _ q: UnsafePointer<performer_tensor_t>?, _ out: UnsafePointer<performer_tensor_t>?,
    _ dout: UnsafePointer<performer_tensor_t>?, _ denominators: UnsafePointer<performer_tensor_t>?,
    _ dinitial_state_s: UnsafeMutablePointer<performer_tensor_t>?,
    _ dinitial_state_z: UnsafeMutablePointer<performer_tensor_t>?,
    _ options: UnsafePointer<performer_linear_options_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let q = try TensorArgument(q, name: "q"), out = try TensorArgument(out, name: "out")
        let dout = try TensorArgument(dout, name: "dout")
        let ds = try TensorArgument(dinitial_state_s, name: "dS0"), dz = try TensorArgument(dinitial_state_z, name: "dz0")
        let denominators = denominators == nil ? nil : try TensorArgument(denominators, name: "denominators")
        let extra = denominators.map { [$0] } ?? []
        try TensorArgument.expectDTypes(tokens: [out, dout], states: [ds, dz] + extra, as: q)
        let options = try linearOptions(options, tensors: [q, out, dout, ds, dz] + extra)
        try InitialStateGradientCall(q: q, out: out, dout: dout, denominators: denominators, dinitial: (ds, dz),
                                     options: options)
            .run(as: q.dtype)
    }
}

/// performer_linear_initial_state_gradient's checked arguments.
private struct InitialStateGradientCall: TypedAttentionCall {
    let q, out, dout: TensorArgument, denominators: TensorArgument?, dinitial: StatePair
    let options: LinearAttentionOptions

    func run<T: AttentionScalar>(_: T.Type) throws(PerformerError) {
        try views(T.self, state: T.self, LinearAttention.initialStateGradient)
    }
    func runHalf<H: HalfPrecisionScalar>(_: H.Type) throws(PerformerError) {
        try views(H.self, state: Float.self, LinearAttention.initialStateGradient)
    }

    /// The views in token type T and state type S (T, or float32 for a half T), handed to
    /// `call`: `LinearAttention.initialStateGradient` for that T.
    private func views<T: TensorElement, S: AttentionScalar>(
        _: T.Type, state _: S.Type,
        _ call: (TensorView<T>, TensorView<T>, TensorView<T>, TensorView<S>?, MutableLinearStateView<S>,
                 LinearAttentionOptions) throws(PerformerError) -> Void
    ) throws(PerformerError) {
        try call(q.view(T.self), out.view(T.self), dout.view(T.self), denominators?.view(S.self),
                 mutableStateView(dinitial, S.self), options)
    }
}

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
        try TensorArgument.expectSameDType([v, s, z] + tensors(initial), as: k)
        let options = try linearOptions(options, tensors: [k, v, s, z] + tensors(initial))
        switch k.dtype {
        case .float32: try state(Float.self, k, v, initial, (s, z), options)
        case .float64: try state(Double.self, k, v, initial, (s, z), options)
        case .float16, .bfloat16: throw k.unsupportedHalf(in: "performer_linear_state")
        }
    }
}

private func state<T: AttentionScalar>(
    _: T.Type, _ k: TensorArgument, _ v: TensorArgument, _ initial: StatePair?, _ final: StatePair,
    _ options: LinearAttentionOptions
) throws(PerformerError) {
    try LinearAttention.state(
        key: k.view(T.self), value: v.view(T.self),
        initialState: initial.map { LinearStateView(s: $0.s.view(T.self), z: $0.z.view(T.self)) },
        finalState: MutableLinearStateView(s: final.s.mutableView(T.self), z: final.z.mutableView(T.self)),
        options: options)
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
        try TensorArgument.expectSameDType([v, ds, dz, dk, dv] + tensors(dinitial), as: k)
        let options = try linearOptions(options, tensors: [k, v, ds, dz, dk, dv] + tensors(dinitial))
        switch k.dtype {
        case .float32: try stateBackward(Float.self, k, v, (ds, dz), dk, dv, dinitial, options)
        case .float64: try stateBackward(Double.self, k, v, (ds, dz), dk, dv, dinitial, options)
        case .float16, .bfloat16: throw k.unsupportedHalf(in: "performer_linear_state_backward")
        }
    }
}

private func stateBackward<T: AttentionScalar>(
    _: T.Type, _ k: TensorArgument, _ v: TensorArgument, _ dfinal: StatePair, _ dk: TensorArgument,
    _ dv: TensorArgument, _ dinitial: StatePair?, _ options: LinearAttentionOptions
) throws(PerformerError) {
    try LinearAttention.stateBackward(
        key: k.view(T.self), value: v.view(T.self),
        finalStateGradient: LinearStateView(s: dfinal.s.view(T.self), z: dfinal.z.view(T.self)),
        keyGradient: dk.mutableView(T.self), valueGradient: dv.mutableView(T.self),
        initialStateGradient: dinitial.map { MutableLinearStateView(s: $0.s.mutableView(T.self), z: $0.z.mutableView(T.self)) },
        options: options)
}

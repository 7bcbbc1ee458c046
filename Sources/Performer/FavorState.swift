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
        try TensorArgument.expectSameDType([v] + tensors(initial) + tensors(final), as: k)
        let options = try favorAttentionOptions(options, tensors: [k, v] + tensors(initial) + tensors(final))
        switch k.dtype {
        case .float32: try state(Float.self, k, v, p, initial, final, options)
        case .float64: try state(Double.self, k, v, p, initial, final, options)
        case .float16, .bfloat16: throw k.unsupportedHalf(in: "performer_favor_state")
        }
    }
}

private func state<T: AttentionScalar>(
    _: T.Type, _ k: TensorArgument, _ v: TensorArgument, _ p: FavorProjection, _ initial: StateTriple?,
    _ final: StateTriple, _ options: FavorAttentionOptions
) throws(PerformerError) {
    try FavorAttention.state(
        key: k.view(T.self), value: v.view(T.self), projection: p,
        initialState: initial.map { FavorStateView(s: $0.s.view(T.self), z: $0.z.view(T.self), c: $0.c.view(T.self)) },
        finalState: MutableFavorStateView(s: final.s.mutableView(T.self), z: final.z.mutableView(T.self),
                                          c: final.c.mutableView(T.self)),
        options: options)
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
        try TensorArgument.expectSameDType(Array(all.dropFirst()), as: k)
        let options = try favorAttentionOptions(options, tensors: all)
        switch k.dtype {
        case .float32: try stateBackward(Float.self, k, v, p, (ds, dz), dk, dv, dinitial, initial, options)
        case .float64: try stateBackward(Double.self, k, v, p, (ds, dz), dk, dv, dinitial, initial, options)
        case .float16, .bfloat16: throw k.unsupportedHalf(in: "performer_favor_state_backward")
        }
    }
}

private func stateBackward<T: AttentionScalar>(
    _: T.Type, _ k: TensorArgument, _ v: TensorArgument, _ p: FavorProjection, _ dfinal: StatePair,
    _ dk: TensorArgument, _ dv: TensorArgument, _ dinitial: StatePair?, _ initial: StateTriple?,
    _ options: FavorAttentionOptions
) throws(PerformerError) {
    try FavorAttention.stateBackward(
        key: k.view(T.self), value: v.view(T.self), projection: p,
        finalStateGradient: LinearStateView(s: dfinal.s.view(T.self), z: dfinal.z.view(T.self)),
        keyGradient: dk.mutableView(T.self), valueGradient: dv.mutableView(T.self),
        initialState: initial.map { FavorStateView(s: $0.s.view(T.self), z: $0.z.view(T.self), c: $0.c.view(T.self)) },
        initialStateGradient: dinitial.map {
            MutableLinearStateView(s: $0.s.mutableView(T.self), z: $0.z.mutableView(T.self))
        },
        options: options)
}

// The query-side gradient of a FAVOR+ forward's initial triple (performer.h:
// performer_favor_initial_state_gradient): descriptors and options in,
// PerformerCore's FavorAttention.initialStateGradient does the rest.
import CPerformerABI
import PerformerCore

@_cdecl("performer_favor_initial_state_gradient")
public func performer_favor_initial_state_gradient(
    _ q: UnsafePointer<performer_tensor_t>?, _ projection: performer_favor_projection_t?,
    _ initial_state_c: UnsafePointer<performer_tensor_t>?,
    _ row_units: UnsafePointer<performer_tensor_t>?, _ row_denominators: UnsafePointer<performer_tensor_t>?,
    _ out: UnsafePointer<performer_tensor_t>?, _ dout: UnsafePointer<performer_tensor_t>?,
    _ dinitial_state_s: UnsafeMutablePointer<performer_tensor_t>?,
    _ dinitial_state_z: UnsafeMutablePointer<performer_tensor_t>?,
    _ options: UnsafePointer<performer_favor_options_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let q = try TensorArgument(q, name: "q")
        let p = try FavorProjectionHandle.from(projection).snapshot
        let c0 = try TensorArgument(initial_state_c, name: "c0")
        let units = try TensorArgument(row_units, name: "row_units")
        let dens = try TensorArgument(row_denominators, name: "row_denominators")
        let out = try TensorArgument(out, name: "out"), dout = try TensorArgument(dout, name: "dout")
        let ds = try TensorArgument(dinitial_state_s, name: "dS0"), dz = try TensorArgument(dinitial_state_z, name: "dz0")
        let all = [q, c0, units, dens, out, dout, ds, dz]
        try TensorArgument.expectSameDType(Array(all.dropFirst()), as: q)
        let options = try favorAttentionOptions(options, tensors: all)
        func run<T: AttentionScalar>(_: T.Type) throws(PerformerError) {
            try FavorAttention.initialStateGradient(
                query: q.view(T.self), projection: p, initialShift: c0.view(T.self), rowUnits: units.view(T.self),
                rowDenominators: dens.view(T.self), output: out.view(T.self), outputGradient: dout.view(T.self),
                initialStateGradient: mutableStateView((ds, dz), T.self), options: options)
        }
        switch q.dtype {
        case .float32: try run(Float.self)
        case .float64: try run(Double.self)
        case .float16, .bfloat16:
            throw PerformerError(.dtypeMismatch, "q.dtype = \(q.dtype.name): this call takes float32 or float64")
        }
    }
}

// The recurrent linear-attention decoder (performer.h: "The recurrent decoder"): an opaque
// handle around PerformerCore's LinearAttentionDecoder of the dtype chosen at creation.
import CPerformerABI
import PerformerCore

/// What a performer_linear_decoder_t points to: a retained instance of this class.
final class LinearDecoderHandle {
    enum Decoder {
        case float32(LinearAttentionDecoder<Float>)
        case float64(LinearAttentionDecoder<Double>)
    }

    let decoder: Decoder

    init(_ decoder: Decoder) { self.decoder = decoder }

    var dtype: DType {
        switch decoder {
        case .float32: return .float32
        case .float64: return .float64
        }
    }

    /// The handle's object, or a null-pointer error. Does not retain it beyond the call.
    static func from(_ handle: performer_linear_decoder_t?) throws(PerformerError) -> LinearDecoderHandle {
        guard let handle else { throw PerformerError(.nullPointer, "decoder is NULL") }
        return Unmanaged<LinearDecoderHandle>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
    }

    /// Throws unless every tensor has the decoder's dtype.
    func expectDType(_ tensors: TensorArgument...) throws(PerformerError) {
        for tensor in tensors where tensor.dtype != dtype {
            throw PerformerError(.dtypeMismatch, "\(tensor.name).dtype = \(tensor.dtype.name) but the decoder's dtype is \(dtype.name)")
        }
    }
}

@_cdecl("performer_linear_decoder_create")
public func performer_linear_decoder_create(
    _ decoder: UnsafeMutablePointer<performer_linear_decoder_t?>?, _ dtype: performer_dtype,
    _ batch: Int64, _ heads: Int64, _ key_heads: Int64, _ head_dim: Int64, _ value_dim: Int64,
    _ feature_map: performer_feature_map, _ eps: Double
) -> performer_status {
    withStatus { () throws(PerformerError) in
        guard let decoder else { throw PerformerError(.nullPointer, "decoder is NULL") }
        guard let type = Int32(exactly: dtype.rawValue).flatMap(DType.init(rawValue:)) else {
            throw PerformerError(.dtypeMismatch, "dtype = \(Int32(truncatingIfNeeded: dtype.rawValue)) is not a performer_dtype (0 = float32, 1 = float64)")
        }
        let map = try linearFeatureMap(Int64(Int32(truncatingIfNeeded: feature_map.rawValue)), name: "feature_map")
        let (b, h, hk, d, m) = (Int(batch), Int(heads), Int(key_heads), Int(head_dim), Int(value_dim))
        let made: LinearDecoderHandle.Decoder
        switch type {
        case .float32:
            made = .float32(try LinearAttentionDecoder<Float>(
                batch: b, heads: h, keyHeads: hk, headDim: d, valueDim: m, featureMap: map, epsilon: eps))
        case .float64:
            made = .float64(try LinearAttentionDecoder<Double>(
                batch: b, heads: h, keyHeads: hk, headDim: d, valueDim: m, featureMap: map, epsilon: eps))
        }
        decoder.pointee = OpaquePointer(Unmanaged.passRetained(LinearDecoderHandle(made)).toOpaque())
    }
}

@_cdecl("performer_linear_decoder_destroy")
public func performer_linear_decoder_destroy(_ decoder: performer_linear_decoder_t?) {
    guard let decoder else { return }
    Unmanaged<LinearDecoderHandle>.fromOpaque(UnsafeRawPointer(decoder)).release()
}

@_cdecl("performer_linear_decoder_reset")
public func performer_linear_decoder_reset(_ decoder: performer_linear_decoder_t?) -> performer_status {
    withStatus { () throws(PerformerError) in
        switch try LinearDecoderHandle.from(decoder).decoder {
        case .float32(let d): d.reset()
        case .float64(let d): d.reset()
        }
    }
}

/// The four token tensors of a step or a prefill, checked and of the decoder's dtype.
private func tokens(
    _ handle: LinearDecoderHandle, _ q: UnsafePointer<performer_tensor_t>?, _ k: UnsafePointer<performer_tensor_t>?,
    _ v: UnsafePointer<performer_tensor_t>?, _ out: UnsafeMutablePointer<performer_tensor_t>?
) throws(PerformerError) -> (TensorArgument, TensorArgument, TensorArgument, TensorArgument) {
    let q = try TensorArgument(q, name: "q"), k = try TensorArgument(k, name: "k")
    let v = try TensorArgument(v, name: "v"), out = try TensorArgument(out, name: "out")
    try handle.expectDType(q, k, v, out)
    return (q, k, v, out)
}

@_cdecl("performer_linear_decoder_step")
public func performer_linear_decoder_step(
    _ decoder: performer_linear_decoder_t?, _ q: UnsafePointer<performer_tensor_t>?,
    _ k: UnsafePointer<performer_tensor_t>?, _ v: UnsafePointer<performer_tensor_t>?,
    _ out: UnsafeMutablePointer<performer_tensor_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let handle = try LinearDecoderHandle.from(decoder)
        let (q, k, v, out) = try tokens(handle, q, k, v, out)
        switch handle.decoder {
        case .float32(let d):
            try d.step(query: q.view(Float.self), key: k.view(Float.self), value: v.view(Float.self),
                       output: out.mutableView(Float.self))
        case .float64(let d):
            try d.step(query: q.view(Double.self), key: k.view(Double.self), value: v.view(Double.self),
                       output: out.mutableView(Double.self))
        }
    }
}

@_cdecl("performer_linear_decoder_prefill")
public func performer_linear_decoder_prefill(
    _ decoder: performer_linear_decoder_t?, _ q: UnsafePointer<performer_tensor_t>?,
    _ k: UnsafePointer<performer_tensor_t>?, _ v: UnsafePointer<performer_tensor_t>?,
    _ out: UnsafeMutablePointer<performer_tensor_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let handle = try LinearDecoderHandle.from(decoder)
        let (q, k, v, out) = try tokens(handle, q, k, v, out)
        switch handle.decoder {
        case .float32(let d):
            try d.prefill(query: q.view(Float.self), key: k.view(Float.self), value: v.view(Float.self),
                          output: out.mutableView(Float.self))
        case .float64(let d):
            try d.prefill(query: q.view(Double.self), key: k.view(Double.self), value: v.view(Double.self),
                          output: out.mutableView(Double.self))
        }
    }
}

@_cdecl("performer_linear_decoder_get_state")
public func performer_linear_decoder_get_state(
    _ decoder: performer_linear_decoder_t?, _ s: UnsafeMutablePointer<performer_tensor_t>?,
    _ z: UnsafeMutablePointer<performer_tensor_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let handle = try LinearDecoderHandle.from(decoder)
        let s = try TensorArgument(s, name: "S"), z = try TensorArgument(z, name: "z")
        try handle.expectDType(s, z)
        switch handle.decoder {
        case .float32(let d):
            try d.storeState(into: MutableLinearStateView(s: s.mutableView(Float.self), z: z.mutableView(Float.self)))
        case .float64(let d):
            try d.storeState(into: MutableLinearStateView(s: s.mutableView(Double.self), z: z.mutableView(Double.self)))
        }
    }
}

@_cdecl("performer_linear_decoder_set_state")
public func performer_linear_decoder_set_state(
    _ decoder: performer_linear_decoder_t?, _ s: UnsafePointer<performer_tensor_t>?,
    _ z: UnsafePointer<performer_tensor_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let handle = try LinearDecoderHandle.from(decoder)
        let s = try TensorArgument(s, name: "S"), z = try TensorArgument(z, name: "z")
        try handle.expectDType(s, z)
        switch handle.decoder {
        case .float32(let d): try d.loadState(LinearStateView(s: s.view(Float.self), z: z.view(Float.self)))
        case .float64(let d): try d.loadState(LinearStateView(s: s.view(Double.self), z: z.view(Double.self)))
        }
    }
}

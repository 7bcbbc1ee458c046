// The recurrent linear-attention decoder (performer.h: "The recurrent decoder"): an opaque
// handle around PerformerCore's LinearAttentionDecoder of the dtype chosen at creation.
import CPerformerABI
import PerformerCore

/// What a performer_linear_decoder_t points to: a retained instance of this class.
final class LinearDecoderHandle: DecoderHandle {
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
}

@_cdecl("performer_linear_decoder_create")
public func performer_linear_decoder_create(
    _ decoder: UnsafeMutablePointer<performer_linear_decoder_t?>?, _ dtype: performer_dtype,
    _ batch: Int64, _ heads: Int64, _ key_heads: Int64, _ head_dim: Int64, _ value_dim: Int64,
    _ feature_map: performer_feature_map, _ eps: Double
) -> performer_status {
    withStatus { () throws(PerformerError) in
        guard let decoder else { throw PerformerError(.nullPointer, "decoder is NULL") }
        let type = try decoderDType(dtype)
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
        decoder.pointee = LinearDecoderHandle.retainedHandle(LinearDecoderHandle(made))
    }
}

@_cdecl("performer_linear_decoder_destroy")
public func performer_linear_decoder_destroy(_ decoder: performer_linear_decoder_t?) {
    LinearDecoderHandle.release(decoder)
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

@_cdecl("performer_linear_decoder_step")
public func performer_linear_decoder_step(
    _ decoder: performer_linear_decoder_t?, _ q: UnsafePointer<performer_tensor_t>?,
    _ k: UnsafePointer<performer_tensor_t>?, _ v: UnsafePointer<performer_tensor_t>?,
    _ out: UnsafeMutablePointer<performer_tensor_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let handle = try LinearDecoderHandle.from(decoder)
        let (q, k, v, out) = try handle.tokens(q, k, v, out)
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
        let (q, k, v, out) = try handle.tokens(q, k, v, out)
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

// The recurrent linear-attention decoder (performer.h: "The recurrent decoder"): an opaque
// handle around PerformerCore's LinearAttentionDecoder of the dtype chosen at creation.
import CPerformerABI
import PerformerCore

/// A LinearAttentionDecoder of any token dtype, called with untyped tensors: each entry point
/// below makes one call, whatever the dtype. The tokens have the decoder's dtype and the
/// states its state dtype (`DecoderHandle.expectDType`, `expectStateDType`).
protocol UntypedLinearDecoder: AnyObject {
    var dtype: DType { get }
    var stateDType: DType { get }
    func reset()
    func step(_ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument, _ out: TensorArgument) throws(PerformerError)
    func step(_ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument, _ out: TensorArgument,
              s: TensorArgument, z: TensorArgument) throws(PerformerError)
    func prefill(_ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument, _ out: TensorArgument) throws(PerformerError)
    func storeState(s: TensorArgument, z: TensorArgument) throws(PerformerError)
    func loadState(s: TensorArgument, z: TensorArgument) throws(PerformerError)
}

extension LinearAttentionDecoder: UntypedLinearDecoder {
    var dtype: DType { Element.dtype }
    var stateDType: DType { Element.dtype }

    // Specialized for Float and Double: the generic witness looked up TensorView<Element>'s metadata on
    // every step.
    @_specialize(where Element == Float)
    @_specialize(where Element == Double)
    func step(_ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument, _ out: TensorArgument) throws(PerformerError) {
        try step(query: q.view(Element.self), key: k.view(Element.self), value: v.view(Element.self),
                 output: out.mutableView(Element.self))
    }

    @_specialize(where Element == Float)
    @_specialize(where Element == Double)
    func step(_ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument, _ out: TensorArgument,
              s: TensorArgument, z: TensorArgument) throws(PerformerError) {
        try step(query: q.view(Element.self), key: k.view(Element.self), value: v.view(Element.self),
                 output: out.mutableView(Element.self),
                 state: MutableLinearStateView(s: s.mutableView(Element.self), z: z.mutableView(Element.self)))
    }

    func prefill(_ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument, _ out: TensorArgument) throws(PerformerError) {
        try prefill(query: q.view(Element.self), key: k.view(Element.self), value: v.view(Element.self),
                    output: out.mutableView(Element.self))
    }

    func storeState(s: TensorArgument, z: TensorArgument) throws(PerformerError) {
        try storeState(into: MutableLinearStateView(s: s.mutableView(Element.self), z: z.mutableView(Element.self)))
    }

    func loadState(s: TensorArgument, z: TensorArgument) throws(PerformerError) {
        try loadState(LinearStateView(s: s.view(Element.self), z: z.view(Element.self)))
    }
}

/// A float32 LinearAttentionDecoder taking tokens in H: float16 / bfloat16 tokens, float32
/// state (docs/HALF_PRECISION.md).
final class HalfTokenLinearDecoder<H: HalfPrecisionScalar>: UntypedLinearDecoder {
    let decoder: LinearAttentionDecoder<Float>

    init(_ decoder: LinearAttentionDecoder<Float>) { self.decoder = decoder }

    var dtype: DType { H.dtype }
    var stateDType: DType { .float32 }

    func reset() { decoder.reset() }

    func step(_ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument, _ out: TensorArgument) throws(PerformerError) {
        try decoder.step(query: q.view(H.self), key: k.view(H.self), value: v.view(H.self), output: out.mutableView(H.self))
    }

    func step(_ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument, _ out: TensorArgument,
              s: TensorArgument, z: TensorArgument) throws(PerformerError) {
        try decoder.step(query: q.view(H.self), key: k.view(H.self), value: v.view(H.self), output: out.mutableView(H.self),
                         state: MutableLinearStateView(s: s.mutableView(Float.self), z: z.mutableView(Float.self)))
    }

    func prefill(_ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument, _ out: TensorArgument) throws(PerformerError) {
        try decoder.prefill(query: q.view(H.self), key: k.view(H.self), value: v.view(H.self), output: out.mutableView(H.self))
    }

    func storeState(s: TensorArgument, z: TensorArgument) throws(PerformerError) { try decoder.storeState(s: s, z: z) }

    func loadState(s: TensorArgument, z: TensorArgument) throws(PerformerError) { try decoder.loadState(s: s, z: z) }
}

/// What a performer_linear_decoder_t stands for.
final class LinearDecoderHandle: DecoderHandle {
    static let handleKind = HandleKind.linearDecoder
    let decoder: any UntypedLinearDecoder

    init(_ decoder: any UntypedLinearDecoder) { self.decoder = decoder }

    var dtype: DType { decoder.dtype }
    var stateDType: DType { decoder.stateDType }
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
        func make<T: AttentionScalar>(_: T.Type) throws(PerformerError) -> LinearAttentionDecoder<T> {
            try LinearAttentionDecoder<T>(batch: b, heads: h, keyHeads: hk, headDim: d, valueDim: m,
                                          featureMap: map, epsilon: eps)
        }
        // A half decoder is a float32 one: its state is float32 whatever its tokens.
        let made: any UntypedLinearDecoder = switch type {
        case .float32: try make(Float.self)
        case .float64: try make(Double.self)
        case .float16: HalfTokenLinearDecoder<Float16>(try make(Float.self))
        case .bfloat16: HalfTokenLinearDecoder<BFloat16>(try make(Float.self))
        }
        decoder.pointee = try LinearDecoderHandle.register(LinearDecoderHandle(made))
    }
}

@_cdecl("performer_linear_decoder_destroy")
public func performer_linear_decoder_destroy(_ decoder: performer_linear_decoder_t?) {
    LinearDecoderHandle.unregister(decoder)
}

@_cdecl("performer_linear_decoder_reset")
public func performer_linear_decoder_reset(_ decoder: performer_linear_decoder_t?) -> performer_status {
    withStatus { () throws(PerformerError) in
        try LinearDecoderHandle.from(decoder).decoder.reset()
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
        try handle.decoder.step(q, k, v, out)
    }
}

@_cdecl("performer_linear_decoder_step_with_state")
public func performer_linear_decoder_step_with_state(
    _ decoder: performer_linear_decoder_t?, _ q: UnsafePointer<performer_tensor_t>?,
    _ k: UnsafePointer<performer_tensor_t>?, _ v: UnsafePointer<performer_tensor_t>?,
    _ out: UnsafeMutablePointer<performer_tensor_t>?, _ s: UnsafeMutablePointer<performer_tensor_t>?,
    _ z: UnsafeMutablePointer<performer_tensor_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let handle = try LinearDecoderHandle.from(decoder)
        let (q, k, v, out) = try handle.tokens(q, k, v, out)
        let s = try TensorArgument(s, name: "S"), z = try TensorArgument(z, name: "z")
        try handle.expectStateDType(s, z)
        try handle.decoder.step(q, k, v, out, s: s, z: z)
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
        try handle.decoder.prefill(q, k, v, out)
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
        try handle.expectStateDType(s, z)
        try handle.decoder.storeState(s: s, z: z)
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
        try handle.expectStateDType(s, z)
        try handle.decoder.loadState(s: s, z: z)
    }
}

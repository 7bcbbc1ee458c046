// The FAVOR+ decoder (performer.h: "The FAVOR+ decoder"): an opaque handle around
// PerformerCore's FavorDecoder of the dtype chosen at creation.
import CPerformerABI
import PerformerCore

/// A FavorDecoder of any token dtype, called with untyped tensors and state arrays in
/// Double: each entry point below makes one call, whatever the dtype. The tokens have the
/// decoder's dtype, the states its state dtype (`DecoderHandle.expectDType`,
/// `expectStateDType`), so converting the state through Double is exact.
protocol UntypedFavorDecoder: AnyObject {
    var dtype: DType { get }
    var stateDType: DType { get }
    /// B, H, C, M: the state is B×H×C×M (S̃), B×H×C×1 (z̃, c).
    var batch: Int { get }
    var heads: Int { get }
    var featureCount: Int { get }
    var valueDim: Int { get }
    func reset()
    func step(_ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument, _ out: TensorArgument) throws(PerformerError)
    func stateInDouble() -> (s: [Double], z: [Double], c: [Double])
    func setStateInDouble(s: [Double], z: [Double], c: [Double]) throws(PerformerError)
}

extension FavorDecoder: UntypedFavorDecoder {
    var dtype: DType { T.dtype }
    var stateDType: DType { T.dtype }

    func step(_ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument, _ out: TensorArgument) throws(PerformerError) {
        try step(query: q.view(T.self), key: k.view(T.self), value: v.view(T.self), output: out.mutableView(T.self))
    }

    func stateInDouble() -> (s: [Double], z: [Double], c: [Double]) {
        (stateS.map(Double.init), stateZ.map(Double.init), stateC.map(Double.init))
    }

    func setStateInDouble(s: [Double], z: [Double], c: [Double]) throws(PerformerError) {
        try setState(s: s.map { T($0) }, z: z.map { T($0) }, c: c.map { T($0) })
    }
}

/// A float32 FavorDecoder taking tokens in H: float16 / bfloat16 tokens, float32 state
/// (docs/HALF_PRECISION.md).
final class HalfTokenFavorDecoder<H: HalfPrecisionScalar>: UntypedFavorDecoder {
    let decoder: FavorDecoder<Float>

    init(_ decoder: FavorDecoder<Float>) { self.decoder = decoder }

    var dtype: DType { H.dtype }
    var stateDType: DType { .float32 }
    var batch: Int { decoder.batch }
    var heads: Int { decoder.heads }
    var featureCount: Int { decoder.featureCount }
    var valueDim: Int { decoder.valueDim }

    func reset() { decoder.reset() }

    func step(_ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument, _ out: TensorArgument) throws(PerformerError) {
        try decoder.step(query: q.view(H.self), key: k.view(H.self), value: v.view(H.self), output: out.mutableView(H.self))
    }

    func stateInDouble() -> (s: [Double], z: [Double], c: [Double]) { decoder.stateInDouble() }

    func setStateInDouble(s: [Double], z: [Double], c: [Double]) throws(PerformerError) {
        try decoder.setStateInDouble(s: s, z: z, c: c)
    }
}

/// What a performer_favor_decoder_t stands for.
final class FavorDecoderHandle: DecoderHandle {
    static let handleKind = HandleKind.favorDecoder
    let decoder: any UntypedFavorDecoder

    init(_ decoder: any UntypedFavorDecoder) { self.decoder = decoder }

    var dtype: DType { decoder.dtype }
    var stateDType: DType { decoder.stateDType }

    /// The state tensors of get_state or set_state, of the decoder's state dtype and the state's
    /// shapes, with strides that stay in 64-bit range.
    func stateArguments(
        _ s: UnsafePointer<performer_tensor_t>?, _ z: UnsafePointer<performer_tensor_t>?,
        _ c: UnsafePointer<performer_tensor_t>?
    ) throws(PerformerError) -> StateTriple {
        let s = try TensorArgument(s, name: "S"), z = try TensorArgument(z, name: "z")
        let c = try TensorArgument(c, name: "c")
        try expectStateDType(s, z, c)
        let (batch, heads, featureCount, valueDim) = (decoder.batch, decoder.heads, decoder.featureCount, decoder.valueDim)
        let rows = SIMD4(batch, heads, featureCount, 1)
        for (t, want, meaning) in [(s, SIMD4(batch, heads, featureCount, valueDim), "B×H×C×M"),
                                   (z, rows, "B×H×C×1"), (c, rows, "B×H×C×1")] {
            for axis in 0..<4 where t.shape[axis] != want[axis] {
                throw PerformerError(.shapeMismatch, "\(t.name).shape[\(axis)] = \(t.shape[axis]) but expected \(want[axis]) (\(t.name) is \(meaning) = \(TensorLayout.describe(want)))")
            }
            _ = try t.byteRange()
        }
        return (s, z, c)
    }
}

@_cdecl("performer_favor_decoder_create")
public func performer_favor_decoder_create(
    _ decoder: UnsafeMutablePointer<performer_favor_decoder_t?>?, _ projection: performer_favor_projection_t?,
    _ dtype: performer_dtype, _ batch: Int64, _ heads: Int64, _ value_dim: Int64,
    _ options: UnsafePointer<performer_favor_options_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        guard let decoder else { throw PerformerError(.nullPointer, "decoder is NULL") }
        let p = try FavorProjectionHandle.from(projection).snapshot
        let type = try decoderDType(dtype)
        let options = try FavorCallOptions(options)
        let (b, h, m) = (Int(truncatingIfNeeded: batch), Int(truncatingIfNeeded: heads), Int(truncatingIfNeeded: value_dim))
        func make<T: AttentionScalar>(_: T.Type) throws(PerformerError) -> FavorDecoder<T> {
            try FavorDecoder<T>(projection: p, batch: b, heads: h, valueDim: m,
                                options: options.features, epsilon: options.epsilon)
        }
        // A half decoder is a float32 one: its state is float32 whatever its tokens.
        let made: any UntypedFavorDecoder = switch type {
        case .float32: try make(Float.self)
        case .float64: try make(Double.self)
        case .float16: HalfTokenFavorDecoder<Float16>(try make(Float.self))
        case .bfloat16: HalfTokenFavorDecoder<BFloat16>(try make(Float.self))
        }
        let handle = FavorDecoderHandle(made)
        decoder.pointee = try FavorDecoderHandle.register(handle)
    }
}

@_cdecl("performer_favor_decoder_destroy")
public func performer_favor_decoder_destroy(_ decoder: performer_favor_decoder_t?) {
    FavorDecoderHandle.unregister(decoder)
}

@_cdecl("performer_favor_decoder_reset")
public func performer_favor_decoder_reset(_ decoder: performer_favor_decoder_t?) -> performer_status {
    withStatus { () throws(PerformerError) in
        try FavorDecoderHandle.from(decoder).decoder.reset()
    }
}

@_cdecl("performer_favor_decoder_step")
public func performer_favor_decoder_step(
    _ decoder: performer_favor_decoder_t?, _ q: UnsafePointer<performer_tensor_t>?,
    _ k: UnsafePointer<performer_tensor_t>?, _ v: UnsafePointer<performer_tensor_t>?,
    _ out: UnsafeMutablePointer<performer_tensor_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let handle = try FavorDecoderHandle.from(decoder)
        let (q, k, v, out) = try handle.tokens(q, k, v, out)
        try handle.decoder.step(q, k, v, out)
    }
}

@_cdecl("performer_favor_decoder_get_state")
public func performer_favor_decoder_get_state(
    _ decoder: performer_favor_decoder_t?, _ s: UnsafeMutablePointer<performer_tensor_t>?,
    _ z: UnsafeMutablePointer<performer_tensor_t>?, _ c: UnsafeMutablePointer<performer_tensor_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let handle = try FavorDecoderHandle.from(decoder)
        let (s, z, c) = try handle.stateArguments(UnsafePointer(s), UnsafePointer(z), UnsafePointer(c))
        let outputs = [s, z, c]
        var spans = [ClosedRange<UInt>?]()
        for t in outputs {
            try TensorLayout.checkNoSelfOverlap(shape: t.shape, strides: t.strides, name: t.name)
            spans.append(try t.byteRange())
        }
        for i in 0..<3 {
            for j in (i + 1)..<3 {
                if let a = spans[i], let b = spans[j], a.overlaps(b) {
                    throw PerformerError(.aliasing, "output \(outputs[j].name) overlaps output \(outputs[i].name)")
                }
            }
        }
        let (sv, zv, cv) = handle.decoder.stateInDouble()
        scatter(sv, into: s)
        scatter(zv, into: z)
        scatter(cv, into: c)
    }
}

@_cdecl("performer_favor_decoder_set_state")
public func performer_favor_decoder_set_state(
    _ decoder: performer_favor_decoder_t?, _ s: UnsafePointer<performer_tensor_t>?,
    _ z: UnsafePointer<performer_tensor_t>?, _ c: UnsafePointer<performer_tensor_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let handle = try FavorDecoderHandle.from(decoder)
        let (s, z, c) = try handle.stateArguments(s, z, c)
        try handle.decoder.setStateInDouble(s: gather(s), z: gather(z), c: gather(c))
    }
}

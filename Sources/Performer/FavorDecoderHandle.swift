// The FAVOR+ decoder (performer.h: "The FAVOR+ decoder"): an opaque handle around
// PerformerCore's FavorDecoder of the dtype chosen at creation.
import CPerformerABI
import PerformerCore

/// What a performer_favor_decoder_t points to: a retained instance of this class.
final class FavorDecoderHandle: DecoderHandle {
    enum Decoder {
        case float32(FavorDecoder<Float>)
        case float64(FavorDecoder<Double>)
    }

    let decoder: Decoder
    /// B, H, C, M: the state is B×H×C×M (S̃), B×H×C×1 (z̃, c).
    let batch: Int, heads: Int, featureCount: Int, valueDim: Int

    init(_ decoder: Decoder, batch: Int, heads: Int, featureCount: Int, valueDim: Int) {
        self.decoder = decoder
        (self.batch, self.heads, self.featureCount, self.valueDim) = (batch, heads, featureCount, valueDim)
    }

    var dtype: DType {
        switch decoder {
        case .float32: return .float32
        case .float64: return .float64
        }
    }

    /// Checks s, z, c against the state's shapes and that their strides stay in 64-bit range.
    func expectStateShapes(_ s: TensorArgument, _ z: TensorArgument, _ c: TensorArgument) throws(PerformerError) {
        try expectDType(s, z, c)
        let rows = SIMD4(batch, heads, featureCount, 1)
        for (t, want, meaning) in [(s, SIMD4(batch, heads, featureCount, valueDim), "B×H×C×M"),
                                   (z, rows, "B×H×C×1"), (c, rows, "B×H×C×1")] {
            for axis in 0..<4 where t.shape[axis] != want[axis] {
                throw PerformerError(.shapeMismatch, "\(t.name).shape[\(axis)] = \(t.shape[axis]) but expected \(want[axis]) (\(t.name) is \(meaning) = \(TensorLayout.describe(want)))")
            }
            _ = try TensorLayout.offsetRange(shape: t.shape, strides: t.strides, elementSize: t.dtype.size, name: t.name)
        }
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
        let made: FavorDecoderHandle.Decoder
        switch type {
        case .float32:
            made = .float32(try FavorDecoder<Float>(projection: p, batch: b, heads: h, valueDim: m,
                                                    options: options.features, epsilon: options.epsilon))
        case .float64:
            made = .float64(try FavorDecoder<Double>(projection: p, batch: b, heads: h, valueDim: m,
                                                     options: options.features, epsilon: options.epsilon))
        }
        let c = options.features.kind.featureCount(numFeatures: p.numFeatures)
        let handle = FavorDecoderHandle(made, batch: b, heads: h, featureCount: c, valueDim: m)
        decoder.pointee = FavorDecoderHandle.retainedHandle(handle)
    }
}

@_cdecl("performer_favor_decoder_destroy")
public func performer_favor_decoder_destroy(_ decoder: performer_favor_decoder_t?) {
    FavorDecoderHandle.release(decoder)
}

@_cdecl("performer_favor_decoder_reset")
public func performer_favor_decoder_reset(_ decoder: performer_favor_decoder_t?) -> performer_status {
    withStatus { () throws(PerformerError) in
        switch try FavorDecoderHandle.from(decoder).decoder {
        case .float32(let d): d.reset()
        case .float64(let d): d.reset()
        }
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

/// The bytes `t` touches, or nil when it is empty (extent already checked).
private func byteSpan(_ t: TensorArgument) throws(PerformerError) -> ClosedRange<UInt>? {
    guard let offsets = try TensorLayout.offsetRange(shape: t.shape, strides: t.strides, elementSize: t.dtype.size,
                                                     name: t.name) else { return nil }
    let base = UInt(bitPattern: Int(bitPattern: t.data))
    let size = UInt(t.dtype.size)
    let first = base.subtractingReportingOverflow(offsets.lowerBound.magnitude * size)
    let last = base.addingReportingOverflow(UInt(offsets.upperBound + 1) * size - 1)
    guard !first.overflow, !last.overflow else {
        throw PerformerError(.sizeOverflow, "\(t.name) reaches outside the address space")
    }
    return first.partialValue...last.partialValue
}

@_cdecl("performer_favor_decoder_get_state")
public func performer_favor_decoder_get_state(
    _ decoder: performer_favor_decoder_t?, _ s: UnsafeMutablePointer<performer_tensor_t>?,
    _ z: UnsafeMutablePointer<performer_tensor_t>?, _ c: UnsafeMutablePointer<performer_tensor_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let handle = try FavorDecoderHandle.from(decoder)
        let s = try TensorArgument(s, name: "S"), z = try TensorArgument(z, name: "z")
        let c = try TensorArgument(c, name: "c")
        try handle.expectStateShapes(s, z, c)
        let outputs = [s, z, c]
        var spans = [ClosedRange<UInt>?]()
        for t in outputs {
            try TensorLayout.checkNoSelfOverlap(shape: t.shape, strides: t.strides, name: t.name)
            spans.append(try byteSpan(t))
        }
        for i in 0..<3 {
            for j in (i + 1)..<3 {
                if let a = spans[i], let b = spans[j], a.overlaps(b) {
                    throw PerformerError(.aliasing, "output \(outputs[j].name) overlaps output \(outputs[i].name)")
                }
            }
        }
        let (sv, zv, cv): ([Double], [Double], [Double])
        switch handle.decoder {
        case .float32(let d): (sv, zv, cv) = (d.stateS.map(Double.init), d.stateZ.map(Double.init), d.stateC.map(Double.init))
        case .float64(let d): (sv, zv, cv) = (d.stateS, d.stateZ, d.stateC)
        }
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
        let s = try TensorArgument(s, name: "S"), z = try TensorArgument(z, name: "z")
        let c = try TensorArgument(c, name: "c")
        try handle.expectStateShapes(s, z, c)
        // Same dtype as the decoder, so the conversion through Double is exact.
        let (sv, zv, cv) = (gather(s), gather(z), gather(c))
        switch handle.decoder {
        case .float32(let d):
            try d.setState(s: sv.map { Float($0) }, z: zv.map { Float($0) }, c: cv.map { Float($0) })
        case .float64(let d):
            try d.setState(s: sv, z: zv, c: cv)
        }
    }
}

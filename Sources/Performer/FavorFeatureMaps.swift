// FAVOR+ options and feature maps (performer.h: "FAVOR+"): descriptors and options in,
// PerformerCore's FavorFeatures does the rest.
import CPerformerABI
import PerformerCore

/// The options sizes this library understands: the struct before kv_starts, and today's.
private let knownFavorOptionsSizes = knownOptionsSizes(performer_favor_options_t.self, appended: [\.kv_starts])

@_cdecl("performer_favor_options_init")
public func performer_favor_options_init(_ options: UnsafeMutablePointer<performer_favor_options_t>?) {
    guard let options else { return }
    options.pointee = performer_favor_options_t(
        size: MemoryLayout<performer_favor_options_t>.size, causal: 0,
        features: Int32(PERFORMER_FAVOR_POSITIVE.rawValue), has_scale: 0, scale: 0, eps: 0, relu_offset: 1e-3,
        kv_lengths: nil, kv_starts: nil)
}

/// performer_favor_options_t as Swift values.
struct FavorCallOptions {
    var causal = false
    var features = FavorFeatureOptions()
    var epsilon = 0.0
    /// The kv_lengths and kv_starts pointers (their length, B, is known only to the attention calls).
    var keyLengths: UnsafePointer<Int64>?
    var keyStarts: UnsafePointer<Int64>?

    /// Reads `*options` (NULL means the defaults). Checks the size field and the feature kind;
    /// the numbers are checked where they are used.
    init(_ options: UnsafePointer<performer_favor_options_t>?) throws(PerformerError) {
        guard let options else { return }
        try checkOptionsSize(options, knownSizes: knownFavorOptionsSizes, type: "performer_favor_options_t", initializer: "performer_favor_options_init")
        var defaults = performer_favor_options_t()
        performer_favor_options_init(&defaults)
        let fields = readOptions(options, defaults: defaults)
        causal = fields.causal != 0
        features = FavorFeatureOptions(
            kind: try FavorFeatureKind(code: fields.features, argument: "options->features"),
            scale: fields.has_scale != 0 ? fields.scale : nil, reluOffset: fields.relu_offset)
        epsilon = fields.eps
        keyLengths = fields.kv_lengths
        keyStarts = fields.kv_starts
    }
}

@_cdecl("performer_favor_feature_count")
public func performer_favor_feature_count(
    _ projection: performer_favor_projection_t?, _ features: performer_favor_feature_kind,
    _ count: UnsafeMutablePointer<Int64>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let p = try FavorProjectionHandle.from(projection).snapshot
        let kind = try FavorFeatureKind(code: Int32(truncatingIfNeeded: features.rawValue))
        guard let count else { throw PerformerError(.nullPointer, "count is NULL") }
        count.pointee = Int64(kind.featureCount(numFeatures: p.numFeatures))
    }
}

@_cdecl("performer_favor_features")
public func performer_favor_features(
    _ x: UnsafePointer<performer_tensor_t>?, _ projection: performer_favor_projection_t?,
    _ out: UnsafeMutablePointer<performer_tensor_t>?, _ options: UnsafePointer<performer_favor_options_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let x = try TensorArgument(x, name: "x")
        let p = try FavorProjectionHandle.from(projection).snapshot
        let out = try TensorArgument(out, name: "out")
        try TensorArgument.expectSameDType([out], as: x)
        let options = try FavorCallOptions(options).features
        switch x.dtype {
        case .float32:
            try FavorFeatures.forward(input: x.view(Float.self), projection: p, output: out.mutableView(Float.self),
                                      options: options)
        case .float64:
            try FavorFeatures.forward(input: x.view(Double.self), projection: p, output: out.mutableView(Double.self),
                                      options: options)
        case .float16:
            try FavorFeatures.forward(input: x.view(Float16.self), projection: p, output: out.mutableView(Float16.self),
                                      options: options)
        case .bfloat16:
            try FavorFeatures.forward(input: x.view(BFloat16.self), projection: p, output: out.mutableView(BFloat16.self),
                                      options: options)
        }
    }
}

@_cdecl("performer_favor_features_backward")
public func performer_favor_features_backward(
    _ x: UnsafePointer<performer_tensor_t>?, _ projection: performer_favor_projection_t?,
    _ dfeatures: UnsafePointer<performer_tensor_t>?, _ dx: UnsafeMutablePointer<performer_tensor_t>?,
    _ options: UnsafePointer<performer_favor_options_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let x = try TensorArgument(x, name: "x")
        let p = try FavorProjectionHandle.from(projection).snapshot
        let g = try TensorArgument(dfeatures, name: "dfeatures"), dx = try TensorArgument(dx, name: "dx")
        try TensorArgument.expectSameDType([g, dx], as: x)
        let options = try FavorCallOptions(options).features
        switch x.dtype {
        case .float32:
            try FavorFeatures.backward(input: x.view(Float.self), featureGradient: g.view(Float.self), projection: p,
                                       inputGradient: dx.mutableView(Float.self), options: options)
        case .float64:
            try FavorFeatures.backward(input: x.view(Double.self), featureGradient: g.view(Double.self), projection: p,
                                       inputGradient: dx.mutableView(Double.self), options: options)
        case .float16:
            try FavorFeatures.backward(input: x.view(Float16.self), featureGradient: g.view(Float16.self), projection: p,
                                       inputGradient: dx.mutableView(Float16.self), options: options)
        case .bfloat16:
            try FavorFeatures.backward(input: x.view(BFloat16.self), featureGradient: g.view(BFloat16.self), projection: p,
                                       inputGradient: dx.mutableView(BFloat16.self), options: options)
        }
    }
}

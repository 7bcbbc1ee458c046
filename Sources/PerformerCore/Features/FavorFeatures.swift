import PerformerKernelInterface

/// The FAVOR+ feature maps (ALGORITHMS.md §3). Raw values are the C ABI codes.
public enum FavorFeatureKind: Int32, Sendable, CaseIterable {
    /// φ(x) = exp(u − ‖x̂‖²/2)/√m, C = m (FAVOR+, the default).
    case positive = 0
    /// φ(x) = exp(−‖x̂‖²/2)/√(2m) · [exp(u), exp(−u)], C = 2m.
    case hyperbolic = 1
    /// φ(x) = exp(‖x̂‖²/2)/√m · [sin(u), cos(u)], C = 2m (features may be negative).
    case trigonometric = 2
    /// φ(x) = relu(u) + κ, C = m (generalized attention).
    case relu = 3

    /// The kind's name ("positive", "hyperbolic", "trigonometric", "relu"), as messages spell it.
    public var name: String {
        switch self {
        case .positive: return "positive"
        case .hyperbolic: return "hyperbolic"
        case .trigonometric: return "trigonometric"
        case .relu: return "relu"
        }
    }

    /// The kind called `name`; throws naming `argument` otherwise.
    public init(name: String, argument: String = "features") throws(PerformerError) {
        guard let kind = Self.allCases.first(where: { $0.name == name }) else {
            throw PerformerError(.invalidArgument, "\(argument) = \"\(name)\" is not a feature kind (positive, hyperbolic, trigonometric, relu)")
        }
        self = kind
    }

    /// The kind with C code `code`; throws naming `argument` otherwise.
    public init(code: Int32, argument: String = "features") throws(PerformerError) {
        guard let kind = Self(rawValue: code) else {
            throw PerformerError(.invalidArgument, "\(argument) = \(code) is not a feature kind (0 positive, 1 hyperbolic, 2 trigonometric, 3 relu)")
        }
        self = kind
    }

    /// C, the number of features for m random projections: m, or 2m for hyperbolic and trigonometric.
    public func featureCount(numFeatures m: Int) -> Int {
        kernelMap.featureCount(numFeatures: m)
    }

    /// Whether φ is exp-based with a stabilizer (positive, hyperbolic): docs/FAVOR.md.
    public var isExponential: Bool { self == .positive || self == .hyperbolic }

    var kernelMap: RandomFeatureMap { RandomFeatureMap(rawValue: rawValue)! }
}

/// Options of the feature map.
public struct FavorFeatureOptions: Sendable, Equatable {
    /// The feature map (default positive).
    public var kind: FavorFeatureKind
    /// s: x̂ = x · s^(1/2). nil means 1/√D. Must be finite and ≥ 0.
    public var scale: Double?
    /// κ of the relu map (default 1e-3). Must be finite and ≥ 0.
    public var reluOffset: Double

    /// Options with the defaults above; checked by the call that uses them.
    public init(kind: FavorFeatureKind = .positive, scale: Double? = nil, reluOffset: Double = 1e-3) {
        self.kind = kind
        self.scale = scale
        self.reluOffset = reluOffset
    }

    /// Checks the options; returns s^(1/2) for head dim `dim`.
    func inputScale(dim: Int) throws(PerformerError) -> Double {
        let s = scale ?? 1 / Double(dim).squareRoot()
        guard s.isFinite, s >= 0 else {
            throw PerformerError(.invalidArgument, "scale = \(s): must be finite and ≥ 0 (features use x·scale^(1/2))")
        }
        guard reluOffset.isFinite, reluOffset >= 0 else {
            throw PerformerError(.invalidArgument, "relu_offset = \(reluOffset): must be finite and ≥ 0")
        }
        return s.squareRoot()
    }
}

/// The mathematical FAVOR+ features φ(x) of a B×H×N×D tensor, row by row, and their backward
/// (docs/FAVOR.md, "Feature maps"). No stabilizer is applied: exponential features are
/// evaluated as exp(exponent) with the exponent taken whole (exp(u − ‖x̂‖²/2), never
/// exp(u)·exp(−‖x̂‖²/2)), so a feature is finite and accurate whenever its mathematical value
/// is representable; values past the type's range overflow to +inf and values below it
/// underflow to 0 (see docs/FAVOR.md, "Overflow"). Queries and keys use the same map.
public enum FavorFeatures {
    /// C for this projection and options.
    public static func featureCount(_ projection: FavorProjection, options: FavorFeatureOptions = FavorFeatureOptions()) -> Int {
        options.kind.featureCount(numFeatures: projection.numFeatures)
    }

    /// Writes φ(x) for x (`input`, B×H×N×D, D = projection.dim) into `output` (B×H×N×C).
    public static func forward<T: AttentionScalar>(
        input: TensorView<T>, projection: FavorProjection, output: MutableTensorView<T>,
        options: FavorFeatureOptions = FavorFeatureOptions()
    ) throws(PerformerError) {
        guard let sigma = try checkForward(input: input, projection: projection, output: output, options: options)
        else { return }
        try run(input: input, gradient: nil, output: output.readOnly, projection: projection,
                options: options, sigma: sigma, backward: false)
    }

    /// Writes dx, the gradient of a loss with respect to x, given dφ (`featureGradient`,
    /// B×H×N×C), into `inputGradient` (B×H×N×D). Recomputes φ from x. W gets no gradient.
    public static func backward<T: AttentionScalar>(
        input: TensorView<T>, featureGradient: TensorView<T>, projection: FavorProjection,
        inputGradient: MutableTensorView<T>, options: FavorFeatureOptions = FavorFeatureOptions()
    ) throws(PerformerError) {
        guard let sigma = try checkBackward(input: input, featureGradient: featureGradient, projection: projection,
                                            inputGradient: inputGradient, options: options)
        else { return }
        try run(input: input, gradient: featureGradient, output: inputGradient.readOnly, projection: projection,
                options: options, sigma: sigma, backward: true)
    }

    /// The checks of `forward`, for any element type: s^(1/2), or nil when there is nothing to
    /// write.
    static func checkForward<T>(
        input: TensorView<T>, projection: FavorProjection, output: MutableTensorView<T>, options: FavorFeatureOptions
    ) throws(PerformerError) -> Double? {
        let count = featureCount(projection, options: options)
        let sigma = try validate(input: input, projection: projection, options: options)
        try ShapeCheck.expectShape(output.readOnly, SIMD4(input.shape[0], input.shape[1], input.shape[2], count),
                                       name: "features", meaning: "B×H×N×C")
        // Nothing to write (and TensorLayout's overlap check misreads empty views).
        if input.shape[0] * input.shape[1] * input.shape[2] == 0 { return nil }
        try TensorFootprint.checkOutputsDisjoint([
            try TensorFootprint(input, name: "x"), try TensorFootprint(output, name: "features"),
        ])
        return sigma
    }

    /// The checks of `backward`, for any element type: s^(1/2), or nil when there is nothing
    /// to write.
    static func checkBackward<T>(
        input: TensorView<T>, featureGradient: TensorView<T>, projection: FavorProjection,
        inputGradient: MutableTensorView<T>, options: FavorFeatureOptions
    ) throws(PerformerError) -> Double? {
        let count = featureCount(projection, options: options)
        let sigma = try validate(input: input, projection: projection, options: options)
        try ShapeCheck.expectShape(featureGradient, SIMD4(input.shape[0], input.shape[1], input.shape[2], count),
                                       name: "dfeatures", meaning: "B×H×N×C")
        try ShapeCheck.expectShape(inputGradient.readOnly, input.shape, name: "dx", meaning: "x.shape")
        if input.shape[0] * input.shape[1] * input.shape[2] * input.shape[3] == 0 { return nil }
        try TensorFootprint.checkOutputsDisjoint([
            try TensorFootprint(input, name: "x"), try TensorFootprint(featureGradient, name: "dfeatures"),
            try TensorFootprint(inputGradient, name: "dx"),
        ])
        return sigma
    }

    /// Checks x against the projection and the options; returns s^(1/2).
    static func validate<T>(input: TensorView<T>, projection: FavorProjection, options: FavorFeatureOptions)
        throws(PerformerError) -> Double {
        _ = try TensorLayout.elementCount(input.shape, name: "x")
        guard input.shape[3] == projection.dim else {
            throw PerformerError(.shapeMismatch, "x.shape[3] = \(input.shape[3]) but projection.dim = \(projection.dim)")
        }
        return try options.inputScale(dim: projection.dim)
    }

    private static func run<T: AttentionScalar>(
        input: TensorView<T>, gradient: TensorView<T>?, output: TensorView<T>, projection: FavorProjection,
        options: FavorFeatureOptions, sigma: Double, backward: Bool
    ) throws(PerformerError) {
        let kernels = Runtime.kernels.randomFeatures
        let (batch, heads, rows) = (input.shape[0], input.shape[1], input.shape[2])
        let blocks = (rows + kernels.rowBlock - 1) / kernels.rowBlock
        let taskCount = batch * heads * blocks
        guard taskCount > 0 else { return }
        let m = projection.numFeatures, d = projection.dim
        let threads = min(Runtime.threads(forWork: Runtime.work(2, batch, heads, rows, m, d + 1)), taskCount)
        let scratch = try ScratchBuffer(slots: threads, slotBytes: kernels.scratchBytes(d, m, MemoryLayout<T>.stride),
                                        for: "projection \(m) × \(d)")
        let isFloat = T.dtype == .float32
        let entry = backward ? (isFloat ? kernels.backwardFloat : kernels.backwardDouble)
                             : (isFloat ? kernels.forwardFloat : kernels.forwardDouble)
        let map = options.kind.kernelMap
        let elementSize = MemoryLayout<T>.stride
        let w = projection.matrix(as: T.self)
        w.withUnsafeBytes { wBytes in
            Runtime.parallelFor(count: taskCount, threads: threads) { item, worker in
                let block = item % blocks, head = item / blocks
                let (b, h) = (head / heads, head % heads)
                let rowStart = block * kernels.rowBlock
                func rowsFrom(_ m: StridedMatrix) -> StridedMatrix {
                    var moved = m
                    moved.base += rowStart * m.rowStride * elementSize
                    return moved
                }
                let x = rowsFrom(input.matrix(b, h))
                var task = RandomFeatureTask(
                    map: map, rowCount: min(kernels.rowBlock, rows - rowStart), dim: d, numFeatures: m,
                    inputScale: sigma, reluOffset: options.reluOffset, projection: wBytes.baseAddress!,
                    input: x, featureGradient: gradient.map { rowsFrom($0.matrix(b, h)) } ?? x,
                    output: rowsFrom(output.matrix(b, h)), scratch: scratch.slot(worker))
                entry(&task)
            }
        }
    }
}

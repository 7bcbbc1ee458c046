// Task descriptors and entry points for FAVOR+ random features (ALGORITHMS.md §3,
// docs/FAVOR.md): φ(x) from u = W x̂, x̂ = x·s^(1/2), and its backward.

/// The feature map a task computes. Raw values are the C ABI codes (performer.h).
public enum RandomFeatureMap: Int32, Sendable {
    /// exp(u − ‖x̂‖²/2)/√m, C = m.
    case positive = 0
    /// exp(−‖x̂‖²/2)/√(2m) · [exp(u), exp(−u)], C = 2m.
    case hyperbolic = 1
    /// exp(‖x̂‖²/2)/√m · [sin(u), cos(u)], C = 2m.
    case trigonometric = 2
    /// relu(u) + κ, C = m.
    case relu = 3

    /// C, the feature count for m random projections.
    @inlinable
    public func featureCount(numFeatures m: Int) -> Int {
        self == .hyperbolic || self == .trigonometric ? 2 * m : m
    }
}

/// Rows `0 ..< rowCount` of one head: forward writes φ(x_i) into `output` (rowCount × C);
/// backward reads dφ from `featureGradient` (rowCount × C) and writes dx into `output`
/// (rowCount × D). The element type (Float or Double) is fixed by the entry called.
public struct RandomFeatureTask: @unchecked Sendable {
    public var map: RandomFeatureMap
    public var rowCount: Int
    /// D.
    public var dim: Int
    /// m.
    public var numFeatures: Int
    /// s^(1/2): x̂ = x · inputScale.
    public var inputScale: Double
    /// κ of the relu map.
    public var reluOffset: Double
    /// W, row-major m × D, contiguous, of the task's element type.
    public var projection: UnsafeRawPointer
    /// x, rowCount × D.
    public var input: StridedMatrix
    /// dφ, rowCount × C (backward only; unused by forward).
    public var featureGradient: StridedMatrix
    /// φ (forward, rowCount × C) or dx (backward, rowCount × D).
    public var output: StridedMatrix
    /// `RandomFeatureKernels.scratchBytes` bytes, 64-byte aligned, owned by this task.
    public var scratch: UnsafeMutableRawPointer

    public init(
        map: RandomFeatureMap, rowCount: Int, dim: Int, numFeatures: Int, inputScale: Double, reluOffset: Double,
        projection: UnsafeRawPointer, input: StridedMatrix, featureGradient: StridedMatrix, output: StridedMatrix,
        scratch: UnsafeMutableRawPointer
    ) {
        self.map = map
        self.rowCount = rowCount
        self.dim = dim
        self.numFeatures = numFeatures
        self.inputScale = inputScale
        self.reluOffset = reluOffset
        self.projection = projection
        self.input = input
        self.featureGradient = featureGradient
        self.output = output
        self.scratch = scratch
    }
}

/// Entry points of one kernel module for random features.
public struct RandomFeatureKernels: Sendable {
    /// Rows per task (PerformerCore splits N into blocks of this many).
    public var rowBlock: Int
    /// Scratch bytes one task needs, for (D, m, element size in bytes).
    public var scratchBytes: @Sendable (Int, Int, Int) -> Int
    public var forwardFloat: @Sendable (UnsafePointer<RandomFeatureTask>) -> Void
    public var forwardDouble: @Sendable (UnsafePointer<RandomFeatureTask>) -> Void
    public var backwardFloat: @Sendable (UnsafePointer<RandomFeatureTask>) -> Void
    public var backwardDouble: @Sendable (UnsafePointer<RandomFeatureTask>) -> Void

    public init(
        rowBlock: Int,
        scratchBytes: @escaping @Sendable (Int, Int, Int) -> Int,
        forwardFloat: @escaping @Sendable (UnsafePointer<RandomFeatureTask>) -> Void,
        forwardDouble: @escaping @Sendable (UnsafePointer<RandomFeatureTask>) -> Void,
        backwardFloat: @escaping @Sendable (UnsafePointer<RandomFeatureTask>) -> Void,
        backwardDouble: @escaping @Sendable (UnsafePointer<RandomFeatureTask>) -> Void
    ) {
        self.rowBlock = rowBlock
        self.scratchBytes = scratchBytes
        self.forwardFloat = forwardFloat
        self.forwardDouble = forwardDouble
        self.backwardFloat = backwardFloat
        self.backwardDouble = backwardDouble
    }
}

/// One recurrent FAVOR+ step for one head (docs/FAVOR.md §4, "Decoder step"): folds key k and
/// value v into the scaled state (S̃, z̃, c), then reads it with query q into `output`.
/// Vectors are base pointers with an element stride; the state is contiguous, of the task's
/// element type: S̃ C × M row-major, z̃ C, c C (−inf = no key yet).
public struct FavorStepTask: @unchecked Sendable {
    public var map: RandomFeatureMap
    public var dim: Int
    public var numFeatures: Int
    public var valueDim: Int
    public var inputScale: Double
    public var reluOffset: Double
    /// ε in the units of the mathematical features (≥ 0).
    public var epsilon: Double
    public var projection: UnsafeRawPointer
    public var query: UnsafeRawPointer
    public var queryStride: Int
    public var key: UnsafeRawPointer
    public var keyStride: Int
    public var value: UnsafeRawPointer
    public var valueStride: Int
    public var output: UnsafeMutableRawPointer
    public var outputStride: Int
    public var stateS: UnsafeMutableRawPointer
    public var stateZ: UnsafeMutableRawPointer
    public var stateC: UnsafeMutableRawPointer
    /// `FavorStepKernels.scratchBytes` bytes, 64-byte aligned.
    public var scratch: UnsafeMutableRawPointer

    public init(
        map: RandomFeatureMap, dim: Int, numFeatures: Int, valueDim: Int, inputScale: Double, reluOffset: Double,
        epsilon: Double, projection: UnsafeRawPointer, query: UnsafeRawPointer, queryStride: Int,
        key: UnsafeRawPointer, keyStride: Int, value: UnsafeRawPointer, valueStride: Int,
        output: UnsafeMutableRawPointer, outputStride: Int, stateS: UnsafeMutableRawPointer,
        stateZ: UnsafeMutableRawPointer, stateC: UnsafeMutableRawPointer, scratch: UnsafeMutableRawPointer
    ) {
        self.map = map
        self.dim = dim
        self.numFeatures = numFeatures
        self.valueDim = valueDim
        self.inputScale = inputScale
        self.reluOffset = reluOffset
        self.epsilon = epsilon
        self.projection = projection
        self.query = query
        self.queryStride = queryStride
        self.key = key
        self.keyStride = keyStride
        self.value = value
        self.valueStride = valueStride
        self.output = output
        self.outputStride = outputStride
        self.stateS = stateS
        self.stateZ = stateZ
        self.stateC = stateC
        self.scratch = scratch
    }
}

/// Entry points of one kernel module for the FAVOR+ recurrent step.
public struct FavorStepKernels: Sendable {
    /// Scratch bytes one task needs, for (D, m, element size in bytes).
    public var scratchBytes: @Sendable (Int, Int, Int) -> Int
    public var stepFloat: @Sendable (UnsafePointer<FavorStepTask>) -> Void
    public var stepDouble: @Sendable (UnsafePointer<FavorStepTask>) -> Void

    public init(
        scratchBytes: @escaping @Sendable (Int, Int, Int) -> Int,
        stepFloat: @escaping @Sendable (UnsafePointer<FavorStepTask>) -> Void,
        stepDouble: @escaping @Sendable (UnsafePointer<FavorStepTask>) -> Void
    ) {
        self.scratchBytes = scratchBytes
        self.stepFloat = stepFloat
        self.stepDouble = stepDouble
    }
}

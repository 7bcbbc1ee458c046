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
    /// Wᵀ, row-major D × m (row c holds column c of W), contiguous, of the task's element type.
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
    /// `FavorStepKernels.scratchBytes` bytes, 64-byte aligned (read from the group's first task).
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

/// Entry points of one kernel module for the FAVOR+ recurrent step. A call steps a group of
/// heads (`tasks[0 ..< count]`, one per head, sharing map, sizes and projection, so W is read
/// once for the group); the group's scratch is `tasks[0].scratch`.
public struct FavorStepKernels: Sendable {
    /// Most heads one call takes.
    public var maxGroup: Int
    /// Scratch bytes one group call needs, for (D, m, element size in bytes, heads in the group).
    public var scratchBytes: @Sendable (Int, Int, Int, Int) -> Int
    public var stepFloat: @Sendable (UnsafePointer<FavorStepTask>, Int) -> Void
    public var stepDouble: @Sendable (UnsafePointer<FavorStepTask>, Int) -> Void

    public init(
        maxGroup: Int,
        scratchBytes: @escaping @Sendable (Int, Int, Int, Int) -> Int,
        stepFloat: @escaping @Sendable (UnsafePointer<FavorStepTask>, Int) -> Void,
        stepDouble: @escaping @Sendable (UnsafePointer<FavorStepTask>, Int) -> Void
    ) {
        self.maxGroup = maxGroup
        self.scratchBytes = scratchBytes
        self.stepFloat = stepFloat
        self.stepDouble = stepDouble
    }
}

/// The sizes of one FAVOR+ attention head.
public struct FavorHeadShape: Sendable, Equatable {
    /// N.
    public var queryCount: Int
    /// L (= N when causal).
    public var keyCount: Int
    /// D.
    public var dim: Int
    /// m, the rows of W.
    public var numFeatures: Int
    /// M.
    public var valueDim: Int
    /// C: m, or 2m for hyperbolic and trigonometric features.
    public var featureCount: Int

    public init(queryCount: Int, keyCount: Int, dim: Int, numFeatures: Int, valueDim: Int, featureCount: Int) {
        self.queryCount = queryCount
        self.keyCount = keyCount
        self.dim = dim
        self.numFeatures = numFeatures
        self.valueDim = valueDim
        self.featureCount = featureCount
    }
}

/// Forward or backward of one FAVOR+ query head in the stabilized form of docs/FAVOR.md §4.
/// Which fields a kernel reads depends on the entry:
/// - forward reads query, key, value and (causal) the initial state; writes output and, when
///   given, the final state (S̃, z̃, c);
/// - backward reads query, key, value, outputGradient, the initial state and the final state
///   gradient (dS̃, dz̃) (causal); writes queryGradient, keyGradient, valueGradient (adding to
///   the latter two when `accumulateKeyGradients`) and, when given, the initial state gradient.
/// - queryStateGradient reads query, output, outputGradient, initialC (c₀) and the row scales
///   (rowUnits, rowDenominators: the forward's U_i, den_i, inputs here); writes the initial
///   state gradient's query-side terms (initialSGradient, initialZGradient; never keys).
/// States are C × M (S̃) and C × 1 (z̃, c) strided matrices. A nil initial state means the empty
/// one (S̃ = 0, z̃ = 0, c = −inf; c = 0 for relu); a nil final-state gradient means zeros.
public struct FavorAttentionTask: @unchecked Sendable {
    public var shape: FavorHeadShape
    public var map: RandomFeatureMap
    public var causal: Bool
    /// s^(1/2): x̂ = x · inputScale.
    public var inputScale: Double
    /// κ of the relu map.
    public var reluOffset: Double
    /// ε in the units of the mathematical features (finite, ≥ 0).
    public var epsilon: Double
    /// kv_len[b]: keys at or past it take no part (their features are zero).
    public var keyLimit: Int
    /// kv_starts[b] (≤ keyLimit): keys before it take no part either (left padding). 0 by default.
    public var keyStart: Int
    /// W, row-major m × D, contiguous, of the task's element type.
    public var projection: UnsafeRawPointer
    public var query: StridedMatrix                  // N × D
    public var key: StridedMatrix                    // L × D
    public var value: StridedMatrix                  // L × M
    public var output: StridedMatrix?                // N × M (forward)
    public var outputGradient: StridedMatrix?        // N × M (backward)
    public var queryGradient: StridedMatrix?         // N × D (backward)
    public var keyGradient: StridedMatrix?           // L × D (backward)
    public var valueGradient: StridedMatrix?         // L × M (backward)
    public var accumulateKeyGradients: Bool
    public var initialS: StridedMatrix?              // C × M
    public var initialZ: StridedMatrix?              // C × 1
    public var initialC: StridedMatrix?              // C × 1
    public var finalS: StridedMatrix?                // C × M (forward output)
    public var finalZ: StridedMatrix?
    public var finalC: StridedMatrix?
    public var finalSGradient: StridedMatrix?        // C × M (backward input)
    public var finalZGradient: StridedMatrix?
    public var initialSGradient: StridedMatrix?      // C × M (backward output)
    public var initialZGradient: StridedMatrix?
    /// Per query row (forward, optional): the row unit U_i and the scaled denominator den_i
    /// (ε·e^{−U_i} included) the output was divided by, so φ-space den = e^{U_i}·den_i
    /// (docs/FAVOR.md §4). A row that outputs zeros gets den_i = 0.
    public var rowUnits: StridedMatrix?              // N × 1
    public var rowDenominators: StridedMatrix?       // N × 1
    /// `FavorAttentionKernels.scratchBytes` bytes, 64-byte aligned, owned by this task.
    public var scratch: UnsafeMutableRawPointer

    public init(shape: FavorHeadShape, map: RandomFeatureMap, causal: Bool, inputScale: Double, reluOffset: Double,
                epsilon: Double, keyLimit: Int, projection: UnsafeRawPointer,
                query: StridedMatrix, key: StridedMatrix, value: StridedMatrix, scratch: UnsafeMutableRawPointer) {
        self.shape = shape
        self.map = map
        self.causal = causal
        self.inputScale = inputScale
        self.reluOffset = reluOffset
        self.epsilon = epsilon
        self.keyLimit = keyLimit
        self.keyStart = 0
        self.projection = projection
        self.query = query
        self.key = key
        self.value = value
        self.accumulateKeyGradients = false
        self.scratch = scratch
    }
}

/// Entry points of one kernel module for FAVOR+ attention.
public struct FavorAttentionKernels: Sendable {
    /// Scratch bytes one task needs: (shape, element size, causal, backward). The causal backward
    /// keeps three scalars per position; everything else is O(chunk · max(C, M, D) + C · M).
    public var scratchBytes: @Sendable (FavorHeadShape, Int, Bool, Bool) -> Int
    public var forwardFloat: @Sendable (UnsafePointer<FavorAttentionTask>) -> Void
    public var forwardDouble: @Sendable (UnsafePointer<FavorAttentionTask>) -> Void
    public var backwardFloat: @Sendable (UnsafePointer<FavorAttentionTask>) -> Void
    public var backwardDouble: @Sendable (UnsafePointer<FavorAttentionTask>) -> Void
    /// Runs in the bidirectional forward's scratch (`scratchBytes(shape, size, false, false)`).
    public var queryStateGradientFloat: @Sendable (UnsafePointer<FavorAttentionTask>) -> Void
    public var queryStateGradientDouble: @Sendable (UnsafePointer<FavorAttentionTask>) -> Void

    public init(
        scratchBytes: @escaping @Sendable (FavorHeadShape, Int, Bool, Bool) -> Int,
        forwardFloat: @escaping @Sendable (UnsafePointer<FavorAttentionTask>) -> Void,
        forwardDouble: @escaping @Sendable (UnsafePointer<FavorAttentionTask>) -> Void,
        backwardFloat: @escaping @Sendable (UnsafePointer<FavorAttentionTask>) -> Void,
        backwardDouble: @escaping @Sendable (UnsafePointer<FavorAttentionTask>) -> Void,
        queryStateGradientFloat: @escaping @Sendable (UnsafePointer<FavorAttentionTask>) -> Void,
        queryStateGradientDouble: @escaping @Sendable (UnsafePointer<FavorAttentionTask>) -> Void
    ) {
        self.scratchBytes = scratchBytes
        self.forwardFloat = forwardFloat
        self.forwardDouble = forwardDouble
        self.backwardFloat = backwardFloat
        self.backwardDouble = backwardDouble
        self.queryStateGradientFloat = queryStateGradientFloat
        self.queryStateGradientDouble = queryStateGradientDouble
    }
}

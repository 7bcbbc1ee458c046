// Task descriptors and entry points for exact softmax attention (ALGORITHMS.md §1).
//
// A task is one unit of parallel work on one head. PerformerCore splits a problem into tasks,
// gives each its own scratch, and calls the entry for the element type (Float or Double).

/// Which keys a query row sees: key j is visible to query i iff
/// `j < keyLimit` and (when `causal`) `j <= i + causalOffset`.
public struct SoftmaxMasking: Sendable {
    public var causal: Bool
    /// L − N: causal masks are bottom-right aligned.
    public var causalOffset: Int
    /// kv_len[b] (≤ L); keys at or past it are padding.
    public var keyLimit: Int

    public init(causal: Bool, causalOffset: Int, keyLimit: Int) {
        self.causal = causal
        self.causalOffset = causalOffset
        self.keyLimit = keyLimit
    }

    /// Keys visible to query row `i`: `0..<visibleKeyCount(row: i)`.
    @inlinable
    public func visibleKeyCount(row i: Int) -> Int {
        causal ? max(0, min(keyLimit, i + causalOffset + 1)) : max(0, keyLimit)
    }
}

/// The sizes of one head's problem.
public struct SoftmaxHeadShape: Sendable {
    public var queryCount: Int   // N
    public var keyCount: Int     // L
    public var headDim: Int      // D
    public var valueDim: Int     // M

    public init(queryCount: Int, keyCount: Int, headDim: Int, valueDim: Int) {
        self.queryCount = queryCount
        self.keyCount = keyCount
        self.headDim = headDim
        self.valueDim = valueDim
    }
}

/// Forward for query rows `rowStart ..< rowStart + rowCount` of one head, over all keys.
public struct SoftmaxForwardTask: @unchecked Sendable {
    public var shape: SoftmaxHeadShape
    public var masking: SoftmaxMasking
    public var scale: Double
    public var rowStart: Int
    public var rowCount: Int
    public var query: StridedMatrix    // N × D
    public var key: StridedMatrix      // L × D
    public var value: StridedMatrix    // L × M
    public var output: StridedMatrix   // N × M
    /// N entries, `logSumExpStride` apart; nil when the caller does not want them.
    public var logSumExp: UnsafeMutableRawPointer?
    public var logSumExpStride: Int
    /// `SoftmaxKernels.forwardScratchBytes` bytes, 64-byte aligned, owned by this task.
    public var scratch: UnsafeMutableRawPointer

    public init(
        shape: SoftmaxHeadShape, masking: SoftmaxMasking, scale: Double, rowStart: Int, rowCount: Int,
        query: StridedMatrix, key: StridedMatrix, value: StridedMatrix, output: StridedMatrix,
        logSumExp: UnsafeMutableRawPointer?, logSumExpStride: Int, scratch: UnsafeMutableRawPointer
    ) {
        self.shape = shape
        self.masking = masking
        self.scale = scale
        self.rowStart = rowStart
        self.rowCount = rowCount
        self.query = query
        self.key = key
        self.value = value
        self.output = output
        self.logSumExp = logSumExp
        self.logSumExpStride = logSumExpStride
        self.scratch = scratch
    }
}

/// Entry points of one kernel module for softmax attention.
public struct SoftmaxKernels: Sendable {
    /// Query rows per forward task (PerformerCore splits N into blocks of this many).
    public var forwardRowBlock: Int
    /// Scratch bytes one forward task needs, for (shape, element size in bytes).
    public var forwardScratchBytes: @Sendable (SoftmaxHeadShape, Int) -> Int
    public var forwardFloat: @Sendable (UnsafePointer<SoftmaxForwardTask>) -> Void
    public var forwardDouble: @Sendable (UnsafePointer<SoftmaxForwardTask>) -> Void
    /// The micro-kernel the softmax kernels run, as a plain float32 product (benchmark reference).
    public var productFloat: @Sendable (UnsafePointer<MatrixProductTask>) -> Void

    public init(
        forwardRowBlock: Int,
        forwardScratchBytes: @escaping @Sendable (SoftmaxHeadShape, Int) -> Int,
        forwardFloat: @escaping @Sendable (UnsafePointer<SoftmaxForwardTask>) -> Void,
        forwardDouble: @escaping @Sendable (UnsafePointer<SoftmaxForwardTask>) -> Void,
        productFloat: @escaping @Sendable (UnsafePointer<MatrixProductTask>) -> Void
    ) {
        self.forwardRowBlock = forwardRowBlock
        self.forwardScratchBytes = forwardScratchBytes
        self.forwardFloat = forwardFloat
        self.forwardDouble = forwardDouble
        self.productFloat = productFloat
    }
}

/// C (rows × columns) = A (rows × depth, any strides) · B (depth × columns, rows `bRowStride`
/// apart, contiguous columns), C rows `cRowStride` apart; `columns` a multiple of 32.
/// Runs the same micro-kernel as the softmax kernels: the benchmarks' peak reference.
public struct MatrixProductTask: @unchecked Sendable {
    public var rows: Int, columns: Int, depth: Int
    public var a: StridedMatrix
    public var b: UnsafeRawPointer
    public var bRowStride: Int
    public var c: UnsafeMutableRawPointer
    public var cRowStride: Int

    public init(rows: Int, columns: Int, depth: Int, a: StridedMatrix, b: UnsafeRawPointer, bRowStride: Int,
                c: UnsafeMutableRawPointer, cRowStride: Int) {
        self.rows = rows
        self.columns = columns
        self.depth = depth
        self.a = a
        self.b = b
        self.bRowStride = bRowStride
        self.c = c
        self.cRowStride = cRowStride
    }
}

/// Backward for one block of one head (ALGORITHMS.md §1). Tasks of one call never write the
/// same memory, so they run in parallel without races:
/// - the query pass (`backwardQuery*`) writes dQ for query rows `rowStart ..< rowStart + rowCount`;
/// - the key pass (`backwardKey*`) writes dK, dV for key rows `rowStart ..< rowStart + rowCount`,
///   summing over the `groupSize` query heads that share this key head (grouped-query attention):
///   query head g of the group is at `query.base + g · queryHeadStep` (likewise output,
///   outputGradient, logSumExp, delta, queryGradient), in elements. With `fusedQueryGradient`
///   (only for a task covering every key, rowStart = 0 and rowCount = L) the key pass also
///   writes dQ of every query head of the group, and no query pass runs for them.
public struct SoftmaxBackwardTask: @unchecked Sendable {
    public var shape: SoftmaxHeadShape
    public var masking: SoftmaxMasking
    public var scale: Double
    public var rowStart: Int
    public var rowCount: Int
    public var query: StridedMatrix            // N × D
    public var key: StridedMatrix              // L × D
    public var value: StridedMatrix            // L × M
    public var outputGradient: StridedMatrix   // N × M
    public var logSumExp: UnsafeMutableRawPointer
    public var logSumExpStride: Int
    /// δ_i = Σ_m dO_im O_im, N contiguous entries per head (computed before the passes).
    public var delta: UnsafeMutableRawPointer
    public var queryGradient: StridedMatrix    // N × D
    public var keyGradient: StridedMatrix      // L × D (key pass)
    public var valueGradient: StridedMatrix    // L × M (key pass)
    public var groupSize: Int
    public var queryHeadStep: Int
    public var outputGradientHeadStep: Int
    public var logSumExpHeadStep: Int
    public var deltaHeadStep: Int
    public var queryGradientHeadStep: Int
    public var fusedQueryGradient: Bool
    /// `SoftmaxBackwardKernels.scratchBytes` bytes, 64-byte aligned, owned by this task.
    public var scratch: UnsafeMutableRawPointer

    public init(
        shape: SoftmaxHeadShape, masking: SoftmaxMasking, scale: Double, rowStart: Int, rowCount: Int,
        query: StridedMatrix, key: StridedMatrix, value: StridedMatrix,
        outputGradient: StridedMatrix, logSumExp: UnsafeMutableRawPointer, logSumExpStride: Int,
        delta: UnsafeMutableRawPointer,
        queryGradient: StridedMatrix, keyGradient: StridedMatrix, valueGradient: StridedMatrix,
        groupSize: Int, queryHeadStep: Int, outputGradientHeadStep: Int,
        logSumExpHeadStep: Int, deltaHeadStep: Int, queryGradientHeadStep: Int, fusedQueryGradient: Bool,
        scratch: UnsafeMutableRawPointer
    ) {
        self.shape = shape
        self.masking = masking
        self.scale = scale
        self.rowStart = rowStart
        self.rowCount = rowCount
        self.query = query
        self.key = key
        self.value = value
        self.outputGradient = outputGradient
        self.logSumExp = logSumExp
        self.logSumExpStride = logSumExpStride
        self.delta = delta
        self.queryGradient = queryGradient
        self.keyGradient = keyGradient
        self.valueGradient = valueGradient
        self.groupSize = groupSize
        self.queryHeadStep = queryHeadStep
        self.outputGradientHeadStep = outputGradientHeadStep
        self.logSumExpHeadStep = logSumExpHeadStep
        self.deltaHeadStep = deltaHeadStep
        self.queryGradientHeadStep = queryGradientHeadStep
        self.fusedQueryGradient = fusedQueryGradient
        self.scratch = scratch
    }
}

/// Entry points of one kernel module for the softmax backward.
public struct SoftmaxBackwardKernels: Sendable {
    /// Query rows per query-pass task; key rows per key-pass task (unless fused: all keys).
    public var queryRowBlock: Int
    public var keyRowBlock: Int
    /// Scratch bytes one task needs, for (shape, element size in bytes, key rows of the task,
    /// fused): enough for a query-pass task too.
    public var scratchBytes: @Sendable (SoftmaxHeadShape, Int, Int, Bool) -> Int
    public var queryFloat: @Sendable (UnsafePointer<SoftmaxBackwardTask>) -> Void
    public var queryDouble: @Sendable (UnsafePointer<SoftmaxBackwardTask>) -> Void
    public var keyFloat: @Sendable (UnsafePointer<SoftmaxBackwardTask>) -> Void
    public var keyDouble: @Sendable (UnsafePointer<SoftmaxBackwardTask>) -> Void
    /// δ_i = Σ_m dO_im O_im for `rows` rows of `columns` (M) entries: (output, outputGradient,
    /// rows, columns, delta) with delta contiguous. Runs before the passes.
    public var deltaFloat: @Sendable (StridedMatrix, StridedMatrix, Int, Int, UnsafeMutableRawPointer) -> Void
    public var deltaDouble: @Sendable (StridedMatrix, StridedMatrix, Int, Int, UnsafeMutableRawPointer) -> Void

    public init(
        queryRowBlock: Int, keyRowBlock: Int,
        scratchBytes: @escaping @Sendable (SoftmaxHeadShape, Int, Int, Bool) -> Int,
        queryFloat: @escaping @Sendable (UnsafePointer<SoftmaxBackwardTask>) -> Void,
        queryDouble: @escaping @Sendable (UnsafePointer<SoftmaxBackwardTask>) -> Void,
        keyFloat: @escaping @Sendable (UnsafePointer<SoftmaxBackwardTask>) -> Void,
        keyDouble: @escaping @Sendable (UnsafePointer<SoftmaxBackwardTask>) -> Void,
        deltaFloat: @escaping @Sendable (StridedMatrix, StridedMatrix, Int, Int, UnsafeMutableRawPointer) -> Void,
        deltaDouble: @escaping @Sendable (StridedMatrix, StridedMatrix, Int, Int, UnsafeMutableRawPointer) -> Void
    ) {
        self.deltaFloat = deltaFloat
        self.deltaDouble = deltaDouble
        self.queryRowBlock = queryRowBlock
        self.keyRowBlock = keyRowBlock
        self.scratchBytes = scratchBytes
        self.queryFloat = queryFloat
        self.queryDouble = queryDouble
        self.keyFloat = keyFloat
        self.keyDouble = keyDouble
    }
}

// Task descriptors and entry points for the few-query softmax forward (decoding with a KV
// cache: N = 1 or a few new queries against L cached keys).
//
// The tiled forward puts 64 queries in vector lanes, so a single query pads the block 64×.
// This path instead computes each query row's scores as dot products over D and accumulates
// o += p_j v_j vectorized over M, streaming K and V once. The keys are split into chunks of a
// length fixed by the problem's shape (never by the thread count), one task per chunk; each
// task writes unnormalized partial records, and a combine step merges the chunks in order
// (log-sum-exp merge), so results do not depend on the number of threads.

/// One chunk of keys against a few query rows of one or more query heads that share a key
/// head. Rows of the task: for head g < `headCount` (query head g is at
/// `query.base + g · queryHeadStep` elements) and row i < `rowCount`, query row `rowStart + i`;
/// task row r = g · rowCount + i.
///
/// Writes `headCount · rowCount` records of (M + 2) elements at `partial`, record r at
/// r · (M + 2): the running max m (log2 units of the scaled score), the sum l = Σ_j 2^(s_j − m)
/// and the unnormalized o = Σ_j 2^(s_j − m) v_j over the visible keys j in
/// `keyStart ..< keyEnd`; a row that sees none of them gets m = −inf, l = 0, o = 0.
public struct SoftmaxRowsTask: @unchecked Sendable {
    public var shape: SoftmaxHeadShape
    public var masking: SoftmaxMasking
    public var scale: Double
    public var rowStart: Int
    public var rowCount: Int
    public var headCount: Int
    public var query: StridedMatrix    // N × D, first head of the task
    public var queryHeadStep: Int
    public var key: StridedMatrix      // L × D
    public var value: StridedMatrix    // L × M
    public var keyStart: Int
    public var keyEnd: Int
    public var partial: UnsafeMutableRawPointer
    /// `SoftmaxRowKernels.scratchBytes` bytes, 64-byte aligned, owned by this task.
    public var scratch: UnsafeMutableRawPointer

    public init(
        shape: SoftmaxHeadShape, masking: SoftmaxMasking, scale: Double, rowStart: Int, rowCount: Int,
        headCount: Int, query: StridedMatrix, queryHeadStep: Int, key: StridedMatrix, value: StridedMatrix,
        keyStart: Int, keyEnd: Int, partial: UnsafeMutableRawPointer, scratch: UnsafeMutableRawPointer
    ) {
        self.shape = shape
        self.masking = masking
        self.scale = scale
        self.rowStart = rowStart
        self.rowCount = rowCount
        self.headCount = headCount
        self.query = query
        self.queryHeadStep = queryHeadStep
        self.key = key
        self.value = value
        self.keyStart = keyStart
        self.keyEnd = keyEnd
        self.partial = partial
        self.scratch = scratch
    }
}

/// Merges the `chunkCount` partial records of each row of one `SoftmaxRowsTask` row set (chunk
/// c's records at `partial + c · chunkStride` elements, laid out as the task wrote them) into
/// the output rows and, when wanted, the log-sum-exp. Rows are addressed as in the task:
/// head g at `output.base + g · outputHeadStep`, row `rowStart + i`; likewise `logSumExp`
/// (entries `logSumExpStride` apart, heads `logSumExpHeadStep` apart). A row with no visible
/// key gets zeros and lse = −inf.
public struct SoftmaxCombineTask: @unchecked Sendable {
    public var valueDim: Int
    public var rowStart: Int
    public var rowCount: Int
    public var headCount: Int
    public var chunkCount: Int
    public var partial: UnsafeMutableRawPointer
    public var chunkStride: Int
    public var output: StridedMatrix
    public var outputHeadStep: Int
    public var logSumExp: UnsafeMutableRawPointer?
    public var logSumExpStride: Int
    public var logSumExpHeadStep: Int

    public init(
        valueDim: Int, rowStart: Int, rowCount: Int, headCount: Int, chunkCount: Int,
        partial: UnsafeMutableRawPointer, chunkStride: Int, output: StridedMatrix, outputHeadStep: Int,
        logSumExp: UnsafeMutableRawPointer?, logSumExpStride: Int, logSumExpHeadStep: Int
    ) {
        self.valueDim = valueDim
        self.rowStart = rowStart
        self.rowCount = rowCount
        self.headCount = headCount
        self.chunkCount = chunkCount
        self.partial = partial
        self.chunkStride = chunkStride
        self.output = output
        self.outputHeadStep = outputHeadStep
        self.logSumExp = logSumExp
        self.logSumExpStride = logSumExpStride
        self.logSumExpHeadStep = logSumExpHeadStep
    }
}

/// Entry points of one kernel module for the few-query forward.
public struct SoftmaxRowKernels: Sendable {
    /// Most rows (heads × queries) one `SoftmaxRowsTask` may hold.
    public var maxRows: Int
    /// Scratch bytes one rows task needs, for (shape, element size in bytes).
    public var scratchBytes: @Sendable (SoftmaxHeadShape, Int) -> Int
    public var rowsFloat: @Sendable (UnsafePointer<SoftmaxRowsTask>) -> Void
    public var rowsDouble: @Sendable (UnsafePointer<SoftmaxRowsTask>) -> Void
    public var combineFloat: @Sendable (UnsafePointer<SoftmaxCombineTask>) -> Void
    public var combineDouble: @Sendable (UnsafePointer<SoftmaxCombineTask>) -> Void

    public init(
        maxRows: Int, scratchBytes: @escaping @Sendable (SoftmaxHeadShape, Int) -> Int,
        rowsFloat: @escaping @Sendable (UnsafePointer<SoftmaxRowsTask>) -> Void,
        rowsDouble: @escaping @Sendable (UnsafePointer<SoftmaxRowsTask>) -> Void,
        combineFloat: @escaping @Sendable (UnsafePointer<SoftmaxCombineTask>) -> Void,
        combineDouble: @escaping @Sendable (UnsafePointer<SoftmaxCombineTask>) -> Void
    ) {
        self.maxRows = maxRows
        self.scratchBytes = scratchBytes
        self.rowsFloat = rowsFloat
        self.rowsDouble = rowsDouble
        self.combineFloat = combineFloat
        self.combineDouble = combineDouble
    }
}

import PerformerKernelInterface

/// The few-query forward (decoding with a KV cache), chosen by `SoftmaxAttention.forward` when
/// N ≤ `rowPathMaxQueries`: the tiled kernel would pad its 64-query block, while this path
/// streams K and V once per key head (see SoftmaxRowKernels.swift in the kernel interface).
///
/// Work split: a "row set" is up to `maxRows` (8) rows — a few queries of one or more query
/// heads sharing a key head — and its keys are cut into chunks whose length depends only on
/// the shape (L, and how many row sets there are), never on the thread count. One task per
/// (row set, chunk) writes partial records; then one combine per row set merges its chunks in
/// chunk order. So every output bit is independent of the number of threads.
extension SoftmaxAttention {
    /// Largest N that takes the few-query path. Measured (H = 8, D = M = 64, causal, one thread,
    /// AVX-512): rows path / tiled at N = 8: 360 / 649 µs (L = 1k), 1712 / 2615 µs (L = 4k);
    /// N = 12: 538 / 650, 2212 / 2591; N = 16: 729 / 651, 2911 / 2590.
    nonisolated(unsafe) package static var rowPathMaxQueries = 12
    /// Keys per chunk when there are few row sets (a multiple of the kernel's 64-key block).
    package static let rowChunkKeys = 512
    /// Chunks are made longer when row sets × chunks would exceed this (bounds partial memory).
    static let rowMaxTasks = 256

    static func forwardRows<T: AttentionScalar>(
        _ problem: SoftmaxProblem, query: TensorView<T>, key: TensorView<T>, value: TensorView<T>,
        output: MutableTensorView<T>, logSumExp: MutableTensorView<T>?
    ) throws(PerformerError) {
        let kernels = Runtime.kernels.softmaxRows
        let shape = problem.shape
        let (n, l, mDim) = (shape.queryCount, shape.keyCount, shape.valueDim)
        let group = problem.heads / problem.keyHeads
        let rowsPerSet = min(n, kernels.maxRows)
        let rowPieces = (n + rowsPerSet - 1) / rowsPerSet
        let headsPerSet = max(1, min(group, kernels.maxRows / rowsPerSet))
        let headPieces = (group + headsPerSet - 1) / headsPerSet
        let rowSets = problem.batch * problem.keyHeads * headPieces * rowPieces
        guard rowSets > 0 else { return }

        // Chunks: rowChunkKeys keys each, fewer (longer, multiples of 64) when there are many row sets.
        var chunks = max(1, (l + rowChunkKeys - 1) / rowChunkKeys)
        chunks = max(1, min(chunks, rowMaxTasks / rowSets))
        let chunkKeys = max(64, ((l + chunks - 1) / chunks + 63) / 64 * 64)
        chunks = max(1, (l + chunkKeys - 1) / chunkKeys)

        let elementSize = MemoryLayout<T>.stride
        let records = ScratchSize(headsPerSet) * rowsPerSet * (ScratchSize(mDim) + 2)   // elements per chunk
        let taskCount = rowSets * chunks
        let partials = try ScratchBuffer(slots: 1, slotBytes: ScratchSize(taskCount) * records * elementSize,
                                         for: problem.argumentSizes)
        let recordsPerChunk = records.value  // exact: the allocation above would have failed otherwise
        let partialBase = partials.base.assumingMemoryBound(to: T.self)
        let threads = min(Runtime.threads(forWork: problem.work), taskCount)
        let scratch = try ScratchBuffer(slots: threads, slotBytes: kernels.scratchBytes(shape, elementSize),
                                        for: problem.argumentSizes)
        let isFloat = T.dtype == .float32
        let rowsEntry = isFloat ? kernels.rowsFloat : kernels.rowsDouble
        let combineEntry = isFloat ? kernels.combineFloat : kernels.combineDouble

        /// (batch, first query head, heads, first row, rows) of row set `set`.
        func rowSet(_ set: Int) -> (b: Int, h: Int, heads: Int, rowStart: Int, rows: Int) {
            let rowPiece = set % rowPieces
            let headPiece = (set / rowPieces) % headPieces
            let keyHead = set / (rowPieces * headPieces)
            let (b, hk) = (keyHead / problem.keyHeads, keyHead % problem.keyHeads)
            let firstHead = headPiece * headsPerSet
            return (b, hk * group + firstHead, min(headsPerSet, group - firstHead),
                    rowPiece * rowsPerSet, min(rowsPerSet, n - rowPiece * rowsPerSet))
        }

        Runtime.parallelFor(count: taskCount, threads: threads) { item, worker in
            let (set, chunk) = (item / chunks, item % chunks)
            let r = rowSet(set)
            // Chunks cut the batch row's key window; those past its end are empty.
            let window = problem.keyWindow(batch: r.b)
            let keyStart = min(window.shape.keyCount, chunk * chunkKeys)
            var task = SoftmaxRowsTask(
                shape: window.shape, masking: window.masking, scale: problem.scale,
                rowStart: r.rowStart, rowCount: r.rows, headCount: r.heads,
                query: query.matrix(r.b, r.h), queryHeadStep: query.strides[1],
                key: key.matrix(r.b, r.h / group, firstRow: window.offset),
                value: value.matrix(r.b, r.h / group, firstRow: window.offset),
                keyStart: keyStart, keyEnd: min(window.shape.keyCount, keyStart + chunkKeys),
                partial: UnsafeMutableRawPointer(partialBase + item * recordsPerChunk),
                scratch: scratch.slot(worker))
            rowsEntry(&task)
        }
        Runtime.parallelFor(count: rowSets, threads: min(threads, rowSets)) { set, _ in
            let r = rowSet(set)
            var task = SoftmaxCombineTask(
                valueDim: mDim, rowStart: r.rowStart, rowCount: r.rows, headCount: r.heads, chunkCount: chunks,
                partial: UnsafeMutableRawPointer(partialBase + set * chunks * recordsPerChunk),
                chunkStride: recordsPerChunk, output: output.matrix(r.b, r.h), outputHeadStep: output.strides[1],
                logSumExp: logSumExp.map { UnsafeMutableRawPointer($0.base + r.b * $0.strides[0] + r.h * $0.strides[1]) },
                logSumExpStride: logSumExp?.strides[2] ?? 0, logSumExpHeadStep: logSumExp?.strides[1] ?? 0)
            combineEntry(&task)
        }
    }
}

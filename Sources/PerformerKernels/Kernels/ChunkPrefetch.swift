import PerformerKernelInterface

// Software prefetch of the rows a chunked kernel streams next. It packs a chunk's rows (loads
// that miss: the rows come from memory, and the hardware prefetcher restarts at every 4 KiB
// page) and then computes on the packed copy from L1/L2; fetching the next chunk's rows a line
// at a time from inside the compute's micro-kernel tiles (LinePrefetch.swift) overlaps the two.

/// Input bytes of a head (its longest side's rows of the matrices a kernel streams) from which
/// the linear kernels prefetch: N = 1024 at D = M = 64 (768 KiB) measured 3.6-6.8% faster
/// with the prefetch, N = 256 (192 KiB) 1-1.6% slower.
let linearPrefetchMinimumBytes = 512 << 10

/// The rows a chunked kernel prefetches while it works on the chunk ending at row `end`: the
/// next chunk's (at most `chunkRows`, none from `limit` on), or none when it does not prefetch.
@inline(__always)
func rowsAfterChunk(ending end: Int, chunkRows: Int, limit: Int, prefetching: Bool) -> Range<Int> {
    prefetching ? end ..< Swift.min(limit, end + chunkRows) : end ..< end
}

/// Micro-kernel tiles of a rows × columns product (`chunkProductPrefetching`'s tiles): how a
/// kernel that spreads one prefetch over two products tells the first how many tiles follow.
@inline(__always)
func productTiles<T: KernelScalar>(rows: Int, columns: Int, _: T.Type) -> Int {
    let tile = microKernelColumns(T.self)
    return (rows + microKernelRows - 1) / microKernelRows * ((columns + tile - 1) / tile)
}

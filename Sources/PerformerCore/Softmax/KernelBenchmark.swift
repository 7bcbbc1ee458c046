import PerformerKernelInterface

/// Entry points for benchmarks: the selected kernels' micro-kernel as a plain product, so a
/// benchmark can measure the machine's reachable peak in the same process as attention.
public enum KernelBenchmark {
    /// C (rows × columns) = A · B in float32, with A read through `aStrides` (row, depth),
    /// B `depth` rows `bRowStride` apart, C rows `cRowStride` apart; `columns` a multiple of 32.
    /// Unchecked: the caller guarantees the memory.
    public static func product(
        rows: Int, columns: Int, depth: Int,
        a: UnsafePointer<Float>, aStrides: (row: Int, depth: Int),
        b: UnsafePointer<Float>, bRowStride: Int, c: UnsafeMutablePointer<Float>, cRowStride: Int
    ) {
        precondition(columns % 32 == 0 && rows >= 0 && depth >= 0)
        var task = MatrixProductTask(
            rows: rows, columns: columns, depth: depth,
            a: StridedMatrix(base: UnsafeMutableRawPointer(mutating: a), rowStride: aStrides.row, columnStride: aStrides.depth),
            b: UnsafeRawPointer(b), bRowStride: bRowStride, c: UnsafeMutableRawPointer(c), cRowStride: cRowStride)
        Runtime.kernels.softmax.productFloat(&task)
    }

    /// Runs `body(item, worker)` for items `0..<count` on the library's thread pool.
    public static func parallelFor(count: Int, _ body: (Int, Int) -> Void) {
        Runtime.parallelFor(count: count, threads: Runtime.numThreads, body)
    }
}

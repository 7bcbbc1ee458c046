import PerformerKernelInterface

/// `MatrixProductTask` (float32) through `blockProduct`: the micro-kernel as a plain product.
func matrixProductFloat(_ task: UnsafePointer<MatrixProductTask>) {
    let t = task.pointee
    blockProduct(
        rows: t.rows, columns: t.columns, depth: t.depth,
        a: UnsafePointer(t.a.base.assumingMemoryBound(to: Float.self)),
        aRowStride: t.a.rowStride, aDepthStride: t.a.columnStride,
        b: t.b.assumingMemoryBound(to: Float.self), bRowStride: t.bRowStride,
        c: t.c.assumingMemoryBound(to: Float.self), cRowStride: t.cRowStride, accumulate: false)
}

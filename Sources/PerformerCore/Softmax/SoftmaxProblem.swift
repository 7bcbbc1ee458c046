import PerformerKernelInterface

/// A validated softmax-attention problem: sizes, masking inputs and the scale, derived once
/// from the tensors and options of a forward or backward call.
struct SoftmaxProblem {
    var batch: Int, heads: Int, keyHeads: Int
    var shape: SoftmaxHeadShape
    var scale: Double
    var causal: Bool
    var keyLengths: [Int]?
    var keyStarts: [Int]?

    /// Checks q (B×H×N×D), k (B×Hk×L×D), v (B×Hk×L×M) and the options.
    init<T>(query q: TensorView<T>, key k: TensorView<T>, value v: TensorView<T>, options: SoftmaxAttentionOptions)
        throws(PerformerError) {
        let dims = try AttentionDimensions(query: q, key: k, value: v)
        if let scale = options.scale, !scale.isFinite {
            throw PerformerError(.invalidArgument, "scale = \(scale) is not finite")
        }
        try dims.checkKeyRanges(lengths: options.keyLengths, starts: options.keyStarts)
        (batch, heads, keyHeads) = (dims.batch, dims.heads, dims.keyHeads)
        shape = SoftmaxHeadShape(queryCount: dims.queryCount, keyCount: dims.keyCount, headDim: dims.headDim,
                                 valueDim: dims.valueDim)
        scale = options.scale ?? 1 / Double(dims.headDim).squareRoot()
        causal = options.causal
        keyLengths = options.keyLengths
        keyStarts = options.keyStarts
    }

    var outputShape: SIMD4<Int> { SIMD4(batch, heads, shape.queryCount, shape.valueDim) }
    /// Operations of the forward without masks, 2·B·H·N·L·(D + M): the thread-count estimate.
    var work: Int {
        Runtime.work(2, batch, heads, shape.queryCount, shape.keyCount, shape.headDim + shape.valueDim)
    }
    var logSumExpShape: SIMD4<Int> { SIMD4(batch, heads, shape.queryCount, 1) }
    /// q's, k's and v's shapes, for out-of-memory messages.
    var argumentSizes: String {
        TensorLayout.describe([
            "q": SIMD4(batch, heads, shape.queryCount, shape.headDim),
            "k": SIMD4(batch, keyHeads, shape.keyCount, shape.headDim),
            "v": SIMD4(batch, keyHeads, shape.keyCount, shape.valueDim),
        ])
    }

    /// Batch row b's keys as the kernels see them (see `SoftmaxKeyWindow`).
    func keyWindow(batch b: Int) -> SoftmaxKeyWindow {
        let l = shape.keyCount
        let start = keyStarts?[b] ?? 0, limit = keyLengths?[b] ?? l
        // At least one key row stays in the window (when L ≥ 1): the kernels never see an empty
        // key axis; with start = L that row is masked by keyLimit 0.
        let offset = min(start, max(l - 1, 0))
        var windowShape = shape
        windowShape.keyCount = l - offset
        let masking = SoftmaxMasking(causal: causal, causalOffset: l - shape.queryCount - offset,
                                     keyLimit: start < limit ? limit - offset : 0)
        return SoftmaxKeyWindow(offset: offset, shape: windowShape, masking: masking)
    }
}

/// The keys of one batch row as the kernels see them. Left padding (keys before kv_starts[b]) is
/// cut off rather than masked: K, V, dK and dV start `offset` rows later, the key count and the
/// causal offset shrink by `offset`, so padded keys cost no work and unpadded rows run exactly
/// as without starts (offset 0). The caller zeroes dK, dV rows 0 ..< offset.
struct SoftmaxKeyWindow {
    var offset: Int
    var shape: SoftmaxHeadShape
    var masking: SoftmaxMasking
}

extension TensorView {
    /// Head (b, h) as a matrix over the last two axes.
    func matrix(_ b: Int, _ h: Int, firstRow: Int = 0) -> StridedMatrix {
        StridedMatrix(base: UnsafeMutableRawPointer(mutating: base + b * strides[0] + h * strides[1] + firstRow * strides[2]),
                      rowStride: strides[2], columnStride: strides[3])
    }
}

extension StridedMatrix {
    /// The same matrix from row `row` on (elements of T).
    func firstRow<T>(_ row: Int, _: T.Type) -> StridedMatrix {
        StridedMatrix(base: base + row * rowStride * MemoryLayout<T>.stride, rowStride: rowStride, columnStride: columnStride)
    }
}

extension MutableTensorView {
    func matrix(_ b: Int, _ h: Int, firstRow: Int = 0) -> StridedMatrix { readOnly.matrix(b, h, firstRow: firstRow) }
}

extension MutableTensorView where Element: AttentionScalar {
    /// Zeroes rows `rows` of head (b, h).
    func zeroRows(_ b: Int, _ h: Int, _ rows: Range<Int>) {
        let head = base + b * strides[0] + h * strides[1]
        for i in rows { for c in 0..<shape[3] { head[i * strides[2] + c * strides[3]] = 0 } }
    }
}

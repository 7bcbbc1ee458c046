import PerformerKernelInterface

/// A validated softmax-attention problem: sizes, masking inputs and the scale, derived once
/// from the tensors and options of a forward or backward call.
struct SoftmaxProblem {
    var batch: Int, heads: Int, keyHeads: Int
    var shape: SoftmaxHeadShape
    var scale: Double
    var causal: Bool
    var keyLengths: [Int]?

    /// Checks q (B×H×N×D), k (B×Hk×L×D), v (B×Hk×L×M) and the options.
    init<T>(query q: TensorView<T>, key k: TensorView<T>, value v: TensorView<T>, options: SoftmaxAttentionOptions)
        throws(PerformerError) {
        let dims = try AttentionDimensions(query: q, key: k, value: v)
        if let scale = options.scale, !scale.isFinite {
            throw PerformerError(.invalidArgument, "scale = \(scale) is not finite")
        }
        try dims.checkKeyLengths(options.keyLengths)
        (batch, heads, keyHeads) = (dims.batch, dims.heads, dims.keyHeads)
        shape = SoftmaxHeadShape(queryCount: dims.queryCount, keyCount: dims.keyCount, headDim: dims.headDim,
                                 valueDim: dims.valueDim)
        scale = options.scale ?? 1 / Double(dims.headDim).squareRoot()
        causal = options.causal
        keyLengths = options.keyLengths
    }

    var outputShape: SIMD4<Int> { SIMD4(batch, heads, shape.queryCount, shape.valueDim) }
    /// Operations of the forward without masks, 2·B·H·N·L·(D + M): the thread-count estimate.
    var work: Int {
        Runtime.work(2, batch, heads, shape.queryCount, shape.keyCount, shape.headDim + shape.valueDim)
    }
    var logSumExpShape: SIMD4<Int> { SIMD4(batch, heads, shape.queryCount, 1) }

    func masking(batch b: Int) -> SoftmaxMasking {
        SoftmaxMasking(causal: causal, causalOffset: shape.keyCount - shape.queryCount,
                       keyLimit: keyLengths?[b] ?? shape.keyCount)
    }
}

extension TensorView {
    /// Head (b, h) as a matrix over the last two axes.
    func matrix(_ b: Int, _ h: Int) -> StridedMatrix {
        StridedMatrix(base: UnsafeMutableRawPointer(mutating: base + b * strides[0] + h * strides[1]),
                      rowStride: strides[2], columnStride: strides[3])
    }
}

extension MutableTensorView {
    func matrix(_ b: Int, _ h: Int) -> StridedMatrix { readOnly.matrix(b, h) }
}

import PerformerKernelInterface

/// A validated linear-attention problem: sizes and options, derived once from the tensors of a
/// forward or backward call, plus the checks of the state arguments.
struct LinearProblem {
    var batch: Int, heads: Int, keyHeads: Int
    var shape: LinearHeadShape
    var options: LinearAttentionOptions

    /// Checks q (B×H×N×D), k (B×Hk×L×D), v (B×Hk×L×M) and the options.
    init<T>(query q: TensorView<T>, key k: TensorView<T>, value v: TensorView<T>, options: LinearAttentionOptions)
        throws(PerformerError) {
        let dims = try AttentionDimensions(query: q, key: k, value: v)
        let (n, l, d) = (dims.queryCount, dims.keyCount, dims.headDim)
        if options.causal {
            try ShapeCheck.expect(n == l, "q.shape[2] = \(n) but k.shape[2] = \(l): causal linear attention needs as many queries as keys")
        }
        guard options.epsilon.isFinite, options.epsilon >= 0 else {
            throw PerformerError(.invalidArgument, "eps = \(options.epsilon) must be finite and >= 0")
        }
        try dims.checkKeyRanges(lengths: options.keyLengths, starts: options.keyStarts)
        (batch, heads, keyHeads) = (dims.batch, dims.heads, dims.keyHeads)
        shape = LinearHeadShape(queryCount: n, keyCount: l, headDim: d, valueDim: dims.valueDim, featureDim: d)
        self.options = options
    }

    var group: Int { heads / keyHeads }
    var outputShape: SIMD4<Int> { SIMD4(batch, heads, shape.queryCount, shape.valueDim) }
    var stateShape: SIMD4<Int> { SIMD4(batch, heads, shape.featureDim, shape.valueDim) }
    var normalizerShape: SIMD4<Int> { SIMD4(batch, heads, shape.featureDim, 1) }
    var kernelFeatureMap: LinearFeatureKind { LinearFeatureKind(rawValue: options.featureMap.rawValue)! }

    /// Checks a state argument's two shapes (S: B×H×C×M, z: B×H×C×1) and that the call is causal.
    func checkState<T>(_ s: TensorView<T>, _ z: TensorView<T>, names: (String, String)) throws(PerformerError) {
        guard options.causal else {
            throw PerformerError(.invalidArgument, "\(names.0)/\(names.1) given but causal = false: only causal linear attention has a state")
        }
        try ShapeCheck.expectShape(s, stateShape, name: names.0, meaning: "B×H×C×M")
        try ShapeCheck.expectShape(z, normalizerShape, name: names.1, meaning: "B×H×C×1")
    }

    /// The kernel task of query head (b, h): its key head, its key range, its matrices.
    func task<T>(b: Int, h: Int, query: TensorView<T>, key: TensorView<T>, value: TensorView<T>,
                 scratch: UnsafeMutableRawPointer) -> LinearAttentionTask {
        let hk = h / group
        var task = LinearAttentionTask(
            shape: shape, causal: options.causal, featureMap: kernelFeatureMap, epsilon: options.epsilon,
            keyLimit: options.keyLengths?[b] ?? shape.keyCount,
            query: query.matrix(b, h), key: key.matrix(b, hk), value: value.matrix(b, hk), scratch: scratch)
        task.keyStart = options.keyStarts?[b] ?? 0
        return task
    }
}

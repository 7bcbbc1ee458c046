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

    /// Operations of the forward, about 4·B·H·(N + L)·C·M: the thread-count estimate.
    var work: Int {
        Runtime.work(4, batch, heads, shape.queryCount + shape.keyCount, shape.featureDim, max(shape.valueDim, 1))
    }

    /// The problem of a state-only call (no queries): k (B×Hk×L×D), v (B×Hk×L×M) and
    /// `stateHeads` = Hs state heads, a multiple of Hk (named after `stateName`'s shape[1]).
    /// It runs as a non-causal problem with N = 0, so `heads` is Hs.
    init<T>(key k: TensorView<T>, value v: TensorView<T>, stateHeads: Int, stateName: String,
            options: LinearAttentionOptions) throws(PerformerError) {
        for (name, view) in [("k", k), ("v", v)] {
            _ = try TensorLayout.elementCount(view.shape, name: name)
        }
        let (b, hk, l, d) = (k.shape[0], k.shape[1], k.shape[2], k.shape[3])
        try ShapeCheck.expectLeadingAxes(v.shape, name: "v", equal: k.shape, name: "k", meanings: ["batch", "key heads", "keys"])
        try ShapeCheck.expect(hk >= 1, "k.shape[1] = \(hk): need at least one key head")
        try ShapeCheck.expect(d >= 1, "k.shape[3] = \(d): head dim must be at least 1")
        try ShapeCheck.expect(stateHeads >= 1 && stateHeads % hk == 0,
                              "\(stateName).shape[1] = \(stateHeads) state heads is not a positive multiple of k.shape[1] = \(hk) key heads")
        try AttentionDimensions.checkKeyRanges(lengths: options.keyLengths, starts: options.keyStarts, batch: b, keyCount: l)
        (batch, heads, keyHeads) = (b, stateHeads, hk)
        shape = LinearHeadShape(queryCount: 0, keyCount: l, headDim: d, valueDim: v.shape[3], featureDim: d)
        self.options = options
        self.options.causal = false
        self.options.normalize = true
    }

    var group: Int { heads / keyHeads }
    /// k's and v's shapes (what sizes the scratch: D, M and the chunk rows), for out-of-memory
    /// messages; a state-only call has no q.
    var argumentSizes: String {
        TensorLayout.describe([
            "k": SIMD4(batch, keyHeads, shape.keyCount, shape.headDim),
            "v": SIMD4(batch, keyHeads, shape.keyCount, shape.valueDim),
        ])
    }
    var outputShape: SIMD4<Int> { SIMD4(batch, heads, shape.queryCount, shape.valueDim) }
    var stateShape: SIMD4<Int> { SIMD4(batch, heads, shape.featureDim, shape.valueDim) }
    var normalizerShape: SIMD4<Int> { SIMD4(batch, heads, shape.featureDim, 1) }
    var kernelFeatureMap: LinearFeatureKind { LinearFeatureKind(rawValue: options.featureMap.rawValue)! }

    /// Checks a state argument's two shapes (S: B×H×C×M, z: B×H×C×1).
    func checkState<T>(_ s: TensorView<T>, _ z: TensorView<T>, names: (String, String)) throws(PerformerError) {
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
        task.normalize = options.normalize
        task.keyStart = options.keyStarts?[b] ?? 0
        return task
    }
}

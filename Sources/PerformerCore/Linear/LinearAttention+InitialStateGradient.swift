import PerformerKernelInterface

/// The gradient of a loss with respect to a forward's initial state, from the query side alone
/// (distributed linear attention: a rank's loss reaches the earlier ranks' keys only through its
/// initial state). With d_i = den_i + ε and g_i = dO_i / d_i,
///   ∂L/∂S_0 = Σ_i φ(q_i) g_iᵀ,   ∂L/∂z_0 = −Σ_i φ(q_i) (g_i · o_i),
/// which is what `backward` returns as the initial state's gradient when the final state's
/// gradient is zero, without reading the keys: one pass over q, out, dout and the denominators.
/// Causal or not the sum is the same (every query sees S_0), so `options.causal`, `keyLengths`
/// and `keyStarts` do not apply; the feature map, `epsilon` and `normalize` do.
extension LinearAttention {
    /// q B×H×N×D, output and outputGradient B×H×N×M (the forward's out and dL/dout),
    /// denominators B×H×N×1 as `forward` returns them (φ(q_i)ᵀz_i without ε; required when
    /// `options.normalize`, unread otherwise, where ∂L/∂z_0 = 0); writes initialStateGradient
    /// (B×H×C×M, B×H×C×1). A row with d_i = 0 contributes nothing (its output was zeros), as in
    /// `backward`. Nothing is written when a check fails.
    public static func initialStateGradient<T: AttentionScalar>(
        query: TensorView<T>, output: TensorView<T>, outputGradient: TensorView<T>, denominators: TensorView<T>?,
        initialStateGradient: MutableLinearStateView<T>, options: LinearAttentionOptions = LinearAttentionOptions()
    ) throws(PerformerError) {
        let problem = try checkInitialStateGradient(query: query, output: output, outputGradient: outputGradient,
                                                    denominators: denominators,
                                                    initialStateGradient: initialStateGradient, options: options)
        let kernels = Runtime.kernels.linear
        guard let tasks = try HeadTasks(
            batch: problem.batch, heads: problem.heads, keyHeads: problem.heads, split: .queryHeads,
            scratchBytes: kernels.scratchBytes(problem.shape, MemoryLayout<T>.stride, false, false),
            work: Runtime.work(2, problem.batch, problem.heads, problem.shape.queryCount, problem.shape.featureDim,
                               max(problem.shape.valueDim, 1)),
            for: TensorLayout.describe(["q": query.shape, "dout": outputGradient.shape]))
        else { return }
        let entry = T.dtype == .float32 ? kernels.queryStateGradientFloat : kernels.queryStateGradientDouble
        tasks.run { head in
            let (b, h) = (head.b, head.h)
            // No keys: key and value are never read (q stands in for them).
            var task = problem.task(b: b, h: h, query: query, key: query, value: query, scratch: head.scratch)
            task.output = output.matrix(b, h)
            task.outputGradient = outputGradient.matrix(b, h)
            task.denominators = problem.options.normalize ? denominators?.matrix(b, h) : nil
            task.initialStateGradient = initialStateGradient.s.matrix(b, h)
            task.initialNormalizerGradient = initialStateGradient.z.matrix(b, h)
            entry(&task)
        }
    }

    /// The problem of `initialStateGradient`, every argument checked; generic over the token type
    /// T and the state type S (float32 for half tokens), so the half entry checks alike.
    @discardableResult
    static func checkInitialStateGradient<T, S: AttentionScalar>(
        query: TensorView<T>, output: TensorView<T>, outputGradient: TensorView<T>, denominators: TensorView<S>?,
        initialStateGradient: MutableLinearStateView<S>, options: LinearAttentionOptions
    ) throws(PerformerError) -> LinearProblem {
        let problem = try LinearProblem(query: query, output: output, options: options)
        try ShapeCheck.expectShape(outputGradient, output.shape, name: "dout", meaning: "out.shape")
        try problem.checkState(initialStateGradient.s.readOnly, initialStateGradient.z.readOnly, names: ("dS0", "dz0"))
        var footprints = [
            try TensorFootprint(query, name: "q"), try TensorFootprint(output, name: "out"),
            try TensorFootprint(outputGradient, name: "dout"),
            try TensorFootprint(initialStateGradient.s, name: "dS0"), try TensorFootprint(initialStateGradient.z, name: "dz0"),
        ]
        if let denominators {
            try ShapeCheck.expectShape(denominators, SIMD4(problem.batch, problem.heads, problem.shape.queryCount, 1),
                                       name: "denominators", meaning: "B×H×N×1")
            footprints.append(try TensorFootprint(denominators, name: "denominators"))
        } else if options.normalize {
            throw PerformerError(.nullPointer,
                                 "denominators is required when normalize is on (the forward's, B×H×N×1)")
        }
        try TensorFootprint.checkOutputsDisjoint(footprints)
        return problem
    }
}

extension LinearProblem {
    /// The problem of `initialStateGradient`: q (B×H×N×D) and out (B×H×N×M), no keys; it runs
    /// as a non-causal problem with L = 0 and one state per query head.
    init<T>(query q: TensorView<T>, output: TensorView<T>, options: LinearAttentionOptions) throws(PerformerError) {
        for (name, view) in [("q", q), ("out", output)] {
            _ = try TensorLayout.elementCount(view.shape, name: name)
        }
        let (b, h, n, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        try ShapeCheck.expectLeadingAxes(output.shape, name: "out", equal: q.shape, name: "q", meanings: ["batch", "heads", "queries"])
        try ShapeCheck.expect(d >= 1, "q.shape[3] = \(d): head dim must be at least 1")
        guard options.epsilon.isFinite, options.epsilon >= 0 else {
            throw PerformerError(.invalidArgument, "eps = \(options.epsilon) must be finite and >= 0")
        }
        (batch, heads, keyHeads) = (b, h, h)
        shape = LinearHeadShape(queryCount: n, keyCount: 0, headDim: d, valueDim: output.shape[3], featureDim: d)
        self.options = options
        self.options.causal = false
        self.options.keyLengths = nil
        self.options.keyStarts = nil
    }
}

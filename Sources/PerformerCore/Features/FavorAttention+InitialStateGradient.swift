import PerformerKernelInterface

/// The gradient of a loss with respect to a FAVOR+ forward's initial triple, from the query
/// side alone (distributed FAVOR+: a rank's loss reaches the earlier ranks' keys only through
/// its initial state; docs/DISTRIBUTED.md). With the forward's row units U_i and scaled
/// denominators den_i (`forward(…, rowScales:)`) and the initial shifts c₀ held fixed, row i
/// read (S̃₀, z̃₀) through Q̃_if = ν·e^{a_f(q_i) + c₀_f − U_i} (positive, hyperbolic) or
/// ν·e^{ρ_i + c₀ − U_i}·Q̂_if (trigonometric, relu), i.e. φ_f(q_i)·e^{c₀_f − U_i}, so with
/// g_i = dO_i / den_i
///   ∂L/∂S̃₀ = Σ_i Q̃_i g_iᵀ,   ∂L/∂z̃₀ = −Σ_i Q̃_i (g_i · o_i):
/// the initial-state gradient `backward` returns when the final state's gradient is zero,
/// without the keys and in one pass over the queries (no N×C features stored).
extension FavorAttention {
    /// q B×H×N×D, c₀ (`initialShift`) B×H×C×1, the forward's row units and denominators
    /// B×H×N×1, output and outputGradient B×H×N×M; writes initialStateGradient (B×H×C×M,
    /// B×H×C×1). `options`: features, scale and relu offset apply (as in the forward); causal,
    /// ε (already inside den_i), key lengths and starts do not. A row with den_i = 0 or
    /// U_i = −inf (it output zeros) adds nothing. U_i must bound the row's exponents, as the
    /// forward's does (U_i ≥ a_f(q_i) + c₀_f, or ρ_i + c₀); a larger exponent counts as U_i.
    /// Nothing is written when a check fails.
    public static func initialStateGradient<T: AttentionScalar>(
        query: TensorView<T>, projection: FavorProjection, initialShift: TensorView<T>,
        rowUnits: TensorView<T>, rowDenominators: TensorView<T>,
        output: TensorView<T>, outputGradient: TensorView<T>,
        initialStateGradient: MutableLinearStateView<T>, options: FavorAttentionOptions = FavorAttentionOptions()
    ) throws(PerformerError) {
        let problem = try checkInitialStateGradient(
            query: query, projection: projection, initialShift: initialShift, rowUnits: rowUnits,
            rowDenominators: rowDenominators, output: output, outputGradient: outputGradient,
            initialStateGradient: initialStateGradient, options: options)
        let kernels = Runtime.kernels.favorAttention
        guard let tasks = try HeadTasks(
            batch: problem.batch, heads: problem.heads, keyHeads: problem.heads, split: .queryHeads,
            scratchBytes: kernels.scratchBytes(problem.shape, MemoryLayout<T>.stride, false, false),
            work: problem.work,
            for: TensorLayout.describe(["q": query.shape, "dout": outputGradient.shape])
                + ", projection \(problem.shape.numFeatures) × \(problem.shape.dim)")
        else { return }
        let entry = T.dtype == .float32 ? kernels.queryStateGradientFloat : kernels.queryStateGradientDouble
        let w = projection.matrix(as: T.self)
        w.withUnsafeBytes { wBytes in
            tasks.run { head in
                let (b, h) = (head.b, head.h)
                // No keys: key and value are never read (q stands in for them).
                var task = problem.task(b: b, h: h, query: query, key: query, value: query,
                                        projection: wBytes.baseAddress!, scratch: head.scratch)
                task.output = output.matrix(b, h)
                task.outputGradient = outputGradient.matrix(b, h)
                task.initialC = initialShift.matrix(b, h)
                task.rowUnits = rowUnits.matrix(b, h)
                task.rowDenominators = rowDenominators.matrix(b, h)
                task.initialSGradient = initialStateGradient.s.matrix(b, h)
                task.initialZGradient = initialStateGradient.z.matrix(b, h)
                entry(&task)
            }
        }
    }

    /// The problem of `initialStateGradient`, every argument checked.
    @discardableResult
    static func checkInitialStateGradient<T: AttentionScalar>(
        query: TensorView<T>, projection: FavorProjection, initialShift: TensorView<T>,
        rowUnits: TensorView<T>, rowDenominators: TensorView<T>,
        output: TensorView<T>, outputGradient: TensorView<T>,
        initialStateGradient: MutableLinearStateView<T>, options: FavorAttentionOptions
    ) throws(PerformerError) -> FavorProblem {
        let problem = try FavorProblem(query: query, output: output, projection: projection, options: options)
        try ShapeCheck.expectShape(outputGradient, output.shape, name: "dout", meaning: "out.shape")
        let rows = SIMD4(problem.batch, problem.heads, problem.shape.queryCount, 1)
        try ShapeCheck.expectShape(rowUnits, rows, name: "row_units", meaning: "B×H×N×1")
        try ShapeCheck.expectShape(rowDenominators, rows, name: "row_denominators", meaning: "B×H×N×1")
        try ShapeCheck.expectShape(initialShift, problem.vectorShape, name: "c0", meaning: "B×H×C×1")
        try problem.checkGradientShapes(initialStateGradient.s.readOnly, initialStateGradient.z.readOnly,
                                        names: ("dS0", "dz0"))
        try TensorFootprint.checkOutputsDisjoint([
            try TensorFootprint(query, name: "q"), try TensorFootprint(output, name: "out"),
            try TensorFootprint(outputGradient, name: "dout"), try TensorFootprint(initialShift, name: "c0"),
            try TensorFootprint(rowUnits, name: "row_units"), try TensorFootprint(rowDenominators, name: "row_denominators"),
            try TensorFootprint(initialStateGradient.s, name: "dS0"), try TensorFootprint(initialStateGradient.z, name: "dz0"),
        ])
        // Values last: every footprint above is representable, so reading cannot stray.
        try problem.checkShiftValues(initialShift, name: "c0")
        try checkRowScales(units: rowUnits, denominators: rowDenominators)
        return problem
    }

    /// The forward's row scales: U_i finite or −inf, den_i finite (0 for a row without output).
    private static func checkRowScales<T: AttentionScalar>(units: TensorView<T>, denominators: TensorView<T>)
        throws(PerformerError) {
        for b in 0..<units.shape[0] { for h in 0..<units.shape[1] { for i in 0..<units.shape[2] {
            let u = units.base[b * units.strides[0] + h * units.strides[1] + i * units.strides[2]]
            if u.isNaN || u == .infinity {
                throw PerformerError(.invalidArgument, "row_units[\(b), \(h), \(i)] = \(u): must be finite or -inf")
            }
        } } }
        try FavorProblem.checkFinite(denominators, name: "row_denominators")
    }
}

extension FavorProblem {
    /// The problem of `initialStateGradient`: q (B×H×N×D) and out (B×H×N×M), no keys; it runs as
    /// a bidirectional problem with L = 0 and one state per query head.
    init<T>(query q: TensorView<T>, output: TensorView<T>, projection: FavorProjection,
            options: FavorAttentionOptions) throws(PerformerError) {
        let linear = try LinearProblem(query: q, output: output, options: LinearAttentionOptions(featureMap: .identity))
        guard q.shape[3] == projection.dim else {
            throw PerformerError(.shapeMismatch, "q.shape[3] = \(q.shape[3]) but projection.dim = \(projection.dim)")
        }
        inputScale = try options.features.inputScale(dim: projection.dim)
        let m = projection.numFeatures
        let c = options.features.kind.featureCount(numFeatures: m)
        _ = try TensorLayout.elementCount(SIMD4(linear.batch, linear.heads, c, max(linear.shape.valueDim, 1)), name: "dS0")
        batch = linear.batch
        heads = linear.heads
        keyHeads = linear.heads
        shape = FavorHeadShape(queryCount: linear.shape.queryCount, keyCount: 0, dim: projection.dim, numFeatures: m,
                               valueDim: linear.shape.valueDim, featureCount: c)
        self.options = options
        self.options.causal = false
        self.options.epsilon = 0
        self.options.keyLengths = nil
        self.options.keyStarts = nil
    }
}

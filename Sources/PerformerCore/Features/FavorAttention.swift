import PerformerKernelInterface

/// FAVOR+ (Performer) attention: linear attention with the random features of a
/// `FavorProjection` (ALGORITHMS.md §3), evaluated in the stabilized form of docs/FAVOR.md §4
/// so that the output equals the mathematical function, to rounding, even where the features
/// themselves under- or overflow (inputs with norms up to 30 and beyond).
///
/// Shapes: q B×H×N×D, k B×Hk×L×D, v B×Hk×L×M, out B×H×N×M; D = projection.dim; Hk divides H
/// and query head h reads key head h / (H/Hk). Causal needs N = L. C = m (positive, relu) or
/// 2m (hyperbolic, trigonometric). The state (causal: carried; bidirectional: a memory) is
/// the scaled triple of `FavorStateView` per query head. Views may have any strides. Every argument is checked
/// before any output is written; on error nothing is written.
public enum FavorAttention {
    /// C for this projection and options.
    public static func featureCount(_ projection: FavorProjection, options: FavorAttentionOptions = FavorAttentionOptions()) -> Int {
        options.features.kind.featureCount(numFeatures: projection.numFeatures)
    }

    /// Writes o_i = Σ_j φ(q_i)ᵀφ(k_j) v_j / (Σ_j φ(q_i)ᵀφ(k_j) + ε) over the keys row i sees.
    ///
    /// `initialState` (nil: no keys before) stands for keys before this call's: causal, the
    /// state the sequence continues from, so a sequence processed in pieces gives the same
    /// outputs (to rounding) as one call and as `FavorDecoder` steps; bidirectional, a memory
    /// every query also sees (cross-attention against a state, e.g. from `state`; L may be 0),
    /// as linear attention's. Its shifts c and the call's key shifts are merged by the max
    /// rule of docs/FAVOR.md §4, so the output is that of one call over the memory's keys and
    /// this call's. `finalState` receives the state after the last key (bidirectional: the
    /// memory plus every visible key); it may be the initial state's memory.
    public static func forward<T: AttentionScalar>(
        query: TensorView<T>, key: TensorView<T>, value: TensorView<T>, projection: FavorProjection,
        output: MutableTensorView<T>, initialState: FavorStateView<T>? = nil,
        finalState: MutableFavorStateView<T>? = nil, options: FavorAttentionOptions = FavorAttentionOptions()
    ) throws(PerformerError) {
        try forward(query: query, key: key, value: value, projection: projection, output: output,
                    initialState: initialState, finalState: finalState, rowScales: nil, options: options)
    }

    /// As `forward`, and `rowScales` (nil: none; B×H×N×1 each) receives, per query row, the
    /// row unit U_i and the scaled denominator den_i (ε·e^{−U_i} included) that row's output was divided by: the
    /// mathematical denominator Σ_j φ(q_i)ᵀφ(k_j) + ε is e^{U_i}·den_i, and U_i ≥ a_f(q_i) + c_f
    /// for the state (S̃, z̃, c) the row read (docs/FAVOR.md §4). A row that outputs zeros (it
    /// sees no key, or its denominator is not usable) gets den_i = 0. With these, the gradient
    /// of the initial triple can be formed from the query side (docs/DISTRIBUTED.md). The
    /// output is the same, bit for bit, with or without them.
    public static func forward<T: AttentionScalar>(
        query: TensorView<T>, key: TensorView<T>, value: TensorView<T>, projection: FavorProjection,
        output: MutableTensorView<T>, initialState: FavorStateView<T>? = nil,
        finalState: MutableFavorStateView<T>? = nil, rowScales: FavorRowScalesView<T>?,
        options: FavorAttentionOptions = FavorAttentionOptions()
    ) throws(PerformerError) {
        let problem = try checkForward(query: query, key: key, value: value, projection: projection, output: output,
                                       initialState: initialState, finalState: finalState, rowScales: rowScales,
                                       options: options)

        try problem.run(.forward, query: query, key: key, value: value, projection: projection) { task, head in
            task.output = output.matrix(head.b, head.h)
            task.setInitialState(initialState, head.b, head.h)
            task.setFinalState(finalState, head.b, head.h)
            task.rowUnits = rowScales?.units.matrix(head.b, head.h)
            task.rowDenominators = rowScales?.denominators.matrix(head.b, head.h)
        }
    }

    /// Writes the gradients of the loss with respect to q, k and v given `outputGradient`
    /// = ∂L/∂out, through φ and the denominator (W gets none; the stabilizer shifts c carry
    /// none). Recomputes the forward; stores no state per position.
    ///
    /// Causal or not: `initialState` is the forward's (nil: none); `finalStateGradient` is
    /// (∂L/∂S̃_N, ∂L/∂z̃_N) when the loss also depends on the final state (nil: zeros), taken
    /// with c_N fixed; `initialStateGradient` receives (∂L/∂S̃₀, ∂L/∂z̃₀) with c₀ fixed (needs an
    /// initial state). With grouped-query attention, dk and dv sum over the query heads of a
    /// group.
    public static func backward<T: AttentionScalar>(
        query: TensorView<T>, key: TensorView<T>, value: TensorView<T>, projection: FavorProjection,
        outputGradient: TensorView<T>,
        queryGradient: MutableTensorView<T>, keyGradient: MutableTensorView<T>, valueGradient: MutableTensorView<T>,
        initialState: FavorStateView<T>? = nil, finalStateGradient: LinearStateView<T>? = nil,
        initialStateGradient: MutableLinearStateView<T>? = nil,
        options: FavorAttentionOptions = FavorAttentionOptions()
    ) throws(PerformerError) {
        let problem = try checkBackward(query: query, key: key, value: value, projection: projection,
                                        outputGradient: outputGradient, queryGradient: queryGradient,
                                        keyGradient: keyGradient, valueGradient: valueGradient, initialState: initialState,
                                        finalStateGradient: finalStateGradient,
                                        initialStateGradient: initialStateGradient, options: options)

        try problem.run(.backward, query: query, key: key, value: value, projection: projection) { task, head in
            let (b, h, hk) = (head.b, head.h, head.hk)
            task.outputGradient = outputGradient.matrix(b, h)
            task.queryGradient = queryGradient.matrix(b, h)
            task.keyGradient = keyGradient.matrix(b, hk)
            task.valueGradient = valueGradient.matrix(b, hk)
            task.accumulateKeyGradients = head.addsToKeyGradients
            task.setInitialState(initialState, b, h)
            task.finalSGradient = finalStateGradient?.s.matrix(b, h)
            task.finalZGradient = finalStateGradient?.z.matrix(b, h)
            task.initialSGradient = initialStateGradient?.s.matrix(b, h)
            task.initialZGradient = initialStateGradient?.z.matrix(b, h)
        }
    }

    /// The problem of `forward`, every argument checked: generic over the token type T and the
    /// state type S (a half-precision call keeps its states in float32), so the float32 and half
    /// entries check alike.
    @discardableResult
    static func checkForward<T, S: AttentionScalar>(
        query: TensorView<T>, key: TensorView<T>, value: TensorView<T>, projection: FavorProjection,
        output: MutableTensorView<T>, initialState: FavorStateView<S>?, finalState: MutableFavorStateView<S>?,
        rowScales: FavorRowScalesView<S>? = nil, options: FavorAttentionOptions
    ) throws(PerformerError) -> FavorProblem {
        let problem = try FavorProblem(query: query, key: key, value: value, projection: projection, options: options)
        var footprints = try AttentionArguments.forward(query: query, key: key, value: value, output: output,
                                                        outputShape: problem.outputShape)
        var scaleFootprints: [TensorFootprint] = []
        if let rowScales {
            let rows = SIMD4(problem.batch, problem.heads, problem.shape.queryCount, 1)
            try ShapeCheck.expectShape(rowScales.units.readOnly, rows, name: "row_units", meaning: "B×H×N×1")
            try ShapeCheck.expectShape(rowScales.denominators.readOnly, rows, name: "row_denominators", meaning: "B×H×N×1")
            scaleFootprints = [try TensorFootprint(rowScales.units, name: "row_units"),
                               try TensorFootprint(rowScales.denominators, name: "row_denominators")]
        }
        if let initialState {
            try problem.checkStateShapes(initialState, names: ("S0", "z0", "c0"))
            footprints += [try TensorFootprint(initialState.s, name: "S0"), try TensorFootprint(initialState.z, name: "z0"),
                           try TensorFootprint(initialState.c, name: "c0")]
        }
        if let finalState {
            try problem.checkStateShapes(finalState.readOnly, names: ("S_N", "z_N", "c_N"))
            let finals = [try TensorFootprint(finalState.s, name: "S_N"), try TensorFootprint(finalState.z, name: "z_N"),
                          try TensorFootprint(finalState.c, name: "c_N")]
            // A piece may write its final state over its initial state: each head reads its
            // own initial state before writing anything, so an exact overlay is safe; any other
            // overlap with the initial state is not.
            try TensorFootprint.checkOutputsDisjoint(Array(footprints.prefix(4)) + finals)
            try TensorFootprint.checkInPlace(finals, replacing: Array(footprints.dropFirst(4)))
            // The row scales overlap nothing, the final state included.
            if !scaleFootprints.isEmpty { try TensorFootprint.checkOutputsDisjoint(finals + scaleFootprints) }
        }
        try TensorFootprint.checkOutputsDisjoint(footprints + scaleFootprints)
        // Values last: every footprint above is representable, so reading cannot stray.
        if let initialState { try problem.checkStateValues(initialState, names: ("S0", "z0", "c0")) }
        return problem
    }

    /// The problem of `backward`, every argument checked (T, S as in `checkForward`).
    @discardableResult
    static func checkBackward<T, S: AttentionScalar>(
        query: TensorView<T>, key: TensorView<T>, value: TensorView<T>, projection: FavorProjection,
        outputGradient: TensorView<T>, queryGradient: MutableTensorView<T>, keyGradient: MutableTensorView<T>,
        valueGradient: MutableTensorView<T>, initialState: FavorStateView<S>?, finalStateGradient: LinearStateView<S>?,
        initialStateGradient: MutableLinearStateView<S>?, options: FavorAttentionOptions
    ) throws(PerformerError) -> FavorProblem {
        let problem = try FavorProblem(query: query, key: key, value: value, projection: projection, options: options)
        var footprints = try AttentionArguments.backward(
            query: query, key: key, value: value, outputGradient: outputGradient, queryGradient: queryGradient,
            keyGradient: keyGradient, valueGradient: valueGradient, outputShape: problem.outputShape)
        if let initialState {
            try problem.checkStateShapes(initialState, names: ("S0", "z0", "c0"))
            footprints += [try TensorFootprint(initialState.s, name: "S0"), try TensorFootprint(initialState.z, name: "z0"),
                           try TensorFootprint(initialState.c, name: "c0")]
        }
        if let finalStateGradient {
            try problem.checkGradientShapes(finalStateGradient.s, finalStateGradient.z, names: ("dS_N", "dz_N"))
            footprints += [try TensorFootprint(finalStateGradient.s, name: "dS_N"),
                           try TensorFootprint(finalStateGradient.z, name: "dz_N")]
        }
        if let initialStateGradient {
            try problem.checkGradientShapes(initialStateGradient.s.readOnly, initialStateGradient.z.readOnly,
                                            names: ("dS0", "dz0"))
            guard initialState != nil else {
                throw PerformerError(.invalidArgument, "dS0/dz0 requested but no initial state (S0, z0, c0) was given")
            }
            footprints += [try TensorFootprint(initialStateGradient.s, name: "dS0"),
                           try TensorFootprint(initialStateGradient.z, name: "dz0")]
        }
        try TensorFootprint.checkOutputsDisjoint(footprints)
        // Values last: every footprint above is representable, so reading cannot stray.
        if let initialState { try problem.checkStateValues(initialState, names: ("S0", "z0", "c0")) }
        if let finalStateGradient {
            try FavorProblem.checkFinite(finalStateGradient.s, name: "dS_N")
            try FavorProblem.checkFinite(finalStateGradient.z, name: "dz_N")
        }
        return problem
    }
}

/// A validated FAVOR+ attention problem.
struct FavorProblem {
    var batch: Int, heads: Int, keyHeads: Int
    var shape: FavorHeadShape
    var options: FavorAttentionOptions
    var inputScale: Double

    init<T>(query q: TensorView<T>, key k: TensorView<T>, value v: TensorView<T>, projection: FavorProjection,
            options: FavorAttentionOptions) throws(PerformerError) {
        // The shape checks of linear attention (batch, heads, D, L, M, causal N = L, ε, key lengths).
        let linear = try LinearProblem(
            query: q, key: k, value: v,
            options: LinearAttentionOptions(causal: options.causal, featureMap: .identity, epsilon: options.epsilon,
                                            keyLengths: options.keyLengths, keyStarts: options.keyStarts))
        guard q.shape[3] == projection.dim else {
            throw PerformerError(.shapeMismatch, "q.shape[3] = \(q.shape[3]) but projection.dim = \(projection.dim)")
        }
        inputScale = try options.features.inputScale(dim: projection.dim)
        let m = projection.numFeatures
        let c = options.features.kind.featureCount(numFeatures: m)
        _ = try TensorLayout.elementCount(SIMD4(linear.batch, linear.heads, c, max(linear.shape.valueDim, 1)), name: "state S")
        batch = linear.batch
        heads = linear.heads
        keyHeads = linear.keyHeads
        shape = FavorHeadShape(queryCount: linear.shape.queryCount, keyCount: linear.shape.keyCount,
                               dim: projection.dim, numFeatures: m, valueDim: linear.shape.valueDim, featureCount: c)
        self.options = options
    }

    var outputShape: SIMD4<Int> { SIMD4(batch, heads, shape.queryCount, shape.valueDim) }
    /// k's and v's shapes and the projection's (what sizes the scratch), for out-of-memory messages.
    var argumentSizes: String {
        TensorLayout.describe([
            "k": SIMD4(batch, keyHeads, shape.keyCount, shape.dim),
            "v": SIMD4(batch, keyHeads, shape.keyCount, shape.valueDim),
        ]) + ", projection \(shape.numFeatures) × \(shape.dim)"
    }
    /// Operations of the forward, about 2·B·H·(N + L)·(m·D + 2·C·M): the thread-count estimate.
    var work: Int {
        let perRow = Runtime.work(shape.numFeatures, shape.dim) &+ Runtime.work(2, shape.featureCount, max(shape.valueDim, 1))
        return Runtime.work(2, batch, heads, shape.queryCount + shape.keyCount, perRow < 0 ? .max : perRow)
    }
    var stateShape: SIMD4<Int> { SIMD4(batch, heads, shape.featureCount, shape.valueDim) }
    var vectorShape: SIMD4<Int> { SIMD4(batch, heads, shape.featureCount, 1) }

    func checkStateShapes<T>(_ state: FavorStateView<T>, names: (String, String, String)) throws(PerformerError) {
        try ShapeCheck.expectShape(state.s, stateShape, name: names.0, meaning: "B×H×C×M")
        try ShapeCheck.expectShape(state.z, vectorShape, name: names.1, meaning: "B×H×C×1")
        try ShapeCheck.expectShape(state.c, vectorShape, name: names.2, meaning: "B×H×C×1")
    }

    func checkGradientShapes<T>(_ s: TensorView<T>, _ z: TensorView<T>, names: (String, String)) throws(PerformerError) {
        try ShapeCheck.expectShape(s, stateShape, name: names.0, meaning: "B×H×C×M")
        try ShapeCheck.expectShape(z, vectorShape, name: names.1, meaning: "B×H×C×1")
    }

    /// Values of a caller's state (shapes and footprints already checked): S̃, z̃ finite; c
    /// finite or −inf, with zero S̃ rows and z̃ entries where it is −inf; relu needs c = 0,
    /// trigonometric one c per head.
    func checkStateValues<T>(_ state: FavorStateView<T>, names: (String, String, String)) throws(PerformerError) {
        try Self.checkFinite(state.s, name: names.0)
        try Self.checkFinite(state.z, name: names.1)
        for b in 0..<batch {
            for h in 0..<heads {
                let first = state.c.base[b * state.c.strides[0] + h * state.c.strides[1]]
                for f in 0..<shape.featureCount {
                    let value = state.c.base[b * state.c.strides[0] + h * state.c.strides[1] + f * state.c.strides[2]]
                    let at = "\(names.2)[\(b), \(h), \(f)]"
                    try checkShift(value, at: at, first: first, firstAt: "\(names.2)[\(b), \(h), 0]")
                    if value == -.infinity {
                        let zValue = state.z.base[b * state.z.strides[0] + h * state.z.strides[1] + f * state.z.strides[2]]
                        var rowZero = zValue == 0
                        for j in 0..<shape.valueDim where rowZero {
                            rowZero = state.s.base[b * state.s.strides[0] + h * state.s.strides[1] + f * state.s.strides[2]
                                                   + j * state.s.strides[3]] == 0
                        }
                        if !rowZero {
                            throw PerformerError(.invalidArgument, "\(at) = -inf but its \(names.0) row or \(names.1) entry is not 0")
                        }
                    }
                }
            }
        }
    }

    /// Shifts alone (c, B×H×C×1, shape and footprint already checked): each as `checkShift`.
    func checkShiftValues<T: AttentionScalar>(_ c: TensorView<T>, name: String) throws(PerformerError) {
        for b in 0..<batch {
            for h in 0..<heads {
                let first = c.base[b * c.strides[0] + h * c.strides[1]]
                for f in 0..<shape.featureCount {
                    let value = c.base[b * c.strides[0] + h * c.strides[1] + f * c.strides[2]]
                    try checkShift(value, at: "\(name)[\(b), \(h), \(f)]", first: first, firstAt: "\(name)[\(b), \(h), 0]")
                }
            }
        }
    }

    /// One shift c_f (named `at`) of a head whose first shift is `first`: finite or −inf; relu
    /// needs c = 0, trigonometric one c per head.
    private func checkShift<T: AttentionScalar>(_ value: T, at: String, first: T, firstAt: String) throws(PerformerError) {
        if value.isNaN || value == .infinity {
            throw PerformerError(.invalidArgument, "\(at) = \(value): must be finite or -inf")
        }
        if options.features.kind == .relu, value != 0 {
            throw PerformerError(.invalidArgument, "\(at) = \(value): relu features need c = 0")
        }
        if options.features.kind == .trigonometric, value != first {
            throw PerformerError(.invalidArgument, "\(at) = \(value): trigonometric features need one c per head (\(firstAt) = \(first))")
        }
    }

    static func checkFinite<T: AttentionScalar>(_ view: TensorView<T>, name: String) throws(PerformerError) {
        for i0 in 0..<view.shape[0] { for i1 in 0..<view.shape[1] { for i2 in 0..<view.shape[2] { for i3 in 0..<view.shape[3] {
            let value = view.base[i0 * view.strides[0] + i1 * view.strides[1] + i2 * view.strides[2] + i3 * view.strides[3]]
            if !value.isFinite {
                throw PerformerError(.invalidArgument, "\(name)[\(i0), \(i1), \(i2), \(i3)] = \(value) is not finite")
            }
        } } } }
    }

    /// The kernel task of query head (b, h).
    func task<T>(b: Int, h: Int, query: TensorView<T>, key: TensorView<T>, value: TensorView<T>,
                 projection: UnsafeRawPointer, scratch: UnsafeMutableRawPointer) -> FavorAttentionTask {
        let hk = h / (heads / keyHeads)
        var task = FavorAttentionTask(
            shape: shape, map: options.features.kind.kernelMap, causal: options.causal, inputScale: inputScale,
            reluOffset: options.features.reluOffset, epsilon: options.epsilon,
            keyLimit: options.keyLengths?[b] ?? shape.keyCount, projection: projection,
            query: query.matrix(b, h), key: key.matrix(b, hk), value: value.matrix(b, hk), scratch: scratch)
        task.keyStart = options.keyStarts?[b] ?? 0
        return task
    }
}

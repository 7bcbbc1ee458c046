import PerformerKernelInterface

/// State-only FAVOR+ calls: the scaled state (S̃, z̃, c) of a set of keys and values, without
/// queries, and its backward. They run the bidirectional kernels with no query rows, whose key
/// pass is the same max-shifted accumulation as the causal forward's (docs/FAVOR.md §4), so the
/// state equals a causal forward's final state over the same keys, to rounding, at any input norm.
/// With no query rows the backward kernel takes its state-only path (FavorStateBackward.swift:
/// a first key pass for the final shift c_out only, then the key gradients; no S̃ built).
///
/// Head layout: k B×Hk×L×D, v B×Hk×L×M; the state has Hs heads, read from the final state's
/// (forward) or its gradient's (backward) shape[1], a multiple of Hk: state head h takes the keys
/// of key head h / (Hs/Hk). Hs = Hk is one state per key head; Hs = H matches a forward's
/// per-query-head state, so the result can start a later causal forward or decoder.
/// `options.causal` and `epsilon` do not apply (there are no queries); features, scale, relu
/// offset and key lengths/starts do.
extension FavorAttention {
    /// (S̃, z̃, c) with S = diag(e^c)·S̃ = S₀ + Σ_j φ(k_j) v_jᵀ and z = e^c ∘ z̃ = z₀ + Σ_j φ(k_j) over
    /// the keys keyStarts[b] ≤ j < keyLengths[b]; S̃: B×Hs×C×M, z̃ and c: B×Hs×C×1. `finalState`
    /// may be the very memory of `initialState` (same base, shape and strides) to update a
    /// state in place; any other overlap is an aliasing error.
    public static func state<T: AttentionScalar>(
        key: TensorView<T>, value: TensorView<T>, projection: FavorProjection,
        initialState: FavorStateView<T>? = nil, finalState: MutableFavorStateView<T>,
        options: FavorAttentionOptions = FavorAttentionOptions()
    ) throws(PerformerError) {
        let problem = try checkState(key: key, value: value, projection: projection, initialState: initialState,
                                     finalState: finalState, options: options)

        // No query rows: the kernel never reads `query` (k stands in for it).
        try problem.run(.forward, query: key, key: key, value: value, projection: projection) { task, head in
            task.setInitialState(initialState, head.b, head.h)
            task.setFinalState(finalState, head.b, head.h)
        }
    }

    /// The backward of `state`, with c_out and c₀ held fixed (as `backward` treats state
    /// gradients): given (∂L/∂S̃_out, ∂L/∂z̃_out) (B×Hs×C×M, B×Hs×C×1), writes dk and dv (zero for
    /// keys outside their range; summed over the Hs/Hk state heads of a key head) and, when
    /// asked, (∂L/∂S̃₀, ∂L/∂z̃₀) = e^{c₀ − c_out}·(∂L/∂S̃_out, ∂L/∂z̃_out), which needs the initial
    /// state. The final shift c_out is recomputed from the keys and the initial state.
    public static func stateBackward<T: AttentionScalar>(
        key: TensorView<T>, value: TensorView<T>, projection: FavorProjection,
        finalStateGradient: LinearStateView<T>,
        keyGradient: MutableTensorView<T>, valueGradient: MutableTensorView<T>,
        initialState: FavorStateView<T>? = nil, initialStateGradient: MutableLinearStateView<T>? = nil,
        options: FavorAttentionOptions = FavorAttentionOptions()
    ) throws(PerformerError) {
        let problem = try checkStateBackward(key: key, value: value, projection: projection,
                                             finalStateGradient: finalStateGradient, keyGradient: keyGradient,
                                             valueGradient: valueGradient, initialState: initialState,
                                             initialStateGradient: initialStateGradient, options: options)

        let kernels = Runtime.kernels.favorAttention
        guard let tasks = try HeadTasks(
            batch: problem.batch, heads: problem.heads, keyHeads: problem.keyHeads, split: .keyHeadGroups,
            scratchBytes: kernels.scratchBytes(problem.shape, MemoryLayout<T>.stride, false, true),
            work: Runtime.work(problem.work, 3),
            for: problem.argumentSizes)
        else { return }
        let entry = T.dtype == .float32 ? kernels.backwardFloat : kernels.backwardDouble
        let w = projection.matrix(as: T.self)
        w.withUnsafeBytes { wBytes in
            tasks.run { head in
                let (b, h, hk) = (head.b, head.h, head.hk)
                // No query rows: query, output gradient and query gradient are never touched.
                var task = problem.task(b: b, h: h, query: key, key: key, value: value,
                                        projection: wBytes.baseAddress!, scratch: head.scratch)
                task.keyGradient = keyGradient.matrix(b, hk)
                task.valueGradient = valueGradient.matrix(b, hk)
                task.accumulateKeyGradients = head.addsToKeyGradients
                task.initialS = initialState?.s.matrix(b, h)
                task.initialZ = initialState?.z.matrix(b, h)
                task.initialC = initialState?.c.matrix(b, h)
                task.finalSGradient = finalStateGradient.s.matrix(b, h)
                task.finalZGradient = finalStateGradient.z.matrix(b, h)
                task.initialSGradient = initialStateGradient?.s.matrix(b, h)
                task.initialZGradient = initialStateGradient?.z.matrix(b, h)
                entry(&task)
            }
        }
    }

    /// The problem of `state`, every argument checked: generic over the token type T and the
    /// state type S (a half-precision call keeps its states in float32), so the float32 and half
    /// entries check alike.
    @discardableResult
    static func checkState<T, S: AttentionScalar>(
        key: TensorView<T>, value: TensorView<T>, projection: FavorProjection, initialState: FavorStateView<S>?,
        finalState: MutableFavorStateView<S>, options: FavorAttentionOptions
    ) throws(PerformerError) -> FavorProblem {
        let problem = try FavorProblem(key: key, value: value, projection: projection,
                                       stateHeads: finalState.s.shape[1], stateName: "S_out", options: options)
        try problem.checkStateShapes(finalState.readOnly, names: ("S_out", "z_out", "c_out"))
        let inputs = [try TensorFootprint(key, name: "k"), try TensorFootprint(value, name: "v")]
        let finals = [try TensorFootprint(finalState.s, name: "S_out"), try TensorFootprint(finalState.z, name: "z_out"),
                      try TensorFootprint(finalState.c, name: "c_out")]
        try TensorFootprint.checkOutputsDisjoint(inputs + finals)
        if let initialState {
            try problem.checkStateShapes(initialState, names: ("S0", "z0", "c0"))
            let initials = [try TensorFootprint(initialState.s, name: "S0"), try TensorFootprint(initialState.z, name: "z0"),
                            try TensorFootprint(initialState.c, name: "c0")]
            // In place is safe: each head reads all of its initial state before writing.
            try TensorFootprint.checkInPlace(finals, replacing: initials)
            // Values last: every footprint above is representable, so reading cannot stray.
            try problem.checkStateValues(initialState, names: ("S0", "z0", "c0"))
        }
        return problem
    }

    /// The problem of `stateBackward`, every argument checked (T, S as in `checkState`).
    @discardableResult
    static func checkStateBackward<T, S: AttentionScalar>(
        key: TensorView<T>, value: TensorView<T>, projection: FavorProjection, finalStateGradient: LinearStateView<S>,
        keyGradient: MutableTensorView<T>, valueGradient: MutableTensorView<T>, initialState: FavorStateView<S>?,
        initialStateGradient: MutableLinearStateView<S>?, options: FavorAttentionOptions
    ) throws(PerformerError) -> FavorProblem {
        let problem = try FavorProblem(key: key, value: value, projection: projection,
                                       stateHeads: finalStateGradient.s.shape[1], stateName: "dS_out", options: options)
        try problem.checkGradientShapes(finalStateGradient.s, finalStateGradient.z, names: ("dS_out", "dz_out"))
        try ShapeCheck.expectShape(keyGradient.readOnly, key.shape, name: "dk", meaning: "k.shape")
        try ShapeCheck.expectShape(valueGradient.readOnly, value.shape, name: "dv", meaning: "v.shape")
        var footprints = [
            try TensorFootprint(key, name: "k"), try TensorFootprint(value, name: "v"),
            try TensorFootprint(finalStateGradient.s, name: "dS_out"), try TensorFootprint(finalStateGradient.z, name: "dz_out"),
            try TensorFootprint(keyGradient, name: "dk"), try TensorFootprint(valueGradient, name: "dv"),
        ]
        if let initialState {
            try problem.checkStateShapes(initialState, names: ("S0", "z0", "c0"))
            footprints += [try TensorFootprint(initialState.s, name: "S0"), try TensorFootprint(initialState.z, name: "z0"),
                           try TensorFootprint(initialState.c, name: "c0")]
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
        try FavorProblem.checkFinite(finalStateGradient.s, name: "dS_out")
        try FavorProblem.checkFinite(finalStateGradient.z, name: "dz_out")
        return problem
    }
}

extension FavorProblem {
    /// The problem of a state-only call: k (B×Hk×L×D), v (B×Hk×L×M) and `stateHeads` = Hs
    /// state heads (a multiple of Hk, named after `stateName`'s shape[1]); bidirectional, N = 0,
    /// so `heads` is Hs.
    init<T>(key k: TensorView<T>, value v: TensorView<T>, projection: FavorProjection, stateHeads: Int,
            stateName: String, options: FavorAttentionOptions) throws(PerformerError) {
        let linear = try LinearProblem(
            key: k, value: v, stateHeads: stateHeads, stateName: stateName,
            options: LinearAttentionOptions(featureMap: .identity, keyLengths: options.keyLengths,
                                            keyStarts: options.keyStarts))
        guard k.shape[3] == projection.dim else {
            throw PerformerError(.shapeMismatch, "k.shape[3] = \(k.shape[3]) but projection.dim = \(projection.dim)")
        }
        inputScale = try options.features.inputScale(dim: projection.dim)
        let m = projection.numFeatures
        let c = options.features.kind.featureCount(numFeatures: m)
        _ = try TensorLayout.elementCount(SIMD4(linear.batch, linear.heads, c, max(linear.shape.valueDim, 1)), name: "state S")
        batch = linear.batch
        heads = linear.heads
        keyHeads = linear.keyHeads
        shape = FavorHeadShape(queryCount: 0, keyCount: linear.shape.keyCount,
                               dim: projection.dim, numFeatures: m, valueDim: linear.shape.valueDim, featureCount: c)
        self.options = options
        self.options.causal = false
        self.options.epsilon = 0
    }
}

import PerformerKernelInterface

/// State-only calls: the state (S, z) of a set of keys and values, without queries, and its
/// backward. They run the non-causal kernels with no query rows, so the state is the one a
/// forward over the same keys carries (bit for bit for the non-causal forward's final state);
/// with no query rows the backward kernel takes its state-only path (LinearStateBackward.swift:
/// one pass over the keys, dv = φ(K) dS and ∂L/∂φ(K) = V dSᵀ + dz, no state rebuilt).
///
/// Head layout: k B×Hk×L×D, v B×Hk×L×M; the state has Hs heads, read from the final state's
/// (forward) or its gradient's (backward) shape[1], a multiple of Hk: state head h takes the keys
/// of key head h / (Hs/Hk). Hs = Hk is one state per key head; Hs = H matches the forward's
/// per-query-head state, so the result can start a later causal or non-causal forward.
/// `options.causal`, `normalize` and `epsilon` do not apply (there are no queries); the feature
/// map and key lengths do.
extension LinearAttention {
    /// S_out = S_0 + Σ_{j < kv_len} φ(k_j) v_jᵀ (B×Hs×C×M), z_out = z_0 + Σ_{j < kv_len} φ(k_j)
    /// (B×Hs×C×1). `finalState` may be the very memory of `initialState` (same base, shape and
    /// strides) to update a state in place; any other overlap is an aliasing error.
    public static func state<T: AttentionScalar>(
        key: TensorView<T>, value: TensorView<T>, initialState: LinearStateView<T>? = nil,
        finalState: MutableLinearStateView<T>, options: LinearAttentionOptions = LinearAttentionOptions()
    ) throws(PerformerError) {
        let problem = try checkState(key: key, value: value, initialState: initialState, finalState: finalState,
                                     options: options)

        let kernels = Runtime.kernels.linear
        guard let tasks = try HeadTasks(
            batch: problem.batch, heads: problem.heads, keyHeads: problem.keyHeads, split: .queryHeads,
            scratchBytes: kernels.scratchBytes(problem.shape, MemoryLayout<T>.stride, false, false),
            work: problem.work,
            for: problem.argumentSizes)
        else { return }
        let entry = T.dtype == .float32 ? kernels.forwardFloat : kernels.forwardDouble
        tasks.run { head in
            let (b, h) = (head.b, head.h)
            // No query rows: the kernel never reads `query` (k stands in for it).
            var task = problem.task(b: b, h: h, query: key, key: key, value: value, scratch: head.scratch)
            task.initialState = initialState?.s.matrix(b, h)
            task.initialNormalizer = initialState?.z.matrix(b, h)
            task.finalState = finalState.s.matrix(b, h)
            task.finalNormalizer = finalState.z.matrix(b, h)
            entry(&task)
        }
    }

    /// The backward of `state`: given dS_out, dz_out (B×Hs×C×M, B×Hs×C×1), writes
    /// dk_j = φ'(k_j) ∘ (dS_out v_j + dz_out) and dv_j = dS_outᵀ φ(k_j) (zero for keys past
    /// kv_len; summed over the Hs/Hk state heads of a key head), and, when asked, the initial
    /// state's gradient, which is dS_out, dz_out itself.
    public static func stateBackward<T: AttentionScalar>(
        key: TensorView<T>, value: TensorView<T>, finalStateGradient: LinearStateView<T>,
        keyGradient: MutableTensorView<T>, valueGradient: MutableTensorView<T>,
        initialStateGradient: MutableLinearStateView<T>? = nil,
        options: LinearAttentionOptions = LinearAttentionOptions()
    ) throws(PerformerError) {
        let problem = try checkStateBackward(key: key, value: value, finalStateGradient: finalStateGradient,
                                             keyGradient: keyGradient, valueGradient: valueGradient,
                                             initialStateGradient: initialStateGradient, options: options)

        let kernels = Runtime.kernels.linear
        guard let tasks = try HeadTasks(
            batch: problem.batch, heads: problem.heads, keyHeads: problem.keyHeads, split: .keyHeadGroups,
            scratchBytes: kernels.scratchBytes(problem.shape, MemoryLayout<T>.stride, false, true),
            work: Runtime.work(problem.work, 3),
            for: problem.argumentSizes)
        else { return }
        let entry = T.dtype == .float32 ? kernels.backwardFloat : kernels.backwardDouble
        tasks.run { head in
            let (b, h, hk) = (head.b, head.h, head.hk)
            // No query rows: query, output gradient and query gradient are never touched.
            var task = problem.task(b: b, h: h, query: key, key: key, value: value, scratch: head.scratch)
            task.keyGradient = keyGradient.matrix(b, hk)
            task.valueGradient = valueGradient.matrix(b, hk)
            task.accumulateKeyGradients = head.addsToKeyGradients
            task.finalStateGradient = finalStateGradient.s.matrix(b, h)
            task.finalNormalizerGradient = finalStateGradient.z.matrix(b, h)
            task.initialStateGradient = initialStateGradient?.s.matrix(b, h)
            task.initialNormalizerGradient = initialStateGradient?.z.matrix(b, h)
            entry(&task)
        }
    }

    /// The problem of `state`, every argument checked: generic over the token type T and the
    /// state type S (a half-precision call keeps its states in float32), so the float32 and half
    /// entries check alike.
    @discardableResult
    static func checkState<T, S: AttentionScalar>(
        key: TensorView<T>, value: TensorView<T>, initialState: LinearStateView<S>?,
        finalState: MutableLinearStateView<S>, options: LinearAttentionOptions
    ) throws(PerformerError) -> LinearProblem {
        let problem = try LinearProblem(key: key, value: value, stateHeads: finalState.s.shape[1], stateName: "S_out",
                                        options: options)
        try problem.checkState(finalState.s.readOnly, finalState.z.readOnly, names: ("S_out", "z_out"))
        var footprints = [try TensorFootprint(key, name: "k"), try TensorFootprint(value, name: "v"),
                          try TensorFootprint(finalState.s, name: "S_out"), try TensorFootprint(finalState.z, name: "z_out")]
        if let initialState {
            try problem.checkState(initialState.s, initialState.z, names: ("S0", "z0"))
            // In place is safe: each head reads all of its S_0, z_0 before writing.
            if !sameLayout(initialState.s, finalState.s) { footprints.append(try TensorFootprint(initialState.s, name: "S0")) }
            if !sameLayout(initialState.z, finalState.z) { footprints.append(try TensorFootprint(initialState.z, name: "z0")) }
        }
        try TensorFootprint.checkOutputsDisjoint(footprints)
        return problem
    }

    /// The problem of `stateBackward`, every argument checked (T, S as in `checkState`).
    @discardableResult
    static func checkStateBackward<T, S: AttentionScalar>(
        key: TensorView<T>, value: TensorView<T>, finalStateGradient: LinearStateView<S>,
        keyGradient: MutableTensorView<T>, valueGradient: MutableTensorView<T>,
        initialStateGradient: MutableLinearStateView<S>?, options: LinearAttentionOptions
    ) throws(PerformerError) -> LinearProblem {
        let problem = try LinearProblem(key: key, value: value, stateHeads: finalStateGradient.s.shape[1],
                                        stateName: "dS_out", options: options)
        try problem.checkState(finalStateGradient.s, finalStateGradient.z, names: ("dS_out", "dz_out"))
        try ShapeCheck.expectShape(keyGradient.readOnly, key.shape, name: "dk", meaning: "k.shape")
        try ShapeCheck.expectShape(valueGradient.readOnly, value.shape, name: "dv", meaning: "v.shape")
        var footprints = [
            try TensorFootprint(key, name: "k"), try TensorFootprint(value, name: "v"),
            try TensorFootprint(finalStateGradient.s, name: "dS_out"), try TensorFootprint(finalStateGradient.z, name: "dz_out"),
            try TensorFootprint(keyGradient, name: "dk"), try TensorFootprint(valueGradient, name: "dv"),
        ]
        if let initialStateGradient {
            try problem.checkState(initialStateGradient.s.readOnly, initialStateGradient.z.readOnly, names: ("dS0", "dz0"))
            footprints += [try TensorFootprint(initialStateGradient.s, name: "dS0"),
                           try TensorFootprint(initialStateGradient.z, name: "dz0")]
        }
        try TensorFootprint.checkOutputsDisjoint(footprints)
        return problem
    }

    /// Whether two views are the same elements in the same order (an in-place update).
    private static func sameLayout<T>(_ a: TensorView<T>, _ b: MutableTensorView<T>) -> Bool {
        a.base == UnsafePointer(b.base) && a.shape == b.shape && a.strides == b.strides
    }
}

import PerformerKernelInterface

/// Linear attention ("Transformers are RNNs", ALGORITHMS.md §2), forward and backward, causal
/// or not, in O(N) time and memory.
///
/// Shapes: q B×H×N×D, k B×Hk×L×D, v B×Hk×L×M, out B×H×N×M; Hk divides H and query head h reads
/// key head h / (H/Hk). Causal needs N = L. The feature dimension C equals D for every built-in
/// feature map. States are per query head: S B×H×C×M, z B×H×C×1 (see `LinearStateView` for what
/// that means under grouped-query attention). Views may have any strides. Every argument is
/// checked before any output is written; on error nothing is written.
public enum LinearAttention {
    /// Writes o_i = φ(q_i)ᵀS_i / (φ(q_i)ᵀz_i + ε) into `output` (with `options.normalize` false,
    /// o_i = φ(q_i)ᵀS_i).
    ///
    /// `initialState` (S_0, z_0) is added to every S_i, z_i (nil means zeros), and `finalState`
    /// receives (S_N, z_N). Causal: a sequence processed in pieces, each starting from the
    /// previous piece's final state, gives the same outputs as one call. Non-causal: S_i = S_N =
    /// S_0 + Σ_j φ(k_j) v_jᵀ for every query, so the initial state is a memory of earlier keys
    /// (L may be 0). `denominators` (B×H×N×1, optional) receives φ(q_i)ᵀz_i without ε.
    // Specialized for Float and Double (see SoftmaxAttention.forward).
    @_specialize(exported: true, where T == Float)
    @_specialize(exported: true, where T == Double)
    public static func forward<T: AttentionScalar>(
        query: TensorView<T>, key: TensorView<T>, value: TensorView<T>, output: MutableTensorView<T>,
        initialState: LinearStateView<T>? = nil, finalState: MutableLinearStateView<T>? = nil,
        denominators: MutableTensorView<T>? = nil,
        options: LinearAttentionOptions = LinearAttentionOptions()
    ) throws(PerformerError) {
        let problem = try checkForward(query: query, key: key, value: value, output: output, initialState: initialState,
                                       finalState: finalState, denominators: denominators, options: options)
        try run(problem, query: query, key: key, value: value, output: output,
                initialState: initialState, finalState: finalState, denominators: denominators)
    }

    /// The forward of a validated problem. The initial and final state may be the same memory
    /// (a decoder's prefill): each head reads its S_0, z_0 before it writes anything and no head
    /// touches another head's state.
    static func run<T: AttentionScalar>(
        _ problem: LinearProblem, query: TensorView<T>, key: TensorView<T>, value: TensorView<T>,
        output: MutableTensorView<T>, initialState: LinearStateView<T>?, finalState: MutableLinearStateView<T>?,
        denominators: MutableTensorView<T>? = nil
    ) throws(PerformerError) {
        // No query and no state asked for: nothing to write (and no scratch sized by D × M to find).
        guard problem.shape.queryCount > 0 || finalState != nil else { return }
        let kernels = Runtime.kernels.linear
        guard let tasks = try HeadTasks(
            batch: problem.batch, heads: problem.heads, keyHeads: problem.keyHeads, split: .queryHeads,
            scratchBytes: kernels.scratchBytes(problem.shape, MemoryLayout<T>.stride, problem.options.causal, false),
            work: problem.work,
            for: problem.argumentSizes)
        else { return }
        let entry = T.dtype == .float32 ? kernels.forwardFloat : kernels.forwardDouble
        let direct = runsDirectForm(problem, hasState: initialState != nil || finalState != nil)
        tasks.run { head in
            let (b, h) = (head.b, head.h)
            output.prefaultHead(b, h)
            var task = problem.task(b: b, h: h, query: query, key: key, value: value, scratch: head.scratch)
            task.direct = direct
            task.output = output.matrix(b, h)
            task.denominators = denominators?.matrix(b, h)
            task.initialState = initialState?.s.matrix(b, h)
            task.initialNormalizer = initialState?.z.matrix(b, h)
            task.finalState = finalState?.s.matrix(b, h)
            task.finalNormalizer = finalState?.z.matrix(b, h)
            entry(&task)
        }
    }

    /// Writes the gradients of the loss with respect to q, k and v (with `.identity`, with respect
    /// to the features the caller passed), given `outputGradient` = ∂L/∂out. Gradients flow
    /// through the denominator and through φ. Nothing from the forward is needed: the backward
    /// recomputes it, in O(N · max(C, M)) memory, without storing a state per position.
    ///
    /// Causal or not: `initialState` is the forward's (S_0, z_0) (nil: zeros); `finalStateGradient`
    /// is ∂L/∂(S_N, z_N) when the loss also depends on the final state (nil: zeros);
    /// `initialStateGradient` receives ∂L/∂(S_0, z_0) (with no initial state given, the gradient
    /// at S_0 = 0, z_0 = 0). With grouped-query attention, dk and dv sum over the query heads
    /// that share a key head.
    public static func backward<T: AttentionScalar>(
        query: TensorView<T>, key: TensorView<T>, value: TensorView<T>, outputGradient: TensorView<T>,
        queryGradient: MutableTensorView<T>, keyGradient: MutableTensorView<T>, valueGradient: MutableTensorView<T>,
        initialState: LinearStateView<T>? = nil, finalStateGradient: LinearStateView<T>? = nil,
        initialStateGradient: MutableLinearStateView<T>? = nil,
        options: LinearAttentionOptions = LinearAttentionOptions()
    ) throws(PerformerError) {
        let problem = try checkBackward(query: query, key: key, value: value, outputGradient: outputGradient,
                                        queryGradient: queryGradient, keyGradient: keyGradient, valueGradient: valueGradient,
                                        initialState: initialState, finalStateGradient: finalStateGradient,
                                        initialStateGradient: initialStateGradient, options: options)

        let kernels = Runtime.kernels.linear
        guard let tasks = try HeadTasks(
            batch: problem.batch, heads: problem.heads, keyHeads: problem.keyHeads, split: .keyHeadGroups,
            scratchBytes: kernels.scratchBytes(problem.shape, MemoryLayout<T>.stride, problem.options.causal, true),
            work: Runtime.work(problem.work, 3),
            for: problem.argumentSizes)
        else { return }
        let entry = T.dtype == .float32 ? kernels.backwardFloat : kernels.backwardDouble
        tasks.run { head in
            let (b, h, hk) = (head.b, head.h, head.hk)
            var task = problem.task(b: b, h: h, query: query, key: key, value: value, scratch: head.scratch)
            task.outputGradient = outputGradient.matrix(b, h)
            task.queryGradient = queryGradient.matrix(b, h)
            task.keyGradient = keyGradient.matrix(b, hk)
            task.valueGradient = valueGradient.matrix(b, hk)
            task.accumulateKeyGradients = head.addsToKeyGradients
            task.initialState = initialState?.s.matrix(b, h)
            task.initialNormalizer = initialState?.z.matrix(b, h)
            task.finalStateGradient = finalStateGradient?.s.matrix(b, h)
            task.finalNormalizerGradient = finalStateGradient?.z.matrix(b, h)
            task.initialStateGradient = initialStateGradient?.s.matrix(b, h)
            task.initialNormalizerGradient = initialStateGradient?.z.matrix(b, h)
            entry(&task)
        }
    }

    /// The problem of `forward`, every argument checked: generic over the token type T and the
    /// state type S (a half-precision call keeps its states and denominators in float32), so the
    /// float32 and half entries check alike.
    @discardableResult
    static func checkForward<T, S: AttentionScalar>(
        query: TensorView<T>, key: TensorView<T>, value: TensorView<T>, output: MutableTensorView<T>,
        initialState: LinearStateView<S>?, finalState: MutableLinearStateView<S>?, denominators: MutableTensorView<S>?,
        options: LinearAttentionOptions
    ) throws(PerformerError) -> LinearProblem {
        let problem = try LinearProblem(query: query, key: key, value: value, options: options)
        var footprints = try AttentionArguments.forward(query: query, key: key, value: value, output: output,
                                                        outputShape: problem.outputShape)
        if let denominators {
            try ShapeCheck.expectShape(denominators.readOnly, SIMD4(problem.batch, problem.heads, problem.shape.queryCount, 1),
                                       name: "denominators", meaning: "B×H×N×1")
            footprints.append(try TensorFootprint(denominators, name: "denominators"))
        }
        if let initialState {
            try problem.checkState(initialState.s, initialState.z, names: ("S0", "z0"))
            footprints += [try TensorFootprint(initialState.s, name: "S0"), try TensorFootprint(initialState.z, name: "z0")]
        }
        if let finalState {
            try problem.checkState(finalState.s.readOnly, finalState.z.readOnly, names: ("S_N", "z_N"))
            footprints += [try TensorFootprint(finalState.s, name: "S_N"), try TensorFootprint(finalState.z, name: "z_N")]
        }
        try TensorFootprint.checkOutputsDisjoint(footprints)
        return problem
    }

    /// The problem of `backward`, every argument checked (T, S as in `checkForward`).
    @discardableResult
    static func checkBackward<T, S: AttentionScalar>(
        query: TensorView<T>, key: TensorView<T>, value: TensorView<T>, outputGradient: TensorView<T>,
        queryGradient: MutableTensorView<T>, keyGradient: MutableTensorView<T>, valueGradient: MutableTensorView<T>,
        initialState: LinearStateView<S>?, finalStateGradient: LinearStateView<S>?,
        initialStateGradient: MutableLinearStateView<S>?, options: LinearAttentionOptions
    ) throws(PerformerError) -> LinearProblem {
        let problem = try LinearProblem(query: query, key: key, value: value, options: options)
        var footprints = try AttentionArguments.backward(
            query: query, key: key, value: value, outputGradient: outputGradient, queryGradient: queryGradient,
            keyGradient: keyGradient, valueGradient: valueGradient, outputShape: problem.outputShape)
        if let initialState {
            try problem.checkState(initialState.s, initialState.z, names: ("S0", "z0"))
            footprints += [try TensorFootprint(initialState.s, name: "S0"), try TensorFootprint(initialState.z, name: "z0")]
        }
        if let finalStateGradient {
            try problem.checkState(finalStateGradient.s, finalStateGradient.z, names: ("dS_N", "dz_N"))
            footprints += [try TensorFootprint(finalStateGradient.s, name: "dS_N"),
                           try TensorFootprint(finalStateGradient.z, name: "dz_N")]
        }
        if let initialStateGradient {
            try problem.checkState(initialStateGradient.s.readOnly, initialStateGradient.z.readOnly, names: ("dS0", "dz0"))
            footprints += [try TensorFootprint(initialStateGradient.s, name: "dS0"),
                           try TensorFootprint(initialStateGradient.z, name: "dz0")]
        }
        try TensorFootprint.checkOutputsDisjoint(footprints)
        return problem
    }
}

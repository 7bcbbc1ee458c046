import PerformerKernelInterface

// Backward of one query head, in O(N + chunk · max(C, M) + C · M) memory: no per-position state
// is stored; every state is rebuilt by recomputation (the paper's eqs. 13–15, chunked).
//
// With g_i = dO_i, den_i = φ(q_i)ᵀz_i + ε, o_i = num_i / den_i:
//   ∂L/∂num_i = g_i / den_i,   ∂L/∂den_i = −(g_i · o_i) / den_i
//   ∂L/∂φ(q_i) = S_i ∂L/∂num_i + z_i ∂L/∂den_i                      (forward sweep, S_i rebuilt)
//   G_j = dS_N + Σ_{i ≥ j} φ(q_i) ∂L/∂num_iᵀ,  g_j = dz_N + Σ_{i ≥ j} φ(q_i) ∂L/∂den_i  (reverse sweep)
//   ∂L/∂φ(k_j) = G_j v_j + g_j,   ∂L/∂v_j = G_jᵀ φ(k_j)
//   ∂L/∂S_0 = G_0,  ∂L/∂z_0 = g_0
// Within a chunk the sums over i ≥ j (or j ≤ i) are the triangular score products; across
// chunks they are the carried S, z (forward) and G, g (reverse). The forward sweep keeps only
// den_i and ∂L/∂den_i per position, from which the reverse sweep rebuilds ∂L/∂num_i = g_i / den_i.

func linearBackward<T: KernelScalar>(_ taskPointer: UnsafePointer<LinearAttentionTask>, _: T.Type) {
    let task = taskPointer.pointee
    var bytes = 0
    let s = LinearScratch<T>(base: task.scratch, shape: task.shape, causal: task.causal, backward: true, bytes: &bytes)
    if task.causal {
        causalBackward(task, s)
    } else {
        nonCausalBackward(task, s)
    }
}

/// Writes dq (or adds dk) rows from the t × C feature gradient in scratch, given the chunk's
/// features of the same rows (φ' is derived from them).
@inline(__always)
private func storeFeatureGradients<T: KernelScalar>(
    _ s: LinearScratch<T>, _ t: Int, _ r0: Int, features: UnsafePointer<T>, gradient: StridedMatrix,
    _ task: LinearAttentionTask, accumulate: Bool
) {
    for i in 0..<t {
        storeInputGradient(s.featureGradient + i * s.cp, features: features + i * s.cp, count: task.shape.headDim,
                           map: task.featureMap, into: gradient, row: r0 + i, accumulate: accumulate)
    }
}

/// Key-side gradients of one chunk given the carried G, g (and, when causal, the chunk's scores
/// and score gradient): ∂L/∂φ(K_c) = V_c Gᵀ + 1 gᵀ [+ scoreGradientᵀ φ(Q_c)],
/// ∂L/∂V_c = φ(K_c) G [+ scoresᵀ ∂L/∂num]. Padded keys get zero gradients.
@inline(__always)
private func keyChunkGradients<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>, _ r0: Int, _ t: Int) {
    let c = task.shape.featureDim, m = task.shape.valueDim
    transposeBlock(rows: c, columns: m, s.stateGradient, s.mp, s.stateGradientT, s.cp)
    chunkProduct(rows: t, columns: c, depth: m, a: s.values, aRowStride: s.mp, aDepthStride: 1,
                 b: s.stateGradientT, bRowStride: s.cp, c: s.featureGradient, cRowStride: s.cp, accumulate: false)
    chunkProduct(rows: t, columns: m, depth: c, a: s.keyFeatures, aRowStride: s.cp, aDepthStride: 1,
                 b: s.stateGradient, bRowStride: s.mp, c: s.valueGradient, cRowStride: s.mp, accumulate: false)
    if task.causal {
        chunkProduct(rows: t, columns: c, depth: t, a: s.scoreGradient, aRowStride: 1, aDepthStride: s.tp,
                     b: s.queryFeatures, bRowStride: s.cp, c: s.featureGradient, cRowStride: s.cp, accumulate: true)
        chunkProduct(rows: t, columns: m, depth: t, a: s.scores, aRowStride: 1, aDepthStride: s.tp,
                     b: s.rowsM, bRowStride: s.mp, c: s.valueGradient, cRowStride: s.mp, accumulate: true)
    }
    for i in 0..<t {
        let row = s.featureGradient + i * s.cp
        if r0 + i < task.keyLimit {
            for f in 0..<c { row[f] += s.normalizerGradient[f] }
        } else {
            for f in 0..<c { row[f] = 0 }
        }
    }
    let accumulate = task.accumulateKeyGradients
    storeFeatureGradients(s, t, r0, features: s.keyFeatures, gradient: task.keyGradient!, task, accumulate: accumulate)
    for i in 0..<t {
        storeRow(s.valueGradient + i * s.mp, count: m, into: task.valueGradient!, row: r0 + i, accumulate: accumulate)
    }
}

/// G += φ(Q_c)ᵀ ∂L/∂num, g += φ(Q_c)ᵀ ∂L/∂den.
@inline(__always)
private func advanceStateGradient<T: KernelScalar>(_ s: LinearScratch<T>, _ t: Int, _ c: Int, _ m: Int) {
    chunkProduct(rows: c, columns: m, depth: t, a: s.queryFeatures, aRowStride: 1, aDepthStride: s.cp,
                 b: s.rowsM, bRowStride: s.mp, c: s.stateGradient, cRowStride: s.mp, accumulate: true)
    for i in 0..<t {
        let dden = s.denominatorGradient[i], row = s.queryFeatures + i * s.cp
        for f in 0..<c { s.normalizerGradient[f] += row[f] * dden }
    }
}

/// ∂L/∂φ(Q_c) = ∂L/∂num Sᵀ + ∂L/∂den zᵀ [+ scoreGradient φ(K_c)], then dq.
@inline(__always)
private func queryChunkGradients<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>, _ r0: Int, _ t: Int) {
    let c = task.shape.featureDim, m = task.shape.valueDim
    transposeBlock(rows: c, columns: m, s.state, s.mp, s.stateT, s.cp)
    chunkProduct(rows: t, columns: c, depth: m, a: s.rowsM, aRowStride: s.mp, aDepthStride: 1,
                 b: s.stateT, bRowStride: s.cp, c: s.featureGradient, cRowStride: s.cp, accumulate: false)
    for i in 0..<t {
        let dden = s.denominatorGradient[i], row = s.featureGradient + i * s.cp
        for f in 0..<c { row[f] += dden * s.normalizer[f] }
    }
    if task.causal {
        chunkProduct(rows: t, columns: c, depth: t, a: s.scoreGradient, aRowStride: s.tp, aDepthStride: 1,
                     b: s.keyFeatures, bRowStride: s.cp, c: s.featureGradient, cRowStride: s.cp, accumulate: true)
    }
    storeFeatureGradients(s, t, r0, features: s.queryFeatures, gradient: task.queryGradient!, task, accumulate: false)
}

private func causalBackward<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>) {
    let n = task.shape.queryCount, c = task.shape.featureDim, m = task.shape.valueDim
    let epsilon = T(task.epsilon)
    let perPosition = s.perPosition

    // Forward sweep: S_i, z_i rebuilt chunk by chunk; ∂L/∂φ(Q) and dq.
    loadState(task.initialState, rows: c, columns: m, into: s.state, ld: s.mp)
    loadState(task.initialNormalizer, rows: c, columns: 1, into: s.normalizer, ld: 1)
    var r0 = 0
    while r0 < n {
        let t = min(linearChunkRows, n - r0)
        packQueryChunk(task, s, r0, t)
        packKeyChunk(task, s, r0, t, transposedValues: true)
        packOutputGradientChunk(task, s, r0, t)
        chunkNumerator(s, t, c, m, causal: true, epsilon: epsilon)
        for i in 0..<t {
            s.denominatorGradient[i] = rowGradients(s, row: i, m)
            perPosition[2 * (r0 + i)] = s.denominator[i]
            perPosition[2 * (r0 + i) + 1] = s.denominatorGradient[i]
        }
        chunkScoreGradient(s, t, m)
        queryChunkGradients(task, s, r0, t)
        advanceState(s, t, c, m)
        r0 += t
    }

    // Reverse sweep: G, g carried from the end; ∂L/∂φ(K), dk, dv.
    loadState(task.finalStateGradient, rows: c, columns: m, into: s.stateGradient, ld: s.mp)
    loadState(task.finalNormalizerGradient, rows: c, columns: 1, into: s.normalizerGradient, ld: 1)
    let chunks = (n + linearChunkRows - 1) / linearChunkRows
    for chunk in stride(from: chunks - 1, through: 0, by: -1) {
        let r0 = chunk * linearChunkRows
        let t = min(linearChunkRows, n - r0)
        packQueryChunk(task, s, r0, t)
        packKeyChunk(task, s, r0, t, transposedValues: true)
        packOutputGradientChunk(task, s, r0, t)
        for i in 0..<t {
            let den = perPosition[2 * (r0 + i)]
            let inverse: T = den != 0 ? 1 / den : 0
            s.denominatorGradient[i] = perPosition[2 * (r0 + i) + 1]
            let row = s.rowsM + i * s.mp, dO = s.outputGradient + i * s.mp
            for j in 0..<m { row[j] = dO[j] * inverse }
        }
        chunkScores(s, t, c)
        chunkScoreGradient(s, t, m)
        keyChunkGradients(task, s, r0, t)
        advanceStateGradient(s, t, c, m)
    }
    storeState(s.stateGradient, rows: c, columns: m, ld: s.mp, into: task.initialStateGradient)
    storeState(s.normalizerGradient, rows: c, columns: 1, ld: 1, into: task.initialNormalizerGradient)
}

private func nonCausalBackward<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>) {
    let n = task.shape.queryCount, l = task.shape.keyCount
    let c = task.shape.featureDim, m = task.shape.valueDim
    let epsilon = T(task.epsilon)
    // The carve zeroed S, z, G and g.
    var r0 = 0
    while r0 < l {
        let t = min(linearChunkRows, l - r0)
        packKeyChunk(task, s, r0, t, transposedValues: false)
        advanceState(s, t, c, m)
        r0 += t
    }
    // Queries: ∂L/∂φ(q_i) = S ∂L/∂num_i + z ∂L/∂den_i; G, g sum over every query.
    r0 = 0
    while r0 < n {
        let t = min(linearChunkRows, n - r0)
        packQueryChunk(task, s, r0, t)
        packOutputGradientChunk(task, s, r0, t)
        chunkNumerator(s, t, c, m, causal: false, epsilon: epsilon)
        for i in 0..<t { s.denominatorGradient[i] = rowGradients(s, row: i, m) }
        queryChunkGradients(task, s, r0, t)
        advanceStateGradient(s, t, c, m)
        r0 += t
    }
    // Keys: every key sees the same G, g.
    r0 = 0
    while r0 < l {
        let t = min(linearChunkRows, l - r0)
        packKeyChunk(task, s, r0, t, transposedValues: false)
        keyChunkGradients(task, s, r0, t)
        r0 += t
    }
}

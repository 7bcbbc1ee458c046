import PerformerKernelInterface

// Backward of a state-only call (no query rows; `LinearAttention.stateBackward`). Every key
// sees the same G = dS_out, g = dz_out, so per key chunk
//   ∂L/∂φ(K_c) = V_c Gᵀ + 1 gᵀ,   ∂L/∂V_c = φ(K_c) G
// two products, and no pass that rebuilds S, z (only query rows read them). The key loop is
// the non-causal backward's, so the results are the same bits as that kernel with zero queries.
func linearStateBackward<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>) {
    let l = task.shape.keyCount, c = task.shape.featureDim, m = task.shape.valueDim
    loadState(task.finalStateGradient, rows: c, columns: m, into: s.stateGradient, ld: s.mp)
    loadState(task.finalNormalizerGradient, rows: c, columns: 1, into: s.normalizerGradient, ld: 1)
    transposeBlock(rows: c, columns: m, s.stateGradient, s.mp, s.stateGradientT, s.cp)
    var r0 = 0
    while r0 < l {
        let t = min(linearChunkRows, l - r0)
        packKeyChunk(task, s, r0, t, transposedFeatures: false, transposedValues: false)
        chunkProduct(rows: t, columns: c, depth: m, a: s.values, aRowStride: s.mp, aDepthStride: 1,
                     b: s.stateGradientT, bRowStride: s.cp, c: s.featureGradient, cRowStride: s.cp, accumulate: false)
        chunkProduct(rows: t, columns: m, depth: c, a: s.keyFeatures, aRowStride: s.cp, aDepthStride: 1,
                     b: s.stateGradient, bRowStride: s.mp, c: s.valueGradient, cRowStride: s.mp, accumulate: false)
        storeKeyGradients(task, s, r0, t)
        r0 += t
    }
    // ∂L/∂S_0, ∂L/∂z_0: the state gradient passes through unchanged.
    storeState(s.stateGradient, rows: c, columns: m, ld: s.mp, into: task.initialStateGradient)
    storeState(s.normalizerGradient, rows: c, columns: 1, ld: 1, into: task.initialNormalizerGradient)
}

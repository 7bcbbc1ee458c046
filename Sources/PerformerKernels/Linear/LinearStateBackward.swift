import PerformerKernelInterface

// Backward of a state-only call (no query rows; `LinearAttention.stateBackward`). Every key
// sees the same G = dS_out, g = dz_out, so per key chunk
//   ∂L/∂φ(K_c) = V_c Gᵀ + 1 gᵀ,   ∂L/∂V_c = φ(K_c) G
// two products, and no pass that rebuilds S, z (only query rows read them). The key pass is
// the non-causal backward's own, so the results are the same bits as that kernel with zero queries.
func linearStateBackward<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>) {
    let c = task.shape.featureDim, m = task.shape.valueDim
    loadState(task.finalStateGradient, rows: c, columns: m, into: s.stateGradient, ld: s.mp)
    loadState(task.finalNormalizerGradient, rows: c, columns: 1, into: s.normalizerGradient, ld: 1)
    keyGradientsFromStateGradient(task, s)
}

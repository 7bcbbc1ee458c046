import PerformerKernelInterface

// The initial state's gradient from the query side alone (`LinearAttention.initialStateGradient`):
// every output row depends on (S_0, z_0) directly, o_i = φ(q_i)ᵀ(S_0 + …) / (φ(q_i)ᵀ(z_0 + …) + ε),
// so with d_i = den_i + ε (the forward's denominators) and g_i = dO_i / d_i
//   ∂L/∂S_0 = Σ_i φ(q_i) g_iᵀ,   ∂L/∂z_0 = −Σ_i φ(q_i) (g_i · o_i)
// (the backward's G_0, g_0 less the key terms, which a caller adds elsewhere). One pass over the
// query rows, chunked: G_c = dO_c / d into a panel, then ∂L/∂S_0 += φ(Q_c)ᵀ G_c on the
// micro-kernel and ∂L/∂z_0 += φ(Q_c)ᵀ w_c with w_i = −g_i · o_i. It runs in the non-causal
// forward's scratch layout with N query rows and no keys: `state` (zeroed here: the forward's
// carve leaves it to `loadState`) and `normalizer` (zeroed by the carve) accumulate, `values`
// holds O_c, `denominator` holds w_c.
// A row whose d_i is 0 (ε = 0, no feature mass) gave a zero output row and adds nothing, as in
// the backward. Un-normalized, g_i = dO_i and ∂L/∂z_0 = 0. A row the forward kept in shifted
// units (`shiftQueryFeatures`: every elu+1 feature tiny) uses φ′ = e^{−x_max}φ and d′ = e^{−x_max}d:
// φ′/d′ = φ/d, so the sums are unchanged and no product underflows.

func linearQueryStateGradient<T: KernelScalar>(_ taskPointer: UnsafePointer<LinearAttentionTask>, _: T.Type) {
    let task = taskPointer.pointee
    let n = task.shape.queryCount, c = task.shape.featureDim, m = task.shape.valueDim
    var bytes = 0
    let s = LinearScratch<T>(base: task.scratch, shape: task.shape, causal: false, backward: false, bytes: &bytes)
    loadState(nil, rows: c, columns: m, into: s.state, ld: s.mp)
    var r0 = 0
    while r0 < n {
        let t = min(s.rows, n - r0)
        packQueryChunk(task, s, r0, t)
        packOutputGradientChunk(task, s, r0, t)
        if task.normalize {
            let den = task.denominators!, output = task.output!
            let denBase = den.base.assumingMemoryBound(to: T.self)
            for i in 0..<t {
                let raw = denBase[(r0 + i) * den.rowStride], shift = s.queryShift[i]
                // In the features' units (the forward returned it in the caller's).
                let scaled = shift == 0 ? raw : T(Double(raw) * LibM.exp(-Double(shift)))
                let g = s.rowsM + i * s.mp
                divideRow(g, by: scaled + s.queryEpsilon[i], m)
                packRow(output, row: r0 + i, count: m, into: s.values + i * s.mp)
                s.denominator[i] = -rowDot(g, s.values + i * s.mp, m)
            }
            for i in 0..<t { rowAxpy(s.denominator[i], s.queryFeatures + i * s.cp, s.normalizer, c) }
        }
        chunkProduct(rows: c, columns: m, depth: t, a: s.queryFeatures, aRowStride: 1, aDepthStride: s.cp,
                     b: s.rowsM, bRowStride: s.mp, c: s.state, cRowStride: s.mp, accumulate: true)
        r0 += t
    }
    storeState(s.state, rows: c, columns: m, ld: s.mp, into: task.initialStateGradient)
    storeState(s.normalizer, rows: c, columns: 1, ld: 1, into: task.initialNormalizerGradient)
}

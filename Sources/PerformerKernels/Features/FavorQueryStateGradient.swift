import PerformerKernelInterface

// The initial triple's gradient from the query side alone (`FavorAttention.initialStateGradient`,
// docs/DISTRIBUTED.md): with the forward's row unit U_i and scaled denominator den_i
// (o_i = num_i / den_i, both in the units of docs/FAVOR.md §4) and the initial shifts c₀ held
// fixed, row i read (S̃₀, z̃₀) through Q̃_if = ν·e^{a_f(q_i) + c₀_f − U_i} (exponential kinds) or
// ν·e^{ρ_i + c₀ − U_i}·Q̂_if (trigonometric, relu), so with g_i = dO_i / den_i
//   ∂L/∂S̃₀ = Σ_i Q̃_i g_iᵀ,   ∂L/∂z̃₀ = −Σ_i Q̃_i (g_i · o_i).
// One pass over the query rows in chunks: the chunk's features in the forward's scratch
// (queryTilde), G_c = dO_c / den into rowsM, then ∂L/∂S̃₀ += Q̃_cᵀ G_c on the micro-kernel into
// `state` and ∂L/∂z̃₀ += Q̃_cᵀ w_c (w_i = −g_i · o_i) into `normalizer`; no N × C buffer.
// A row with den_i = 0 or U_i = −inf output zeros in the forward and adds nothing.

func favorQueryStateGradient<T: KernelScalar>(_ taskPointer: UnsafePointer<FavorAttentionTask>, _: T.Type) {
    let task = taskPointer.pointee
    let head = FavorHead<T>(task, backward: false)
    let s = head.s, n = task.shape.queryCount, c = head.c, mv = head.mv
    loadState(nil, rows: c, columns: mv, into: s.state, ld: s.vp)
    loadState(nil, rows: c, columns: 1, into: s.normalizer, ld: 1)
    loadState(task.initialC, rows: c, columns: 1, into: s.shift, ld: 1)
    let units = task.rowUnits!, dens = task.rowDenominators!
    let unitBase = units.base.assumingMemoryBound(to: T.self), denBase = dens.base.assumingMemoryBound(to: T.self)
    let weight = s.row(.denominatorGradient)
    var r0 = 0
    while r0 < n {
        let t = min(favorChunkRows, n - r0)
        head.prepareQueries(r0, t)
        for i in 0..<t {
            let u = unitBase[(r0 + i) * units.rowStride], den = denBase[(r0 + i) * dens.rowStride]
            let q = s.queryTilde + i * s.cp, g = s.rowsM + i * s.vp, o = s.values + i * s.vp
            guard u != -.infinity, den != 0 else {
                for f in 0..<c { q[f] = 0 }
                for j in 0..<mv { g[j] = 0 }
                weight[i] = 0
                continue
            }
            head.scaleQuery(i, unit: u)
            packRow(task.outputGradient!, row: r0 + i, count: mv, into: g)
            divideRow(g, by: den, mv)
            packRow(task.output!, row: r0 + i, count: mv, into: o)
            weight[i] = -rowDot(g, o, mv)
        }
        favorProduct(rows: c, columns: mv, depth: t, a: s.queryTilde, aRowStride: 1, aDepthStride: s.cp,
                     b: s.rowsM, bRowStride: s.vp, c: s.state, cRowStride: s.vp, accumulate: true)
        for i in 0..<t where weight[i] != 0 { rowAxpy(weight[i], s.queryTilde + i * s.cp, s.normalizer, c) }
        r0 += t
    }
    storeState(s.state, rows: c, columns: mv, ld: s.vp, into: task.initialSGradient)
    storeState(s.normalizer, rows: c, columns: 1, ld: 1, into: task.initialZGradient)
}

import PerformerKernelInterface

// Backward of one query head, in O(N + chunk · max(C, M) + C · M) memory: no per-position state
// is stored; every state is rebuilt by recomputation (the paper's eqs. 13–15, chunked).
//
// With g_i = dO_i, den_i = φ(q_i)ᵀz_i + ε, num_i = S_iᵀφ(q_i), o_i = num_i / den_i:
//   ∂L/∂num_i = g_i / den_i,   ∂L/∂den_i = −(g_i · num_i) / den_i² = −φ(q_i)·u_i / den_i
//   u_i = S_i ∂L/∂num_i,   ∂L/∂φ(q_i) = u_i + z_i ∂L/∂den_i                (forward sweep)
//   G_j = dS_N + Σ_{i ≥ j} φ(q_i) ∂L/∂num_iᵀ,  g_j = dz_N + Σ_{i ≥ j} φ(q_i) ∂L/∂den_i  (reverse sweep)
//   ∂L/∂φ(k_j) = G_j v_j + g_j,   ∂L/∂v_j = G_jᵀ φ(k_j)
//   ∂L/∂S_0 = G_0,  ∂L/∂z_0 = g_0
// Writing g·num as φ(q)·u means the forward sweep never forms the numerator: per chunk it needs
// den (from running z), u = ∂L/∂num Sᵀ + tril(∂L/∂num V_cᵀ) φ(K_c) and the state update, two
// full and two triangular products. Within a chunk the sums over i ≥ j (or j ≤ i) are the
// triangular products; across chunks they are the carried S, z (forward) and G, g (reverse).
// The forward sweep keeps den_i and ∂L/∂den_i per position, from which the reverse sweep
// rebuilds ∂L/∂num_i = g_i / den_i. Un-normalized (o_i = num_i), the same sweeps run with
// den_i = 1 and ∂L/∂den_i = 0.

func linearBackward<T: KernelScalar>(_ taskPointer: UnsafePointer<LinearAttentionTask>, _: T.Type) {
    let task = taskPointer.pointee
    var bytes = 0
    let s = LinearScratch<T>(base: task.scratch, shape: task.shape, causal: task.causal, backward: true, bytes: &bytes)
    if task.causal {
        causalBackward(task, s)
    } else if task.shape.queryCount == 0 {
        linearStateBackward(task, s)
    } else {
        nonCausalBackward(task, s)
    }
}

/// Turns rowsM (dO rows) into ∂L/∂num = dO_i / den_i given `denominator`; a zero denominator
/// (ε = 0 and no feature mass) gave a zero output row, so its gradients are zero too.
@inline(__always)
private func scaleOutputGradients<T: KernelScalar>(_ s: LinearScratch<T>, _ t: Int, _ m: Int) {
    for i in 0..<t {
        let den = s.denominator[i]
        let row = s.rowsM + i * s.mp
        divideRow(row, by: den, m)
    }
}

/// Given u (featureGradient), ∂L/∂den_i (`denominatorGradient`) and z_i per row (`runningZ`,
/// advanced row by row from z before the chunk when causal; the fixed z otherwise):
/// ∂L/∂φ(q_i) = u_i + z_i ∂L/∂den_i, stored as dq.
@inline(__always)
private func storeQueryGradients<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>, _ r0: Int, _ t: Int,
                                                  runningZ: UnsafeMutablePointer<T>, causal: Bool) {
    let c = task.shape.featureDim
    for i in 0..<t {
        if causal { rowAdd(s.keyFeatures + i * s.cp, runningZ, c) }
        let u = s.featureGradient + i * s.cp
        rowAxpy(s.denominatorGradient[i], runningZ, u, c)
        storeInputGradient(u, features: s.queryFeatures + i * s.cp, count: task.shape.headDim, map: task.featureMap,
                           into: task.queryGradient!, row: r0 + i, accumulate: false)
    }
}

/// G += φ(Q_c)ᵀ ∂L/∂num, g += φ(Q_c)ᵀ ∂L/∂den.
@inline(__always)
private func advanceStateGradient<T: KernelScalar, Lines: LineFetching>(
    _ s: LinearScratch<T>, _ t: Int, _ c: Int, _ m: Int, prefetch: inout Lines
) {
    chunkProductPrefetching(rows: c, columns: m, depth: t, a: s.queryFeatures, aRowStride: 1, aDepthStride: s.cp,
                            b: s.rowsM, bRowStride: s.mp, c: s.stateGradient, cRowStride: s.mp, accumulate: true,
                            prefetch: &prefetch)
    for i in 0..<t { rowAxpy(s.denominatorGradient[i], s.queryFeatures + i * s.cp, s.normalizerGradient, c) }
}

/// Adds g to ∂L/∂φ(K_c) rows (zeroing padded keys), then stores dk and dv.
@inline(__always)
func storeKeyGradients<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>, _ r0: Int, _ t: Int) {
    let c = task.shape.featureDim, m = task.shape.valueDim
    let accumulate = task.accumulateKeyGradients
    for i in 0..<t {
        let row = s.featureGradient + i * s.cp
        if task.isRealKey(r0 + i) {
            rowAdd(s.normalizerGradient, row, c)
        } else {
            rowZero(row, c)
        }
        storeInputGradient(row, features: s.keyFeatures + i * s.cp, count: task.shape.headDim, map: task.featureMap,
                           into: task.keyGradient!, row: r0 + i, accumulate: accumulate)
        storeRow(s.valueGradient + i * s.mp, count: m, into: task.valueGradient!, row: r0 + i, accumulate: accumulate)
    }
}

private func causalBackward<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>) {
    let n = task.shape.queryCount, c = task.shape.featureDim, m = task.shape.valueDim
    let perPosition = s.perPosition
    // Prefetch the next chunk's rows (the reverse sweep: the previous chunk's) over the chunk's
    // state products: the rows of a long sequence come from memory; the gradients' rows owned.
    let size = MemoryLayout<T>.stride, d = task.shape.headDim
    let prefetching = n * (2 * d + 2 * m) * size >= linearPrefetchMinimumBytes

    // Forward sweep: Sᵀ, z rebuilt chunk by chunk; den, ∂L/∂den and dq per position.
    loadStateTransposed(task.initialState, rows: c, columns: m, into: s.stateT, ld: s.cp)
    loadState(task.initialNormalizer, rows: c, columns: 1, into: s.normalizer, ld: 1)
    var r0 = 0
    while r0 < n {
        let t = min(linearChunkRows, n - r0)
        packQueryChunk(task, s, r0, t)
        packKeyChunk(task, s, r0, t, transposedFeatures: false, transposedValues: true)
        packOutputGradientChunk(task, s, r0, t)
        // den_i = φ(q_i)·z_i + ε with z_i = z + Σ_{j ≤ i} φ(k_j) (running sum in normalizerGradient).
        if task.normalize {
            s.normalizerGradient.update(from: s.normalizer, count: c)
            for i in 0..<t {
                rowAdd(s.keyFeatures + i * s.cp, s.normalizerGradient, c)
                s.denominator[i] = rowDot(s.queryFeatures + i * s.cp, s.normalizerGradient, c) + s.queryEpsilon[i]
            }
            scaleOutputGradients(s, t, m)
        } else {
            for i in 0..<t { s.denominator[i] = 1 }
        }
        let ahead = rowsAfterChunk(ending: r0 + t, chunkRows: linearChunkRows, limit: n, prefetching: prefetching)
        var inputs = LinePrefetch(PrefetchRows(task.query, columns: d, ahead, elementSize: size),
                                  PrefetchRows(task.key, columns: d, ahead, elementSize: size),
                                  PrefetchRows(task.value, columns: m, ahead, elementSize: size))
        var gradients = LinePrefetch(PrefetchRows(task.outputGradient, columns: m, ahead, elementSize: size),
                                     written: PrefetchRows(task.queryGradient, columns: d, ahead, elementSize: size))
        // u = ∂L/∂num Sᵀ + tril(∂L/∂num V_cᵀ) φ(K_c).
        chunkProductPrefetching(rows: t, columns: c, depth: m, a: s.rowsM, aRowStride: s.mp, aDepthStride: 1,
                                b: s.stateT, bRowStride: s.cp, c: s.featureGradient, cRowStride: s.cp,
                                accumulate: false, prefetch: &inputs)
        lowerTriangleProduct(t: t, depth: m, a: s.rowsM, aRowStride: s.mp, aDepthStride: 1,
                             b: s.valuesT, bRowStride: s.tp, c: s.scoreGradient, cRowStride: s.tp, rowAdd: nil)
        lowerDepthProduct(t: t, columns: c, a: s.scoreGradient, aRowStride: s.tp, aDepthStride: 1,
                          b: s.keyFeatures, bRowStride: s.cp, c: s.featureGradient, cRowStride: s.cp, accumulate: true)
        for i in 0..<t {
            let den = s.denominator[i]
            let u = s.featureGradient + i * s.cp
            s.denominatorGradient[i] = task.normalize && den != 0 ? -rowDot(s.queryFeatures + i * s.cp, u, c) / den : 0
        }
        storeQueryGradients(task, s, r0, t, runningZ: s.normalizer, causal: true)
        for i in 0..<t {
            perPosition[2 * (r0 + i)] = s.denominator[i]
            perPosition[2 * (r0 + i) + 1] = s.denominatorGradient[i]
        }
        // Sᵀ += V_cᵀ φ(K_c); z was advanced row by row above.
        chunkProductPrefetching(rows: m, columns: c, depth: t, a: s.values, aRowStride: 1, aDepthStride: s.mp,
                                b: s.keyFeatures, bRowStride: s.cp, c: s.stateT, cRowStride: s.cp, accumulate: true,
                                prefetch: &gradients)
        r0 += t
    }

    // Reverse sweep: G, g carried from the end; ∂L/∂φ(K), dk, dv.
    loadState(task.finalStateGradient, rows: c, columns: m, into: s.stateGradient, ld: s.mp)
    loadState(task.finalNormalizerGradient, rows: c, columns: 1, into: s.normalizerGradient, ld: 1)
    let chunks = (n + linearChunkRows - 1) / linearChunkRows
    for chunk in stride(from: chunks - 1, through: 0, by: -1) {
        let r0 = chunk * linearChunkRows
        let t = min(linearChunkRows, n - r0)
        let ahead = prefetching && chunk > 0 ? r0 - linearChunkRows ..< r0 : r0 ..< r0
        var inputs = LinePrefetch(PrefetchRows(task.query, columns: d, ahead, elementSize: size),
                                  PrefetchRows(task.key, columns: d, ahead, elementSize: size),
                                  PrefetchRows(task.value, columns: m, ahead, elementSize: size))
        var gradients = LinePrefetch(PrefetchRows(task.outputGradient, columns: m, ahead, elementSize: size),
                                     written: PrefetchRows(task.keyGradient, columns: d, ahead, elementSize: size))
        var valueGradients = LinePrefetch(written: PrefetchRows(task.valueGradient, columns: m, ahead, elementSize: size))
        packQueryChunk(task, s, r0, t)
        packKeyChunk(task, s, r0, t, transposedFeatures: true, transposedValues: true)
        packOutputGradientChunk(task, s, r0, t)
        for i in 0..<t {
            s.denominator[i] = perPosition[2 * (r0 + i)]
            s.denominatorGradient[i] = perPosition[2 * (r0 + i) + 1]
        }
        scaleOutputGradients(s, t, m)
        transposeBlock(rows: c, columns: m, s.stateGradient, s.mp, s.stateGradientT, s.cp)
        // scoreGradient = tril(∂L/∂num V_cᵀ + ∂L/∂den 1ᵀ), scores = tril(φ(Q_c) φ(K_c)ᵀ).
        lowerTriangleProduct(t: t, depth: m, a: s.rowsM, aRowStride: s.mp, aDepthStride: 1,
                             b: s.valuesT, bRowStride: s.tp, c: s.scoreGradient, cRowStride: s.tp,
                             rowAdd: s.denominatorGradient)
        lowerTriangleProduct(t: t, depth: c, a: s.queryFeatures, aRowStride: s.cp, aDepthStride: 1,
                             b: s.keyFeaturesT, bRowStride: s.tp, c: s.scores, cRowStride: s.tp, rowAdd: nil)
        // ∂L/∂φ(K_c) = V_c Gᵀ + scoreGradientᵀ φ(Q_c) (+ g below); ∂L/∂V_c = φ(K_c) G + scoresᵀ ∂L/∂num.
        chunkProductPrefetching(rows: t, columns: c, depth: m, a: s.values, aRowStride: s.mp, aDepthStride: 1,
                                b: s.stateGradientT, bRowStride: s.cp, c: s.featureGradient, cRowStride: s.cp,
                                accumulate: false, prefetch: &inputs)
        upperDepthProduct(t: t, columns: c, a: s.scoreGradient, aRowStride: 1, aDepthStride: s.tp,
                          b: s.queryFeatures, bRowStride: s.cp, c: s.featureGradient, cRowStride: s.cp, accumulate: true)
        chunkProductPrefetching(rows: t, columns: m, depth: c, a: s.keyFeatures, aRowStride: s.cp, aDepthStride: 1,
                                b: s.stateGradient, bRowStride: s.mp, c: s.valueGradient, cRowStride: s.mp,
                                accumulate: false, prefetch: &gradients)
        upperDepthProduct(t: t, columns: m, a: s.scores, aRowStride: 1, aDepthStride: s.tp,
                          b: s.rowsM, bRowStride: s.mp, c: s.valueGradient, cRowStride: s.mp, accumulate: true)
        storeKeyGradients(task, s, r0, t)
        advanceStateGradient(s, t, c, m, prefetch: &valueGradients)
    }
    storeState(s.stateGradient, rows: c, columns: m, ld: s.mp, into: task.initialStateGradient)
    storeState(s.normalizerGradient, rows: c, columns: 1, ld: 1, into: task.initialNormalizerGradient)
}

private func nonCausalBackward<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>) {
    let n = task.shape.queryCount, l = task.shape.keyCount
    let c = task.shape.featureDim, m = task.shape.valueDim
    // Sᵀ, z from the initial state (memory) and G, g from the final state's gradient, or the
    // zeros of the carve.
    loadStateTransposed(task.initialState, rows: c, columns: m, into: s.stateT, ld: s.cp)
    loadState(task.initialNormalizer, rows: c, columns: 1, into: s.normalizer, ld: 1)
    loadState(task.finalStateGradient, rows: c, columns: m, into: s.stateGradient, ld: s.mp)
    loadState(task.finalNormalizerGradient, rows: c, columns: 1, into: s.normalizerGradient, ld: 1)
    // Each pass prefetches its next chunk's rows over the chunk's products (the rows of a long
    // sequence come from memory), the gradients' rows owned.
    let size = MemoryLayout<T>.stride, d = task.shape.headDim
    let prefetching = max(n, l) * (2 * d + 2 * m) * size >= linearPrefetchMinimumBytes
    var r0 = 0
    while r0 < l {
        let t = min(linearChunkRows, l - r0)
        packKeyChunk(task, s, r0, t, transposedFeatures: false, transposedValues: false)
        let ahead = rowsAfterChunk(ending: r0 + t, chunkRows: linearChunkRows, limit: l, prefetching: prefetching)
        var prefetch = LinePrefetch(PrefetchRows(task.key, columns: d, ahead, elementSize: size),
                                    PrefetchRows(task.value, columns: m, ahead, elementSize: size))
        advanceStateTransposed(s, t, c, m, prefetch: &prefetch)
        r0 += t
    }
    // Queries: num = φ(Q_c) S, ∂L/∂den_i = −(dO_i·num_i) / den_i² (from the numerator itself: with
    // few keys, G v + g below cancels heavily and needs ∂L/∂den this accurate), u = ∂L/∂num Sᵀ,
    // ∂L/∂φ(q_i) = u_i + z ∂L/∂den_i; G, g sum over every query. S is Sᵀ transposed once.
    transposeBlock(rows: m, columns: c, s.stateT, s.cp, s.stateGradientT, s.mp)
    r0 = 0
    while r0 < n {
        let t = min(linearChunkRows, n - r0)
        packQueryChunk(task, s, r0, t)
        let ahead = rowsAfterChunk(ending: r0 + t, chunkRows: linearChunkRows, limit: n, prefetching: prefetching)
        var inputs = LinePrefetch(PrefetchRows(task.query, columns: d, ahead, elementSize: size),
                                  PrefetchRows(task.outputGradient, columns: m, ahead, elementSize: size))
        var gradients = LinePrefetch(written: PrefetchRows(task.queryGradient, columns: d, ahead, elementSize: size))
        chunkProductPrefetching(rows: t, columns: m, depth: c, a: s.queryFeatures, aRowStride: s.cp, aDepthStride: 1,
                                b: s.stateGradientT, bRowStride: s.mp, c: s.valueGradient, cRowStride: s.mp,
                                accumulate: false, prefetch: &inputs)
        packOutputGradientChunk(task, s, r0, t)
        for i in 0..<t {
            if task.normalize {
                let den = rowDot(s.queryFeatures + i * s.cp, s.normalizer, c) + s.queryEpsilon[i]
                s.denominator[i] = den
                // −(dO·num)/den², divided twice: 1/den² overflows for a subnormal den.
                s.denominatorGradient[i] = den != 0 && den.isFinite
                    ? -rowDot(s.rowsM + i * s.mp, s.valueGradient + i * s.mp, m) / den / den : 0
            } else {
                s.denominator[i] = 1
                s.denominatorGradient[i] = 0
            }
        }
        if task.normalize { scaleOutputGradients(s, t, m) }
        chunkProductPrefetching(rows: t, columns: c, depth: m, a: s.rowsM, aRowStride: s.mp, aDepthStride: 1,
                                b: s.stateT, bRowStride: s.cp, c: s.featureGradient, cRowStride: s.cp,
                                accumulate: false, prefetch: &gradients)
        storeQueryGradients(task, s, r0, t, runningZ: s.normalizer, causal: false)
        var nothing = NoLineFetching()
        advanceStateGradient(s, t, c, m, prefetch: &nothing)
        r0 += t
    }
    // Keys: every key sees the same G, g (stateGradientT held S until here: zero its padding).
    rowZero(s.stateGradientT, c * s.mp)
    keyGradientsFromStateGradient(task, s)
}

/// The key pass of a non-causal backward, where every key sees the same G = s.stateGradient and
/// g = s.normalizerGradient: per key chunk ∂L/∂φ(K_c) = V_c Gᵀ + 1 gᵀ and ∂L/∂V_c = φ(K_c) G;
/// then G, g pass through to ∂L/∂S_0, ∂L/∂z_0. s.stateGradientT's padding must be zero.
func keyGradientsFromStateGradient<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>) {
    let l = task.shape.keyCount, c = task.shape.featureDim, m = task.shape.valueDim
    transposeBlock(rows: c, columns: m, s.stateGradient, s.mp, s.stateGradientT, s.cp)
    // The next chunk's K and V rows (and dv's, owned) over the first product, its dk rows (owned)
    // over the second, for keys that come from memory.
    let size = MemoryLayout<T>.stride, d = task.shape.headDim
    let prefetching = l * (2 * d + 2 * m) * size >= linearPrefetchMinimumBytes
    var r0 = 0
    while r0 < l {
        let t = min(linearChunkRows, l - r0)
        let ahead = rowsAfterChunk(ending: r0 + t, chunkRows: linearChunkRows, limit: l, prefetching: prefetching)
        var inputs = LinePrefetch(PrefetchRows(task.key, columns: d, ahead, elementSize: size),
                                  PrefetchRows(task.value, columns: m, ahead, elementSize: size),
                                  written: PrefetchRows(task.valueGradient, columns: m, ahead, elementSize: size))
        var keyGradients = LinePrefetch(written: PrefetchRows(task.keyGradient, columns: d, ahead, elementSize: size))
        packKeyChunk(task, s, r0, t, transposedFeatures: false, transposedValues: false)
        chunkProductPrefetching(rows: t, columns: c, depth: m, a: s.values, aRowStride: s.mp, aDepthStride: 1,
                                b: s.stateGradientT, bRowStride: s.cp, c: s.featureGradient, cRowStride: s.cp,
                                accumulate: false, prefetch: &inputs)
        chunkProductPrefetching(rows: t, columns: m, depth: c, a: s.keyFeatures, aRowStride: s.cp, aDepthStride: 1,
                                b: s.stateGradient, bRowStride: s.mp, c: s.valueGradient, cRowStride: s.mp,
                                accumulate: false, prefetch: &keyGradients)
        storeKeyGradients(task, s, r0, t)
        r0 += t
    }
    storeState(s.stateGradient, rows: c, columns: m, ld: s.mp, into: task.initialStateGradient)
    storeState(s.normalizerGradient, rows: c, columns: 1, ld: 1, into: task.initialNormalizerGradient)
}

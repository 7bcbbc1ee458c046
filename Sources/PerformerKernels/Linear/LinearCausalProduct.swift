import PerformerKernelInterface

// The causal forward's un-normalized identity form, o_i = Σ_{j ≤ i} (q_i·k_j) v_j + q_iᵀS_0
// (fast-transformers' causal_dot_product), on the caller's rows: with φ the identity there is
// nothing to compute into a panel, so Q and K serve as the micro-kernel's A operands in place
// (it reads A from any strides), V's rows as its B panels and the output's rows as C. Only
// K_cᵀ (the B panel of the intra-chunk scores) is packed. The packing passes this skips were a
// quarter of the causal forward at N = 16384, D = M = 64 (perf; mostly stalled on the loads of
// rows streamed from memory). Same products, same operands, same order: the same bits as the
// packed kernel in LinearForward.swift.

/// The shapes and layouts the in-place form takes: identity features, no denominator, no
/// normalizer to return, every key real, V and output rows whole micro-kernel tiles wide and
/// contiguous (they are B panels and C rows). AVX-512 only: with AVX2's kernels it measured
/// slower at N ≥ 4096 (1 thread, fwd new/old 1.03–1.14 over two A/B runs), faster on AVX-512.
func linearCausalProductRunsInPlace<T: KernelScalar>(_ task: LinearAttentionTask, _: T.Type) -> Bool {
    #if !PERFORMER_ISA_AVX512
    return false
    #else
    let m = task.shape.valueDim, tile = microKernelColumns(T.self)
    guard task.causal, task.featureMap == .identity, !task.normalize, task.denominators == nil,
          task.finalNormalizer == nil, let output = task.output else { return false }
    return task.keyStart <= 0 && task.keyLimit >= task.shape.keyCount && m > 0 && m % tile == 0
        && task.value.columnStride == 1 && output.columnStride == 1
    #endif
}

/// The causal identity product in place (`linearCausalProductRunsInPlace`), with the state S in
/// the scratch as the packed kernel keeps it.
func linearCausalProductInPlace<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>) {
    let n = task.shape.queryCount, c = task.shape.featureDim, m = task.shape.valueDim
    let q = task.query, k = task.key, v = task.value, out = task.output!
    let qBase = q.base.assumingMemoryBound(to: T.self), kBase = k.base.assumingMemoryBound(to: T.self)
    let vBase = v.base.assumingMemoryBound(to: T.self), outBase = out.base.assumingMemoryBound(to: T.self)
    // Prefetch the next chunk's Q, K and V rows over this chunk's two state products (the
    // rows come from memory at large N), for heads that do not stay cached between calls.
    let size = MemoryLayout<T>.stride
    let prefetching = n * (2 * c + m) * size >= linearPrefetchMinimumBytes
    var r0 = 0
    while r0 < n {
        let t = min(s.rows, n - r0)
        let qc = qBase + r0 * q.rowStride, kc = kBase + r0 * k.rowStride
        let vc = vBase + r0 * v.rowStride, oc = outBase + r0 * out.rowStride
        let ahead = rowsAfterChunk(ending: r0 + t, chunkRows: s.rows, limit: n, prefetching: prefetching)
        var lines = LinePrefetch(PrefetchRows(q, columns: c, ahead, elementSize: size),
                                 PrefetchRows(k, columns: c, ahead, elementSize: size),
                                 PrefetchRows(v, columns: m, ahead, elementSize: size),
                                 written: PrefetchRows(out, columns: m, ahead, elementSize: size))
        // Q_c S into the output rows, the triangle, then S += K_cᵀ V_c; the prefetch shared by the
        // two state products.
        chunkProductPrefetching(rows: t, columns: m, depth: c, a: qc, aRowStride: q.rowStride,
                                aDepthStride: q.columnStride, b: s.state, bRowStride: s.mp, c: oc,
                                cRowStride: out.rowStride, accumulate: false, prefetch: &lines,
                                laterTiles: productTiles(rows: c, columns: m, T.self))
        // K_cᵀ: its columns t ..< T keep older values, which only land in masked scores.
        if k.columnStride == 1 {
            transposeBlock(rows: t, columns: c, kc, k.rowStride, s.keyFeaturesT, s.tp)
        } else {
            for f in 0..<c {
                let row = s.keyFeaturesT + f * s.tp, column = kc + f * k.columnStride
                for j in 0..<t { row[j] = column[j * k.rowStride] }
            }
        }
        lowerTriangleProduct(t: t, depth: c, a: qc, aRowStride: q.rowStride, aDepthStride: q.columnStride,
                             b: s.keyFeaturesT, bRowStride: s.tp, c: s.scores, cRowStride: s.tp, rowAdd: nil)
        lowerDepthProduct(t: t, columns: m, a: s.scores, aRowStride: s.tp, aDepthStride: 1,
                          b: vc, bRowStride: v.rowStride, c: oc, cRowStride: out.rowStride, accumulate: true)
        chunkProductPrefetching(rows: c, columns: m, depth: t, a: kc, aRowStride: k.columnStride,
                                aDepthStride: k.rowStride, b: vc, bRowStride: v.rowStride, c: s.state,
                                cRowStride: s.mp, accumulate: true, prefetch: &lines)
        r0 += t
    }
}

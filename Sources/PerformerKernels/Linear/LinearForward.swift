import CPerformerKernelIntrinsics
import PerformerKernelInterface

// Forward of one query head, causal (chunked, state carried across chunks) or not
// (state over all keys first, then every query against it). Per causal chunk:
//   num = φ(Q_c) S + tril(φ(Q_c) φ(K_c)ᵀ) V_c,  den_i = φ(q_i)·z + rowsum_i(tril(...)) + ε,
// then S += φ(K_c)ᵀ V_c, z += colsum φ(K_c); the triangle is computed tile by tile (about half).
// Un-normalized (`normalize` false), the output is num itself. Both forms start from the
// initial state when given and can return the final state (non-causal: S_0 plus all keys).
// Small problems without a state run the direct form instead (LinearForwardDirect.swift).

func linearForward<T: KernelScalar>(_ taskPointer: UnsafePointer<LinearAttentionTask>, _: T.Type) {
    let task = taskPointer.pointee
    if task.direct { return linearForwardDirect(task, T.self) }
    let n = task.shape.queryCount, l = task.shape.keyCount
    let c = task.shape.featureDim, m = task.shape.valueDim
    let causal = task.causal
    var bytes = 0
    let s = LinearScratch<T>(base: task.scratch, shape: task.shape, causal: causal, backward: false, bytes: &bytes)
    let normalize = task.normalize
    // The denominator is needed to divide by, or to be returned.
    let needsDenominator = normalize || task.denominators != nil
    loadState(task.initialState, rows: c, columns: m, into: s.state, ld: s.mp)
    loadState(task.initialNormalizer, rows: c, columns: 1, into: s.normalizer, ld: 1)

    if linearCausalProductRunsInPlace(task, T.self) {
        linearCausalProductInPlace(task, s)
        storeState(s.state, rows: c, columns: m, ld: s.mp, into: task.finalState)
        return
    }
    let size = MemoryLayout<T>.stride, d = task.shape.headDim
    // Prefetch only a head whose inputs do not stay cached between calls (below that the tile-
    // by-tile products cost more than they hide: N = 256, D = M = 64 measured 1-1.6% slower).
    let prefetching = max(n, l) * (2 * d + m) * size >= linearPrefetchMinimumBytes
    func ahead(_ r0: Int, _ t: Int, _ limit: Int) -> Range<Int> {
        rowsAfterChunk(ending: r0 + t, chunkRows: s.rows, limit: limit, prefetching: prefetching)
    }
    if !causal {
        // The product's B panel is V_c itself when its rows are whole micro-kernel tiles of
        // contiguous values (no padding column to read): no copy of V.
        let v = task.value, directValues = v.columnStride == 1 && m % microKernelColumns(T.self) == 0
        var r0 = 0
        while r0 < l {
            let t = min(s.rows, l - r0)
            let next = ahead(r0, t, l)
            // The next chunk's K and V rows a line at a time from inside the product's tiles.
            var lines = LinePrefetch(PrefetchRows(task.key, columns: d, next, elementSize: size),
                                     PrefetchRows(v, columns: m, next, elementSize: size))
            if directValues {
                packKeyChunk(task, s, r0, t, transposedFeatures: false, transposedValues: false, values: false)
                advanceState(s, t, c, m, values: v.base.assumingMemoryBound(to: T.self) + r0 * v.rowStride,
                             valueRowStride: v.rowStride, prefetch: &lines)
            } else {
                packKeyChunk(task, s, r0, t, transposedFeatures: false, transposedValues: false)
                advanceState(s, t, c, m, values: s.values, valueRowStride: s.mp, prefetch: &lines)
            }
            r0 += t
        }
    }
    let w = T.lanes
    let streaming = linearStreamsOutput(task, s)
    defer { if streaming { pkernel_streaming_fence() } }
    var r0 = 0
    while r0 < n {
        let t = min(s.rows, n - r0)
        packQueryChunk(task, s, r0, t)
        // The next chunk's rows (causal: its keys and values too), a line at a time from inside
        // this chunk's state products.
        let next = ahead(r0, t, n)
        var lines = LinePrefetch(PrefetchRows(task.query, columns: d, next, elementSize: size),
                                 PrefetchRows(causal ? task.key : nil, columns: d, next, elementSize: size),
                                 PrefetchRows(causal ? task.value : nil, columns: m, next, elementSize: size))
        // φ(Q_c) S, leaving a share of the lines to the causal S += φ(K_c)ᵀ V_c at the end.
        chunkProductPrefetching(rows: t, columns: m, depth: c, a: s.queryFeatures, aRowStride: s.cp,
                                aDepthStride: 1, b: s.state, bRowStride: s.mp, c: s.rowsM, cRowStride: s.mp,
                                accumulate: false, prefetch: &lines,
                                laterTiles: causal ? productTiles(rows: c, columns: m, T.self) : 0)
        if causal {
            packKeyChunk(task, s, r0, t, transposedFeatures: true, transposedValues: false)
            lowerTriangleProduct(t: t, depth: c, a: s.queryFeatures, aRowStride: s.cp, aDepthStride: 1,
                                 b: s.keyFeaturesT, bRowStride: s.tp, c: s.scores, cRowStride: s.tp, rowAdd: nil)
            lowerDepthProduct(t: t, columns: m, a: s.scores, aRowStride: s.tp, aDepthStride: 1,
                              b: s.values, bRowStride: s.mp, c: s.rowsM, cRowStride: s.mp, accumulate: true)
        }
        // φ(q_i)·z for the chunk's rows into `denominator`; then (streaming) each row's den there,
        // and the chunk divided and stored in one pass.
        if needsDenominator {
            chunkRowDots(s.queryFeatures, rowStride: s.cp, s.normalizer, c, rows: t, into: s.denominator)
        }
        // Non-causal and nothing else to write per row: den = φ(q_i)·z + ε on whole vectors.
        let rowLoop = !streaming || causal || task.denominators != nil
        if !rowLoop { rowAdd(s.queryEpsilon, s.denominator, t) }
        for i in 0..<t where rowLoop {
            let row = s.rowsM + i * s.mp
            if needsDenominator {
                var den = s.denominator[i]
                // Row i of the masked scores is written up to the vector holding column i.
                if causal { den += rowSum(s.scores + i * s.tp, (i / w + 1) * w) }
                if let denominators = task.denominators {
                    // In the caller's units (a shifted row's den is e^{−x_max} times it).
                    let shift = s.queryShift[i]
                    denominators.base.assumingMemoryBound(to: T.self)[(r0 + i) * denominators.rowStride] =
                        shift == 0 ? den : T(Double(den) * LibM.exp(Double(shift)))
                }
                if normalize {
                    den += s.queryEpsilon[i]
                    if streaming {
                        s.denominator[i] = den
                        continue
                    }
                    divideRow(row, by: den, m)
                }
            }
            storeRow(row, count: m, into: task.output!, row: r0 + i, accumulate: false)
        }
        if streaming { storeNormalizedChunk(s, t: t, task, firstRow: r0) }
        if causal { advanceState(s, t, c, m, values: s.values, valueRowStride: s.mp, prefetch: &lines) }
        r0 += t
    }
    storeState(s.state, rows: c, columns: m, ld: s.mp, into: task.finalState)
    storeState(s.normalizer, rows: c, columns: 1, ld: 1, into: task.finalNormalizer)
}

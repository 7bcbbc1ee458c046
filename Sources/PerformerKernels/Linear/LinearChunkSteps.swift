import PerformerKernelInterface

// The pieces one chunk of t ≤ T rows goes through, shared by the causal and non-causal kernels,
// forward and backward (ALGORITHMS.md §2 "Fast form"). Every O(t·C·M) or O(t²·max(C, M)) step
// is a `chunkProduct`; the rest is O(t · max(C, M)).

/// φ(Q_c) for query rows r0 ..< r0 + t.
@inline(__always)
func packQueryChunk<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>, _ r0: Int, _ t: Int) {
    let d = task.shape.headDim
    for i in 0..<t {
        packFeatures(task.query, row: r0 + i, count: d, map: task.featureMap, into: s.queryFeatures + i * s.cp)
    }
}

/// φ(K_c) (and its transpose) and V_c (and, when `transposedValues`, its transpose) for key rows
/// r0 ..< r0 + t. A padded key (row ≥ keyLimit) gets φ(k) = 0 — never v = 0, which would leave
/// elu+1's φ(0) = 1 in the denominator — so it adds nothing to S or z. In a partial chunk the
/// transposed panels' columns t ..< T are zeroed, so whole-tile products read zeros there.
@inline(__always)
func packKeyChunk<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>, _ r0: Int, _ t: Int,
                                          transposedValues: Bool) {
    let d = task.shape.headDim, c = task.shape.featureDim, m = task.shape.valueDim
    for i in 0..<t {
        let features = s.keyFeatures + i * s.cp
        if r0 + i < task.keyLimit {
            packFeatures(task.key, row: r0 + i, count: d, map: task.featureMap, into: features)
        } else {
            for f in 0..<c { features[f] = 0 }
        }
        packRow(task.value, row: r0 + i, count: m, into: s.values + i * s.mp)
    }
    transposeBlock(rows: t, columns: c, s.keyFeatures, s.cp, s.keyFeaturesT, s.tp)
    if transposedValues { transposeBlock(rows: t, columns: m, s.values, s.mp, s.valuesT, s.tp) }
    if t < linearChunkRows {
        for f in 0..<c { for i in t..<linearChunkRows { s.keyFeaturesT[f * s.tp + i] = 0 } }
        if transposedValues { for j in 0..<m { for i in t..<linearChunkRows { s.valuesT[j * s.tp + i] = 0 } } }
    }
}

/// dO_c for rows r0 ..< r0 + t.
@inline(__always)
func packOutputGradientChunk<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>, _ r0: Int, _ t: Int) {
    let m = task.shape.valueDim
    for i in 0..<t { packRow(task.outputGradient!, row: r0 + i, count: m, into: s.outputGradient + i * s.mp) }
}

/// scores = tril(φ(Q_c) φ(K_c)ᵀ).
@inline(__always)
func chunkScores<T: KernelScalar>(_ s: LinearScratch<T>, _ t: Int, _ c: Int) {
    chunkProduct(rows: t, columns: t, depth: c, a: s.queryFeatures, aRowStride: s.cp, aDepthStride: 1,
                 b: s.keyFeaturesT, bRowStride: s.tp, c: s.scores, cRowStride: s.tp, accumulate: false)
    keepLowerTriangle(s.scores, t, s.tp)
}

/// rowsM = φ(Q_c) S [+ scores V_c]; denominator = φ(Q_c) z [+ rowsum(scores)] + ε. The bracketed
/// intra-chunk terms are formed when `causal`; non-causal, the state already holds every key.
@inline(__always)
func chunkNumerator<T: KernelScalar>(_ s: LinearScratch<T>, _ t: Int, _ c: Int, _ m: Int, causal: Bool, epsilon: T) {
    chunkProduct(rows: t, columns: m, depth: c, a: s.queryFeatures, aRowStride: s.cp, aDepthStride: 1,
                 b: s.state, bRowStride: s.mp, c: s.rowsM, cRowStride: s.mp, accumulate: false)
    for i in 0..<t {
        let row = s.queryFeatures + i * s.cp
        var sum: T = 0
        for f in 0..<c { sum += row[f] * s.normalizer[f] }
        s.denominator[i] = sum
    }
    if causal {
        chunkScores(s, t, c)
        chunkProduct(rows: t, columns: m, depth: t, a: s.scores, aRowStride: s.tp, aDepthStride: 1,
                     b: s.values, bRowStride: s.mp, c: s.rowsM, cRowStride: s.mp, accumulate: true)
        for i in 0..<t {
            var sum: T = 0
            for j in 0...i { sum += s.scores[i * s.tp + j] }
            s.denominator[i] += sum
        }
    }
    for i in 0..<t { s.denominator[i] += epsilon }
}

/// S += φ(K_c)ᵀ V_c, z += colsum φ(K_c).
@inline(__always)
func advanceState<T: KernelScalar>(_ s: LinearScratch<T>, _ t: Int, _ c: Int, _ m: Int) {
    chunkProduct(rows: c, columns: m, depth: t, a: s.keyFeatures, aRowStride: 1, aDepthStride: s.cp,
                 b: s.values, bRowStride: s.mp, c: s.state, cRowStride: s.mp, accumulate: true)
    for i in 0..<t {
        let row = s.keyFeatures + i * s.cp
        for f in 0..<c { s.normalizer[f] += row[f] }
    }
}

/// Given the numerator (rowsM) and denominator of row i and dO_i, turns rowsM into
/// ∂L/∂num_i = dO_i / den_i and returns ∂L/∂den_i = −(dO_i · o_i) / den_i. A zero denominator
/// (ε = 0 and no feature mass) gave a zero output row, so its gradients are zero too.
@inline(__always)
func rowGradients<T: KernelScalar>(_ s: LinearScratch<T>, row i: Int, _ m: Int) -> T {
    let den = s.denominator[i]
    let numerator = s.rowsM + i * s.mp, dO = s.outputGradient + i * s.mp
    guard den != 0 else {
        for j in 0..<m { numerator[j] = 0 }
        return 0
    }
    let inverse = 1 / den
    var dot: T = 0
    for j in 0..<m {
        dot += dO[j] * numerator[j]
        numerator[j] = dO[j] * inverse
    }
    return -dot * inverse * inverse
}

/// scoreGradient = tril(∂L/∂num Vᵀ + ∂L/∂den 1ᵀ): the gradient of the loss with respect to the
/// chunk's masked scores φ(q_i)ᵀφ(k_j), j ≤ i.
@inline(__always)
func chunkScoreGradient<T: KernelScalar>(_ s: LinearScratch<T>, _ t: Int, _ m: Int) {
    chunkProduct(rows: t, columns: t, depth: m, a: s.rowsM, aRowStride: s.mp, aDepthStride: 1,
                 b: s.valuesT, bRowStride: s.tp, c: s.scoreGradient, cRowStride: s.tp, accumulate: false)
    for i in 0..<t {
        let dden = s.denominatorGradient[i]
        for j in 0...i { s.scoreGradient[i * s.tp + j] += dden }
    }
    keepLowerTriangle(s.scoreGradient, t, s.tp)
}

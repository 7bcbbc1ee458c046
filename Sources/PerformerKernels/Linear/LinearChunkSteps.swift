import PerformerKernelInterface

// The pieces one chunk of T rows goes through, shared by the causal and non-causal kernels,
// forward and backward (ALGORITHMS.md §2 "Fast form").

/// φ(Q_c) for query rows r0 ..< r0 + t.
@inline(__always)
func packQueryChunk<T: BinaryFloatingPoint>(_ task: LinearAttentionTask, _ s: LinearScratch<T>, _ r0: Int, _ t: Int) {
    let d = task.shape.headDim, c = task.shape.featureDim
    for i in 0..<t {
        packFeatures(task.query, row: r0 + i, count: d, map: task.featureMap, into: s.queryFeatures + i * c)
    }
}

/// φ(K_c) and V_c for key rows r0 ..< r0 + t. A padded key (row ≥ keyLimit) gets φ(k) = 0 — never
/// v = 0, which would leave elu+1's φ(0) = 1 in the denominator — so it adds nothing to S or z.
@inline(__always)
func packKeyChunk<T: BinaryFloatingPoint>(_ task: LinearAttentionTask, _ s: LinearScratch<T>, _ r0: Int, _ t: Int) {
    let d = task.shape.headDim, c = task.shape.featureDim, m = task.shape.valueDim
    for i in 0..<t {
        let features = s.keyFeatures + i * c
        if r0 + i < task.keyLimit {
            packFeatures(task.key, row: r0 + i, count: d, map: task.featureMap, into: features)
        } else {
            for f in 0..<c { features[f] = 0 }
        }
        packRow(task.value, row: r0 + i, count: m, into: s.values + i * m)
    }
}

/// dO_c for rows r0 ..< r0 + t.
@inline(__always)
func packOutputGradientChunk<T: BinaryFloatingPoint>(_ task: LinearAttentionTask, _ s: LinearScratch<T>, _ r0: Int, _ t: Int) {
    let m = task.shape.valueDim
    for i in 0..<t { packRow(task.outputGradient!, row: r0 + i, count: m, into: s.outputGradient + i * m) }
}

/// scores = tril(φ(Q_c) φ(K_c)ᵀ); rowsM = φ(Q_c) S + scores V_c; denominator = φ(Q_c) z +
/// rowsum(scores) + ε. With `causal` false (non-causal: the state already holds every key)
/// only the state terms are formed.
@inline(__always)
func chunkNumerator<T: BinaryFloatingPoint>(_ s: LinearScratch<T>, _ t: Int, _ c: Int, _ m: Int, causal: Bool, epsilon: T) {
    let tt = linearChunkRows
    chunkProductNN(t, m, c, s.queryFeatures, c, s.state, m, s.rowsM, m, accumulate: false)
    chunkProductNN(t, 1, c, s.queryFeatures, c, s.normalizer, 1, s.denominator, 1, accumulate: false)
    if causal {
        chunkProductNT(t, t, c, s.queryFeatures, c, s.keyFeatures, c, s.scores, tt, accumulate: false)
        keepLowerTriangle(s.scores, t, tt)
        chunkProductNN(t, m, t, s.scores, tt, s.values, m, s.rowsM, m, accumulate: true)
        for i in 0..<t {
            var sum: T = 0
            for j in 0...i { sum += s.scores[i * tt + j] }
            s.denominator[i] += sum
        }
    }
    for i in 0..<t { s.denominator[i] += epsilon }
}

/// S += φ(K_c)ᵀ V_c, z += colsum φ(K_c).
@inline(__always)
func advanceState<T: BinaryFloatingPoint>(_ s: LinearScratch<T>, _ t: Int, _ c: Int, _ m: Int) {
    chunkProductTN(c, m, t, s.keyFeatures, c, s.values, m, s.state, m, accumulate: true)
    for i in 0..<t {
        let row = s.keyFeatures + i * c
        for f in 0..<c { s.normalizer[f] += row[f] }
    }
}

/// Given the numerator (rowsM) and denominator of row i and dO_i, turns rowsM into
/// ∂L/∂num_i = dO_i / den_i and returns ∂L/∂den_i = −(dO_i · o_i) / den_i. A zero denominator
/// (ε = 0 and no feature mass) gave a zero output row, so its gradients are zero too.
@inline(__always)
func rowGradients<T: BinaryFloatingPoint>(_ s: LinearScratch<T>, row i: Int, _ m: Int) -> T {
    let den = s.denominator[i]
    let numerator = s.rowsM + i * m, dO = s.outputGradient + i * m
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
func chunkScoreGradient<T: BinaryFloatingPoint>(_ s: LinearScratch<T>, _ t: Int, _ m: Int) {
    let tt = linearChunkRows
    chunkProductNT(t, t, m, s.rowsM, m, s.values, m, s.scoreGradient, tt, accumulate: false)
    for i in 0..<t {
        let dden = s.denominatorGradient[i]
        for j in 0...i { s.scoreGradient[i * tt + j] += dden }
    }
    keepLowerTriangle(s.scoreGradient, t, tt)
}

import PerformerKernelInterface

// The packing every chunk of t ≤ T rows goes through, shared by the causal and non-causal
// kernels, forward and backward (ALGORITHMS.md §2 "Fast form"). The products and the per-row
// arithmetic are in LinearForward.swift and LinearBackward.swift.

/// φ(Q_c) for query rows r0 ..< r0 + t, each in its own units (`shiftQueryFeatures`), with ε
/// in those units in `queryEpsilon`.
@inline(__always)
func packQueryChunk<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>, _ r0: Int, _ t: Int) {
    let d = task.shape.headDim
    for i in 0..<t {
        let features = s.queryFeatures + i * s.cp
        packFeatures(task.query, row: r0 + i, count: d, map: task.featureMap, into: features)
        (s.queryEpsilon[i], s.queryShift[i]) = shiftQueryFeatures(
            task.query, row: r0 + i, count: d, map: task.featureMap, normalize: task.normalize, epsilon: task.epsilon,
            features: features)
    }
}

/// Normalized elu+1 attention is invariant under scaling a query's features (ε scaled alike):
/// o = φS/(φz + ε) = φ′S/(φ′z + ε·e^{−x_max}) with φ′ = e^{−x_max}·φ. When every feature of a
/// query is tiny (all x_f < −22: φ = e^x < 2⁻³²), the products φ·S, φ·z are subnormal or 0
/// (q = (−100, −100) gave inf instead of v); the row then uses φ′ = exp(x − x_max) ≤ 1, one
/// entry 1, and ε′ = ε·e^{−x_max} (+inf when that overflows: the row's output is then below
/// the underflow threshold, and 0). Other rows are untouched. Returns the row's ε′ and x_max
/// (ε and 0 for a row left as it was).
@inline(__always)
func shiftQueryFeatures<T: KernelScalar>(_ source: StridedMatrix, row: Int, count: Int, map: LinearFeatureKind,
                                         normalize: Bool, epsilon: Double, features: UnsafeMutablePointer<T>)
    -> (epsilon: T, shift: T) {
    guard normalize, map == .eluPlusOne, count > 0 else { return (T(epsilon), 0) }
    // Any feature ≥ 2⁻³² (NaN never counts) leaves the row as it is: usually the first one, so
    // the common row costs one compare instead of a max over every feature.
    for f in 0..<count where features[f] >= T(0x1p-32) { return (T(epsilon), 0) }
    packRow(source, row: row, count: count, into: features)
    var top = -T.infinity
    for f in 0..<count { top = max(top, features[f]) }
    guard top.isFinite else {  // −inf everywhere (or NaN): φ as computed
        packFeatures(source, row: row, count: count, map: map, into: features)
        return (T(epsilon), 0)
    }
    for f in 0..<count { features[f] = linearExp(features[f] - top) }
    return (epsilon > 0 ? T(LibM.exp(LibM.log(epsilon) - Double(top))) : 0, top)
}

/// φ(K_c) and V_c (unless `values` is false) for key rows r0 ..< r0 + t, plus φ(K_c)ᵀ and V_cᵀ when asked (the B panels of
/// the chunk's A·Bᵀ products; their columns t ..< T keep older values, which only ever land in
/// masked entries of a triangular product). A padded key (row ≥ keyLimit or < keyStart) gets φ(k) = 0 — never
/// v = 0, which would leave elu+1's φ(0) = 1 in the denominator — so it adds nothing to S or z.
@inline(__always)
func packKeyChunk<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>, _ r0: Int, _ t: Int,
                                   transposedFeatures: Bool, transposedValues: Bool, values: Bool = true) {
    let c = task.shape.featureDim, m = task.shape.valueDim
    for i in 0..<t {
        packKeyFeatureRow(task, s, r0, i)
        if values { packRow(task.value, row: r0 + i, count: m, into: s.values + i * s.mp) }
    }
    if transposedFeatures { transposeBlock(rows: t, columns: c, s.keyFeatures, s.cp, s.keyFeaturesT, s.tp) }
    if transposedValues { transposeBlock(rows: t, columns: m, s.values, s.mp, s.valuesT, s.tp) }
}

/// Row i of φ(K_c) (key r0 + i): its features, or zeros for a padded key.
@inline(__always)
func packKeyFeatureRow<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>, _ r0: Int, _ i: Int) {
    let features = s.keyFeatures + i * s.cp
    if task.isRealKey(r0 + i) {
        packFeatures(task.key, row: r0 + i, count: task.shape.headDim, map: task.featureMap, into: features)
    } else {
        rowZero(features, task.shape.featureDim)
    }
}

/// dO_c for rows r0 ..< r0 + t, into `rowsM` (scaled there into ∂L/∂num by the caller).
@inline(__always)
func packOutputGradientChunk<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>, _ r0: Int, _ t: Int) {
    let m = task.shape.valueDim
    for i in 0..<t { packRow(task.outputGradient!, row: r0 + i, count: m, into: s.rowsM + i * s.mp) }
}

/// S += φ(K_c)ᵀ V_c, z += colsum φ(K_c) (the forward's row-major state).
@inline(__always)
func advanceState<T: KernelScalar>(_ s: LinearScratch<T>, _ t: Int, _ c: Int, _ m: Int) {
    chunkProduct(rows: c, columns: m, depth: t, a: s.keyFeatures, aRowStride: 1, aDepthStride: s.cp,
                 b: s.values, bRowStride: s.mp, c: s.state, cRowStride: s.mp, accumulate: true)
    addColumnSums(s.keyFeatures, rowStride: s.cp, rows: t, into: s.normalizer, c)
}

/// `advanceState` with the next chunk's rows prefetched between the product's tiles, and V_c
/// read from `values` (row stride `valueRowStride`: the packed panel, or the caller's rows).
@inline(__always)
func advanceState<T: KernelScalar, Lines: LineFetching>(_ s: LinearScratch<T>, _ t: Int, _ c: Int, _ m: Int,
                                                        values: UnsafePointer<T>, valueRowStride: Int,
                                                        prefetch: inout Lines) {
    chunkProductPrefetching(rows: c, columns: m, depth: t, a: s.keyFeatures, aRowStride: 1, aDepthStride: s.cp,
                            b: values, bRowStride: valueRowStride, c: s.state, cRowStride: s.mp, accumulate: true,
                            prefetch: &prefetch)
    addColumnSums(s.keyFeatures, rowStride: s.cp, rows: t, into: s.normalizer, c)
}

/// Sᵀ += V_cᵀ φ(K_c), z += colsum φ(K_c) (the backward keeps Sᵀ: it multiplies ∂L/∂num by Sᵀ).
@inline(__always)
func advanceStateTransposed<T: KernelScalar, Lines: LineFetching>(_ s: LinearScratch<T>, _ t: Int, _ c: Int, _ m: Int,
                                                                  prefetch: inout Lines) {
    chunkProductPrefetching(rows: m, columns: c, depth: t, a: s.values, aRowStride: 1, aDepthStride: s.mp,
                            b: s.keyFeatures, bRowStride: s.cp, c: s.stateT, cRowStride: s.cp, accumulate: true,
                            prefetch: &prefetch)
    addColumnSums(s.keyFeatures, rowStride: s.cp, rows: t, into: s.normalizer, c)
}

/// y[k] += Σ_{i < rows} x[i·rowStride + k] over k < count, adding the rows in order (the bits of
/// `rows` rowAdd calls) with each vector of y held in a register across the rows instead of
/// stored and reloaded per row.
@inline(__always)
func addColumnSums<T: KernelScalar>(_ x: UnsafePointer<T>, rowStride: Int, rows: Int,
                                    into y: UnsafeMutablePointer<T>, _ count: Int) {
    let w = T.lanes
    var k = 0
    while k + w <= count {
        var sum = T.load(y + k)
        for i in 0..<rows { sum = T.add(sum, T.load(x + i * rowStride + k)) }
        T.store(sum, y + k)
        k += w
    }
    while k < count {
        var sum = y[k]
        for i in 0..<rows { sum += x[i * rowStride + k] }
        y[k] = sum
        k += 1
    }
}

extension LinearAttentionTask {
    /// Key row j is real (not padding): keyStart ≤ j < keyLimit.
    @inline(__always)
    func isRealKey(_ j: Int) -> Bool { j < keyLimit && j >= keyStart }
}

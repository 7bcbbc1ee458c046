import PerformerKernelInterface

// The packing every chunk of t ≤ T rows goes through, shared by the causal and non-causal
// kernels, forward and backward (ALGORITHMS.md §2 "Fast form"). The products and the per-row
// arithmetic are in LinearForward.swift and LinearBackward.swift.

/// φ(Q_c) for query rows r0 ..< r0 + t.
@inline(__always)
func packQueryChunk<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>, _ r0: Int, _ t: Int) {
    let d = task.shape.headDim
    for i in 0..<t {
        packFeatures(task.query, row: r0 + i, count: d, map: task.featureMap, into: s.queryFeatures + i * s.cp)
    }
}

/// φ(K_c) and V_c for key rows r0 ..< r0 + t, plus φ(K_c)ᵀ and V_cᵀ when asked (the B panels of
/// the chunk's A·Bᵀ products; their columns t ..< T keep older values, which only ever land in
/// masked entries of a triangular product). A padded key (row ≥ keyLimit or < keyStart) gets φ(k) = 0 — never
/// v = 0, which would leave elu+1's φ(0) = 1 in the denominator — so it adds nothing to S or z.
@inline(__always)
func packKeyChunk<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>, _ r0: Int, _ t: Int,
                                   transposedFeatures: Bool, transposedValues: Bool) {
    let d = task.shape.headDim, c = task.shape.featureDim, m = task.shape.valueDim
    for i in 0..<t {
        let features = s.keyFeatures + i * s.cp
        if task.isRealKey(r0 + i) {
            packFeatures(task.key, row: r0 + i, count: d, map: task.featureMap, into: features)
        } else {
            rowZero(features, c)
        }
        packRow(task.value, row: r0 + i, count: m, into: s.values + i * s.mp)
    }
    if transposedFeatures { transposeBlock(rows: t, columns: c, s.keyFeatures, s.cp, s.keyFeaturesT, s.tp) }
    if transposedValues { transposeBlock(rows: t, columns: m, s.values, s.mp, s.valuesT, s.tp) }
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
    for i in 0..<t { rowAdd(s.keyFeatures + i * s.cp, s.normalizer, c) }
}

/// Sᵀ += V_cᵀ φ(K_c), z += colsum φ(K_c) (the backward keeps Sᵀ: it multiplies ∂L/∂num by Sᵀ).
@inline(__always)
func advanceStateTransposed<T: KernelScalar>(_ s: LinearScratch<T>, _ t: Int, _ c: Int, _ m: Int) {
    chunkProduct(rows: m, columns: c, depth: t, a: s.values, aRowStride: 1, aDepthStride: s.mp,
                 b: s.keyFeatures, bRowStride: s.cp, c: s.stateT, cRowStride: s.cp, accumulate: true)
    for i in 0..<t { rowAdd(s.keyFeatures + i * s.cp, s.normalizer, c) }
}

extension LinearAttentionTask {
    /// Key row j is real (not padding): keyStart ≤ j < keyLimit.
    @inline(__always)
    func isRealKey(_ j: Int) -> Bool { j < keyLimit && j >= keyStart }
}

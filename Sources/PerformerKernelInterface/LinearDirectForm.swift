// Which linear-attention forwards run the direct form (PerformerKernels' LinearForwardDirect):
// one definition read by PerformerCore, which sets `LinearAttentionTask.direct`, and by every
// kernel build, which sizes its scratch for it.

/// Most keys the direct form takes: its scratch holds every key's φ(k) and v, O(L · (C + M)).
public let linearDirectMaxKeys = 64

/// Direct cost allowed per unit of chunked cost. The chunked kernel's products run on the
/// micro-kernel, the direct form's on row dots and axpys, and the chunked kernel has a fixed
/// cost (panels, the C × M state) that weighs most at small C, M. Measured (1 thread, CPU time
/// per call through Python, direct vs chunked at the same shape, D = M): they break even near
/// a ratio of 0.4 for non-causal N = L at D = 64 (N ≈ 26), 0.5 causal (N ≈ 64), and near 1 at
/// D = 16; 0.4 never picks the slower form there. 1×1×1×64: 12.5 -> 8.8 µs.
public let linearDirectCostRatio = 0.4

/// Whether a forward of this head shape may run the direct form (when it has no state to read
/// or write): at least one query, at most `linearDirectMaxKeys` keys, and N·L·(C + M) (causal:
/// half) at most `linearDirectCostRatio` times the chunked form's (N + L)·C·M.
@inlinable
public func linearDirectFormFits(_ shape: LinearHeadShape, causal: Bool) -> Bool {
    let n = shape.queryCount, l = shape.keyCount
    guard n > 0, l <= linearDirectMaxKeys else { return false }
    let c = Double(max(shape.featureDim, 1)), m = Double(max(shape.valueDim, 1))
    let direct = Double(n) * Double(l) * (c + m) * (causal ? 0.5 : 1)
    return direct <= linearDirectCostRatio * (Double(n) + Double(l)) * c * m
}

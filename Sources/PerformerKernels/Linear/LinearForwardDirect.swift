import PerformerKernelInterface

// The direct form of the forward for small problems: for each query row i, over its real keys j
// (keyStart ≤ j < keyLimit, and j ≤ i when causal),
//   a_ij = φ(q_i)·φ(k_j),  num_i = Σ_j a_ij v_j,  den_i = Σ_j a_ij,  o_i = num_i / (den_i + ε),
// which is the chunked kernel's φ(q_i)ᵀS_i / (φ(q_i)ᵀz_i + ε) summed in another order. It costs
// N·L·(C + M) (about half that causal) against the chunked kernel's (N + L)·C·M on the C × M
// state it builds, zeroes and reads: one query against a few keys (a decode-sized call) is a few
// hundred FMAs instead of 2·C·M. PerformerCore picks it (`task.direct`, LinearDirectForm.swift
// in PerformerKernelInterface) for calls without an initial or final state (those need S).
// The contract is the chunked kernel's: shifted elu+1 rows, ε in the row's units, normalize
// false, denominators in the caller's units, zeros for a row whose denominator is 0.

/// The direct form's scratch: φ(q_i), an output row, then φ(k_j) and v_j of every key, rows
/// padded to 64 bytes. Nothing is zeroed: every value read was written first.
struct LinearDirectScratch<T: KernelScalar> {
    var cp: Int, mp: Int
    var queryFeatures: UnsafeMutablePointer<T>   // C
    var row: UnsafeMutablePointer<T>             // M
    var keyFeatures: UnsafeMutablePointer<T>     // L × cp
    var values: UnsafeMutablePointer<T>          // L × mp

    /// Carves the layout from `base`, or only measures it when `base` is nil.
    init(base: UnsafeMutableRawPointer?, shape: LinearHeadShape, bytes: inout Int) {
        let perLine = 64 / MemoryLayout<T>.stride
        let cp = ScratchSize(max(shape.featureDim, 1)).roundedUp(to: perLine)
        let mp = ScratchSize(max(shape.valueDim, 1)).roundedUp(to: perLine)
        let l = ScratchSize(max(shape.keyCount, 1))
        (self.cp, self.mp) = (cp.value, mp.value)
        var offset: ScratchSize = 0
        func take(_ count: ScratchSize) -> UnsafeMutablePointer<T> {
            defer { offset = offset + count * MemoryLayout<T>.stride }
            guard let base else { return UnsafeMutablePointer(bitPattern: 64)! }  // measuring only
            return (base + offset.value).bindMemory(to: T.self, capacity: count.value)
        }
        queryFeatures = take(cp)
        row = take(mp)
        keyFeatures = take(l * cp)
        values = take(l * mp)
        bytes = offset.value
    }

    static func bytes(shape: LinearHeadShape) -> Int {
        var bytes = 0
        _ = LinearDirectScratch(base: nil, shape: shape, bytes: &bytes)
        return bytes
    }
}

/// Scratch bytes of a forward task: the chunked layout's, or the direct form's when that is
/// larger and the shape may run it.
func linearForwardScratchBytes<T: KernelScalar>(_ shape: LinearHeadShape, causal: Bool, _: T.Type) -> Int {
    let chunked = LinearScratch<T>.bytes(shape: shape, causal: causal, backward: false)
    guard linearDirectFormFits(shape, causal: causal) else { return chunked }
    return max(chunked, LinearDirectScratch<T>.bytes(shape: shape))
}

/// The forward of one query head in the direct form (`task.direct`).
func linearForwardDirect<T: KernelScalar>(_ task: LinearAttentionTask, _: T.Type) {
    let n = task.shape.queryCount, l = task.shape.keyCount
    let d = task.shape.headDim, c = task.shape.featureDim, m = task.shape.valueDim
    var bytes = 0
    let s = LinearDirectScratch<T>(base: task.scratch, shape: task.shape, bytes: &bytes)
    let normalize = task.normalize
    let needsDenominator = normalize || task.denominators != nil
    // The real keys: first ..< end (empty when every key is masked).
    let first = max(task.keyStart, 0), end = max(min(task.keyLimit, l), first)
    for j in first..<end {
        packFeatures(task.key, row: j, count: d, map: task.featureMap, into: s.keyFeatures + j * s.cp)
        packRow(task.value, row: j, count: m, into: s.values + j * s.mp)
    }
    for i in 0..<n {
        packFeatures(task.query, row: i, count: d, map: task.featureMap, into: s.queryFeatures)
        let (epsilon, shift) = shiftQueryFeatures(
            task.query, row: i, count: d, map: task.featureMap, normalize: normalize, epsilon: task.epsilon,
            features: s.queryFeatures)
        rowZero(s.row, m)
        var den: T = 0
        let last = task.causal ? min(end, i + 1) : end
        var j = first
        while j < last {
            let a = rowDot(s.queryFeatures, s.keyFeatures + j * s.cp, c)
            den += a
            rowAxpy(a, s.values + j * s.mp, s.row, m)
            j += 1
        }
        if needsDenominator {
            if let denominators = task.denominators {
                // In the caller's units (a shifted row's den is e^{−x_max} times it).
                denominators.base.assumingMemoryBound(to: T.self)[i * denominators.rowStride] =
                    shift == 0 ? den : T(Double(den) * LibM.exp(Double(shift)))
            }
            if normalize { divideRow(s.row, by: den + epsilon, m) }
        }
        storeRow(s.row, count: m, into: task.output!, row: i, accumulate: false)
    }
}

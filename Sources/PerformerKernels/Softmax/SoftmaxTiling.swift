import PerformerKernelInterface

// Block sizes of the tiled softmax kernels and the masking helpers they share.

/// Query rows per task (forward and backward query pass): a multiple of every micro-kernel
/// tile width (2·lanes ≤ 32), so query lanes fill whole tiles.
let softmaxQueryBlock = 64
/// Keys per inner block: a multiple of 24 (every micro-kernel height divides it).
let softmaxKeyBlock = 144

@inline(__always)
func roundUp(_ x: Int, _ multiple: Int) -> Int { (x + multiple - 1) / multiple * multiple }

extension SoftmaxMasking {
    /// Keys visible to query row `i`, clamped to `0 ... keyCount`.
    @inline(__always)
    func visibleKeys(row i: Int, keyCount: Int) -> Int { Swift.min(visibleKeyCount(row: i), keyCount) }
}

/// Sets Sᵀ[j][i] = −inf where key `keyStart + j` is not visible to query lane i
/// (`visible[i]` keys are), for j < `keyRows`, i < `lanes`; Sᵀ rows are `stride` apart.
@inline(__always)
func maskScoresTransposed<T: KernelScalar>(
    _ scores: UnsafeMutablePointer<T>, stride: Int, keyStart: Int, keyRows: Int,
    visible: UnsafePointer<Int>, lanes: Int
) {
    for i in 0..<lanes {
        let firstMasked = Swift.max(0, visible[i] - keyStart)
        if firstMasked >= keyRows { continue }
        for j in firstMasked..<keyRows { scores[j * stride + i] = -T.infinity }
    }
}

/// The same mask with vector compares: `visible` holds the visible-key counts as T (exact
/// integers: callers use it only while keyCount < 2^(significand bits + 1)), `lanes` a
/// multiple of T.lanes; lanes with count 0 become all −inf.
@inline(__always)
func maskScoresTransposedVector<T: KernelScalar>(
    _ scores: UnsafeMutablePointer<T>, stride: Int, keyStart: Int, keyRows: Int,
    visible: UnsafePointer<T>, lanes: Int
) {
    let negativeInfinity = T.splat(-T.infinity)
    for j in 0..<keyRows {
        let key = T.splat(T(keyStart + j))
        let row = scores + j * stride
        var lane = 0
        while lane < lanes {
            T.store(T.selectLess(key, T.load(visible + lane), T.load(row + lane), negativeInfinity), row + lane)
            lane += T.lanes
        }
    }
}

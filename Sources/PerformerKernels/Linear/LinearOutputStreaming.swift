import CPerformerKernelIntrinsics
import PerformerKernelInterface

/// Output bytes per head from which the forward writes its normalized rows with streaming
/// stores. A long sequence's output is written once and not read back before it has left the
/// caches, so a normal store only adds the read of each line it is about to overwrite. Measured
/// (8 heads, D = M = 64, 1 thread, non-causal, output reused, medians of 41/11 calls, 3 runs):
/// N = 1024 (256 KiB a head) 1.74-1.86 -> 1.91-1.95 ms (slower: that output stays cached),
/// N = 4096 (1 MiB) 8.24-8.33 -> 7.39-7.49 ms, N = 16384 32.3 -> 29.6 ms.
let linearStreamingOutputBytes = 1 << 20

/// Whether `linearForward` streams this task's normalized output: Float, a large output whose
/// rows are one dense block (row stride M, any alignment), and numerator rows in scratch that
/// are dense too (M a multiple of the panel width), so a chunk's rows are one contiguous copy
/// with a scale per row. The caller ends the kernel with `pkernel_streaming_fence()`.
@inline(__always)
func linearStreamsOutput<T: KernelScalar>(_ task: LinearAttentionTask, _ s: LinearScratch<T>) -> Bool {
    guard T.self == Float.self, task.normalize, let out = task.output else { return false }
    let m = task.shape.valueDim
    return out.columnStride == 1 && out.rowStride == m && s.mp == m && m % 16 == 0
        && Int(bitPattern: out.base) % MemoryLayout<Float>.alignment == 0
        && task.shape.queryCount * m * MemoryLayout<Float>.stride >= linearStreamingOutputBytes
}

/// Output rows r0 ..< r0 + t = numerator row i / den_i (`rowsM`, dens in `denominator`), as
/// divideRow then storeRow write them: times the reciprocal when every row's is finite
/// (streamed), else row by row.
@inline(__always)
func storeNormalizedChunk<T: KernelScalar>(_ s: LinearScratch<T>, t: Int, _ task: LinearAttentionTask, firstRow r0: Int) {
    // Float only (`linearStreamsOutput`): the reciprocals on whole vectors, the same IEEE
    // divisions as divideRow's.
    let dens = UnsafeMutableRawPointer(s.denominator).assumingMemoryBound(to: Float.self)
    guard reciprocalsAreFinite(dens, t) else {
        for i in 0..<t {
            divideRow(s.rowsM + i * s.mp, by: s.denominator[i], task.shape.valueDim)
            storeRow(s.rowsM + i * s.mp, count: task.shape.valueDim, into: task.output!, row: r0 + i, accumulate: false)
        }
        return
    }
    storeReciprocals(dens, t)
    streamScaledChunk(s.rowsM, scales: s.denominator, t: t, task, firstRow: r0)
}

/// Whether every x[i] != 0 ? 1 / x[i] : 0 (i < count) is finite.
@inline(__always)
private func reciprocalsAreFinite(_ x: UnsafePointer<Float>, _ count: Int) -> Bool {
    let w = FloatVector.scalarCount
    var i = 0, finite = SIMDMask<FloatVector.MaskStorage>(repeating: true)
    while i + w <= count {
        let den = UnsafeRawPointer(x + i).loadUnaligned(as: FloatVector.self)
        let inverse = (1 / den).replacing(with: 0, where: den .== 0)
        finite .&= (inverse .< .infinity) .& (inverse .> -.infinity)
        i += w
    }
    while i < count {
        let inverse: Float = x[i] != 0 ? 1 / x[i] : 0
        if !inverse.isFinite { return false }
        i += 1
    }
    return all(finite)
}

/// x[i] = x[i] != 0 ? 1 / x[i] : 0 for i < count.
@inline(__always)
private func storeReciprocals(_ x: UnsafeMutablePointer<Float>, _ count: Int) {
    let w = FloatVector.scalarCount
    var i = 0
    while i + w <= count {
        let den = UnsafeRawPointer(x + i).loadUnaligned(as: FloatVector.self)
        UnsafeMutableRawPointer(x + i).storeBytes(of: (1 / den).replacing(with: 0, where: den .== 0), as: FloatVector.self)
        i += w
    }
    while i < count {
        x[i] = x[i] != 0 ? 1 / x[i] : 0
        i += 1
    }
}

/// Output rows r0 ..< r0 + t = scales[i] · numerator row i (`rows`, row stride M = the
/// output's): the 64-byte lines wholly inside the block with streaming stores, the partial
/// lines at its two ends (shared with the neighbouring chunks) with plain ones. A vector may
/// straddle two rows; its lanes then take their own row's scale. Only for a task
/// `linearStreamsOutput` accepted.
@inline(__always)
func streamScaledChunk<T: KernelScalar>(_ rows: UnsafePointer<T>, scales: UnsafePointer<T>, t: Int,
                                        _ task: LinearAttentionTask, firstRow r0: Int) {
    let m = task.shape.valueDim, total = t * m
    let source = UnsafeRawPointer(rows).assumingMemoryBound(to: Float.self)
    let scale = UnsafeRawPointer(scales).assumingMemoryBound(to: Float.self)
    let target = task.output!.base.assumingMemoryBound(to: Float.self) + r0 * m
    // Elements before the first 64-byte boundary, then whole 16-float lines, then the rest.
    let head = Swift.min(total, (16 - (Int(bitPattern: target) & 63) / 4) & 15)
    for e in 0..<head { target[e] = source[e] * scale[e / m] }
    // Vectors start at head + 16k and rows at multiples of M (a multiple of 16), so every vector
    // that straddles two rows has the next row's values in the same lanes, 16 − head ..< 16.
    // (The mask is built once: the compiler compares vector lanes one at a time.)
    let lane = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    let nextRowLanes = lane .>= SIMD16(repeating: Int32(16 - head))
    var e = head, row = head / m, rowEnd = (row + 1) * m
    while e + 16 <= total {
        var factor = SIMD16<Float>(repeating: scale[row])
        if e + 16 > rowEnd { factor.replace(with: SIMD16(repeating: scale[row + 1]), where: nextRowLanes) }
        let value = UnsafeRawPointer(source + e).loadUnaligned(as: SIMD16<Float>.self) * factor
        pkernel_stream_float16(target + e, value)
        e += 16
        if e >= rowEnd {
            row += 1
            rowEnd += m
        }
    }
    while e < total {
        target[e] = source[e] * scale[e / m]
        e += 1
    }
}

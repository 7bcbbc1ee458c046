import Glibc
import PerformerKernelInterface

// Row-at-a-time recomputing backward: P is rebuilt from lse one score at a time, no N × L
// buffer. Correct for every shape; the tiled SIMD kernels replace it for speed.

@inline(__always)
private func dot<T: BinaryFloatingPoint>(_ a: StridedMatrix, _ i: Int, _ b: StridedMatrix, _ j: Int, _ n: Int, as: T.Type) -> T {
    var sum: T = 0
    for c in 0..<n { sum += element(a, i, c, as: T.self) * element(b, j, c, as: T.self) }
    return sum
}

@inline(__always)
private func shifted(_ m: StridedMatrix, heads g: Int, step: Int, elementSize: Int) -> StridedMatrix {
    var moved = m
    moved.base += g * step * elementSize
    return moved
}

/// dQ for query rows of the block: dq_i = s · Σ_j p_ij (dp_ij − δ_i) k_j.
func softmaxBackwardQueryRows<T: BinaryFloatingPoint>(_ task: UnsafePointer<SoftmaxBackwardTask>, _: T.Type) {
    let t = task.pointee
    let d = t.shape.headDim, mDim = t.shape.valueDim
    let scale = T(t.scale)
    let accumulator = t.scratch.bindMemory(to: T.self, capacity: max(d, 1))
    let lse = t.logSumExp.assumingMemoryBound(to: T.self)
    let dq = t.queryGradient.base.assumingMemoryBound(to: T.self)
    for i in t.rowStart..<(t.rowStart + t.rowCount) {
        for c in 0..<d { accumulator[c] = 0 }
        let visible = min(t.masking.visibleKeyCount(row: i), t.shape.keyCount)
        let rowLSE = lse[i * t.logSumExpStride]
        if visible > 0 && rowLSE.isFinite {
            let delta: T = dot(t.outputGradient, i, t.output, i, mDim, as: T.self)
            for j in 0..<visible {
                let p = T(exp(Double(scale * dot(t.query, i, t.key, j, d, as: T.self) - rowLSE)))
                let dp: T = dot(t.outputGradient, i, t.value, j, mDim, as: T.self)
                let ds = p * (dp - delta) * scale
                for c in 0..<d { accumulator[c] += ds * element(t.key, j, c, as: T.self) }
            }
        }
        for c in 0..<d { dq[i * t.queryGradient.rowStride + c * t.queryGradient.columnStride] = accumulator[c] }
    }
}

/// dK, dV for key rows of the block, summed over the query heads of the group:
/// dv_j = Σ_i p_ij do_i,  dk_j = s · Σ_i p_ij (dp_ij − δ_i) q_i.
func softmaxBackwardKeyRows<T: BinaryFloatingPoint>(_ task: UnsafePointer<SoftmaxBackwardTask>, _: T.Type) {
    let t = task.pointee
    let d = t.shape.headDim, mDim = t.shape.valueDim, n = t.shape.queryCount
    let scale = T(t.scale)
    let size = MemoryLayout<T>.stride
    let dkAccumulator = t.scratch.bindMemory(to: T.self, capacity: max(d + mDim, 1))
    let dvAccumulator = dkAccumulator + d
    let dk = t.keyGradient.base.assumingMemoryBound(to: T.self)
    let dv = t.valueGradient.base.assumingMemoryBound(to: T.self)
    for j in t.rowStart..<(t.rowStart + t.rowCount) {
        for c in 0..<(d + mDim) { dkAccumulator[c] = 0 }
        for g in 0..<t.groupSize {
            let q = shifted(t.query, heads: g, step: t.queryHeadStep, elementSize: size)
            let o = shifted(t.output, heads: g, step: t.outputHeadStep, elementSize: size)
            let dO = shifted(t.outputGradient, heads: g, step: t.outputGradientHeadStep, elementSize: size)
            let lse = (t.logSumExp + g * t.logSumExpHeadStep * size).assumingMemoryBound(to: T.self)
            for i in 0..<n where j < min(t.masking.visibleKeyCount(row: i), t.shape.keyCount) {
                let rowLSE = lse[i * t.logSumExpStride]
                guard rowLSE.isFinite else { continue }
                let p = T(exp(Double(scale * dot(q, i, t.key, j, d, as: T.self) - rowLSE)))
                let dp: T = dot(dO, i, t.value, j, mDim, as: T.self)
                let delta: T = dot(dO, i, o, i, mDim, as: T.self)
                let ds = p * (dp - delta) * scale
                for c in 0..<d { dkAccumulator[c] += ds * element(q, i, c, as: T.self) }
                for c in 0..<mDim { dvAccumulator[c] += p * element(dO, i, c, as: T.self) }
            }
        }
        for c in 0..<d { dk[j * t.keyGradient.rowStride + c * t.keyGradient.columnStride] = dkAccumulator[c] }
        for c in 0..<mDim { dv[j * t.valueGradient.rowStride + c * t.valueGradient.columnStride] = dvAccumulator[c] }
    }
}

func makeSoftmaxBackwardKernels() -> SoftmaxBackwardKernels {
    SoftmaxBackwardKernels(
        queryRowBlock: 64, keyRowBlock: 64,
        scratchBytes: { shape, elementSize in max(1, shape.headDim + shape.valueDim) * elementSize },
        queryFloat: { softmaxBackwardQueryRows($0, Float.self) },
        queryDouble: { softmaxBackwardQueryRows($0, Double.self) },
        keyFloat: { softmaxBackwardKeyRows($0, Float.self) },
        keyDouble: { softmaxBackwardKeyRows($0, Double.self) })
}

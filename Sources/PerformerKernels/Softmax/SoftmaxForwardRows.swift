import PerformerKernelInterface
import Glibc

// Row-at-a-time online-softmax forward: one pass over the visible keys per query row,
// no N × L buffer. Correct for every shape; the tiled SIMD kernel replaces it for speed.

@inline(__always)
func element<T: BinaryFloatingPoint>(_ m: StridedMatrix, _ row: Int, _ column: Int, as: T.Type) -> T {
    m.base.assumingMemoryBound(to: T.self)[row * m.rowStride + column * m.columnStride]
}

func softmaxForwardRows<T: BinaryFloatingPoint>(_ task: UnsafePointer<SoftmaxForwardTask>, _: T.Type) {
    let t = task.pointee
    let d = t.shape.headDim, mDim = t.shape.valueDim
    let scale = T(t.scale)
    let accumulator = t.scratch.bindMemory(to: T.self, capacity: mDim)
    let out = t.output.base.assumingMemoryBound(to: T.self)
    for i in t.rowStart..<(t.rowStart + t.rowCount) {
        let visible = min(t.masking.visibleKeyCount(row: i), t.shape.keyCount)
        var runningMax = -T.infinity
        var runningSum: T = 0
        for c in 0..<mDim { accumulator[c] = 0 }
        for j in 0..<visible {
            var s: T = 0
            for c in 0..<d { s += element(t.query, i, c, as: T.self) * element(t.key, j, c, as: T.self) }
            s *= scale
            if s > runningMax {
                let correction = runningMax == -T.infinity ? 0 : T(exp(Double(runningMax - s)))
                runningSum *= correction
                for c in 0..<mDim { accumulator[c] *= correction }
                runningMax = s
            }
            let p = T(exp(Double(s - runningMax)))
            runningSum += p
            for c in 0..<mDim { accumulator[c] += p * element(t.value, j, c, as: T.self) }
        }
        let inverse: T = runningSum > 0 ? 1 / runningSum : 0
        for c in 0..<mDim { out[i * t.output.rowStride + c * t.output.columnStride] = accumulator[c] * inverse }
        if let lse = t.logSumExp?.assumingMemoryBound(to: T.self) {
            lse[i * t.logSumExpStride] = runningSum > 0 ? runningMax + T(log(Double(runningSum))) : -T.infinity
        }
    }
}


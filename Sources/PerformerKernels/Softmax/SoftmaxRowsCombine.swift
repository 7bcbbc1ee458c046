#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerKernelInterface

// Merges the per-chunk partial records of the few-query forward (SoftmaxForwardRows.swift)
// into output rows, chunk 0 first, then 1, 2, ... (a fixed order, so the result does not
// depend on which thread computed which chunk):
//   m = max_c m_c,  w_c = 2^(m_c − m),  l = Σ_c w_c l_c,  o = (Σ_c w_c o_c) / l,
//   lse = (m + log2 l) · ln 2.
// A row whose every chunk is empty (m = −inf) gets zeros and lse = −inf. The sum is formed in
// chunk 0's record, which only this combine reads afterwards.

func softmaxCombineRows<T: KernelScalar>(_ task: UnsafePointer<SoftmaxCombineTask>, _: T.Type) {
    let t = task.pointee
    let mDim = t.valueDim, recordStride = mDim + 2
    let w = T.lanes
    let partial = t.partial.assumingMemoryBound(to: T.self)
    let out = t.output.base.assumingMemoryBound(to: T.self)
    let lse = t.logSumExp?.assumingMemoryBound(to: T.self)
    for r in 0..<(t.headCount * t.rowCount) {
        let (g, i) = (r / t.rowCount, t.rowStart + r % t.rowCount)
        let row = out + g * t.outputHeadStep + i * t.output.rowStride
        let first = partial + r * recordStride
        var rowMax = -T.infinity
        for c in 0..<t.chunkCount { rowMax = Swift.max(rowMax, first[c * t.chunkStride]) }
        if rowMax == -T.infinity {
            for m in 0..<mDim { row[m * t.output.columnStride] = 0 }
            lse?[g * t.logSumExpHeadStep + i * t.logSumExpStride] = -T.infinity
            continue
        }
        let o = first + 2
        let w0 = T(LibM.exp2(Double(first[0] - rowMax)))
        var l = w0 * first[1]
        for m in 0..<mDim { o[m] *= w0 }
        for c in 1..<Swift.max(1, t.chunkCount) {
            let record = first + c * t.chunkStride
            if record[1] == 0 { continue }   // no visible key in this chunk
            let weight = T(LibM.exp2(Double(record[0] - rowMax)))
            l += weight * record[1]
            let wv = T.splat(weight)
            var m = 0
            while m + w <= mDim {
                T.store(T.fma(wv, T.load(record + 2 + m), T.load(o + m)), o + m)
                m += w
            }
            while m < mDim {
                o[m] += weight * record[2 + m]
                m += 1
            }
        }
        let inverse = 1 / l
        for m in 0..<mDim { row[m * t.output.columnStride] = o[m] * inverse }
        lse?[g * t.logSumExpHeadStep + i * t.logSumExpStride] = (rowMax + T(LibM.log2(Double(l)))) * T.ln2
    }
}

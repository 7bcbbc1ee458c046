import CPerformerKernelIntrinsics

// The denominators' shared part for a whole chunk of query rows, φ(q_i)·z, in one pass
// instead of a horizontal reduction per row inside the per-row loop.

/// dots[i] = rowDot(a + i·rowStride, z, count) for i < rows, with rowDot's bits. AVX-512 Float
/// rows of whole vectors go 16 at a time: each row's vector of partial sums as rowDot forms it
/// (acc0 + acc1), one 16 × 16 transpose (lane j of row i to lane i of vector j), then rowDot's
/// `sumHalving` adds — lanes j + j′ for j′ = j + 8, + 4, + 2, + 1, in that order — as adds of
/// whole vectors, so lane i ends as row i's sum. About 6 instructions a row instead of a
/// dependent chain of shuffles each (the per-row loop with rowDot was 5% of the non-causal
/// forward at N = 16384, 1 thread).
@inline(__always)
func chunkRowDots<T: KernelScalar>(_ a: UnsafePointer<T>, rowStride: Int, _ z: UnsafePointer<T>, _ count: Int,
                                   rows: Int, into dots: UnsafeMutablePointer<T>) {
    var i = 0
    #if PERFORMER_ISA_AVX512
    if T.self == Float.self && count % 16 == 0 && count > 0 && rows >= 16 {
        let w = T.lanes  // 16
        withUnsafeTemporaryAllocation(of: SIMD16<Float>.self, capacity: 32) { buffer in
            let partial = UnsafeMutableRawPointer(buffer.baseAddress!)
            let lanesByRow = partial.assumingMemoryBound(to: T.self)
            let rowsByLane = (partial + 16 * 64).assumingMemoryBound(to: Float.self)
            while i + 16 <= rows {
                for r in 0..<16 {
                    T.store(rowDotPartialSums(a + (i + r) * rowStride, z, count).0, lanesByRow + r * w)
                }
                pkernel_transpose_16x16(partial.assumingMemoryBound(to: Float.self), 16, rowsByLane, 16)
                @inline(__always) func lane(_ j: Int) -> SIMD16<Float> {
                    UnsafeRawPointer(rowsByLane + 16 * j).loadUnaligned(as: SIMD16<Float>.self)
                }
                var eight = (lane(0) + lane(8), lane(1) + lane(9), lane(2) + lane(10), lane(3) + lane(11))
                let eight2 = (lane(4) + lane(12), lane(5) + lane(13), lane(6) + lane(14), lane(7) + lane(15))
                eight = (eight.0 + eight2.0, eight.1 + eight2.1, eight.2 + eight2.2, eight.3 + eight2.3)  // four
                let sum = (eight.0 + eight.2) + (eight.1 + eight.3)  // two[0] + two[1]
                UnsafeMutableRawPointer(dots + i).storeBytes(of: sum, as: SIMD16<Float>.self)
                i += 16
            }
        }
    }
    #endif
    while i < rows {
        dots[i] = rowDot(a + i * rowStride, z, count)
        i += 1
    }
}

import CPerformerKernelIntrinsics
import PerformerKernelInterface

// The micro-kernel (MicroKernel.swift) with software prefetches spread through its depth loop:
// one cache line every few steps instead of a burst between tiles. A burst of 32 lines after a
// tile fills the core's miss buffers, and the next prefetch (or load) waits for a line from
// memory; spread out, the lines are requested at a pace the buffers sustain. The FMAs are the
// micro-kernel's, in the same order, so every element keeps its bits.

/// Lines a kernel fetches one at a time (`fetch`), `remaining` of them left.
protocol LineFetching {
    var remaining: Int { get }
    mutating func fetch()
}

/// Up to three contiguous byte ranges (rows of matrices whose rows are adjacent), fetched a
/// 64-byte line at a time, one range after the other, into L1 (`pkernel_prefetch_near`): spread
/// out, the lines arrive in time without a burst, and the chunk's packing or product that reads
/// them next finds them there (into L2 only, the non-causal forward at N = 16384 measured
/// 1.04-1.05x as long; when they came in bursts, L1 had measured 1.06x slower than L2).
struct LinePrefetch: LineFetching {
    /// The range being fetched (its next line and its end), then the ones after it.
    var next: Int, end: Int
    var later: (Range<Int>, Range<Int>)

    init(_ first: Range<Int>, _ second: Range<Int> = 0 ..< 0, _ third: Range<Int> = 0 ..< 0) {
        (next, end) = (first.lowerBound & ~63, first.upperBound)
        later = (second, third)
        advancePastEmpty()
    }

    /// Lines not yet fetched.
    var remaining: Int {
        func lines(_ r: Range<Int>) -> Int { r.isEmpty ? 0 : (r.upperBound - (r.lowerBound & ~63) + 63) / 64 }
        return Swift.max(0, (end - next + 63) / 64) + lines(later.0) + lines(later.1)
    }

    /// Fetches the next line (nothing once every range is done).
    @inline(__always)
    mutating func fetch() {
        guard next < end else { return }
        pkernel_prefetch_near(UnsafeRawPointer(bitPattern: next))
        next += 64
        if next >= end { advancePastEmpty() }
    }

    /// Moves to the next range with lines left, if the current one has none.
    @inline(__always)
    private mutating func advancePastEmpty() {
        while next >= end && !(later.0.isEmpty && later.1.isEmpty) {
            (next, end) = (later.0.lowerBound & ~63, later.0.upperBound)
            later = (later.1, 0 ..< 0)
        }
    }

    /// The byte range of rows `rows` of `matrix` (row bytes `columns` × elementSize) when they are
    /// adjacent with contiguous columns; nil otherwise.
    static func rows(_ matrix: StridedMatrix?, columns: Int, _ rows: Range<Int>, elementSize: Int) -> Range<Int>? {
        guard let matrix, matrix.columnStride == 1, matrix.rowStride == columns || rows.count <= 1 else { return nil }
        let start = Int(bitPattern: matrix.base) + rows.lowerBound * matrix.rowStride * elementSize
        return start ..< start + rows.count * columns * elementSize
    }
}

/// A LinePrefetch's ranges, then a range the kernel writes next, fetched owned (into L1, as
/// RowPrefetch's `written`). A type of its own so the read-only kernels carry no check for it.
struct LinePrefetchThenWritten: LineFetching {
    var reads: LinePrefetch
    var next: Int, end: Int

    init(_ reads: LinePrefetch, written: Range<Int>) {
        self.reads = reads
        (next, end) = (written.lowerBound & ~63, written.upperBound)
    }

    var remaining: Int { reads.remaining + Swift.max(0, (end - next + 63) / 64) }

    @inline(__always)
    mutating func fetch() {
        if reads.next < reads.end {
            reads.fetch()
        } else if next < end {
            pkernel_prefetch_write(UnsafeRawPointer(bitPattern: next))
            next += 64
        }
    }
}

/// `microKernel` (R rows, any `rows` ≤ R) issuing `lines` of `prefetch` evenly over its depth
/// loop (those the loop has no step left for, after it).
@inline(__always)
func microKernelPrefetching<T: KernelScalar, Lines: LineFetching>(
    rows: Int, depth: Int,
    a: UnsafePointer<T>, aRowStride: Int, aDepthStride: Int,
    b: UnsafePointer<T>, bRowStride: Int,
    c: UnsafeMutablePointer<T>, cRowStride: Int, accumulate: Bool,
    lines: Int, prefetch: inout Lines
) {
    let w = T.lanes
    let last = rows - 1
    let a0 = a
    let a1 = a + Swift.min(1, last) * aRowStride
    let a2 = a + Swift.min(2, last) * aRowStride
    let a3 = a + Swift.min(3, last) * aRowStride
    let a4 = a + Swift.min(4, last) * aRowStride
    let a5 = a + Swift.min(5, last) * aRowStride
    #if PERFORMER_ISA_AVX512
    let a6 = a + Swift.min(6, last) * aRowStride
    let a7 = a + Swift.min(7, last) * aRowStride
    #endif
    let zero = T.splat(0)
    var c00 = zero, c01 = zero, c10 = zero, c11 = zero, c20 = zero, c21 = zero
    var c30 = zero, c31 = zero, c40 = zero, c41 = zero, c50 = zero, c51 = zero
    #if PERFORMER_ISA_AVX512
    var c60 = zero, c61 = zero, c70 = zero, c71 = zero
    #endif
    // A line every `spacing` steps, the first at step 0.
    let spacing = lines > 0 ? Swift.max(1, depth / lines) : depth + 1
    var issued = 0, countdown = 1
    var bp = b
    var offset = 0
    for _ in 0..<depth {
        countdown -= 1
        if countdown == 0 {
            countdown = spacing
            if issued < lines {
                prefetch.fetch()
                issued += 1
            }
        }
        let b0 = T.load(bp), b1 = T.load(bp + w)
        var x = T.splat(a0[offset])
        c00 = T.fma(x, b0, c00); c01 = T.fma(x, b1, c01)
        x = T.splat(a1[offset])
        c10 = T.fma(x, b0, c10); c11 = T.fma(x, b1, c11)
        x = T.splat(a2[offset])
        c20 = T.fma(x, b0, c20); c21 = T.fma(x, b1, c21)
        x = T.splat(a3[offset])
        c30 = T.fma(x, b0, c30); c31 = T.fma(x, b1, c31)
        x = T.splat(a4[offset])
        c40 = T.fma(x, b0, c40); c41 = T.fma(x, b1, c41)
        x = T.splat(a5[offset])
        c50 = T.fma(x, b0, c50); c51 = T.fma(x, b1, c51)
        #if PERFORMER_ISA_AVX512
        x = T.splat(a6[offset])
        c60 = T.fma(x, b0, c60); c61 = T.fma(x, b1, c61)
        x = T.splat(a7[offset])
        c70 = T.fma(x, b0, c70); c71 = T.fma(x, b1, c71)
        #endif
        bp += bRowStride
        offset += aDepthStride
    }
    while issued < lines {
        prefetch.fetch()
        issued += 1
    }
    @inline(__always) func put(_ row: Int, _ v0: T.Vector, _ v1: T.Vector) {
        let p = c + row * cRowStride
        if accumulate {
            T.store(T.add(T.load(p), v0), p)
            T.store(T.add(T.load(p + w), v1), p + w)
        } else {
            T.store(v0, p)
            T.store(v1, p + w)
        }
    }
    put(0, c00, c01)
    if rows > 1 { put(1, c10, c11) }
    if rows > 2 { put(2, c20, c21) }
    if rows > 3 { put(3, c30, c31) }
    if rows > 4 { put(4, c40, c41) }
    if rows > 5 { put(5, c50, c51) }
    #if PERFORMER_ISA_AVX512
    if rows > 6 { put(6, c60, c61) }
    if rows > 7 { put(7, c70, c71) }
    #endif
}

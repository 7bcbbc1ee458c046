import CPerformerKernelIntrinsics
import PerformerKernelInterface

// Cache lines for the micro-kernel to fetch from inside its depth loop (MicroKernel.swift's
// `lines`/`prefetch` form): one line every few steps instead of a burst between tiles. A burst of
// 32 lines after a tile fills the core's miss buffers, and the next prefetch (or load) waits for a
// line from memory; spread out, the lines are requested at a pace the buffers sustain.

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

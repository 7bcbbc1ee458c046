import CPerformerMemoryHints
import PerformerKernelInterface

// Software prefetch of the rows a kernel streams next. A chunked kernel packs a chunk's rows
// (loads that miss: the rows come from memory, and the hardware prefetcher restarts at every
// 4 KiB page) and then computes on the packed copy from L1/L2; prefetching the next chunk's rows
// a few at a time between the compute's micro-kernel tiles overlaps the two.

/// Rows first ..< first + count of up to three strided matrices, prefetched a few rows per `step`.
struct RowPrefetch {
    var matrices: (StridedMatrix?, StridedMatrix?, StridedMatrix?)
    /// Bytes of each matrix's row to fetch (columns × element size).
    var rowBytes: (Int, Int, Int)
    var elementSize: Int
    var next: Int
    var end: Int

    init(_ a: StridedMatrix?, _ aColumns: Int, _ b: StridedMatrix? = nil, _ bColumns: Int = 0,
         _ c: StridedMatrix? = nil, _ cColumns: Int = 0, rows: Range<Int>, elementSize: Int) {
        // Only rows with contiguous columns: a strided row spans a line per element.
        func contiguous(_ m: StridedMatrix?) -> StridedMatrix? { m.flatMap { $0.columnStride == 1 ? $0 : nil } }
        matrices = (contiguous(a), contiguous(b), contiguous(c))
        rowBytes = (aColumns * elementSize, bColumns * elementSize, cColumns * elementSize)
        self.elementSize = elementSize
        next = rows.lowerBound
        end = rows.upperBound
    }

    /// Prefetches the next `count` rows (fewer at the end).
    @inline(__always)
    mutating func step(_ count: Int) {
        let stop = Swift.min(end, next + count)
        while next < stop {
            fetch(matrices.0, rowBytes.0)
            fetch(matrices.1, rowBytes.1)
            fetch(matrices.2, rowBytes.2)
            next += 1
        }
    }

    @inline(__always)
    private func fetch(_ matrix: StridedMatrix?, _ bytes: Int) {
        guard let matrix, bytes > 0 else { return }
        let row = UnsafeRawPointer(matrix.base) + next * matrix.rowStride * elementSize
        // Every 64-byte line the row's bytes touch, once each.
        let first = Int(bitPattern: row) & ~63, last = (Int(bitPattern: row) + bytes - 1) & ~63
        var line = first
        while line <= last {
            pkernel_prefetch(UnsafeRawPointer(bitPattern: line))
            line += 64
        }
    }
}

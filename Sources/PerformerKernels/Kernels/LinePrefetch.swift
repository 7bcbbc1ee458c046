import CPerformerKernelIntrinsics
import PerformerKernelInterface

// Cache lines for the micro-kernel to fetch from inside its depth loop (MicroKernel.swift's
// `lines`/`prefetch` form): one line every few steps instead of a burst between tiles. A burst of
// 32 lines after a tile fills the core's miss buffers, and the next prefetch (or load) waits for a
// line from memory; spread out, the lines are requested at a pace the buffers sustain.

/// The rows of one matrix a `LinePrefetch` walks: the first row's address, the bytes of a row,
/// the bytes from one row to the next, how many rows, and whether the kernel writes them (set
/// by `LinePrefetch` for its `written` matrix).
struct PrefetchRows {
    var start: Int, bytes: Int, stride: Int, count: Int
    var written: Bool

    static let none = PrefetchRows(start: 0, bytes: 0, stride: 0, count: 0, written: false)

    /// Rows `rows` of `matrix` (row bytes `columns` × elementSize); none for a matrix whose
    /// columns are strided (its row spans a line per element). Adjacent rows become one row.
    init(_ matrix: StridedMatrix?, columns: Int, _ rows: Range<Int>, elementSize: Int) {
        guard let matrix, matrix.columnStride == 1, columns > 0, !rows.isEmpty else {
            self = .none
            return
        }
        let bytes = columns * elementSize, stride = matrix.rowStride * elementSize
        let start = Int(bitPattern: matrix.base) + rows.lowerBound * stride
        self = stride == bytes || rows.count == 1
            ? PrefetchRows(start: start, bytes: rows.count * bytes, stride: 0, count: 1, written: false)
            : PrefetchRows(start: start, bytes: bytes, stride: stride, count: rows.count, written: false)
    }

    private init(start: Int, bytes: Int, stride: Int, count: Int, written: Bool) {
        (self.start, self.bytes, self.stride, self.count, self.written) = (start, bytes, stride, count, written)
    }

    /// Lines of row `row` (from 0).
    @inline(__always)
    func lines(ofRow row: Int) -> Int {
        let first = start + row * stride
        return ((first + bytes + 63) >> 6) - (first >> 6)
    }

    /// Lines of every row.
    var lines: Int {
        guard count > 0 else { return 0 }
        // Rows aligned alike have as many lines each.
        if stride & 63 == 0 { return count * lines(ofRow: 0) }
        var total = 0
        for row in 0..<count { total += lines(ofRow: row) }
        return total
    }
}

/// The rows of up to three matrices read next and one written next, fetched a 64-byte line at
/// a time: a matrix's rows one after another, then the next matrix's, the written one last.
/// Rows that are adjacent (a B×H×N×D head) are one range; strided ones (a B×N×H×D head, read
/// as B×H×N×D) a range per row, the cursor stepping to the next row when one is done.
/// Adjacent rows are read into L1 (`pkernel_prefetch_near`): spread out, the lines arrive in
/// time without a burst, and the chunk's packing or product that reads them next finds them
/// there (into L2 only, the non-causal forward at N = 16384 measured 1.04-1.05x as long; when
/// they came in bursts, L1 had measured 1.06x slower than L2); written ones, adjacent or
/// strided, are fetched owned (`pkernel_prefetch_write`), so the stores do not wait for their
/// read-for-ownership.
/// Strided rows read go into L2 (`pkernel_prefetch`): a line of them stays in flight longer (a
/// new page every row or two), and in L1 they held its miss buffers; into L1, the strided
/// forward at N = 16384 (1 thread) measured 1.11-1.15x as long as the bursts into L2 it
/// replaced, into L2 0.91-1.00x. Strided rows of matrices with as many rows each are walked
/// row by row (row r of every matrix, then row r + 1, as RowPrefetch did), a whole row per
/// `fetch()` (`remaining` then counts rows): the strided causal backward at 2 threads measured
/// 0.97-1.00x main's time this way, 1.02-1.045x a line per `fetch()`, 1.04-1.07x matrix after
/// matrix with the written rows read into L2.
struct LinePrefetch: LineFetching {
    /// The current row's next line and its end.
    var next: Int, end: Int
    /// The current matrix (an index into `matrices`), its current row, and whether it is written.
    var matrix: Int, row: Int
    var writing: Bool
    /// Whether the current matrix's lines go into L1 (its rows adjacent) or L2 (strided, read);
    /// written rows are fetched owned (`writing`) either way.
    var near: Bool
    /// Lines of the rows after the current one (this matrix's and the later ones'), kept as the
    /// rows go by: `remaining`, asked once per tile, is then a subtraction (summed over the
    /// matrices per tile, out of line, the forward at N = 16384 measured 1.03-1.05x as long).
    var linesAfterRow: Int
    /// The matrices with rows, in order (the written one last), `count` of them. Never changed
    /// after `init`: the fetch loop keeps them as constants (a cursor that shifted them along
    /// made every field a loop variable, moved around at every line: 1.11-1.23x as long).
    let matrices: (PrefetchRows, PrefetchRows, PrefetchRows, PrefetchRows)
    let count: Int
    /// Every matrix strided, with as many rows: row r of each, then row r + 1 of each, a row
    /// per `fetch()`; `linesAfterRow` then counts rows.
    let interleaved: Bool

    init(_ first: PrefetchRows = .none, _ second: PrefetchRows = .none, _ third: PrefetchRows = .none,
         written: PrefetchRows = .none) {
        var writtenRows = written
        writtenRows.written = true
        var queue = (PrefetchRows.none, PrefetchRows.none, PrefetchRows.none, PrefetchRows.none)
        var queued = 0
        @inline(__always) func enqueue(_ rows: PrefetchRows) {
            guard rows.count > 0 else { return }
            switch queued {
            case 0: queue.0 = rows
            case 1: queue.1 = rows
            case 2: queue.2 = rows
            default: queue.3 = rows
            }
            queued += 1
        }
        enqueue(first)
        enqueue(second)
        enqueue(third)
        enqueue(writtenRows)
        (matrices, count) = (queue, queued)
        let rows0 = queue.0.count
        interleaved = rows0 > 1 && (queued < 2 || queue.1.count == rows0) && (queued < 3 || queue.2.count == rows0)
            && (queued < 4 || queue.3.count == rows0)
        (matrix, row, writing, near) = (0, 0, queue.0.written, queue.0.count == 1)
        (next, end) = queued > 0 ? (queue.0.start & ~63, queue.0.start + queue.0.bytes) : (0, 0)
        linesAfterRow = interleaved
            ? queued * rows0 - 1
            : queue.0.lines + queue.1.lines + queue.2.lines + queue.3.lines - (queued > 0 ? queue.0.lines(ofRow: 0) : 0)
    }

    @inline(__always)
    private func rows(_ index: Int) -> PrefetchRows {
        switch index {
        case 0: return matrices.0
        case 1: return matrices.1
        case 2: return matrices.2
        default: return matrices.3
        }
    }

    /// Lines (rows when `interleaved`) not yet fetched.
    var remaining: Int {
        interleaved ? (next < end ? 1 : 0) + linesAfterRow : Swift.max(0, (end - next + 63) / 64) + linesAfterRow
    }

    /// Fetches the next line, or the next row when `interleaved` (nothing once every row is done).
    @inline(__always)
    mutating func fetch() {
        guard next < end else { return }
        if writing {
            pkernel_prefetch_write(UnsafeRawPointer(bitPattern: next))
        } else if near {
            pkernel_prefetch_near(UnsafeRawPointer(bitPattern: next))
        } else {
            pkernel_prefetch(UnsafeRawPointer(bitPattern: next))
        }
        next += 64
        if next >= end {
            nextRow()
        } else if interleaved {
            restOfRow()
        }
    }

    /// The current row's other lines, then the next row (`interleaved`: a row per `fetch()`;
    /// here, out of the adjacent rows' path, their fetch keeps the same few instructions).
    @inline(__always)
    private mutating func restOfRow() {
        repeat {
            if writing {
                pkernel_prefetch_write(UnsafeRawPointer(bitPattern: next))
            } else {
                pkernel_prefetch(UnsafeRawPointer(bitPattern: next))
            }
            next += 64
        } while next < end
        nextRow()
    }

    /// Moves to the current matrix's next row, or to the next matrix's first when it has none
    /// left (past the end after the last).
    @inline(__always)
    private mutating func nextRow() {
        if interleaved {
            matrix += 1
            if matrix == count {
                matrix = 0
                row += 1
                guard row < matrices.0.count else { return }
            }
            let current = rows(matrix)
            writing = current.written
            let start = current.start + row * current.stride
            (next, end) = (start & ~63, start + current.bytes)
            linesAfterRow -= 1
            return
        }
        var current = rows(matrix)
        if row + 1 < current.count {
            row += 1
        } else {
            matrix += 1
            row = 0
            guard matrix < count else { return }
            current = rows(matrix)
            writing = current.written
            near = current.count == 1
        }
        let start = current.start + row * current.stride
        (next, end) = (start & ~63, start + current.bytes)
        linesAfterRow -= ((end + 63) >> 6) - (next >> 6)
    }
}

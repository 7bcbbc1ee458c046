import CPerformerKernelIntrinsics
import PerformerKernelInterface

// Software prefetch of the rows a kernel streams next. A chunked kernel packs a chunk's rows
// (loads that miss: the rows come from memory, and the hardware prefetcher restarts at every
// 4 KiB page) and then computes on the packed copy from L1/L2; prefetching the next chunk's rows
// a few at a time between the compute's micro-kernel tiles overlaps the two.

/// Input bytes of a head (its longest side's rows of the matrices a kernel streams) from which
/// the linear forward prefetches: N = 1024 at D = M = 64 (768 KiB) measured 3.6-6.8% faster
/// with all of this branch's changes, N = 256 (192 KiB) 1-1.6% slower with the prefetch.
let linearPrefetchMinimumBytes = 512 << 10

/// The rows a chunked kernel prefetches while it works on the chunk ending at row `end`: the
/// next chunk's (at most `chunkRows`, none from `limit` on), or none when it does not prefetch.
@inline(__always)
func rowsAfterChunk(ending end: Int, chunkRows: Int, limit: Int, prefetching: Bool) -> Range<Int> {
    prefetching ? end ..< Swift.min(limit, end + chunkRows) : end ..< end
}

/// Rows `rows` of up to three strided matrices, prefetched an even share per `step()` over the
/// `steps` calls the kernel makes (one per micro-kernel tile of the products it overlaps with).
struct RowPrefetch: LineFetching {
    var matrices: (StridedMatrix?, StridedMatrix?, StridedMatrix?)
    /// A matrix whose rows the kernel writes next (fetched owned, into L1), and its row bytes.
    var written: StridedMatrix?
    var writtenBytes: Int
    /// Bytes of each matrix's row to fetch (columns × element size).
    var rowBytes: (Int, Int, Int)
    var elementSize: Int
    var next: Int
    var end: Int
    var rowsPerStep: Int

    init(_ a: StridedMatrix?, _ aColumns: Int, _ b: StridedMatrix? = nil, _ bColumns: Int = 0,
         _ c: StridedMatrix? = nil, _ cColumns: Int = 0, written: StridedMatrix? = nil, writtenColumns: Int = 0,
         rows: Range<Int>, steps: Int, elementSize: Int) {
        // Only rows with contiguous columns: a strided row spans a line per element.
        func contiguous(_ m: StridedMatrix?) -> StridedMatrix? { m.flatMap { $0.columnStride == 1 ? $0 : nil } }
        matrices = (contiguous(a), contiguous(b), contiguous(c))
        rowBytes = (aColumns * elementSize, bColumns * elementSize, cColumns * elementSize)
        self.written = contiguous(written)
        writtenBytes = writtenColumns * elementSize
        self.elementSize = elementSize
        next = rows.lowerBound
        end = rows.upperBound
        rowsPerStep = (rows.count + steps - 1) / Swift.max(steps, 1)
    }

    /// A prefetch of nothing (for a kernel that takes one where there is nothing to fetch).
    static var none: RowPrefetch { RowPrefetch(nil, 0, rows: 0 ..< 0, steps: 1, elementSize: 0) }

    /// Prefetches the next share of rows (fewer at the end, none after it).
    @inline(__always)
    mutating func step() {
        let stop = Swift.min(end, next + rowsPerStep)
        while next < stop { fetch() }
    }

    /// Rows not yet fetched.
    var remaining: Int { Swift.max(0, end - next) }

    /// A `step()`'s share of rows per tile (the `steps` it was made for), fetched a row at a time.
    func lines(forTile _: Int) -> Int { Swift.min(rowsPerStep, remaining) }

    /// Prefetches the next row (of every matrix; nothing after the last).
    @inline(__always)
    mutating func fetch() {
        guard next < end else { return }
        fetch(matrices.0, rowBytes.0)
        fetch(matrices.1, rowBytes.1)
        fetch(matrices.2, rowBytes.2)
        fetch(written, writtenBytes, forWriting: true)
        next += 1
    }

    @inline(__always)
    private func fetch(_ matrix: StridedMatrix?, _ bytes: Int, forWriting: Bool = false) {
        guard let matrix, bytes > 0 else { return }
        let row = UnsafeRawPointer(matrix.base) + next * matrix.rowStride * elementSize
        // Every 64-byte line the row's bytes touch, once each.
        let first = Int(bitPattern: row) & ~63, last = (Int(bitPattern: row) + bytes - 1) & ~63
        var line = first
        while line <= last {
            if forWriting {
                pkernel_prefetch_write(UnsafeRawPointer(bitPattern: line))
            } else {
                pkernel_prefetch(UnsafeRawPointer(bitPattern: line))
            }
            line += 64
        }
    }
}

/// Micro-kernel tiles of a rows × columns product: the `step()`s `chunkProductPrefetching` makes.
@inline(__always)
func productTiles<T: KernelScalar>(rows: Int, columns: Int, _: T.Type) -> Int {
    let tile = microKernelColumns(T.self)
    return (rows + microKernelRows - 1) / microKernelRows * ((columns + tile - 1) / tile)
}

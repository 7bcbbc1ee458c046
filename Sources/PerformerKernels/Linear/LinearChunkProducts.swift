import CPerformerKernelIntrinsics

// The dense products of the chunked linear attention, all on the shared micro-kernel
// (Kernels/MicroKernel.swift), with its operand contract:
//
//   C[r][c] (= or +=) Σ_{k < depth} A(r, k) · B[k][c],   A(r, k) = a[r·aRowStride + k·aDepthStride]
//
// A is read by scalar from any strides (so Aᵀ is the same buffer with the strides swapped), B is
// a panel of `depth` rows of contiguous columns `bRowStride` apart, C rows are `cRowStride` apart.
// Columns are rounded up to whole tiles (2·lanes ≤ `linearPanelWidth`), which the padded panels
// allow. Inside a chunk, causality makes the T × T products triangular; the two helpers below
// skip the micro-kernel tiles that lie wholly on the masked side (about half of the work).

/// Panel row lengths are multiples of this (two AVX-512 float vectors).
let linearPanelWidth = 32

@inline(__always)
func linearPadded(_ n: Int) -> Int { (max(n, 1) + linearPanelWidth - 1) / linearPanelWidth * linearPanelWidth }

/// C (= or +=) A·B with the contract above.
@inline(__always)
func chunkProduct<T: KernelScalar>(
    rows: Int, columns: Int, depth: Int,
    a: UnsafePointer<T>, aRowStride: Int, aDepthStride: Int,
    b: UnsafePointer<T>, bRowStride: Int,
    c: UnsafeMutablePointer<T>, cRowStride: Int, accumulate: Bool
) {
    guard rows > 0, columns > 0 else { return }
    let tile = microKernelColumns(T.self)
    blockProduct(rows: rows, columns: (columns + tile - 1) / tile * tile, depth: depth,
                 a: a, aRowStride: aRowStride, aDepthStride: aDepthStride, b: b, bRowStride: bRowStride,
                 c: c, cRowStride: cRowStride, accumulate: accumulate)
}

/// C = tril(A·B [+ rowAdd 1ᵀ]) for a t × t block: entry (i, j) is computed for j ≤ i and is 0 for
/// j > i. Only the tiles meeting the lower triangle are computed (row tiles start at multiples
/// of `microKernelRows`); every computed entry right of the diagonal is zeroed. Readers may use
/// row i up to the vector holding column i, or to column ⌊i/R⌋·R + R − 1 (R = micro-kernel rows),
/// as `lowerDepthProduct` and `upperDepthProduct` do; further right is not written.
@inline(__always)
func lowerTriangleProduct<T: KernelScalar>(
    t: Int, depth: Int, a: UnsafePointer<T>, aRowStride: Int, aDepthStride: Int,
    b: UnsafePointer<T>, bRowStride: Int, c: UnsafeMutablePointer<T>, cRowStride: Int,
    rowAdd: UnsafePointer<T>?
) {
    let tile = microKernelColumns(T.self), r = microKernelRows, w = T.lanes
    var column = 0
    while column < t {
        let firstRow = column / r * r
        var row = firstRow
        while row < t {
            microKernel(rows: Swift.min(r, t - row), depth: depth,
                        a: a + row * aRowStride, aRowStride: aRowStride, aDepthStride: aDepthStride,
                        b: b + column, bRowStride: bRowStride,
                        c: c + row * cRowStride + column, cRowStride: cRowStride, accumulate: false)
            row += r
        }
        column += tile
    }
    // Mask: keep j ≤ i (adding rowAdd[i] there), zero the rest of every computed tile of row i.
    var lane = T.splat(0)
    for l in 0..<w { lane[l] = T(l) }
    let zero = T.splat(0)
    for i in 0..<t {
        let p = c + i * cRowStride
        let add = T.splat(rowAdd?[i] ?? 0)
        // Columns of row i that some computed tile covers.
        let end = (Swift.min(t, i / r * r + r) + tile - 1) / tile * tile
        let limit = T.splat(T(i + 1))
        var j = 0
        while j < end {
            let v = T.load(p + j)
            if j + w <= i + 1 {
                if rowAdd != nil { T.store(T.add(v, add), p + j) }
            } else if j <= i {
                let index = T.add(lane, T.splat(T(j)))
                T.store(T.selectLess(index, limit, T.add(v, add), zero), p + j)
            } else {
                T.store(zero, p + j)
            }
            j += w
        }
    }
}

/// C[i] (= or +=) Σ_{j ≤ i} A(i, j) · B[j] for i < t, A lower-triangular as written by
/// `lowerTriangleProduct`: each row tile stops its depth at the tile's last row.
@inline(__always)
func lowerDepthProduct<T: KernelScalar>(
    t: Int, columns: Int, a: UnsafePointer<T>, aRowStride: Int, aDepthStride: Int,
    b: UnsafePointer<T>, bRowStride: Int, c: UnsafeMutablePointer<T>, cRowStride: Int, accumulate: Bool
) {
    let tile = microKernelColumns(T.self), r = microKernelRows
    let width = (columns + tile - 1) / tile * tile
    var column = 0
    while column < width {
        var row = 0
        while row < t {
            let rows = Swift.min(r, t - row)
            microKernel(rows: rows, depth: row + rows,
                        a: a + row * aRowStride, aRowStride: aRowStride, aDepthStride: aDepthStride,
                        b: b + column, bRowStride: bRowStride,
                        c: c + row * cRowStride + column, cRowStride: cRowStride, accumulate: accumulate)
            row += r
        }
        column += tile
    }
}

/// C[j] (= or +=) Σ_{i ≥ j} A(j, i) · B[i] for j < t, with A(j, i) = L[i][j] the transpose of a
/// lower-triangular L written by `lowerTriangleProduct` (pass L's strides swapped): each row
/// tile starts its depth at the tile's first row.
@inline(__always)
func upperDepthProduct<T: KernelScalar>(
    t: Int, columns: Int, a: UnsafePointer<T>, aRowStride: Int, aDepthStride: Int,
    b: UnsafePointer<T>, bRowStride: Int, c: UnsafeMutablePointer<T>, cRowStride: Int, accumulate: Bool
) {
    let tile = microKernelColumns(T.self), r = microKernelRows
    let width = (columns + tile - 1) / tile * tile
    var column = 0
    while column < width {
        var row = 0
        while row < t {
            microKernel(rows: Swift.min(r, t - row), depth: t - row,
                        a: a + row * aRowStride + row * aDepthStride, aRowStride: aRowStride, aDepthStride: aDepthStride,
                        b: b + row * bRowStride + column, bRowStride: bRowStride,
                        c: c + row * cRowStride + column, cRowStride: cRowStride, accumulate: accumulate)
            row += r
        }
        column += tile
    }
}

/// target[c][r] = source[r][c] for an r × c block (row strides given). Loops over target rows so
/// the stores are contiguous (the compiler turns the strided loads into vector gathers).
@inline(__always)
func transposeBlock<T: KernelScalar>(
    rows: Int, columns: Int, _ source: UnsafePointer<T>, _ sourceRowStride: Int,
    _ target: UnsafeMutablePointer<T>, _ targetRowStride: Int
) {
    #if PERFORMER_ISA_AVX512
    // Float blocks of 16 × 16 by vector shuffles (the strided loop below compiles to scalar
    // loads and stores: the causal forward's φ(K_c)ᵀ was a third of its packing time).
    if T.self == Float.self && rows % 16 == 0 && columns % 16 == 0 {
        let from = UnsafeRawPointer(source).assumingMemoryBound(to: Float.self)
        let to = UnsafeMutableRawPointer(target).assumingMemoryBound(to: Float.self)
        for r in stride(from: 0, to: rows, by: 16) {
            for c in stride(from: 0, to: columns, by: 16) {
                pkernel_transpose_16x16(from + r * sourceRowStride + c, sourceRowStride,
                                        to + c * targetRowStride + r, targetRowStride)
            }
        }
        return
    }
    #endif
    for c in 0..<columns {
        let row = target + c * targetRowStride, column = source + c
        for r in 0..<rows { row[r] = column[r * sourceRowStride] }
    }
}

/// `chunkProduct` one micro-kernel tile (row tile × column tile) at a time, each tile fetching
/// its share of `prefetch`'s lines (`LineFetching.lines(forTile:)`) from inside its depth loop
/// (`microKernel`'s `lines`): a few at a time, so the prefetches seldom wait for miss buffers.
/// `laterTiles`: tiles of products that follow with the same prefetch (they keep a share).
/// With nothing to prefetch, the product in one `chunkProduct` call. Every element gets the
/// same FMAs in the same order as in `chunkProduct`.
@inline(__always)
func chunkProductPrefetching<T: KernelScalar, Lines: LineFetching>(
    rows: Int, columns: Int, depth: Int,
    a: UnsafePointer<T>, aRowStride: Int, aDepthStride: Int,
    b: UnsafePointer<T>, bRowStride: Int,
    c: UnsafeMutablePointer<T>, cRowStride: Int, accumulate: Bool, prefetch: inout Lines, laterTiles: Int = 0
) {
    guard prefetch.remaining > 0 else {
        return chunkProduct(rows: rows, columns: columns, depth: depth, a: a, aRowStride: aRowStride,
                            aDepthStride: aDepthStride, b: b, bRowStride: bRowStride, c: c, cRowStride: cRowStride,
                            accumulate: accumulate)
    }
    guard rows > 0, columns > 0 else { return }
    let r = microKernelRows, tile = microKernelColumns(T.self)
    var tilesLeft = (rows + r - 1) / r * ((columns + tile - 1) / tile) + laterTiles
    var column = 0
    while column < columns {
        var row = 0
        while row < rows {
            microKernel(rows: Swift.min(r, rows - row), depth: depth,
                        a: a + row * aRowStride, aRowStride: aRowStride, aDepthStride: aDepthStride,
                        b: b + column, bRowStride: bRowStride, c: c + row * cRowStride + column,
                        cRowStride: cRowStride, accumulate: accumulate,
                        lines: prefetch.lines(forTile: tilesLeft), prefetch: &prefetch)
            tilesLeft -= 1
            row += r
        }
        column += tile
    }
}

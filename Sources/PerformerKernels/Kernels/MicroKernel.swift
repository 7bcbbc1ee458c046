// The register-blocked matrix-product micro-kernel every dense product in the library uses.
//
//   C[r][c] (= or +=) Σ_{k < depth} A(r, k) · B[k][c],   r < rows ≤ R,  c < 2·lanes
//
// A is read as scalar broadcasts from ANY strides: A(r, k) = a[r·aRowStride + k·aDepthStride]
// (so Q, K, V, a transposed view or a packed buffer all serve directly, with no packing). B is
// a panel of `depth` rows of 2·lanes contiguous elements, `bRowStride` apart (packed scratch:
// its columns are the vector lanes). C rows are `cRowStride` apart, 2·lanes contiguous each.
// The R × 2 vectors of C live in registers: R = 6 with 16 vector registers (AVX2: 6 × 16
// floats in 12 ymm; portable SIMD4), R = 8 with 32 (AVX-512: 8 × 32 floats in 16 zmm, which
// also divides the common head sizes 64 and 128 exactly).
// Rows past `rows` are computed from the last valid A row and never stored, so a partial tile
// costs a full one but reads and writes nothing out of bounds. blockProduct runs the last rows
// of a product whose height is not a multiple of R in tiles of `microKernelTailRows` (e.g. 32
// rows = 6+6+6+6+4+4 instead of 6 tiles of 6, a sixth of them wasted): every element of C gets
// the same FMAs in the same order whatever the tile height, so the bits do not change.

/// Height of a micro-kernel tile, in rows of C (every block size of the kernels is a
/// multiple of 24, so of both 6 and 8).
#if PERFORMER_ISA_AVX512
@usableFromInline let microKernelRows = 8
#else
@usableFromInline let microKernelRows = 6
#endif

/// Height of the short tile blockProduct ends with when the last rows are few.
@usableFromInline let microKernelTailRows = 4

/// Width of a micro-kernel tile, in columns of C (two vectors).
@inline(__always) @usableFromInline
func microKernelColumns<T: KernelScalar>(_: T.Type) -> Int { 2 * T.lanes }

/// Cache lines a micro-kernel tile fetches one at a time from inside its depth loop
/// (LinePrefetch.swift: spread out, they do not fill the miss buffers as a burst between tiles does).
protocol LineFetching {
    /// False for a type that never fetches: the tile then has no prefetch code at all.
    static var fetchesLines: Bool { get }
    /// Lines not yet fetched.
    var remaining: Int { get }
    mutating func fetch()
}

extension LineFetching {
    static var fetchesLines: Bool { true }
    /// How many lines the next tile fetches, `tilesLeft` tiles (it included) sharing the rest
    /// evenly.
    func lines(forTile tilesLeft: Int) -> Int { (remaining + tilesLeft - 1) / tilesLeft }
}

/// The prefetch of a tile that fetches nothing.
struct NoLineFetching: LineFetching {
    static var fetchesLines: Bool { false }
    var remaining: Int { 0 }
    @inline(__always) mutating func fetch() {}
}

/// One R × (2·lanes) tile of C (=|+=) A·B; see the file comment for the operand contract.
/// `height` (a constant at every call: R or `microKernelTailRows`) is the tile's height; the
/// FMAs of rows past it are dropped at compile time. `rows` ≤ height.
@inline(__always) @usableFromInline
func microKernel<T: KernelScalar>(
    rows: Int, height: Int = microKernelRows, depth: Int,
    a: UnsafePointer<T>, aRowStride: Int, aDepthStride: Int,
    b: UnsafePointer<T>, bRowStride: Int,
    c: UnsafeMutablePointer<T>, cRowStride: Int, accumulate: Bool
) {
    var none = NoLineFetching()
    microKernel(rows: rows, height: height, depth: depth, a: a, aRowStride: aRowStride, aDepthStride: aDepthStride,
                b: b, bRowStride: bRowStride, c: c, cRowStride: cRowStride, accumulate: accumulate,
                lines: 0, prefetch: &none)
}

/// The same tile issuing `lines` of `prefetch` evenly over its depth loop (those the loop has no
/// step left for, after it). The FMAs are the same, in the same order: C keeps its bits.
@inline(__always)
func microKernel<T: KernelScalar, Lines: LineFetching>(
    rows: Int, height: Int = microKernelRows, depth: Int,
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
        if Lines.fetchesLines {
            countdown -= 1
            if countdown == 0 {
                countdown = spacing
                if issued < lines {
                    prefetch.fetch()
                    issued += 1
                }
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
        if height > 4 {
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
        }
        bp += bRowStride
        offset += aDepthStride
    }
    if Lines.fetchesLines {
        while issued < lines {
            prefetch.fetch()
            issued += 1
        }
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

/// C (= or +=) A·B for C of `rows` × `columns` (columns a multiple of 2·lanes), tiled with
/// `microKernel`: A(r, k) at a[r·aRowStride + k·aDepthStride], B rows `bRowStride` apart,
/// C rows `cRowStride` apart (both with contiguous columns).
@usableFromInline
func blockProduct<T: KernelScalar>(
    rows: Int, columns: Int, depth: Int,
    a: UnsafePointer<T>, aRowStride: Int, aDepthStride: Int,
    b: UnsafePointer<T>, bRowStride: Int,
    c: UnsafeMutablePointer<T>, cRowStride: Int, accumulate: Bool
) {
    let tileColumns = microKernelColumns(T.self)
    // Rows in full R-high tiles; the rest in short tiles when that computes fewer rows:
    // a remainder of ≤ 4 rows takes one short tile, and R + remainder = 8 (R = 6, remainder 2)
    // takes two instead of a full tile and a short one.
    let remainder = rows % microKernelRows
    var fullRows = rows - remainder
    if remainder > 0 && remainder + microKernelRows == 2 * microKernelTailRows && fullRows > 0 {
        fullRows -= microKernelRows
    } else if remainder > microKernelTailRows {
        fullRows = rows
    }
    var column = 0
    while column < columns {
        var row = 0
        while row < fullRows {
            microKernel(
                rows: Swift.min(microKernelRows, rows - row), depth: depth,
                a: a + row * aRowStride, aRowStride: aRowStride, aDepthStride: aDepthStride,
                b: b + column, bRowStride: bRowStride,
                c: c + row * cRowStride + column, cRowStride: cRowStride, accumulate: accumulate)
            row += microKernelRows
        }
        while row < rows {
            microKernel(
                rows: Swift.min(microKernelTailRows, rows - row), height: microKernelTailRows, depth: depth,
                a: a + row * aRowStride, aRowStride: aRowStride, aDepthStride: aDepthStride,
                b: b + column, bRowStride: bRowStride,
                c: c + row * cRowStride + column, cRowStride: cRowStride, accumulate: accumulate)
            row += microKernelTailRows
        }
        column += tileColumns
    }
}

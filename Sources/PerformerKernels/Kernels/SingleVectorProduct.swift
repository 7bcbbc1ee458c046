// The micro-kernel's one-vector-wide variant, for products whose columns are only one vector
// of a two-vector tile (the softmax forward's key rows that one lane vector of a tile needs
// and the other does not see). A separate function so that microKernel, which every product
// inlines, keeps its shape and size.
//
//   C[r][c] = Σ_{k < depth} A(r, k) · B[k][c],   r < rows,  c < lanes
//
// Same operand contract as microKernel (A through any strides, B rows of contiguous lanes,
// C rows cRowStride apart) and the same FMA chain per element, so the same bits.

/// C = A·B for C of `rows` × lanes, in R-high tiles (rows past `rows` in a tile are computed
/// from the last valid A row and never stored).
@usableFromInline
func singleVectorProduct<T: KernelScalar>(
    rows: Int, depth: Int,
    a: UnsafePointer<T>, aRowStride: Int, aDepthStride: Int,
    b: UnsafePointer<T>, bRowStride: Int,
    c: UnsafeMutablePointer<T>, cRowStride: Int
) {
    var row = 0
    while row < rows {
        singleVectorTile(rows: Swift.min(microKernelRows, rows - row), depth: depth,
                         a: a + row * aRowStride, aRowStride: aRowStride, aDepthStride: aDepthStride,
                         b: b, bRowStride: bRowStride, c: c + row * cRowStride, cRowStride: cRowStride)
        row += microKernelRows
    }
}

/// One R × lanes tile of C = A·B, `rows` ≤ R.
@inline(__always)
func singleVectorTile<T: KernelScalar>(
    rows: Int, depth: Int,
    a: UnsafePointer<T>, aRowStride: Int, aDepthStride: Int,
    b: UnsafePointer<T>, bRowStride: Int,
    c: UnsafeMutablePointer<T>, cRowStride: Int
) {
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
    var c0 = zero, c1 = zero, c2 = zero, c3 = zero, c4 = zero, c5 = zero
    #if PERFORMER_ISA_AVX512
    var c6 = zero, c7 = zero
    #endif
    var bp = b
    var offset = 0
    for _ in 0..<depth {
        let b0 = T.load(bp)
        c0 = T.fma(T.splat(a0[offset]), b0, c0)
        c1 = T.fma(T.splat(a1[offset]), b0, c1)
        c2 = T.fma(T.splat(a2[offset]), b0, c2)
        c3 = T.fma(T.splat(a3[offset]), b0, c3)
        c4 = T.fma(T.splat(a4[offset]), b0, c4)
        c5 = T.fma(T.splat(a5[offset]), b0, c5)
        #if PERFORMER_ISA_AVX512
        c6 = T.fma(T.splat(a6[offset]), b0, c6)
        c7 = T.fma(T.splat(a7[offset]), b0, c7)
        #endif
        bp += bRowStride
        offset += aDepthStride
    }
    T.store(c0, c)
    if rows > 1 { T.store(c1, c + cRowStride) }
    if rows > 2 { T.store(c2, c + 2 * cRowStride) }
    if rows > 3 { T.store(c3, c + 3 * cRowStride) }
    if rows > 4 { T.store(c4, c + 4 * cRowStride) }
    if rows > 5 { T.store(c5, c + 5 * cRowStride) }
    #if PERFORMER_ISA_AVX512
    if rows > 6 { T.store(c6, c + 6 * cRowStride) }
    if rows > 7 { T.store(c7, c + 7 * cRowStride) }
    #endif
}

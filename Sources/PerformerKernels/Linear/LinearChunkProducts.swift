// The one dense product every matrix product of the chunked linear attention goes through,
// with the operand contract of the shared register-blocked micro-kernel (Kernels/MicroKernel.swift
// on the `kernels` branch), so that switching onto it changes this function's body only:
//
//   C[r][c] (= or +=) Σ_{k < depth} A(r, k) · B[k][c],   A(r, k) = a[r·aRowStride + k·aDepthStride]
//
// A is read by scalar from any strides (so Aᵀ is the same buffer with the strides swapped), B is
// a panel of `depth` rows of contiguous columns `bRowStride` apart, C rows are `cRowStride` apart.
// Products of the form A·Bᵀ are therefore done on a transposed copy of B that the chunk packs
// (φ(K)ᵀ, Vᵀ) or transposes once per chunk (Sᵀ, Gᵀ).
//
// Callers size every panel with `linearPanelWidth`-padded rows whose padding is zero, so a
// kernel that computes whole vector tiles (columns rounded up) reads only zeros there.

/// Panel row lengths are multiples of this (two AVX-512 float vectors).
let linearPanelWidth = 32

@inline(__always)
func linearPadded(_ n: Int) -> Int { (max(n, 1) + linearPanelWidth - 1) / linearPanelWidth * linearPanelWidth }

/// C (= or +=) A·B with the contract above, on the shared micro-kernel. Columns are rounded up
/// to whole vector tiles (2·lanes ≤ `linearPanelWidth`), which the padded panels allow.
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

/// target[c][r] = source[r][c] for an r × c block (row strides given).
@inline(__always)
func transposeBlock<T: KernelScalar>(
    rows: Int, columns: Int, _ source: UnsafePointer<T>, _ sourceRowStride: Int,
    _ target: UnsafeMutablePointer<T>, _ targetRowStride: Int
) {
    for r in 0..<rows {
        for c in 0..<columns { target[c * targetRowStride + r] = source[r * sourceRowStride + c] }
    }
}

/// Zeroes the strictly upper triangle of a t × t block (keeps j ≤ i): the causal mask inside a
/// chunk.
@inline(__always)
func keepLowerTriangle<T: KernelScalar>(_ a: UnsafeMutablePointer<T>, _ t: Int, _ lda: Int) {
    for i in 0..<t {
        for j in (i + 1)..<max(t, i + 1) { a[i * lda + j] = 0 }
    }
}

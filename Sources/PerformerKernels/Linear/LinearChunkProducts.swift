// Dense products over contiguous row-major chunk scratch: every matrix product of the chunked
// linear attention goes through these three shapes, so that switching them onto the shared
// register-blocked micro-kernel is one change here. `ld*` are row strides in elements.
// For now they are plain loops ordered so the innermost loop runs over contiguous memory.

/// C[m × n] (+)= A[m × k] · B[k × n].
@inline(__always)
func chunkProductNN<T: BinaryFloatingPoint>(
    _ m: Int, _ n: Int, _ k: Int,
    _ a: UnsafePointer<T>, _ lda: Int, _ b: UnsafePointer<T>, _ ldb: Int,
    _ c: UnsafeMutablePointer<T>, _ ldc: Int, accumulate: Bool
) {
    for i in 0..<m {
        let row = c + i * ldc
        if !accumulate { for j in 0..<n { row[j] = 0 } }
        for p in 0..<k {
            let scale = a[i * lda + p]
            let bRow = b + p * ldb
            for j in 0..<n { row[j] += scale * bRow[j] }
        }
    }
}

/// C[m × n] (+)= A[m × k] · B[n × k]ᵀ.
@inline(__always)
func chunkProductNT<T: BinaryFloatingPoint>(
    _ m: Int, _ n: Int, _ k: Int,
    _ a: UnsafePointer<T>, _ lda: Int, _ b: UnsafePointer<T>, _ ldb: Int,
    _ c: UnsafeMutablePointer<T>, _ ldc: Int, accumulate: Bool
) {
    for i in 0..<m {
        let aRow = a + i * lda
        for j in 0..<n {
            let bRow = b + j * ldb
            var sum: T = 0
            for p in 0..<k { sum += aRow[p] * bRow[p] }
            if accumulate { c[i * ldc + j] += sum } else { c[i * ldc + j] = sum }
        }
    }
}

/// C[m × n] (+)= A[k × m]ᵀ · B[k × n].
@inline(__always)
func chunkProductTN<T: BinaryFloatingPoint>(
    _ m: Int, _ n: Int, _ k: Int,
    _ a: UnsafePointer<T>, _ lda: Int, _ b: UnsafePointer<T>, _ ldb: Int,
    _ c: UnsafeMutablePointer<T>, _ ldc: Int, accumulate: Bool
) {
    if !accumulate {
        for i in 0..<m { for j in 0..<n { c[i * ldc + j] = 0 } }
    }
    for p in 0..<k {
        let aRow = a + p * lda
        let bRow = b + p * ldb
        for i in 0..<m {
            let scale = aRow[i]
            let row = c + i * ldc
            for j in 0..<n { row[j] += scale * bRow[j] }
        }
    }
}

/// Zeroes the strictly upper triangle of a t × t block (keeps j ≤ i): the causal mask inside a
/// chunk.
@inline(__always)
func keepLowerTriangle<T: BinaryFloatingPoint>(_ a: UnsafeMutablePointer<T>, _ t: Int, _ lda: Int) {
    for i in 0..<t {
        for j in (i + 1)..<max(t, i + 1) { a[i * lda + j] = 0 }
    }
}

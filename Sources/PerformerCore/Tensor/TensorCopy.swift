/// Element-wise copy between two views of one shape, at memcpy speed where the layouts allow:
/// one block copy when both are row-major contiguous (size-1 axes ignored), a block copy per
/// innermost row when both rows are unit-stride, a strided loop otherwise. Callers have
/// validated both views (shapes equal, extents representable, target not overlapping source).
enum TensorCopy {
    static func copy<T>(from source: TensorView<T>, to target: MutableTensorView<T>) {
        let shape = source.shape
        let count = shape[0] &* shape[1] &* shape[2] &* shape[3]
        if count == 0 { return }
        if isRowMajor(shape, source.strides) && isRowMajor(shape, target.strides) {
            target.base.update(from: source.base, count: count)
            return
        }
        let s = source.strides, t = target.strides
        let unitRows = shape[3] == 1 || (s[3] == 1 && t[3] == 1)
        for i0 in 0..<shape[0] {
            for i1 in 0..<shape[1] {
                for i2 in 0..<shape[2] {
                    let from = source.base + (i0 * s[0] + i1 * s[1] + i2 * s[2])
                    let to = target.base + (i0 * t[0] + i1 * t[1] + i2 * t[2])
                    if unitRows {
                        to.update(from: from, count: shape[3])
                    } else {
                        for i3 in 0..<shape[3] { to[i3 * t[3]] = from[i3 * s[3]] }
                    }
                }
            }
        }
    }

    /// True when `strides` are the row-major strides of `shape` on every axis longer than 1.
    static func isRowMajor(_ shape: SIMD4<Int>, _ strides: SIMD4<Int>) -> Bool {
        var expected = 1
        for axis in stride(from: 3, through: 0, by: -1) where shape[axis] != 1 {
            if strides[axis] != expected { return false }
            expected &*= shape[axis]
        }
        return true
    }
}

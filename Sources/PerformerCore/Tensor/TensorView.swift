/// A read-only rank-4 strided view of memory the caller owns: `base[Σ index[i] · strides[i]]`.
/// Strides are in elements and may be negative or zero; a B × N × H × D buffer is seen as
/// B × H × N × D by permuting its strides, without a copy.
public struct TensorView<Element: TensorElement>: @unchecked Sendable {
    /// The address of element (0, 0, 0, 0).
    public var base: UnsafePointer<Element>
    /// The sizes of the four dimensions.
    public var shape: SIMD4<Int>
    /// The distance, in elements, between neighbours along each dimension.
    public var strides: SIMD4<Int>

    /// A view; `strides` defaults to the contiguous row-major strides of `shape`.
    public init(base: UnsafePointer<Element>, shape: SIMD4<Int>, strides: SIMD4<Int>? = nil) {
        self.base = base
        self.shape = shape
        self.strides = emptyViewStrides(shape) ?? strides ?? contiguousStrides(shape)
    }
}

/// A writable rank-4 strided view (outputs). Its elements must not overlap each other.
public struct MutableTensorView<Element: TensorElement>: @unchecked Sendable {
    /// The address of element (0, 0, 0, 0).
    public var base: UnsafeMutablePointer<Element>
    /// The sizes of the four dimensions.
    public var shape: SIMD4<Int>
    /// The distance, in elements, between neighbours along each dimension.
    public var strides: SIMD4<Int>

    /// A view; `strides` defaults to the contiguous row-major strides of `shape`.
    public init(base: UnsafeMutablePointer<Element>, shape: SIMD4<Int>, strides: SIMD4<Int>? = nil) {
        self.base = base
        self.shape = shape
        self.strides = emptyViewStrides(shape) ?? strides ?? contiguousStrides(shape)
    }

    /// The same memory, read-only.
    public var readOnly: TensorView<Element> {
        TensorView(base: UnsafePointer(base), shape: shape, strides: strides)
    }
}

/// Zero strides when `shape` has a size 0, else nil. An empty view has no elements, whatever
/// its strides (NumPy gives empty arrays any strides): they are never used, so a per-batch
/// offset such as b · strides[0] can never overflow on a view that has nothing to read.
func emptyViewStrides(_ shape: SIMD4<Int>) -> SIMD4<Int>? {
    shape[0] == 0 || shape[1] == 0 || shape[2] == 0 || shape[3] == 0 ? .zero : nil
}

/// Row-major strides of `shape` (last dimension contiguous). Wraps on overflow; the
/// validation in `TensorLayout` rejects such shapes before anything reads memory.
public func contiguousStrides(_ shape: SIMD4<Int>) -> SIMD4<Int> {
    SIMD4(shape[1] &* shape[2] &* shape[3], shape[2] &* shape[3], shape[3], 1)
}

/// A contiguous rank-4 tensor that owns its storage: the convenient form for Swift callers.
/// Kernels see it through `withView` / `withMutableView`.
public struct Tensor<Element: AttentionScalar>: Equatable, Sendable {
    /// The sizes of the four dimensions (B, H, N, D in the attention functions' terms).
    public private(set) var shape: SIMD4<Int>
    /// Row-major elements, `shape[0] · shape[1] · shape[2] · shape[3]` of them.
    public var elements: [Element]

    /// A tensor of `shape` filled with `value`. Sizes must be non-negative.
    public init(shape: SIMD4<Int>, repeating value: Element = 0) throws(PerformerError) {
        let count = try TensorLayout.elementCount(shape, name: "shape")
        self.shape = shape
        self.elements = Array(repeating: value, count: count)
    }

    /// A tensor of `shape` holding `elements` in row-major order.
    public init(shape: SIMD4<Int>, elements: [Element]) throws(PerformerError) {
        let count = try TensorLayout.elementCount(shape, name: "shape")
        guard count == elements.count else {
            throw PerformerError(.shapeMismatch, "shape \(TensorLayout.describe(shape)) holds \(count) elements but \(elements.count) were given")
        }
        self.shape = shape
        self.elements = elements
    }

    /// The element at (b, h, n, d); traps when an index is out of range.
    public subscript(b: Int, h: Int, n: Int, d: Int) -> Element {
        get { elements[offset(b, h, n, d)] }
        set { elements[offset(b, h, n, d)] = newValue }
    }

    private func offset(_ b: Int, _ h: Int, _ n: Int, _ d: Int) -> Int {
        precondition((0..<shape[0]).contains(b) && (0..<shape[1]).contains(h)
            && (0..<shape[2]).contains(n) && (0..<shape[3]).contains(d), "Tensor index out of range")
        return ((b * shape[1] + h) * shape[2] + n) * shape[3] + d
    }

    /// Calls `body` with a contiguous view of the elements, valid only during the call.
    public func withView<R, E: Error>(_ body: (TensorView<Element>) throws(E) -> R) throws(E) -> R {
        let result: Result<R, E> = elements.withUnsafeBufferPointer { buffer in
            // An empty array may have no base address; no element is read through it then.
            let base = buffer.baseAddress ?? UnsafePointer(bitPattern: MemoryLayout<Element>.alignment)!
            do throws(E) { return .success(try body(TensorView(base: base, shape: shape))) } catch { return .failure(error) }
        }
        return try result.get()
    }

    /// Calls `body` with a writable contiguous view of the elements (an output), valid only
    /// during the call.
    public mutating func withMutableView<R, E: Error>(_ body: (MutableTensorView<Element>) throws(E) -> R) throws(E) -> R {
        let shape = self.shape
        let result: Result<R, E> = elements.withUnsafeMutableBufferPointer { buffer in
            let base = buffer.baseAddress ?? UnsafeMutablePointer(bitPattern: MemoryLayout<Element>.alignment)!
            do throws(E) { return .success(try body(MutableTensorView(base: base, shape: shape))) } catch { return .failure(error) }
        }
        return try result.get()
    }
}

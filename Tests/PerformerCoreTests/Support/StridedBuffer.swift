import PerformerCore

/// How a logical rank-4 tensor is placed in memory: which axis is outermost, which axes run
/// backwards (negative strides), which are broadcast (stride 0), and how many unused elements
/// separate consecutive positions of every axis (gaps a kernel must skip and never write).
struct Layout: CustomStringConvertible {
    /// Axes from outermost to innermost in memory: a permutation of 0...3.
    var order: [Int] = [0, 1, 2, 3]
    var reversed: Set<Int> = []
    var broadcast: Set<Int> = []
    var gap: Int = 0

    static let contiguous = Layout()
    /// A B × N × H × D buffer seen as B × H × N × D (the usual "sequence-major" projection output).
    static let sequenceMajor = Layout(order: [0, 2, 1, 3])
    /// Columns outermost: the last axis has the largest stride, rows are not contiguous.
    static let columnMajor = Layout(order: [3, 2, 1, 0])
    /// Rows and columns both run backwards, with gaps between elements.
    static let reversedWithGaps = Layout(order: [0, 1, 2, 3], reversed: [2, 3], gap: 1)
    /// Every axis backwards, sequence-major.
    static let allReversed = Layout(order: [0, 2, 1, 3], reversed: [0, 1, 2, 3])

    var description: String {
        "Layout(order: \(order), reversed: \(reversed.sorted()), broadcast: \(broadcast.sorted()), gap: \(gap))"
    }
}

/// Storage for one strided view, with guard elements before and after it and in every gap,
/// all holding a sentinel: `untouchedOutsideView` says whether a kernel wrote anywhere it must
/// not, `load` reads the logical tensor back through the strides.
struct StridedBuffer<T: AttentionScalar> {
    static var guardCount: Int { 5 }

    var storage: [T]
    let baseOffset: Int
    let shape: SIMD4<Int>
    let strides: SIMD4<Int>
    let sentinel: T

    init(shape: SIMD4<Int>, layout: Layout = .contiguous, sentinel: T = 1234.5) {
        precondition(layout.order.sorted() == [0, 1, 2, 3])
        self.shape = shape
        self.sentinel = sentinel
        var strides = SIMD4<Int>(repeating: 0)
        var extent = 1
        for axis in layout.order.reversed() {
            if layout.broadcast.contains(axis) { continue }
            strides[axis] = extent
            extent *= max(shape[axis], 1) + layout.gap
        }
        var base = Self.guardCount
        for axis in layout.reversed where !layout.broadcast.contains(axis) {
            base += max(shape[axis] - 1, 0) * strides[axis]
            strides[axis] = -strides[axis]
        }
        self.strides = strides
        self.baseOffset = base
        self.storage = Array(repeating: sentinel, count: extent + 2 * Self.guardCount)
    }

    /// Storage offsets of every logical element, in row-major logical order.
    var viewOffsets: [Int] {
        var offsets: [Int] = []
        offsets.reserveCapacity(shape[0] * shape[1] * shape[2] * shape[3])
        for i0 in 0..<shape[0] { for i1 in 0..<shape[1] { for i2 in 0..<shape[2] { for i3 in 0..<shape[3] {
            offsets.append(baseOffset + i0 * strides[0] + i1 * strides[1] + i2 * strides[2] + i3 * strides[3])
        } } } }
        return offsets
    }

    /// Writes `dense` (rounded to T) through the view. Along a broadcast axis the last
    /// position wins; `load()` returns what the kernels will actually read.
    mutating func store(_ dense: DenseTensor) {
        precondition(dense.shape == shape)
        for (index, offset) in viewOffsets.enumerated() { storage[offset] = T(dense.values[index]) }
    }

    /// Sets every element the view covers to `value`.
    mutating func fillView(_ value: T) {
        for offset in viewOffsets { storage[offset] = value }
    }

    func load() -> DenseTensor {
        DenseTensor(shape: shape, values: viewOffsets.map { Double(storage[$0]) })
    }

    /// True when every storage element the view does not cover still holds the sentinel.
    var untouchedOutsideView: Bool {
        var covered = [Bool](repeating: false, count: storage.count)
        for offset in viewOffsets { covered[offset] = true }
        return storage.indices.allSatisfy { covered[$0] || storage[$0] == sentinel }
    }

    /// True when every element the view covers holds the sentinel (nothing was written).
    var viewHoldsSentinel: Bool { viewOffsets.allSatisfy { storage[$0] == sentinel } }

    func withView<R>(_ body: (TensorView<T>) throws -> R) rethrows -> R {
        try storage.withUnsafeBufferPointer { buffer in
            try body(TensorView(base: buffer.baseAddress! + baseOffset, shape: shape, strides: strides))
        }
    }

    mutating func withMutableView<R>(_ body: (MutableTensorView<T>) throws -> R) rethrows -> R {
        let (shape, strides, baseOffset) = (self.shape, self.strides, self.baseOffset)
        return try storage.withUnsafeMutableBufferPointer { buffer in
            try body(MutableTensorView(base: buffer.baseAddress! + baseOffset, shape: shape, strides: strides))
        }
    }

    /// A buffer holding `dense` in `layout`.
    static func holding(_ dense: DenseTensor, layout: Layout = .contiguous) -> StridedBuffer<T> {
        var buffer = StridedBuffer(shape: dense.shape, layout: layout)
        buffer.store(dense)
        return buffer
    }
}

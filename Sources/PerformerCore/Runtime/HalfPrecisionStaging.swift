import PerformerKernelInterface

/// Contiguous float32 working copies of the tensors of a half-precision call, in one scratch
/// allocation made after validation and before anything is written: running out of memory
/// leaves the outputs untouched. Memory is that of the tensors themselves, O(N·D), never N×N.
struct HalfPrecisionStaging: ~Copyable {
    private let buffer: ScratchBuffer
    private let offsets: [Int]
    private let shapes: [SIMD4<Int>]

    /// Room for one float32 tensor of each shape (validated shapes: their counts fit in Int).
    /// `names`: the tensors' argument names, for the out-of-memory message.
    init(shapes: [SIMD4<Int>], named names: String) throws(PerformerError) {
        var total: ScratchSize = 0
        var offsets: [Int] = []
        for shape in shapes {
            offsets.append(total.value)
            let bytes = ScratchSize(shape[0]) * shape[1] * shape[2] * shape[3] * MemoryLayout<Float>.stride
            total = total + bytes.roundedUp(to: 64)
        }
        buffer = try ScratchBuffer(slots: 1, slotBytes: total, for: "the float32 copies of \(names)")
        self.offsets = offsets
        self.shapes = shapes
    }

    /// The `index`th copy, row-major.
    func tensor(_ index: Int) -> MutableTensorView<Float> {
        MutableTensorView(base: (buffer.base + offsets[index]).assumingMemoryBound(to: Float.self), shape: shapes[index])
    }
}

extension HalfPrecisionStaging {
    /// The convert-to-float32 path of every half-precision call, once validated: float32
    /// copies of `inputs` (widened) and of `outputs`, `body` run on them (a float32 call), then
    /// each output rounded once into its half tensor. Memory is allocated before anything is
    /// written, and outputs are written only when `body` succeeds, so an error leaves them
    /// untouched. Float32 tensors of the call (states, lse) go to `body` directly. `names`: the
    /// inputs' and outputs' argument names, in order ("q, k, v, out").
    static func run<H: HalfPrecisionScalar>(
        inputs: [TensorView<H>], outputs: [MutableTensorView<H>], named names: String,
        _ body: (_ inputs: [TensorView<Float>], _ outputs: [MutableTensorView<Float>]) throws(PerformerError) -> Void
    ) throws(PerformerError) {
        let staging = try HalfPrecisionStaging(shapes: inputs.map(\.shape) + outputs.map(\.shape), named: names)
        let wide = inputs.indices.map { staging.tensor($0) }
        let results = outputs.indices.map { staging.tensor(inputs.count + $0) }
        for (source, target) in zip(inputs, wide) { HalfConversion.widen(source, into: target) }
        try body(wide.map(\.readOnly), results)
        for (source, target) in zip(results, outputs) { HalfConversion.narrow(source.readOnly, into: target) }
    }
}

/// Element-wise conversion between half-precision views and float32 views of one shape, on
/// the thread pool, through the kernel table's vectorized conversions. The result does not
/// depend on the thread count (each element is converted on its own).
enum HalfConversion {
    /// target = source, exactly (every half value is a float32).
    static func widen<H: HalfPrecisionScalar>(_ source: TensorView<H>, into target: MutableTensorView<Float>) {
        let kernels = Runtime.kernels.halfConversion
        let entry = H.dtype == .float16 ? kernels.widenFloat16 : kernels.widenBFloat16
        run(entry, source: (UnsafeMutableRawPointer(mutating: source.base), source.strides, MemoryLayout<H>.stride),
            target: (UnsafeMutableRawPointer(target.base), target.strides, MemoryLayout<Float>.stride), shape: source.shape)
    }

    /// target = source rounded to H (nearest, ties to even; NaN stays NaN).
    static func narrow<H: HalfPrecisionScalar>(_ source: TensorView<Float>, into target: MutableTensorView<H>) {
        let kernels = Runtime.kernels.halfConversion
        let entry = H.dtype == .float16 ? kernels.narrowFloat16 : kernels.narrowBFloat16
        run(entry, source: (UnsafeMutableRawPointer(mutating: source.base), source.strides, MemoryLayout<Float>.stride),
            target: (UnsafeMutableRawPointer(target.base), target.strides, MemoryLayout<H>.stride), shape: source.shape)
    }

    /// Elements per task: enough to amortize a hand-over, small enough to spread a single head.
    private static let elementsPerTask = 1 << 14

    private static func run(
        _ entry: @Sendable (UnsafePointer<HalfConversionTask>) -> Void,
        source: (base: UnsafeMutableRawPointer, strides: SIMD4<Int>, size: Int),
        target: (base: UnsafeMutableRawPointer, strides: SIMD4<Int>, size: Int), shape: SIMD4<Int>
    ) {
        let heads = shape[0] * shape[1], rows = shape[2], columns = shape[3]
        guard heads > 0, rows > 0, columns > 0 else { return }
        let rowsPerTask = max(1, elementsPerTask / columns)
        let blocks = (rows + rowsPerTask - 1) / rowsPerTask
        let count = heads * blocks
        Runtime.parallelFor(count: count, threads: min(Runtime.threads(forWork: heads * rows * columns), count)) { item, _ in
            let head = item / blocks, first = item % blocks * rowsPerTask
            let (b, h) = (head / shape[1], head % shape[1])
            func matrix(_ t: (base: UnsafeMutableRawPointer, strides: SIMD4<Int>, size: Int)) -> StridedMatrix {
                StridedMatrix(base: t.base + (b * t.strides[0] + h * t.strides[1] + first * t.strides[2]) * t.size,
                              rowStride: t.strides[2], columnStride: t.strides[3])
            }
            var task = HalfConversionTask(rows: min(rowsPerTask, rows - first), columns: columns,
                                          source: matrix(source), destination: matrix(target))
            entry(&task)
        }
    }
}

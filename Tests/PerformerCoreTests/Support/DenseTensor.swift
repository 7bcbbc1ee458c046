import PerformerCore

/// A contiguous rank-4 float64 array for references: B × H × rows × columns, row-major.
/// References compute in it; library results are converted to it for comparison.
struct DenseTensor: Equatable {
    var shape: SIMD4<Int>
    var values: [Double]

    init(shape: SIMD4<Int>, repeating value: Double = 0) {
        precondition(shape.min() >= 0)
        self.shape = shape
        self.values = Array(repeating: value, count: shape[0] * shape[1] * shape[2] * shape[3])
    }

    init(shape: SIMD4<Int>, values: [Double]) {
        precondition(values.count == shape[0] * shape[1] * shape[2] * shape[3])
        self.shape = shape
        self.values = values
    }

    /// Standard normal entries times `scale`, drawn from `rng` in row-major order.
    static func random(_ shape: SIMD4<Int>, _ rng: inout SplitMix64, scale: Double = 1) -> DenseTensor {
        var tensor = DenseTensor(shape: shape)
        for index in tensor.values.indices { tensor.values[index] = scale * rng.nextNormal() }
        return tensor
    }

    var count: Int { values.count }

    func offset(_ b: Int, _ h: Int, _ r: Int, _ c: Int) -> Int {
        precondition((0..<shape[0]).contains(b) && (0..<shape[1]).contains(h)
            && (0..<shape[2]).contains(r) && (0..<shape[3]).contains(c), "DenseTensor index out of range")
        return ((b * shape[1] + h) * shape[2] + r) * shape[3] + c
    }

    subscript(b: Int, h: Int, r: Int, c: Int) -> Double {
        get { values[offset(b, h, r, c)] }
        set { values[offset(b, h, r, c)] = newValue }
    }

    /// The same values rounded to `T` and back (what a float32 kernel actually receives).
    func rounded<T: AttentionScalar>(to _: T.Type) -> DenseTensor {
        DenseTensor(shape: shape, values: values.map { Double(T($0)) })
    }

    /// An owning library tensor holding these values rounded to `T`.
    func tensor<T: AttentionScalar>(_: T.Type) -> Tensor<T> {
        try! Tensor(shape: shape, elements: values.map { T($0) })
    }

    init<T: AttentionScalar>(_ tensor: Tensor<T>) {
        self.init(shape: tensor.shape, values: tensor.elements.map { Double($0) })
    }

    /// Rows `rows` of every (b, h) slice.
    func slicingRows(_ rows: Range<Int>) -> DenseTensor {
        var result = DenseTensor(shape: SIMD4(shape[0], shape[1], rows.count, shape[3]))
        for b in 0..<shape[0] { for h in 0..<shape[1] { for (r, row) in rows.enumerated() { for c in 0..<shape[3] {
            result[b, h, r, c] = self[b, h, row, c]
        } } } }
        return result
    }

    var containsNaN: Bool { values.contains { $0.isNaN } }
}

/// ‖actual − expected‖₂ / ‖expected‖₂. Entries where the expected value is −inf must be −inf
/// in `actual` too (they are excluded from the norms); any other non-finite entry makes the
/// error infinite. When ‖expected‖ is 0 the error is ‖actual‖ (an absolute error).
func relativeError(_ actual: DenseTensor, _ expected: DenseTensor) -> Double {
    precondition(actual.shape == expected.shape, "shapes \(actual.shape) and \(expected.shape) differ")
    var difference = 0.0, reference = 0.0
    for (a, e) in zip(actual.values, expected.values) {
        if e == -.infinity {
            if a != -.infinity { return .infinity }
            continue
        }
        guard a.isFinite, e.isFinite else { return .infinity }
        difference += (a - e) * (a - e)
        reference += e * e
    }
    return reference > 0 ? (difference / reference).squareRoot() : difference.squareRoot()
}

/// One conversion task: `rows` × `columns` elements from `source` to `destination`, each a
/// matrix of its own element type (which entry runs fixes the types). Strides may be any value
/// for the source; the destination's elements are distinct (PerformerCore checked both).
public struct HalfConversionTask: @unchecked Sendable {
    public var rows: Int, columns: Int
    public var source: StridedMatrix
    public var destination: StridedMatrix

    public init(rows: Int, columns: Int, source: StridedMatrix, destination: StridedMatrix) {
        self.rows = rows
        self.columns = columns
        self.source = source
        self.destination = destination
    }
}

/// Conversions between the half-precision storage types and float32, vectorized for the
/// module's ISA: widening is exact; narrowing rounds to nearest, ties to even (NaN stays NaN).
public struct HalfConversionKernels: Sendable {
    public var widenFloat16: @Sendable (UnsafePointer<HalfConversionTask>) -> Void
    public var narrowFloat16: @Sendable (UnsafePointer<HalfConversionTask>) -> Void
    public var widenBFloat16: @Sendable (UnsafePointer<HalfConversionTask>) -> Void
    public var narrowBFloat16: @Sendable (UnsafePointer<HalfConversionTask>) -> Void

    public init(
        widenFloat16: @escaping @Sendable (UnsafePointer<HalfConversionTask>) -> Void,
        narrowFloat16: @escaping @Sendable (UnsafePointer<HalfConversionTask>) -> Void,
        widenBFloat16: @escaping @Sendable (UnsafePointer<HalfConversionTask>) -> Void,
        narrowBFloat16: @escaping @Sendable (UnsafePointer<HalfConversionTask>) -> Void
    ) {
        self.widenFloat16 = widenFloat16
        self.narrowFloat16 = narrowFloat16
        self.widenBFloat16 = widenBFloat16
        self.narrowBFloat16 = narrowBFloat16
    }
}

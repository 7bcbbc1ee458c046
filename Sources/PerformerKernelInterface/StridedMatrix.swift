/// One head's matrix as a base pointer and element strides. The element type (Float or Double)
/// is fixed by which kernel entry receives it. Strides may be any value, including negative
/// or zero for inputs; PerformerCore has validated them before a kernel sees them.
public struct StridedMatrix: @unchecked Sendable {
    public var base: UnsafeMutableRawPointer
    public var rowStride: Int
    public var columnStride: Int

    public init(base: UnsafeMutableRawPointer, rowStride: Int, columnStride: Int) {
        self.base = base
        self.rowStride = rowStride
        self.columnStride = columnStride
    }
}

/// A scratch size (elements or bytes) whose arithmetic saturates at `Int.max`.
///
/// The kernel modules, where the scratch layouts live, are built with -Ounchecked: there an
/// Int product that overflows wraps silently (a head dim of 2^62 once measured as 64 bytes,
/// and a kernel then wrote D elements into them). A saturated size is larger than any
/// allocation can be, so `ScratchBuffer` reports it as out of memory instead.
public struct ScratchSize: Comparable, ExpressibleByIntegerLiteral {
    /// The size, or `Int.max` when the true value does not fit.
    public let value: Int

    /// `count` elements or bytes; a negative count (no layout has one) is treated as 0.
    @inlinable public init(_ count: Int) { value = Swift.max(count, 0) }
    @inlinable public init(integerLiteral count: Int) { self.init(count) }

    public static let saturated = ScratchSize(Int.max)
    @inlinable public var isSaturated: Bool { value == Int.max }

    @inlinable public static func + (a: ScratchSize, b: ScratchSize) -> ScratchSize {
        let (sum, overflow) = a.value.addingReportingOverflow(b.value)
        return overflow ? .saturated : ScratchSize(sum)
    }

    @inlinable public static func * (a: ScratchSize, b: ScratchSize) -> ScratchSize {
        let (product, overflow) = a.value.multipliedReportingOverflow(by: b.value)
        return overflow ? .saturated : ScratchSize(product)
    }

    @inlinable public static func + (a: ScratchSize, b: Int) -> ScratchSize { a + ScratchSize(b) }
    @inlinable public static func + (a: Int, b: ScratchSize) -> ScratchSize { ScratchSize(a) + b }
    @inlinable public static func * (a: ScratchSize, b: Int) -> ScratchSize { a * ScratchSize(b) }
    @inlinable public static func * (a: Int, b: ScratchSize) -> ScratchSize { ScratchSize(a) * b }

    /// The next multiple of `multiple` (> 0) at or above the size (itself when saturated).
    @inlinable public func roundedUp(to multiple: Int) -> ScratchSize {
        if isSaturated { return self }
        let (sum, overflow) = value.addingReportingOverflow(multiple - 1)
        return overflow ? .saturated : ScratchSize(sum / multiple * multiple)
    }

    @inlinable public static func < (a: ScratchSize, b: ScratchSize) -> Bool { a.value < b.value }
}

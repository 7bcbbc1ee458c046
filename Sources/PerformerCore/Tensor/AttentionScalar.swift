/// The element types of the C ABI (performer_dtype codes; new codes are appended).
public enum DType: Int32, Sendable, CaseIterable {
    /// IEEE binary32, the fast path.
    case float32 = 0
    /// IEEE binary64: references and gradient checks.
    case float64 = 1
    /// IEEE binary16 storage; computed in float32 (docs/HALF_PRECISION.md).
    case float16 = 2
    /// bfloat16 storage (the top half of a float32); computed in float32.
    case bfloat16 = 3

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .float32: 4
        case .float64: 8
        case .float16, .bfloat16: 2
        }
    }

    /// The dtype's name ("float32", "float64", "float16", "bfloat16"), as messages spell it.
    public var name: String {
        switch self {
        case .float32: "float32"
        case .float64: "float64"
        case .float16: "float16"
        case .bfloat16: "bfloat16"
        }
    }

    /// True for the storage-only types computed in float32.
    public var isHalf: Bool { self == .float16 || self == .bfloat16 }
}

/// Any element a tensor view may hold: the computed scalars and the half-precision storage types.
public protocol TensorElement: Sendable {
    /// The C ABI's code for this element type.
    static var dtype: DType { get }
}

/// Float and Double: the scalars attention is computed in (float64 is for references and
/// gradient checks; float32 is the fast path).
public protocol AttentionScalar: TensorElement, BinaryFloatingPoint {}

extension Float: AttentionScalar {
    /// `.float32`.
    public static var dtype: DType { .float32 }
}

extension Double: AttentionScalar {
    /// `.float64`.
    public static var dtype: DType { .float64 }
}

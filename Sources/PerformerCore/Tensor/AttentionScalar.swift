/// Element types the kernels compute in. Values match `performer_dtype` in performer.h.
public enum DType: Int32, Sendable, CaseIterable {
    case float32 = 0
    case float64 = 1

    /// Bytes per element.
    public var size: Int { self == .float32 ? 4 : 8 }
    public var name: String { self == .float32 ? "float32" : "float64" }
}

/// Float and Double: the scalars attention is computed in (float64 is for references and
/// gradient checks; float32 is the fast path).
public protocol AttentionScalar: BinaryFloatingPoint, Sendable {
    static var dtype: DType { get }
}

extension Float: AttentionScalar {
    public static var dtype: DType { .float32 }
}

extension Double: AttentionScalar {
    public static var dtype: DType { .float64 }
}

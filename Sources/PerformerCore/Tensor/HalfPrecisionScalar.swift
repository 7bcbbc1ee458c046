/// The half-precision storage types: tensors of them are read into float32, computed in
/// float32 and rounded once (to nearest, ties to even) when written (docs/HALF_PRECISION.md).
public protocol HalfPrecisionScalar: TensorElement {}

extension Float16: HalfPrecisionScalar {
    /// `.float16`.
    public static var dtype: DType { .float16 }
}

/// A bfloat16 value as stored: the top 16 bits of a float32 (sign, 8 exponent bits, 7
/// mantissa bits). A storage type only: convert to Float to compute.
public struct BFloat16: HalfPrecisionScalar, Hashable {
    /// The stored bits: those of the float32 value's upper half.
    public var bitPattern: UInt16

    /// The bfloat16 with these bits, as stored.
    public init(bitPattern: UInt16) { self.bitPattern = bitPattern }

    /// `value` rounded to the nearest bfloat16, ties to even; a NaN stays a (quiet) NaN and
    /// keeps its sign; overflow rounds to ±infinity.
    public init(_ value: Float) {
        let bits = value.bitPattern
        if value.isNaN {
            bitPattern = UInt16(truncatingIfNeeded: bits >> 16) | 0x40
        } else {
            bitPattern = UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
        }
    }

    /// `.bfloat16`.
    public static var dtype: DType { .bfloat16 }
}

extension Float {
    /// The exact float32 value of a bfloat16.
    public init(_ value: BFloat16) { self.init(bitPattern: UInt32(value.bitPattern) << 16) }
}

extension HalfPrecisionScalar {
    /// The exact float32 value (element-wise code that is not a kernel: the softmax merge).
    var widened: Float {
        Self.dtype == .float16 ? Float(unsafeBitCast(self, to: Float16.self)) : Float(unsafeBitCast(self, to: BFloat16.self))
    }

    /// `value` rounded to the nearest H, ties to even (as the conversion kernels round).
    init(rounding value: Float) {
        self = Self.dtype == .float16 ? unsafeBitCast(Float16(value), to: Self.self) : unsafeBitCast(BFloat16(value), to: Self.self)
    }
}

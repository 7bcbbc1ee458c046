// performer_tensor_t -> TensorView: the checks only the C side needs (NULL descriptors and
// data, dtype codes, the reserved field, alignment). Shapes, strides, overflow and aliasing
// are PerformerCore's job.
import CPerformerABI
import PerformerCore

extension DType {
    /// "0 = float32, 1 = float64, 2 = float16, 3 = bfloat16": the codes, for messages.
    static var codeList: String { allCases.map { "\($0.rawValue) = \($0.name)" }.joined(separator: ", ") }
}

/// A checked tensor descriptor, not yet typed by its dtype.
struct TensorArgument {
    /// The bytes the view touches, or nil when it is empty. Throws when its extent overflows or
    /// it reaches outside the address space (a view with huge negative strides wraps below 0).
    func byteRange() throws(PerformerError) -> ClosedRange<UInt>? {
        try TensorLayout.byteRange(base: UnsafeRawPointer(data), shape: shape, strides: strides, elementSize: dtype.size,
                                   name: name)
    }

    let name: String
    let dtype: DType
    let data: UnsafeMutableRawPointer
    let shape: SIMD4<Int>
    let strides: SIMD4<Int>

    /// Where an empty tensor passed with data == NULL points: views need a non-null base,
    /// and no element of an empty view is ever read or written.
    private static let emptyBase = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)

    /// Reads `*descriptor`, named `name` in messages ("q", "dk", ...).
    init(_ descriptor: UnsafePointer<performer_tensor_t>?, name: String) throws(PerformerError) {
        guard let descriptor else { throw PerformerError(.nullPointer, "\(name) is NULL") }
        let tensor = descriptor.pointee
        guard tensor.reserved == 0 else {
            throw PerformerError(.invalidArgument, "\(name).reserved = \(tensor.reserved) but must be 0")
        }
        guard let dtype = DType(rawValue: tensor.dtype) else {
            throw PerformerError(.dtypeMismatch, "\(name).dtype = \(tensor.dtype) is not a performer_dtype (\(DType.codeList))")
        }
        let shape = SIMD4(Int(tensor.shape.0), Int(tensor.shape.1), Int(tensor.shape.2), Int(tensor.shape.3))
        let count = try TensorLayout.elementCount(shape, name: name)
        if let data = tensor.data {
            let address = UInt(bitPattern: Int(bitPattern: data))
            guard address % UInt(dtype.size) == 0 else {
                throw PerformerError(.invalidArgument, "\(name).data = 0x\(String(address, radix: 16)) is not aligned to \(dtype.size) bytes (\(dtype.name))")
            }
            self.data = data
        } else if count == 0 {
            self.data = Self.emptyBase
        } else {
            throw PerformerError(.nullPointer, "\(name).data is NULL")
        }
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.strides = SIMD4(Int(tensor.strides.0), Int(tensor.strides.1), Int(tensor.strides.2), Int(tensor.strides.3))
    }

    /// Same as init, for an output descriptor (the descriptor itself is only read).
    init(_ descriptor: UnsafeMutablePointer<performer_tensor_t>?, name: String) throws(PerformerError) {
        try self.init(UnsafePointer(descriptor), name: name)
    }

    /// Throws unless every tensor in `others` has `first`'s dtype.
    static func expectSameDType(_ others: [TensorArgument], as first: TensorArgument) throws(PerformerError) {
        for other in others where other.dtype != first.dtype {
            throw PerformerError(.dtypeMismatch, "\(other.name).dtype = \(other.dtype.name) but \(first.name).dtype = \(first.dtype.name)")
        }
    }

    /// Throws unless every tensor in `tokens` has `first`'s dtype and every tensor in `states`
    /// has the dtype its call keeps states in: `first`'s (float32, float64), or float32 when
    /// `first` is half precision (states, lse, denominators stay float32; docs/HALF_PRECISION.md).
    static func expectDTypes(tokens: [TensorArgument], states: [TensorArgument], as first: TensorArgument)
        throws(PerformerError) {
        try expectSameDType(tokens, as: first)
        if first.dtype.isHalf {
            for state in states { try state.expectFloat32(in: first) }
        } else {
            try expectSameDType(states, as: first)
        }
    }

    /// Throws unless this tensor is float32: the lse and states of a half-precision call.
    func expectFloat32(in call: TensorArgument) throws(PerformerError) {
        guard dtype == .float32 else {
            throw PerformerError(.dtypeMismatch, "\(name).dtype = \(dtype.name) but must be float32 when \(call.name).dtype = \(call.dtype.name) (half-precision calls keep \(name) in float32)")
        }
    }

    func view<T: TensorElement>(_: T.Type) -> TensorView<T> {
        TensorView(base: UnsafePointer(data.assumingMemoryBound(to: T.self)), shape: shape, strides: strides)
    }

    func mutableView<T: TensorElement>(_: T.Type) -> MutableTensorView<T> {
        MutableTensorView(base: data.assumingMemoryBound(to: T.self), shape: shape, strides: strides)
    }
}

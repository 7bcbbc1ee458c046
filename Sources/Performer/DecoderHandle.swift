// What the two decoder handles of the C ABI share (LinearDecoderHandle in LinearDecoder.swift,
// FavorDecoderHandle in FavorDecoderHandle.swift): the handle lookup under the argument name
// "decoder", the dtype argument of create, and the dtype checks of the tensors passed in.
import CPerformerABI
import PerformerCore

/// A class whose instances a decoder's opaque C handle stands for (HandleRegistry.swift).
protocol DecoderHandle: RegisteredHandle {
    /// The token dtype chosen at creation: every q, k, v, out passed to the decoder has it.
    var dtype: DType { get }
    /// The dtype of the state tensors: the token dtype, or float32 for half tokens.
    var stateDType: DType { get }
}

extension DecoderHandle {
    /// The decoder of `handle`: NULL, destroyed, unknown and other kinds of handle are errors.
    static func from(_ handle: OpaquePointer?) throws(PerformerError) -> Self {
        try lookup(handle, name: "decoder")
    }

    /// Throws unless the tensor has the decoder's dtype. (One tensor a call: a variadic list
    /// allocated an array on every step.)
    func expectDType(_ tensor: TensorArgument) throws(PerformerError) {
        if tensor.dtype != dtype {
            throw PerformerError(.dtypeMismatch, "\(tensor.name).dtype = \(tensor.dtype.name) but the decoder's dtype is \(dtype.name)")
        }
    }

    /// Throws unless every state tensor has the decoder's state dtype.
    func expectStateDType(_ tensors: TensorArgument...) throws(PerformerError) {
        for tensor in tensors where tensor.dtype != stateDType {
            let why = stateDType == dtype ? "" : " (a \(dtype.name) decoder keeps its state in float32)"
            throw PerformerError(.dtypeMismatch, "\(tensor.name).dtype = \(tensor.dtype.name) but the decoder's state dtype is \(stateDType.name)\(why)")
        }
    }

    /// The four token tensors of a step or a prefill, checked and of the decoder's dtype.
    func tokens(
        _ q: UnsafePointer<performer_tensor_t>?, _ k: UnsafePointer<performer_tensor_t>?,
        _ v: UnsafePointer<performer_tensor_t>?, _ out: UnsafeMutablePointer<performer_tensor_t>?
    ) throws(PerformerError) -> (TensorArgument, TensorArgument, TensorArgument, TensorArgument) {
        let q = try TensorArgument(q, name: "q"), k = try TensorArgument(k, name: "k")
        let v = try TensorArgument(v, name: "v"), out = try TensorArgument(out, name: "out")
        try expectDType(q); try expectDType(k); try expectDType(v); try expectDType(out)
        return (q, k, v, out)
    }
}

/// The dtype argument of a decoder's create function.
func decoderDType(_ dtype: performer_dtype) throws(PerformerError) -> DType {
    guard let type = Int32(exactly: dtype.rawValue).flatMap(DType.init(rawValue:)) else {
        throw PerformerError(.dtypeMismatch, "dtype = \(Int32(truncatingIfNeeded: dtype.rawValue)) is not a performer_dtype (\(DType.codeList))")
    }
    return type
}

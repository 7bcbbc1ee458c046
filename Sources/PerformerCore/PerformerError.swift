/// What went wrong, as a code shared with the C ABI (`performer_status` in performer.h).
/// The raw values are part of the stable ABI: never renumber, only append.
public enum PerformerStatus: Int32, Sendable, CaseIterable {
    /// Success: the call wrote its outputs.
    case ok = 0
    /// A required pointer (tensor data, output, handle) was null.
    case nullPointer = 1
    /// An option or scalar argument is out of its domain (scale not finite, unknown enum, ...).
    case invalidArgument = 2
    /// Tensor shapes disagree with each other or with the operation.
    case shapeMismatch = 3
    /// A dtype is unsupported, or tensors that must share a dtype do not.
    case dtypeMismatch = 4
    /// A size, stride or byte extent overflows 64-bit arithmetic, or is negative.
    case sizeOverflow = 5
    /// An output overlaps an input or another output, or overlaps itself.
    case aliasing = 6
    /// Scratch memory could not be allocated.
    case outOfMemory = 7
    /// An options struct's size field is not one this library knows.
    case unsupportedVersion = 8
    /// A feature the CPU lacks was requested (for example forcing AVX-512 kernels).
    case unsupportedCPU = 9

    /// A short fixed description of the code, as `performer_status_string` returns.
    public var description: String {
        switch self {
        case .ok: return "ok"
        case .nullPointer: return "null pointer"
        case .invalidArgument: return "invalid argument"
        case .shapeMismatch: return "shape mismatch"
        case .dtypeMismatch: return "dtype mismatch or unsupported dtype"
        case .sizeOverflow: return "size or stride overflow"
        case .aliasing: return "output aliases another tensor"
        case .outOfMemory: return "out of memory"
        case .unsupportedVersion: return "unsupported options version"
        case .unsupportedCPU: return "unsupported CPU feature"
        }
    }
}

/// The error every throwing PerformerCore function throws: a status code and a message that
/// names the argument and what was wrong ("k.shape[3] = 48 but q.shape[3] = 64").
public struct PerformerError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The code the C ABI returns for this error.
    public var status: PerformerStatus
    /// What was wrong, naming the argument (as `performer_last_error` gives it).
    public var message: String

    /// An error with `status` and `message`.
    public init(_ status: PerformerStatus, _ message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { "\(status.description): \(message)" }
}

// The size field that opens every options struct of the C ABI: read alone first, since a
// caller built against another version may have passed a struct of another length.
import CPerformerABI
import PerformerCore

/// Throws unsupportedVersion unless `options->size` is one of `knownSizes`. `type` and
/// `initializer` name the struct and its init function in the message.
func checkOptionsSize(_ options: UnsafeRawPointer, knownSizes: [Int], type: String, initializer: String)
    throws(PerformerError) {
    let size = options.load(as: Int.self)
    guard knownSizes.contains(size) else {
        throw PerformerError(.unsupportedVersion, "options->size = \(UInt(bitPattern: size)) is not a \(type) size this library knows (\(knownSizes.map(String.init).joined(separator: ", "))); fill it with \(initializer)()")
    }
}

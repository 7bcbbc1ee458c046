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

/// `*options` over `defaults`: only the caller's `options->size` bytes are read (a size that
/// `checkOptionsSize` accepted), so the fields appended after the caller's version keep their
/// defaults and nothing past the caller's struct is touched.
func readOptions<Options>(_ options: UnsafePointer<Options>, defaults: Options) -> Options {
    var result = defaults
    let size = min(UnsafeRawPointer(options).load(as: Int.self), MemoryLayout<Options>.size)
    withUnsafeMutableBytes(of: &result) { target in
        target.copyMemory(from: UnsafeRawBufferPointer(start: UnsafeRawPointer(options), count: size))
    }
    return result
}

/// The sizes of `Options` this library accepts: the current one and each older one, given
/// as the offset of the first field appended after it.
func knownOptionsSizes<Options>(_: Options.Type, appended fields: [PartialKeyPath<Options>]) -> [Int] {
    fields.compactMap { MemoryLayout<Options>.offset(of: $0) } + [MemoryLayout<Options>.size]
}

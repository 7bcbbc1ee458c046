// NUL-terminated strings that live for the whole process, for functions whose C contract
// returns a static `const char *`.

/// A copy of `text` as a C string that is never freed.
struct StaticCString: @unchecked Sendable {
    let pointer: UnsafePointer<CChar>

    init(_ text: String) {
        let bytes = Array(text.utf8)
        let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count + 1)
        for (index, byte) in bytes.enumerated() { buffer[index] = CChar(bitPattern: byte) }
        buffer[bytes.count] = 0
        pointer = UnsafePointer(buffer)
    }
}

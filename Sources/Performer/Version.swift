// Library and ABI versions (performer.h: "Versions").

/// Must equal PERFORMER_VERSION_MAJOR/MINOR/PATCH in performer.h.
let versionMajor: Int32 = 0
let versionMinor: Int32 = 1
let versionPatch: Int32 = 0
/// Must equal PERFORMER_ABI_VERSION in performer.h; bumped on any incompatible ABI change.
let abiVersion: Int32 = 1

@_cdecl("performer_version")
public func performer_version() -> Int32 {
    versionMajor * 10000 + versionMinor * 100 + versionPatch
}

private let versionText: UnsafeMutablePointer<CChar> = {
    let text = "\(versionMajor).\(versionMinor).\(versionPatch)"
    let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: text.utf8.count + 1)
    text.withCString { buffer.initialize(from: $0, count: text.utf8.count + 1) }
    return buffer
}()

@_cdecl("performer_version_string")
public func performer_version_string() -> UnsafePointer<CChar> {
    UnsafePointer(versionText)
}

@_cdecl("performer_abi_version")
public func performer_abi_version() -> Int32 {
    abiVersion
}

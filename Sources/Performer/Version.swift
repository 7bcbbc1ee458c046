// Library and ABI versions (performer.h: "Versions"). The numbers come from the header's
// macros, so the functions cannot disagree with PERFORMER_VERSION_* / PERFORMER_ABI_VERSION.
import CPerformerABI

@_cdecl("performer_version")
public func performer_version() -> Int32 {
    Int32(PERFORMER_VERSION_MAJOR) * 10000 + Int32(PERFORMER_VERSION_MINOR) * 100 + Int32(PERFORMER_VERSION_PATCH)
}

private let versionText = StaticCString("\(PERFORMER_VERSION_MAJOR).\(PERFORMER_VERSION_MINOR).\(PERFORMER_VERSION_PATCH)")

@_cdecl("performer_version_string")
public func performer_version_string() -> UnsafePointer<CChar> {
    versionText.pointer
}

@_cdecl("performer_abi_version")
public func performer_abi_version() -> Int32 {
    Int32(PERFORMER_ABI_VERSION)
}

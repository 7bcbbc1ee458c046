// Status codes and the thread-local error message (performer.h: "Errors").
import CPerformerABI
import CPerformerSupport
import PerformerCore

/// performer_status_string's texts, by raw value, and the text for values that are no status.
private let statusTexts: [Int32: StaticCString] = {
    var texts = [Int32: StaticCString]()
    for status in PerformerStatus.allCases { texts[status.rawValue] = StaticCString(status.description) }
    return texts
}()
private let unknownStatusText = StaticCString("unknown status code")

@_cdecl("performer_status_string")
public func performer_status_string(_ status: performer_status) -> UnsafePointer<CChar> {
    // An out-of-range value is not a status; Int32(exactly:) rejects it without trapping.
    guard let raw = Int32(exactly: status.rawValue), let text = statusTexts[raw] else {
        return unknownStatusText.pointer
    }
    return text.pointer
}

@_cdecl("performer_last_error")
public func performer_last_error() -> UnsafePointer<CChar> {
    psupport_last_error()
}

/// The C code of a PerformerStatus (the raw values are the same numbers).
func cStatus(_ status: PerformerStatus) -> performer_status {
    performer_status(rawValue: .init(truncatingIfNeeded: status.rawValue))
}

/// Runs `body`; on PerformerError records its message as this thread's last error and returns
/// its code, else returns PERFORMER_OK. Every fallible C function is one call of this.
func withStatus(_ body: () throws(PerformerError) -> Void) -> performer_status {
    do {
        try body()
        return PERFORMER_OK
    } catch {
        error.message.withCString { psupport_set_last_error($0) }
        return cStatus(error.status)
    }
}

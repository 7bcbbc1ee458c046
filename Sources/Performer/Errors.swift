// Status codes and the thread-local error message (performer.h: "Errors").
import CPerformerABI
import CPerformerSupport
import PerformerCore

/// performer_status_string's texts: one per PerformerStatus, indexed by raw value, and one for
/// values that are no status.
private let statusTexts: [StaticCString] = {
    var texts = [StaticCString]()
    for status in PerformerStatus.allCases.sorted(by: { $0.rawValue < $1.rawValue }) {
        // Raw values are 0, 1, 2, ... without gaps (PerformerError.swift); the test of every code checks it.
        texts.append(StaticCString(status.description))
    }
    return texts
}()
private let unknownStatusText = StaticCString("unknown status code")

@_cdecl("performer_status_string")
public func performer_status_string(_ status: performer_status) -> UnsafePointer<CChar> {
    let raw = Int(status.rawValue)
    guard raw >= 0, raw < statusTexts.count,
          PerformerStatus(rawValue: Int32(truncatingIfNeeded: raw)) != nil else {
        return unknownStatusText.pointer
    }
    return statusTexts[raw].pointer
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

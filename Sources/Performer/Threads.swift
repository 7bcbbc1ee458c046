// Worker threads and the kernel build in use (performer.h: "Threads", "Runtime").
import CPerformerABI
import PerformerCore

@_cdecl("performer_set_num_threads")
public func performer_set_num_threads(_ n: Int32) -> performer_status {
    withStatus { () throws(PerformerError) in try Runtime.setNumThreads(Int(n)) }
}

@_cdecl("performer_get_num_threads")
public func performer_get_num_threads() -> Int32 {
    Int32(clamping: Runtime.numThreads)
}

private let isaNames: [String: StaticCString] = {
    var names = [String: StaticCString]()
    for isa in Runtime.supportedISAs { names[isa.rawValue] = StaticCString(isa.rawValue) }
    return names
}()
private let unknownISAName = StaticCString("unknown")

@_cdecl("performer_kernel_isa")
public func performer_kernel_isa() -> UnsafePointer<CChar> {
    (isaNames[Runtime.kernelISA.rawValue] ?? unknownISAName).pointer
}

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

/// Sizes of performer_executor_t this library accepts (one so far).
let knownExecutorSizes = [MemoryLayout<performer_executor_t>.size]

@_cdecl("performer_set_executor")
public func performer_set_executor(_ executor: UnsafePointer<performer_executor_t>?) -> performer_status {
    withStatus { () throws(PerformerError) in
        guard let executor else {
            Runtime.setExecutor(nil)
            return
        }
        let size = UnsafeRawPointer(executor).load(as: Int.self)
        guard knownExecutorSizes.contains(size) else {
            throw PerformerError(.unsupportedVersion, "executor->size = \(UInt(bitPattern: size)) is not a performer_executor_t size this library knows (\(knownExecutorSizes.map(String.init).joined(separator: ", "))); set it to sizeof(performer_executor_t)")
        }
        guard let parallelFor = executor.pointee.parallel_for else {
            throw PerformerError(.nullPointer, "executor->parallel_for is NULL")
        }
        Runtime.setExecutor(HostExecutor(context: executor.pointee.context, numThreads: executor.pointee.num_threads,
                                         parallelFor: parallelFor))
    }
}

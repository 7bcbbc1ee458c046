import CPerformerSupport
import PerformerKernelInterface

/// A Swift array whose allocation fails traps ("Fatal error: failed to allocate"), which
/// would abort the caller's process. Code that is about to build large arrays first asks
/// malloc for their total size and gives it back: a size the system refuses (or one too
/// large to represent) becomes OUT_OF_MEMORY before anything is allocated or written.
public enum MemoryReservation {
    /// Throws `.outOfMemory` naming `what` unless `bytes` can be allocated now.
    public static func check(_ bytes: ScratchSize, for what: @autoclosure () -> String) throws(PerformerError) {
        guard !bytes.isSaturated, psupport_can_allocate(max(bytes.value, 1)) != 0 else {
            let size = bytes.isSaturated ? "more than \(Int.max)" : "\(bytes.value)"
            throw PerformerError(.outOfMemory, "could not allocate \(what()) (\(size) bytes)")
        }
    }

    /// `check` for `count` elements of `size` bytes each.
    public static func check(count: Int, of size: Int, for what: @autoclosure () -> String) throws(PerformerError) {
        try check(ScratchSize(count) * size, for: what())
    }
}

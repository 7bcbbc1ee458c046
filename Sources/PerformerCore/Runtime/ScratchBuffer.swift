#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerKernelInterface

/// 64-byte-aligned scratch memory: `slots` equal slots of `slotBytes` each (one per worker).
/// Allocated before any output is written, so running out of memory leaves outputs untouched.
/// A slot size of Int.max is a saturated `ScratchSize` (too large to represent): out of memory.
/// `sizes` names the arguments whose shapes set the size (e.g. "k.shape = [1, 8, 4096, 64]"), so
/// the error tells a caller which argument to shrink.
struct ScratchBuffer: ~Copyable {
    let base: UnsafeMutableRawPointer
    let slotBytes: Int

    init(slots: Int, slotBytes: Int, for sizes: @autoclosure () -> String) throws(PerformerError) {
        try self.init(slots: slots, slotBytes: ScratchSize(slotBytes), for: sizes())
    }

    init(slots: Int, slotBytes: ScratchSize, for sizes: @autoclosure () -> String) throws(PerformerError) {
        let rounded = max(slotBytes, 1).roundedUp(to: 64)
        let total = rounded * max(slots, 1)
        var pointer: UnsafeMutableRawPointer?
        guard !total.isSaturated, posix_memalign(&pointer, 64, total.value) == 0, let pointer else {
            let size = rounded.isSaturated ? "more than \(Int.max)" : "\(rounded.value)"
            throw PerformerError(.outOfMemory, "could not allocate \(max(slots, 1)) × \(size) bytes of scratch for \(sizes())")
        }
        self.base = pointer
        self.slotBytes = rounded.value
    }

    func slot(_ index: Int) -> UnsafeMutableRawPointer { base + index * slotBytes }

    deinit { free(base) }
}

import Glibc

/// 64-byte-aligned scratch memory: `slots` equal slots of `slotBytes` each (one per worker).
/// Allocated before any output is written, so running out of memory leaves outputs untouched.
struct ScratchBuffer: ~Copyable {
    let base: UnsafeMutableRawPointer
    let slotBytes: Int

    init(slots: Int, slotBytes: Int) throws(PerformerError) {
        let rounded = (max(slotBytes, 1) + 63) / 64 * 64
        let (total, overflow) = rounded.multipliedReportingOverflow(by: max(slots, 1))
        var pointer: UnsafeMutableRawPointer?
        guard !overflow, posix_memalign(&pointer, 64, total) == 0, let pointer else {
            throw PerformerError(.outOfMemory, "could not allocate \(max(slots, 1)) × \(rounded) bytes of scratch")
        }
        self.base = pointer
        self.slotBytes = rounded
    }

    func slot(_ index: Int) -> UnsafeMutableRawPointer { base + index * slotBytes }

    deinit { free(base) }
}

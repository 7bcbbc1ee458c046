#if canImport(Glibc)
import Glibc
#endif

// A result array the caller has just allocated (numpy's empty, torch's empty) has no pages yet:
// a kernel writing it takes every page fault in the middle of its compute, each fault zeroing a
// page (2 MiB under transparent huge pages) over the panels it keeps in cache. Measured through
// Python on the causal linear forward at N = 16384 (B = 1, H = 8, D = M = 64, 2 threads), that
// cost more than a separate pass that writes the array once. Asking the kernel to fault the
// pages of a head's output in one batch first (MADV_POPULATE_WRITE, Linux ≥ 5.14) takes the
// same faults without the interleaving and without touching the data; on pages already present
// it is a page-table walk. Elsewhere, on an older kernel, or when refused, nothing happens.

/// Outputs smaller than this are not worth a system call (tiny calls stay syscall-free).
private let prefaultMinimumBytes = 1 << 20

#if os(Linux)
/// Linux's MADV_POPULATE_WRITE (not in every glibc's headers).
private let madvisePopulateWrite: Int32 = 23
private let pageBytes = max(Int(sysconf(Int32(_SC_PAGESIZE))), 4096)
#endif

extension MutableTensorView {
    /// Faults in, writable, the pages holding head (b, h) (the rows × columns matrix over the last
    /// two axes) when it is one dense block, as a freshly allocated result is. A strided head is
    /// left alone: its extent may span memory the call never writes (a column of a larger
    /// buffer), which populating would make resident. Contents are unchanged; failures are
    /// ignored (the writes will fault instead).
    func prefaultHead(_ b: Int, _ h: Int) {
        #if os(Linux)
        let (rows, columns) = (shape[2], shape[3])
        guard rows > 0, columns > 0, strides[3] == 1, rows == 1 || strides[2] == columns else { return }
        let bytes = rows * columns * MemoryLayout<Element>.stride
        guard bytes >= prefaultMinimumBytes else { return }
        let first = UnsafeMutableRawPointer(base + b * strides[0] + h * strides[1])
        // Whole pages around the block: every page holding one of its bytes is mapped.
        let start = Int(bitPattern: first) / pageBytes * pageBytes
        let end = (Int(bitPattern: first) + bytes + pageBytes - 1) / pageBytes * pageBytes
        _ = madvise(UnsafeMutableRawPointer(bitPattern: start), end - start, madvisePopulateWrite)
        #endif
    }
}

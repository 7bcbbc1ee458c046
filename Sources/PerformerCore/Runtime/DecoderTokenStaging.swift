#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerKernelInterface

/// Float32 copies of one decoder step's half-precision tokens (q, k, v, out: a few rows of D
/// and M elements per head), kept by the decoder across steps so that a half step, like a
/// float32 step, allocates nothing once the first has run. Not thread-safe: a decoder is used
/// by one thread at a time.
final class DecoderTokenStaging {
    private var memory: UnsafeMutableRawPointer?
    private var capacity = 0

    init() {}

    deinit { free(memory) }

    /// Row-major float32 views, one per shape (validated token shapes: counts fit in Int), in
    /// one block that grows when too small and is never shrunk.
    func views(_ shapes: [SIMD4<Int>]) throws(PerformerError) -> [MutableTensorView<Float>] {
        var offsets: [Int] = []
        var total: ScratchSize = 0
        for shape in shapes {
            offsets.append(total.value)
            total = total + (ScratchSize(shape[0]) * shape[1] * shape[2] * shape[3] * MemoryLayout<Float>.stride)
                .roundedUp(to: 64)
        }
        let bytes = max(total, 1)
        if bytes.isSaturated || bytes.value > capacity {
            var pointer: UnsafeMutableRawPointer?
            guard !bytes.isSaturated, posix_memalign(&pointer, 64, bytes.value) == 0, let pointer else {
                throw PerformerError(.outOfMemory, "could not allocate the float32 copies of the step's q, k, v, out (\(bytes.isSaturated ? "more than \(Int.max)" : "\(bytes.value)") bytes)")
            }
            free(memory)
            (memory, capacity) = (pointer, bytes.value)
        }
        let base = memory!
        return zip(offsets, shapes).map { offset, shape in
            MutableTensorView(base: (base + offset).assumingMemoryBound(to: Float.self), shape: shape)
        }
    }
}

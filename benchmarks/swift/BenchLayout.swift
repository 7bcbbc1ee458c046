#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// PERFORMER_BENCH_LAYOUT=bnhd: the benches' B × H × N × X tensors laid out token-major (B × N × H × X
/// memory read through strides, as a Hugging Face or fast-transformers model's projections leave
/// them) instead of contiguous.
let benchTokenMajor = getenv("PERFORMER_BENCH_LAYOUT").map { String(cString: $0) == "bnhd" } ?? false

/// The strides of a 1 × heads × n × columns tensor in the bench's layout (nil: contiguous).
func benchStrides(heads: Int, n: Int, columns: Int) -> SIMD4<Int>? {
    benchTokenMajor ? SIMD4(n * heads * columns, columns, heads * columns, 1) : nil
}

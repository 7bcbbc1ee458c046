// libperformer speed: ms, GFLOP/s and fraction of the micro-kernel's measured peak.
//
//   swift run -c release PerformerBench [softmax] [N ...]   softmax attention (default N = 256 1024 4096)
//   swift run -c release PerformerBench linear [N ...]      linear attention (default N = 256 … 65536)
//   swift run -c release PerformerBench favor [N ...]       FAVOR+, m = 256 (default N = 1024 4096 16384)
//   swift run -c release PerformerBench decode [pos ...]    µs/token: RNN step vs softmax + KV cache (1k 4k 16k)
//   swift run -c release PerformerBench crossover [N ...]   causal linear vs causal softmax (default 256 … 8192)
//   swift run -c release PerformerBench kvcache [L ...]    softmax N = 1 over a KV cache: µs/token, GB/s vs bandwidth
//   swift run -c release PerformerBench half [N ...]       softmax in float32, float16, bfloat16 storage (default 4096)
//   swift run -c release PerformerBench half-rnn [N ...]   causal linear and FAVOR+ (m = 256) in the same (default 16384)
//   swift run -c release PerformerBench half-decode        linear and FAVOR+ decoder steps on half tokens
//   swift run -c release PerformerBench gqa [N ...]        causal softmax, GQA 8 on 2, D = 32 and 64 (default 512 2048)
//
// B = 1, H = 8, D = M = 64, float32, 2 threads (PERFORMER_NUM_THREADS overrides), medians of
// repeated runs. Each table's header states its FLOP convention. The peak is the micro-kernel
// run as a plain product (96×64 · 64×64 blocks) on all threads, measured right after every
// timed run; %peak is the median of those paired ratios, so a machine shared with other work
// still gives a meaningful fraction.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerCore

try Runtime.setNumThreads(threads)
var arguments = Array(CommandLine.arguments.dropFirst())
let mode = arguments.first.map { Int($0) == nil } == true ? arguments.removeFirst() : "softmax"
let sizes = arguments.compactMap { Int($0) }
let (heads, d, m) = (8, 64, 64)
print("kernels: \(Runtime.kernelISA.rawValue), threads: \(Runtime.numThreads), B=1 H=\(heads) D=M=\(d), float32")
switch mode {
case "softmax":
    try runSoftmaxBench(lengths: sizes.isEmpty ? [256, 1024, 4096] : sizes, heads: heads, d: d)
case "linear":
    try runLinearBench(lengths: sizes.isEmpty ? [256, 1024, 4096, 16384, 65536] : sizes, heads: heads, d: d, m: m)
case "favor":
    try runFavorBench(lengths: sizes.isEmpty ? [1024, 4096, 16384] : sizes, heads: heads, d: d)
case "decode":
    try runDecodeBench(positions: sizes.isEmpty ? [1024, 4096, 16384] : sizes, heads: heads, d: d, m: m)
case "kvcache":
    runDecodeBenchmark(lengths: sizes.isEmpty ? [1024, 4096, 16384, 65536] : sizes, threads: threads)
case "half":
    try runHalfPrecisionBench(lengths: sizes.isEmpty ? [4096] : sizes, heads: heads, d: d)
case "half-rnn":
    try runHalfRecurrentBench(lengths: sizes.isEmpty ? [16384] : sizes, heads: heads, d: d)
case "half-decode":
    try runHalfDecoderBench(heads: heads, d: d)
case "gqa":
    // PERFORMER_BENCH_DIMS=32 times one head dim (e.g. under a profiler).
    let dims = getenv("PERFORMER_BENCH_DIMS").map { String(cString: $0).split(separator: ",").compactMap { Int($0) } }
    try runGQABench(lengths: sizes.isEmpty ? [512, 2048] : sizes, dims: dims ?? [32, 64])
case "crossover":
    try runCrossoverBench(lengths: sizes.isEmpty ? [256, 512, 1024, 2048, 4096, 8192] : sizes, heads: heads, d: d)
default:
    print("unknown mode \(mode): softmax, linear, favor, decode, kvcache, half, half-rnn, half-decode, gqa or crossover")
}

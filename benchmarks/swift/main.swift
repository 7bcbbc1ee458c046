// Softmax attention speed: ms, GFLOP/s and fraction of the micro-kernel's measured peak.
//
//   swift run -c release PerformerBench [N ...]        (default N = 256 1024 4096)
//   swift run -c release PerformerBench decode [L ...] (default L = 1024 4096 16384 65536)
//
// B = 1, H = 8, D = M = 64, float32, 2 threads (PERFORMER_NUM_THREADS overrides), medians of
// repeated runs. FLOP convention: forward 4·N·L·D (two products; half of it when causal),
// backward 2.5× the forward (five products), so fwd+bwd = 3.5× forward. The peak is the same
// micro-kernel run as a plain product (96×64 · 64×64 blocks, like attention's) on all threads,
// measured right after every attention run; %peak is the median of those paired ratios, so a
// machine shared with other work still gives a meaningful fraction.
import Glibc
import PerformerCore

func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}

/// CPU seconds this process has used (all threads): a rate per CPU-second is not diluted by
/// time other processes take the cores.
func cpuNow() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
}

/// Median seconds of `runs` calls of `body` after one warm-up, and the median ratio of the
/// attention rate to the micro-kernel peak measured right after each run (`flops` per call).
/// Also the median ratio of CPU-time rates (flops per CPU-second of attention over the same
/// for the peak product), which time stolen by other processes does not distort.
func timeAgainstPeak(runs: Int, flops: Double, _ body: () throws -> Void) rethrows
    -> (seconds: Double, fraction: Double, cpuFraction: Double) {
    try body()
    var samples: [Double] = [], fractions: [Double] = [], cpuFractions: [Double] = []
    for _ in 0..<runs {
        let (start, cpuStart) = (now(), cpuNow())
        try body()
        let (seconds, cpuSeconds) = (now() - start, cpuNow() - cpuStart)
        samples.append(seconds)
        let peak = measurePeak(runs: 1, repeats: 200)
        fractions.append(flops / seconds / 1e9 / peak.wall)
        cpuFractions.append(flops / cpuSeconds / 1e9 / peak.perCPU)
    }
    return (median(samples), median(fractions), median(cpuFractions))
}

/// Median seconds of `runs` calls of `body` after one warm-up.
func time(runs: Int, _ body: () throws -> Void) rethrows -> Double {
    try body()
    var samples: [Double] = []
    for _ in 0..<runs {
        let start = now()
        try body()
        samples.append(now() - start)
    }
    return median(samples)
}

let threads = Int(String(cString: getenv("PERFORMER_NUM_THREADS") ?? strdup("2"))) ?? 2
try Runtime.setNumThreads(threads)
let decodeMode = CommandLine.arguments.dropFirst().first == "decode"
let sizes = CommandLine.arguments.dropFirst().compactMap { Int($0) }
let lengths = sizes.isEmpty ? [256, 1024, 4096] : sizes
let (heads, d, m) = (8, 64, 64)
if decodeMode {
    runDecodeBenchmark(lengths: sizes.isEmpty ? [1024, 4096, 16384, 65536] : sizes, threads: threads)
    exit(0)
}

/// GFLOP/s of the micro-kernel as a plain product on every thread (median of `runs`).
/// Also GFLOP per CPU-second (median).
func measurePeak(runs: Int = 7, repeats: Int = 400) -> (wall: Double, perCPU: Double) {
    // PERFORMER_BENCH_NO_PEAK=1 skips it (for profiling attention alone; fractions are then void).
    if getenv("PERFORMER_BENCH_NO_PEAK") != nil { return (1, 1) }
    let (rows, columns, depth) = (96, 64, 64)
    let tasks = 4 * threads
    let a = UnsafeMutablePointer<Float>.allocate(capacity: rows * depth * tasks)
    let b = UnsafeMutablePointer<Float>.allocate(capacity: depth * columns * tasks)
    let c = UnsafeMutablePointer<Float>.allocate(capacity: rows * columns * tasks)
    defer { a.deallocate(); b.deallocate(); c.deallocate() }
    for i in 0..<(rows * depth * tasks) { a[i] = Float(i % 7) * 0.1 }
    for i in 0..<(depth * columns * tasks) { b[i] = Float(i % 5) * 0.1 }
    var wall: [Double] = [], cpu: [Double] = []
    let flops = 2.0 * Double(rows * columns * depth * repeats * tasks)
    for _ in 0..<runs {
        let (start, cpuStart) = (now(), cpuNow())
        KernelBenchmark.parallelFor(count: tasks) { item, _ in
            for _ in 0..<repeats {
                KernelBenchmark.product(
                    rows: rows, columns: columns, depth: depth,
                    a: a + item * rows * depth, aStrides: (depth, 1),
                    b: b + item * depth * columns, bRowStride: columns,
                    c: c + item * rows * columns, cRowStride: columns)
            }
        }
        wall.append(flops / (now() - start) / 1e9)
        cpu.append(flops / (cpuNow() - cpuStart) / 1e9)
    }
    return (median(wall), median(cpu))
}

print("kernels: \(Runtime.kernelISA.rawValue), threads: \(Runtime.numThreads), B=1 H=\(heads) D=M=\(d), float32")
var peak = measurePeak().wall
print("micro-kernel plain product peak: \(format1(peak)) GFLOP/s (wall clock, all threads)")
print("%peak: median of (attention rate / peak rate measured right after it); cpu%: the same with rates per CPU-second")
print("| N | causal | fwd ms | fwd GFLOP/s | fwd %peak | fwd cpu% | fwd+bwd ms | fwd+bwd GFLOP/s | fwd+bwd %peak | fwd+bwd cpu% |")
print("|---|---|---|---|---|---|---|---|---|---|")

func format1(_ x: Double) -> String {
    let r = (x * 10).rounded() / 10
    return "\(r)"
}

for n in lengths {
    let shape = SIMD4(1, heads, n, d)
    var seed: UInt64 = 12345
    func random() -> Float {
        seed = seed &* 6364136223846793005 &+ 1442695040888963407
        return Float(Double(seed >> 11) / Double(1 << 53) * 2 - 1)
    }
    let count = heads * n * d
    let q = UnsafeMutablePointer<Float>.allocate(capacity: count)
    let k = UnsafeMutablePointer<Float>.allocate(capacity: count)
    let v = UnsafeMutablePointer<Float>.allocate(capacity: count)
    let dO = UnsafeMutablePointer<Float>.allocate(capacity: count)
    let out = UnsafeMutablePointer<Float>.allocate(capacity: count)
    let dq = UnsafeMutablePointer<Float>.allocate(capacity: count)
    let dk = UnsafeMutablePointer<Float>.allocate(capacity: count)
    let dv = UnsafeMutablePointer<Float>.allocate(capacity: count)
    let lse = UnsafeMutablePointer<Float>.allocate(capacity: heads * n)
    for i in 0..<count { q[i] = random(); k[i] = random(); v[i] = random(); dO[i] = random() }
    let runs = n >= 4096 ? 5 : 9
    for causal in [false, true] {
        let options = SoftmaxAttentionOptions(causal: causal)
        let qv = TensorView(base: UnsafePointer(q), shape: shape)
        let kv = TensorView(base: UnsafePointer(k), shape: shape)
        let vv = TensorView(base: UnsafePointer(v), shape: shape)
        let forward = { () throws in
            try SoftmaxAttention.forward(
                query: qv, key: kv, value: vv, output: MutableTensorView(base: out, shape: shape),
                logSumExp: MutableTensorView(base: lse, shape: SIMD4(1, heads, n, 1)), options: options)
        }
        let both = { () throws in
            try forward()
            try SoftmaxAttention.backward(
                query: qv, key: kv, value: vv, output: TensorView(base: UnsafePointer(out), shape: shape),
                logSumExp: TensorView(base: UnsafePointer(lse), shape: SIMD4(1, heads, n, 1)),
                outputGradient: TensorView(base: UnsafePointer(dO), shape: shape),
                queryGradient: MutableTensorView(base: dq, shape: shape),
                keyGradient: MutableTensorView(base: dk, shape: shape),
                valueGradient: MutableTensorView(base: dv, shape: shape), options: options)
        }
        let forwardFlops = 4.0 * Double(heads) * Double(n) * Double(n) * Double(d) * (causal ? 0.5 : 1)
        let bothFlops = 3.5 * forwardFlops
        let (forwardSeconds, forwardFraction, forwardCPU) = try timeAgainstPeak(runs: runs, flops: forwardFlops, forward)
        let (bothSeconds, bothFraction, bothCPU) = try timeAgainstPeak(runs: runs, flops: bothFlops, both)
        peak = max(peak, measurePeak().wall)
        let fg = forwardFlops / forwardSeconds / 1e9, bg = bothFlops / bothSeconds / 1e9
        print("| \(n) | \(causal) | \(format1(forwardSeconds * 1e3)) | \(format1(fg)) | \(format1(100 * forwardFraction))% | \(format1(100 * forwardCPU))% | \(format1(bothSeconds * 1e3)) | \(format1(bg)) | \(format1(100 * bothFraction))% | \(format1(100 * bothCPU))% |")
    }
    for p in [q, k, v, dO, out, dq, dk, dv, lse] { p.deallocate() }
}
print("micro-kernel peak (best in-process measurement): \(format1(peak)) GFLOP/s")

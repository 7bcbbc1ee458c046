// Clocks, medians and the in-process peak every benchmark table is a fraction of.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
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

func format1(_ x: Double) -> String {
    let r = (x * 10).rounded() / 10
    return "\(r)"
}

func format2(_ x: Double) -> String {
    let r = (x * 100).rounded() / 100
    return "\(r)"
}

/// Threads the library may use (PERFORMER_NUM_THREADS, default 2).
let threads = Int(String(cString: getenv("PERFORMER_NUM_THREADS") ?? strdup("2"))) ?? 2

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

/// The cells of one row of the peak tables, "fwd ms | fwd GFLOP/s | fwd %peak | fwd cpu% |" then
/// the same for fwd+bwd: `forward` and `both` timed against the peak (`timeAgainstPeak`), ms
/// written by `milliseconds`. Raises `peak` to a new in-process best measured after them.
func peakTableCells(runs: Int, forwardFlops: Double, bothFlops: Double, forward: () throws -> Void,
                    both: () throws -> Void, milliseconds: (Double) -> String, peak: inout Double) throws -> String {
    let (forwardSeconds, forwardFraction, forwardCPU) = try timeAgainstPeak(runs: runs, flops: forwardFlops, forward)
    let (bothSeconds, bothFraction, bothCPU) = try timeAgainstPeak(runs: runs, flops: bothFlops, both)
    peak = max(peak, measurePeak().wall)
    let fg = forwardFlops / forwardSeconds / 1e9, bg = bothFlops / bothSeconds / 1e9
    return "\(milliseconds(forwardSeconds * 1e3)) | \(format1(fg)) | \(format1(100 * forwardFraction))% | \(format1(100 * forwardCPU))% | \(milliseconds(bothSeconds * 1e3)) | \(format1(bg)) | \(format1(100 * bothFraction))% | \(format1(100 * bothCPU))%"
}

/// Median seconds of `runs` calls of `body` after one warm-up, on `clock` (wall by default;
/// `cpuNow`: process CPU seconds).
func time(runs: Int, clock: () -> Double = now, _ body: () throws -> Void) rethrows -> Double {
    try body()
    var samples: [Double] = []
    for _ in 0..<runs {
        let start = clock()
        try body()
        samples.append(clock() - start)
    }
    return median(samples)
}

/// One storage type's passes in a half-precision table: forward, and forward then backward.
typealias DTypePasses = (name: String, forward: () throws -> Void, both: () throws -> Void)

/// Median seconds of each entry's forward and forward+backward (`time`), with their ratios to
/// the first entry's (float32 in the half-precision tables: the conversion overhead).
func timeAgainstFirst(runs: Int, _ entries: [DTypePasses]) throws
    -> [(name: String, forward: Double, both: Double, forwardRatio: Double, bothRatio: Double)] {
    var rows: [(name: String, forward: Double, both: Double, forwardRatio: Double, bothRatio: Double)] = []
    for entry in entries {
        let forward = try time(runs: runs, entry.forward), both = try time(runs: runs, entry.both)
        let reference = rows.first.map { ($0.forward, $0.both) } ?? (forward, both)
        rows.append((entry.name, forward, both, forward / reference.0, both / reference.1))
    }
    return rows
}

/// `count` floats uniform in [−1, 1) from a fixed seed (allocated; the caller frees).
func randomFloats(_ count: Int, seed: UInt64) -> UnsafeMutablePointer<Float> {
    var state = seed
    let p = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
    for i in 0..<count {
        state = state &* 6364136223846793005 &+ 1442695040888963407
        p[i] = Float(Double(state >> 11) / Double(1 << 53) * 2 - 1)
    }
    return p
}

// KV-cache decoding: one new query (N = 1) against L cached keys, causal (bottom-right aligned,
// so the query sees every key), D = M = 64, float32. Decoding is memory-bound: each call reads
// K and V once, H·L·(D + M)·4 bytes, so the figure of merit is GB/s of K + V streamed, printed
// beside the read bandwidth of this machine measured in the same process (a streaming sum over
// a buffer larger than the caches, on all threads, right after each decode run).
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerCore

let bandwidthBytes = 256 << 20
/// Allocated and touched once (page faults are not bandwidth).
let bandwidthBuffer: UnsafeMutablePointer<SIMD4<Float>> = {
    let count = bandwidthBytes / MemoryLayout<SIMD4<Float>>.stride
    let buffer = UnsafeMutablePointer<SIMD4<Float>>.allocate(capacity: count)
    for i in 0..<count { buffer[i] = SIMD4(repeating: Float(i & 7)) }
    return buffer
}()

/// GB/s of a streaming read of a 256 MB buffer (split over the library's threads), median of `runs`.
func measureReadBandwidth(runs: Int = 3) -> Double {
    let bytes = bandwidthBytes
    let count = bytes / MemoryLayout<SIMD4<Float>>.stride
    let buffer = bandwidthBuffer
    let pieces = 64
    let sums = UnsafeMutablePointer<Float>.allocate(capacity: pieces)
    defer { sums.deallocate() }
    var rates: [Double] = []
    for _ in 0..<runs {
        let start = now()
        KernelBenchmark.parallelFor(count: pieces) { piece, _ in
            let lower = piece * count / pieces, upper = (piece + 1) * count / pieces
            var a0 = SIMD4<Float>(), a1 = SIMD4<Float>(), a2 = SIMD4<Float>(), a3 = SIMD4<Float>()
            var i = lower
            while i + 4 <= upper {
                a0 += buffer[i]; a1 += buffer[i + 1]; a2 += buffer[i + 2]; a3 += buffer[i + 3]
                i += 4
            }
            sums[piece] = (a0 + a1 + a2 + a3).sum()
        }
        rates.append(Double(bytes) / (now() - start) / 1e9)
    }
    return median(rates)
}

func runDecodeBenchmark(lengths: [Int], threads: Int) {
    let (d, m) = (64, 64)
    print("kernels: \(Runtime.kernelISA.rawValue), threads: \(Runtime.numThreads), decode: N=1, causal, D=M=\(d), float32")
    print("GB/s: K + V bytes (H·L·(D+M)·4) per call / time; bandwidth: streaming read on all threads, median of the runs paired with each case")
    print("| B | H | L | µs/token | K+V GB/s | read bandwidth GB/s | fraction |")
    print("|---|---|---|---|---|---|---|")
    for heads in [8, 1] {
        for l in lengths {
            var seed: UInt64 = 777
            func random() -> Float {
                seed = seed &* 6364136223846793005 &+ 1442695040888963407
                return Float(Double(seed >> 11) / Double(1 << 53) * 2 - 1)
            }
            let q = UnsafeMutablePointer<Float>.allocate(capacity: heads * d)
            let k = UnsafeMutablePointer<Float>.allocate(capacity: heads * l * d)
            let v = UnsafeMutablePointer<Float>.allocate(capacity: heads * l * m)
            let out = UnsafeMutablePointer<Float>.allocate(capacity: heads * m)
            defer { for p in [q, k, v, out] { p.deallocate() } }
            for i in 0..<(heads * d) { q[i] = random() }
            for i in 0..<(heads * l * d) { k[i] = random() }
            for i in 0..<(heads * l * m) { v[i] = random() }
            let options = SoftmaxAttentionOptions(causal: true)
            let qv = TensorView(base: UnsafePointer(q), shape: SIMD4(1, heads, 1, d))
            let kv = TensorView(base: UnsafePointer(k), shape: SIMD4(1, heads, l, d))
            let vv = TensorView(base: UnsafePointer(v), shape: SIMD4(1, heads, l, m))
            let ov = MutableTensorView(base: out, shape: SIMD4(1, heads, 1, m))
            let bytes = Double(heads * l * (d + m) * 4)
            // Enough calls per sample to last ~20 ms; several samples, each paired with a bandwidth run.
            let call = { try! SoftmaxAttention.forward(query: qv, key: kv, value: vv, output: ov, options: options) }
            call()
            var start = now()
            call()
            let single = max(now() - start, 1e-7)
            let calls = max(1, Int(0.02 / single))
            var samples: [Double] = [], bandwidths: [Double] = [], fractions: [Double] = []
            for _ in 0..<7 {
                start = now()
                for _ in 0..<calls { call() }
                let seconds = (now() - start) / Double(calls)
                let bandwidth = measureReadBandwidth(runs: 1)
                samples.append(seconds)
                bandwidths.append(bandwidth)
                fractions.append(bytes / seconds / 1e9 / bandwidth)
            }
            let seconds = median(samples)
            print("| 1 | \(heads) | \(l) | \(format1(seconds * 1e6)) | \(format1(bytes / seconds / 1e9)) | \(format1(median(bandwidths))) | \(format1(100 * median(fractions)))% |")
        }
    }
}

import Glibc
import XCTest
@testable import PerformerCore

/// Timing of FAVOR+ attention (not a test: skipped unless PERFORMER_FAVOR_BENCH is set, e.g.
/// `PERFORMER_FAVOR_BENCH=1024,4096,16384 swift test -c release --filter FavorAttentionBenchmark`).
/// B = 1, H = 8, D = M = 64, m = 256, positive features, float32; medians of repeated runs.
final class FavorAttentionBenchmark: XCTestCase {
    func now() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }

    func testTiming() throws {
        guard let spec = getenv("PERFORMER_FAVOR_BENCH") else { throw XCTSkip("set PERFORMER_FAVOR_BENCH=N,N,... to time") }
        let sizes = String(cString: spec).split(separator: ",").compactMap { Int($0) }
        let repeats = Int(String(cString: getenv("PERFORMER_FAVOR_REPEATS") ?? strdup("5"))) ?? 5
        let only = getenv("PERFORMER_FAVOR_ONLY").map { String(cString: $0) }
        let (h, d, m) = (8, 64, 256)
        let w = try FavorProjection(dim: d, numFeatures: m, seed: 1)
        print("FAVOR+ bench: ISA \(Runtime.kernelISA.rawValue), threads \(Runtime.numThreads), B=1 H=\(h) D=M=\(d) m=\(m) positive float32, median of \(repeats)")
        for n in sizes {
            var random = LinearTestRandom(seed: 3)
            let shape = SIMD4(1, h, n, d)
            let count = h * n * d
            let q = LinearTestTensor<Float>(shape: shape, values: random.array(count).map { $0 * 0.5 })
            let k = LinearTestTensor<Float>(shape: shape, values: random.array(count).map { $0 * 0.5 })
            let v = LinearTestTensor<Float>(shape: shape, values: random.array(count))
            let dout = LinearTestTensor<Float>(shape: shape, values: random.array(count))
            let out = LinearTestTensor<Float>(shape: shape), dq = LinearTestTensor<Float>(shape: shape)
            let dk = LinearTestTensor<Float>(shape: shape), dv = LinearTestTensor<Float>(shape: shape)
            defer { withExtendedLifetime([q, k, v, dout, out, dq, dk, dv]) {} }
            for causal in [false, true] {
                let options = FavorAttentionOptions(causal: causal)
                func median(_ body: () throws -> Void) rethrows -> Double {
                    var times: [Double] = []
                    for _ in 0..<repeats {
                        let start = now()
                        try body()
                        times.append(now() - start)
                    }
                    return times.sorted()[times.count / 2] * 1000
                }
                let forward = {
                    try FavorAttention.forward(query: q.view, key: k.view, value: v.view, projection: w,
                                               output: out.mutableView, options: options)
                }
                let backward = {
                    try FavorAttention.backward(query: q.view, key: k.view, value: v.view, projection: w,
                                                outputGradient: dout.view, queryGradient: dq.mutableView,
                                                keyGradient: dk.mutableView, valueGradient: dv.mutableView, options: options)
                }
                let name = causal ? "causal" : "bidirectional"
                if only == nil || only == "fwd" {
                    let fwd = try median(forward)
                    print(String(format: "N=%6d %-13@ fwd     %8.1f ms", n, name, fwd))
                }
                if only == nil || only == "bwd" {
                    let both = try median { try forward(); try backward() }
                    print(String(format: "N=%6d %-13@ fwd+bwd %8.1f ms", n, name, both))
                }
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import XCTest
import PerformerCore

/// The causal backward stores no state per position: fwd + bwd at N = 65536 grows the peak
/// resident set by O(N) only, far below the N · C · M elements per-position states would take.
final class LinearMemoryTests: XCTestCase {
    private func status(_ field: String) -> Int? {
        guard let file = fopen("/proc/self/status", "r") else { return nil }
        defer { fclose(file) }
        var line = [CChar](repeating: 0, count: 512)
        while fgets(&line, Int32(line.count), file) != nil {
            let text = String(cString: line)
            if text.hasPrefix(field + ":") {
                return Int(text.dropFirst(field.count + 1).filter { $0.isNumber })  // kB
            }
        }
        return nil
    }

    /// Resets VmHWM to the current RSS (Linux ≥ 4.0: write "5" to /proc/self/clear_refs).
    private func resetPeak() -> Bool {
        guard let file = fopen("/proc/self/clear_refs", "w") else { return false }
        defer { fclose(file) }
        return fputs("5", file) >= 0
    }

    func testCausalForwardBackwardMemoryIsLinearInN() throws {
        let (n, d, m) = (65536, 32, 32)
        let qShape = SIMD4(1, 1, n, d), vShape = SIMD4(1, 1, n, m)
        var random = LinearTestRandom(seed: 61)
        func filled(_ shape: SIMD4<Int>) -> LinearTestTensor<Float> {
            LinearTestTensor(shape: shape, values: (0..<(shape[2] * shape[3])).map { _ in random.normal() })
        }
        let q = filled(qShape), k = filled(qShape), v = filled(vShape), dout = filled(vShape)
        let out = filled(vShape), dq = filled(qShape), dk = filled(qShape), dv = filled(vShape)
        defer { withExtendedLifetime([q, k, v, dout, out, dq, dk, dv]) {} }
        let options = LinearAttentionOptions(causal: true)

        guard resetPeak(), let rss = status("VmRSS"), let start = status("VmHWM") else {
            throw XCTSkip("this kernel cannot reset VmHWM; the peak would include earlier tests")
        }
        // The reset really happened: the peak is back near the current RSS.
        XCTAssertLessThan(start - rss, 4096, "VmHWM was not reset (\(start) kB vs RSS \(rss) kB)")
        try LinearAttention.forward(query: q.view, key: k.view, value: v.view, output: out.mutableView, options: options)
        try LinearAttention.backward(query: q.view, key: k.view, value: v.view, outputGradient: dout.view,
                                     queryGradient: dq.mutableView, keyGradient: dk.mutableView, valueGradient: dv.mutableView,
                                     options: options)
        let growth = status("VmHWM")! - start  // kB
        let perPositionStatesKB = n * d * m * 4 / 1024          // 262144 kB: what storing every S_i takes
        let linearBudgetKB = 8 * n * max(d, m) * 4 / 1024       // 65536 kB: a few N × max(C, M) buffers
        XCTAssertLessThan(growth, linearBudgetKB, "peak RSS grew \(growth) kB")
        XCTAssertLessThan(growth * 16, perPositionStatesKB)
        XCTAssert(out.values.allSatisfy(\.isFinite) && dq.values.allSatisfy(\.isFinite))
        print("linear attention causal fwd+bwd N=\(n) D=M=32: peak RSS growth \(growth) kB")
    }
}

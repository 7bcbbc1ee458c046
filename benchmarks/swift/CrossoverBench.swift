// Where causal linear attention (elu+1) becomes faster than causal softmax attention, fwd and
// fwd+bwd, on this machine: both timed at each N (medians, same process), and the crossover N
// interpolated on log N between the last N where softmax wins and the first where linear does.
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerCore

func runCrossoverBench(lengths: [Int], heads: Int, d: Int) throws {
    print("causal, B=1 H=\(heads) D=M=\(d), float32, \(threads) threads, median ms")
    print("| N | softmax fwd | linear fwd | softmax fwd+bwd | linear fwd+bwd |")
    print("|---|---|---|---|---|")
    var rows: [(n: Int, sf: Double, lf: Double, sb: Double, lb: Double)] = []
    for n in lengths {
        let runs = n >= 4096 ? 7 : 15
        let softmax = SoftmaxRun(n: n, heads: heads, d: d, causal: true)
        let linear = LinearRun(n: n, heads: heads, d: d, m: d, causal: true)
        // Interleave the two so a burst of load elsewhere hits both alike.
        var sf: [Double] = [], lf: [Double] = [], sb: [Double] = [], lb: [Double] = []
        try softmax.both(); try linear.both()
        for _ in 0..<runs {
            sf.append(try time(runs: 1, softmax.forward)); lf.append(try time(runs: 1, linear.forward))
            sb.append(try time(runs: 1, softmax.both)); lb.append(try time(runs: 1, linear.both))
        }
        softmax.release(); linear.release()
        let row = (n: n, sf: median(sf), lf: median(lf), sb: median(sb), lb: median(lb))
        rows.append(row)
        print("| \(n) | \(format2(row.sf * 1e3)) | \(format2(row.lf * 1e3)) | \(format2(row.sb * 1e3)) | \(format2(row.lb * 1e3)) |")
    }
    func crossover(_ softmax: (Int) -> Double, _ linear: (Int) -> Double) -> String {
        for i in rows.indices where linear(i) < softmax(i) {
            guard i > 0 else { return "≤ \(rows[0].n)" }
            // Ratio r = linear / softmax crosses 1 between rows i − 1 and i: interpolate log r on log N.
            let (r0, r1) = (log(linear(i - 1) / softmax(i - 1)), log(linear(i) / softmax(i)))
            let (x0, x1) = (log(Double(rows[i - 1].n)), log(Double(rows[i].n)))
            return "≈ \(Int(exp(x0 + (x1 - x0) * r0 / (r0 - r1)).rounded())) (between \(rows[i - 1].n) and \(rows[i].n))"
        }
        return "> \(rows.last?.n ?? 0)"
    }
    print("crossover N, fwd: \(crossover({ rows[$0].sf }, { rows[$0].lf }))")
    print("crossover N, fwd+bwd: \(crossover({ rows[$0].sb }, { rows[$0].lb }))")
}

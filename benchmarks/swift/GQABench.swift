// The Hugging Face Llama benchmark's attention (issue 9): B = 1, H = 8 query heads on Hk = 2
// key heads (GQA), causal, float32, forward and backward timed apart, at D = 32 and at D = 64
// (so a change for D = 32 shows what it does to D = 64). One row per (N, D); ab.py compares two
// builds row by row. Times are process CPU seconds (a loaded host queues the wall clock; at 2
// threads this counts both threads, waiting included). FLOP convention: forward 4·N²/2·D·H, backward 2.5× that (five products).
import PerformerCore

func runGQABench(lengths: [Int], dims: [Int]) throws {
    let (heads, keyHeads) = (8, 2)
    print("softmax GQA \(heads) on \(keyHeads), causal, B=1. FLOP: fwd 4·N²/2·D·H, bwd 2.5× fwd; medians of CPU time")
    print("| N | D | fwd ms | fwd GFLOP/s | bwd ms | bwd GFLOP/s |")
    print("|---|---|---|---|---|---|")
    for n in lengths {
        for d in dims {
            let run = SoftmaxRun(n: n, heads: heads, keyHeads: keyHeads, d: d, causal: true)
            defer { run.release() }
            let runs = n >= 2048 ? 7 : 15
            let forwardSeconds = try time(runs: runs, clock: cpuNow, run.forward)
            let backwardSeconds = try time(runs: runs, clock: cpuNow, run.backward)
            let flops = 2.0 * Double(heads) * Double(n) * Double(n) * Double(d)
            print("| \(n) | \(d) | \(format2(forwardSeconds * 1e3)) | \(format1(flops / forwardSeconds / 1e9)) "
                  + "| \(format2(backwardSeconds * 1e3)) | \(format1(2.5 * flops / backwardSeconds / 1e9)) |")
        }
    }
}

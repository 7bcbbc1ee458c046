// Decoding one token: the linear-attention RNN step (constant cost) beside softmax attention
// over a KV cache that grows with the position (our own softmax kernel, one query against the
// L cached keys), so the table shows the RNN's advantage growing with position.
import PerformerCore

func runDecodeBench(positions: [Int], heads: Int, d: Int, m: Int) throws {
    print("decoding, B=1 H=\(heads) D=M=\(d), float32, µs/token (median); linear: one step of the RNN after a prefill of `position` tokens;")
    print("softmax: append k, v to the cache, then one query against the position + 1 cached keys (library threads)")
    print("FLOP convention: linear step 4·C·M per head; softmax 4·L·D per head")
    print("| position | linear µs/token | linear GFLOP/s | softmax+KV cache µs/token | softmax GFLOP/s | speedup |")
    print("|---|---|---|---|---|---|")
    let steps = 64, batches = 41, tokens = 33
    for position in positions {
        // Linear: prefill, then time batches of steps.
        let decoder = try LinearAttentionDecoder<Float>(batch: 1, heads: heads, headDim: d, valueDim: m)
        let prompt = LinearRun.Prompt(n: position, heads: heads, d: d, m: m)
        try decoder.prefill(query: prompt.q, key: prompt.k, value: prompt.v, output: prompt.out)
        prompt.release()
        let tq = randomFloats(steps * heads * d, seed: 5), tk = randomFloats(steps * heads * d, seed: 6)
        let tv = randomFloats(steps * heads * m, seed: 7)
        let to = UnsafeMutablePointer<Float>.allocate(capacity: heads * m)
        var samples: [Double] = []
        for batch in 0...batches {
            let start = now()
            for s in 0..<steps {
                try decoder.step(query: TensorView(base: tq + s * heads * d, shape: SIMD4(1, heads, 1, d)),
                                 key: TensorView(base: tk + s * heads * d, shape: SIMD4(1, heads, 1, d)),
                                 value: TensorView(base: tv + s * heads * m, shape: SIMD4(1, heads, 1, m)),
                                 output: MutableTensorView(base: to, shape: SIMD4(1, heads, 1, m)))
            }
            if batch > 0 { samples.append((now() - start) / Double(steps)) }
        }
        let linearSeconds = median(samples)
        for p in [tq, tk, tv, to] { p.deallocate() }

        // Softmax over a KV cache with room for `tokens` more positions, heads `capacity` rows apart.
        let capacity = position + tokens
        let cacheK = randomFloats(heads * capacity * d, seed: 8), cacheV = randomFloats(heads * capacity * m, seed: 9)
        let query = randomFloats(heads * d, seed: 10)
        let out = UnsafeMutablePointer<Float>.allocate(capacity: heads * m)
        samples = []
        for token in 0..<tokens {
            let length = position + token + 1
            let start = now()
            for h in 0..<heads {  // append this token's k, v (the cache rows exist: overwrite them)
                (cacheK + (h * capacity + length - 1) * d).update(from: query + h * d, count: d)
                (cacheV + (h * capacity + length - 1) * m).update(from: query + h * d, count: min(d, m))
            }
            try SoftmaxAttention.forward(
                query: TensorView(base: query, shape: SIMD4(1, heads, 1, d)),
                key: TensorView(base: cacheK, shape: SIMD4(1, heads, length, d), strides: SIMD4(heads * capacity * d, capacity * d, d, 1)),
                value: TensorView(base: cacheV, shape: SIMD4(1, heads, length, m), strides: SIMD4(heads * capacity * m, capacity * m, m, 1)),
                output: MutableTensorView(base: out, shape: SIMD4(1, heads, 1, m)))
            if token > 0 { samples.append(now() - start) }
        }
        let softmaxSeconds = median(samples)
        for p in [cacheK, cacheV, query, out] { p.deallocate() }

        let linearFlops = 4.0 * Double(heads * d * m), softmaxFlops = 4.0 * Double(heads * position * d)
        print("| \(position) | \(format2(linearSeconds * 1e6)) | \(format1(linearFlops / linearSeconds / 1e9)) | \(format1(softmaxSeconds * 1e6)) | \(format1(softmaxFlops / softmaxSeconds / 1e9)) | \(format1(softmaxSeconds / linearSeconds))× |")
    }
}

extension LinearRun {
    /// A prompt of `n` random tokens (q, k, v) and room for its output.
    struct Prompt {
        let q: TensorView<Float>, k: TensorView<Float>, v: TensorView<Float>
        let out: MutableTensorView<Float>
        let release: () -> Void

        init(n: Int, heads: Int, d: Int, m: Int) {
            let pq = randomFloats(heads * n * d, seed: 11), pk = randomFloats(heads * n * d, seed: 12)
            let pv = randomFloats(heads * n * m, seed: 13)
            let po = UnsafeMutablePointer<Float>.allocate(capacity: max(heads * n * m, 1))
            q = TensorView(base: pq, shape: SIMD4(1, heads, n, d))
            k = TensorView(base: pk, shape: SIMD4(1, heads, n, d))
            v = TensorView(base: pv, shape: SIMD4(1, heads, n, m))
            out = MutableTensorView(base: po, shape: SIMD4(1, heads, n, m))
            release = { for p in [pq, pk, pv, po] { p.deallocate() } }
        }
    }
}

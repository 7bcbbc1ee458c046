import Foundation
import PerformerCore

/// Exact softmax attention computed directly in float64 with the N × L score and probability
/// matrices materialized per head (ALGORITHMS.md §1). Slow and obviously correct: the yardstick
/// for the library's tiled kernels.
enum SoftmaxReference {
    struct Result {
        var out: DenseTensor
        var lse: DenseTensor
        var dq: DenseTensor
        var dk: DenseTensor
        var dv: DenseTensor
    }

    /// Whether query `i` sees key `j` (bottom-right aligned causal mask in the original key
    /// indices, key padding on the right and, from `keyStart`, on the left).
    static func isVisible(query i: Int, key j: Int, queries n: Int, keys l: Int, causal: Bool, keyLimit: Int,
                          keyStart: Int = 0) -> Bool {
        j < keyLimit && j >= keyStart && (!causal || j <= i + (l - n))
    }

    /// out, lse and, when `dout` is given, dq, dk, dv (zeros otherwise).
    static func evaluate(q: DenseTensor, k: DenseTensor, v: DenseTensor, dout: DenseTensor? = nil,
                         options: SoftmaxAttentionOptions = SoftmaxAttentionOptions()) -> Result {
        let (batch, heads, n, d) = (q.shape[0], q.shape[1], q.shape[2], q.shape[3])
        let (keyHeads, l, m) = (k.shape[1], k.shape[2], v.shape[3])
        precondition(k.shape == SIMD4(batch, keyHeads, l, d) && v.shape == SIMD4(batch, keyHeads, l, m))
        precondition(keyHeads > 0 && heads % keyHeads == 0)
        let group = heads / keyHeads
        let scale = options.scale ?? 1 / Double(d).squareRoot()

        var result = Result(
            out: DenseTensor(shape: SIMD4(batch, heads, n, m)), lse: DenseTensor(shape: SIMD4(batch, heads, n, 1)),
            dq: DenseTensor(shape: q.shape), dk: DenseTensor(shape: k.shape), dv: DenseTensor(shape: v.shape))
        var probabilities = [Double](repeating: 0, count: n * l)
        var visible = [Bool](repeating: false, count: n * l)

        for b in 0..<batch {
            let keyLimit = options.keyLengths?[b] ?? l, keyStart = options.keyStarts?[b] ?? 0
            for h in 0..<heads {
                let hk = h / group
                // P = softmax over the visible keys of each row, materialized.
                for i in 0..<n {
                    var rowMax = -Double.infinity
                    for j in 0..<l {
                        let seen = isVisible(query: i, key: j, queries: n, keys: l, causal: options.causal, keyLimit: keyLimit,
                                              keyStart: keyStart)
                        visible[i * l + j] = seen
                        guard seen else { probabilities[i * l + j] = 0; continue }
                        var score = 0.0
                        for c in 0..<d { score += q[b, h, i, c] * k[b, hk, j, c] }
                        score *= scale
                        probabilities[i * l + j] = score
                        rowMax = max(rowMax, score)
                    }
                    guard rowMax > -.infinity else {
                        result.lse[b, h, i, 0] = -.infinity
                        continue
                    }
                    var sum = 0.0
                    for j in 0..<l where visible[i * l + j] {
                        probabilities[i * l + j] = Foundation.exp(probabilities[i * l + j] - rowMax)
                        sum += probabilities[i * l + j]
                    }
                    for j in 0..<l where visible[i * l + j] { probabilities[i * l + j] /= sum }
                    result.lse[b, h, i, 0] = rowMax + Foundation.log(sum)
                    for c in 0..<m {
                        var value = 0.0
                        for j in 0..<l where visible[i * l + j] { value += probabilities[i * l + j] * v[b, hk, j, c] }
                        result.out[b, h, i, c] = value
                    }
                }
                guard let dout else { continue }
                // dV = Pᵀ dO; dP = dO Vᵀ; δ = rowsum(dO ∘ O); dS = P ∘ (dP − δ); dQ = s dS K; dK = s dSᵀ Q.
                for i in 0..<n {
                    var delta = 0.0
                    for c in 0..<m { delta += dout[b, h, i, c] * result.out[b, h, i, c] }
                    for j in 0..<l where visible[i * l + j] {
                        let p = probabilities[i * l + j]
                        var dp = 0.0
                        for c in 0..<m {
                            dp += dout[b, h, i, c] * v[b, hk, j, c]
                            result.dv[b, hk, j, c] += p * dout[b, h, i, c]
                        }
                        let ds = p * (dp - delta)
                        for c in 0..<d {
                            result.dq[b, h, i, c] += scale * ds * k[b, hk, j, c]
                            result.dk[b, hk, j, c] += scale * ds * q[b, h, i, c]
                        }
                    }
                }
            }
        }
        return result
    }
}

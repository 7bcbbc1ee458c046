/// Options of exact softmax attention (ALGORITHMS.md §1).
public struct SoftmaxAttentionOptions: Sendable, Equatable {
    /// Mask keys after each query, bottom-right aligned: query i sees key j iff j ≤ i + (L − N).
    /// With N = L this is the usual lower triangle. PyTorch's `is_causal` is top-left aligned
    /// (j ≤ i); the two differ when N ≠ L.
    public var causal: Bool
    /// Multiplies the scores; nil means 1/√D. Must be finite.
    public var scale: Double?
    /// Per-batch key lengths (B of them, each in 0 ... L): keys j ≥ keyLengths[b] are masked.
    public var keyLengths: [Int]?
    /// Per-batch key starts (B of them, each in 0 ... keyLengths[b], or ... L without lengths):
    /// keys j < keyStarts[b] are masked too (left padding). The causal mask keeps the original
    /// key indices: query i sees key j iff keyStarts[b] ≤ j < keyLengths[b] and j ≤ i + (L − N).
    public var keyStarts: [Int]?

    /// Options with the defaults above: no mask, scale 1/√D. Checked by the call that uses them.
    public init(causal: Bool = false, scale: Double? = nil, keyLengths: [Int]? = nil, keyStarts: [Int]? = nil) {
        self.causal = causal
        self.scale = scale
        self.keyLengths = keyLengths
        self.keyStarts = keyStarts
    }
}

/// Options of linear attention (ALGORITHMS.md §2).
public struct LinearAttentionOptions: Sendable, Equatable {
    /// The feature map φ applied row-wise to queries and keys. Every built-in map keeps the width:
    /// the feature dimension C equals the head dimension D.
    public enum FeatureMap: Int32, Sendable, CaseIterable {
        /// φ(x) = elu(x) + 1: x + 1 for x > 0, eˣ otherwise. Positive, so the denominator is too;
        /// the paper's default.
        case eluPlusOne = 0
        /// φ(x) = max(x, 0).
        case relu = 1
        /// φ(x) = x: q and k already hold features the caller computed; gradients are then with
        /// respect to those features.
        case identity = 2
    }

    /// Query i sees keys j ≤ i only (needs N = L). Causal or not, a call may start from a state
    /// and return one (non-causal: S_0 plus all keys; a "memory" to attend to).
    public var causal: Bool
    /// φ (default elu + 1).
    public var featureMap: FeatureMap
    /// ε in o_i = φ(q_i)ᵀS / (φ(q_i)ᵀz + ε): finite and ≥ 0; 0 is allowed. A row whose denominator
    /// is exactly 0 outputs zeros and gets zero gradients. Ignored (still checked) when
    /// `normalize` is false.
    public var epsilon: Double
    /// false: o_i = φ(q_i)ᵀS_i, the un-normalized product Σ_j (φ(q_i)·φ(k_j)) v_j (plus
    /// φ(q_i)ᵀS_0) with no denominator and no division, so features of any sign work.
    public var normalize: Bool
    /// Per-batch key lengths (B of them, each in 0 ... L). Keys j ≥ keyLengths[b] are removed by
    /// zeroing φ(k_j), never v_j: elu+1 maps 0 to 1, so zeroing v would leave the key in the
    /// denominator.
    public var keyLengths: [Int]?
    /// Per-batch key starts (B of them, each in 0 ... keyLengths[b], or ... L without lengths):
    /// keys j < keyStarts[b] are removed the same way (left padding).
    public var keyStarts: [Int]?

    /// Options with the defaults above: bidirectional, elu + 1, ε = 1e-6, normalized, every key
    /// taking part. Checked by the call that uses them.
    public init(causal: Bool = false, featureMap: FeatureMap = .eluPlusOne, epsilon: Double = 1e-6, keyLengths: [Int]? = nil,
                keyStarts: [Int]? = nil, normalize: Bool = true) {
        self.causal = causal
        self.featureMap = featureMap
        self.epsilon = epsilon
        self.keyLengths = keyLengths
        self.keyStarts = keyStarts
        self.normalize = normalize
    }
}

/// Options of FAVOR+ attention (ALGORITHMS.md §3, docs/FAVOR.md §4).
public struct FavorAttentionOptions: Sendable, Equatable {
    /// Query i sees keys j ≤ i only (needs N = L).
    public var causal: Bool
    /// The feature map (kind, default positive), the scale s (x̂ = x·s^(1/2), default 1/√D) and
    /// the relu offset κ.
    public var features: FavorFeatureOptions
    /// ε in o_i = φ(q_i)ᵀS / (φ(q_i)ᵀz + ε), in the units of the mathematical features: finite
    /// and ≥ 0, default 0. A row whose denominator underflows (or is not a finite nonzero
    /// number) outputs zeros and gets zero gradients, never NaN or Inf.
    public var epsilon: Double
    /// Per-batch key lengths (B of them, each in 0 ... L). Keys j ≥ keyLengths[b] take no part:
    /// their features are zero (never their values) and they enter no stabilizer max.
    public var keyLengths: [Int]?
    /// Per-batch key starts (B of them, each in 0 ... keyLengths[b], or ... L without lengths):
    /// keys j < keyStarts[b] take no part either (left padding).
    public var keyStarts: [Int]?

    /// Options with the defaults above: bidirectional, positive features with scale 1/√D, ε = 0,
    /// every key taking part.
    public init(causal: Bool = false, features: FavorFeatureOptions = FavorFeatureOptions(), epsilon: Double = 0,
                keyLengths: [Int]? = nil, keyStarts: [Int]? = nil) {
        self.causal = causal
        self.features = features
        self.epsilon = epsilon
        self.keyLengths = keyLengths
        self.keyStarts = keyStarts
    }
}

/// The scaled causal FAVOR+ state of B × H query heads (docs/FAVOR.md §4), as caller-owned
/// views: `s` = S̃ (B×H×C×M), `z` = z̃ (B×H×C×1), `c` (B×H×C×1), standing for the mathematical
/// state S = diag(e^c)·S̃, z = e^c ∘ z̃ (S = Σ_j φ(k_j) v_jᵀ, z = Σ_j φ(k_j)).
///
/// c_f is the largest exponent a_f(k_j) of the keys seen so far (per feature; one value per
/// head for trigonometric features, 0 for relu), or −inf for "no key yet" (then that S̃ row and
/// z̃ entry must be 0). (S, z, c = 0) is a valid state too: any triple with finite S̃, z̃ and
/// c_f ∈ R ∪ {−inf} describes S, z. With grouped-query attention each query head keeps its own
/// state (like `LinearStateView`).
public struct FavorStateView<Element: AttentionScalar>: Sendable {
    /// S̃, B×H×C×M.
    public var s: TensorView<Element>
    /// z̃, B×H×C×1.
    public var z: TensorView<Element>
    /// The shifts c, B×H×C×1.
    public var c: TensorView<Element>

    /// A state of the three views; their shapes are checked by the call that reads them.
    public init(s: TensorView<Element>, z: TensorView<Element>, c: TensorView<Element>) {
        self.s = s
        self.z = z
        self.c = c
    }
}

/// A writable scaled state (S̃: B×H×C×M, z̃: B×H×C×1, c: B×H×C×1): the final state of a
/// forward. Its gradient (∂L/∂S̃, ∂L/∂z̃; c has none) is passed as a `LinearStateView` pair.
public struct MutableFavorStateView<Element: AttentionScalar>: Sendable {
    /// S̃, B×H×C×M.
    public var s: MutableTensorView<Element>
    /// z̃, B×H×C×1.
    public var z: MutableTensorView<Element>
    /// The shifts c, B×H×C×1.
    public var c: MutableTensorView<Element>

    /// A state of the three views; their shapes are checked by the call that writes them.
    public init(s: MutableTensorView<Element>, z: MutableTensorView<Element>, c: MutableTensorView<Element>) {
        self.s = s
        self.z = z
        self.c = c
    }

    /// The same memory, read-only (e.g. to start the next piece from this piece's final state).
    public var readOnly: FavorStateView<Element> { FavorStateView(s: s.readOnly, z: z.readOnly, c: c.readOnly) }
}

/// Per query row of a FAVOR+ forward (`FavorAttention.forward`'s `rowScales`): the row unit
/// U_i and the scaled denominator den_i, each B×H×N×1, in the state type.
public struct FavorRowScalesView<Element: AttentionScalar>: Sendable {
    /// U_i, B×H×N×1 (−inf for a row that sees no key).
    public var units: MutableTensorView<Element>
    /// den_i, B×H×N×1 (ε·e^{−U_i} included; 0 for a row that outputs zeros).
    public var denominators: MutableTensorView<Element>

    /// Row scales into the two views; their shapes are checked by the call that writes them.
    public init(units: MutableTensorView<Element>, denominators: MutableTensorView<Element>) {
        self.units = units
        self.denominators = denominators
    }
}

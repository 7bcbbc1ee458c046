/// The state (S, z) of linear attention for B × H query heads (or, for the state-only calls,
/// B × Hs state heads), as caller-owned views:
/// `s` is B×H×C×M (S = Σ φ(k_j) v_jᵀ) and `z` is B×H×C×1 (z = Σ φ(k_j)).
///
/// The state is per query head. With grouped-query attention (Hk < H) each query head h keeps its
/// own state, built from the keys and values of key head h / (H/Hk): heads of one group start
/// from their own S_0 and so may differ, even though the keys they add are the same.
public struct LinearStateView<Element: AttentionScalar>: Sendable {
    /// S, B×H×C×M.
    public var s: TensorView<Element>
    /// z, B×H×C×1.
    public var z: TensorView<Element>

    /// A state of the two views; their shapes are checked by the call that reads them.
    public init(s: TensorView<Element>, z: TensorView<Element>) {
        self.s = s
        self.z = z
    }
}

/// A writable state (S: B×H×C×M, z: B×H×C×1): the final state of a forward, or the gradient of
/// the initial state from a backward.
public struct MutableLinearStateView<Element: AttentionScalar>: Sendable {
    /// S, B×H×C×M.
    public var s: MutableTensorView<Element>
    /// z, B×H×C×1.
    public var z: MutableTensorView<Element>

    /// A state of the two views; their shapes are checked by the call that writes them.
    public init(s: MutableTensorView<Element>, z: MutableTensorView<Element>) {
        self.s = s
        self.z = z
    }

    /// The same memory, read-only (e.g. to start the next piece from this piece's final state).
    public var readOnly: LinearStateView<Element> { LinearStateView(s: s.readOnly, z: z.readOnly) }
}

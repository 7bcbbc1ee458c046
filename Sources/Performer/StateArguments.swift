// The carried states of linear attention (S, z) and FAVOR+ attention (S~, z~, c) as C
// descriptors: all of a state's tensors given, or none.
import CPerformerABI
import PerformerCore

typealias StatePair = (s: TensorArgument, z: TensorArgument)
typealias StateTriple = (s: TensorArgument, z: TensorArgument, c: TensorArgument)

/// A state pair of descriptors: both NULL (nil) or both given.
func statePair(_ s: UnsafePointer<performer_tensor_t>?, _ z: UnsafePointer<performer_tensor_t>?,
               names: (String, String)) throws(PerformerError) -> StatePair? {
    if s == nil && z == nil { return nil }
    if s == nil { throw PerformerError(.nullPointer, "\(names.0) is NULL but \(names.1) is not: pass both or neither") }
    if z == nil { throw PerformerError(.nullPointer, "\(names.1) is NULL but \(names.0) is not: pass both or neither") }
    return (try TensorArgument(s, name: names.0), try TensorArgument(z, name: names.1))
}

/// A state triple of descriptors (S~, z~, c): all three NULL (nil) or all three given.
func stateTriple(
    _ s: UnsafePointer<performer_tensor_t>?, _ z: UnsafePointer<performer_tensor_t>?,
    _ c: UnsafePointer<performer_tensor_t>?, names: (String, String, String)
) throws(PerformerError) -> StateTriple? {
    if s == nil && z == nil && c == nil { return nil }
    let given = [(s, names.0), (z, names.1), (c, names.2)]
    if let missing = given.first(where: { $0.0 == nil }) {
        let present = given.filter { $0.0 != nil }.map { $0.1 }.joined(separator: ", ")
        throw PerformerError(.nullPointer, "\(missing.1) is NULL but \(present) is not: pass all of \(names.0), \(names.1), \(names.2) or none")
    }
    return (try TensorArgument(s, name: names.0), try TensorArgument(z, name: names.1),
            try TensorArgument(c, name: names.2))
}

/// The tensors of the given pairs, in order (none for an absent pair).
func tensors(_ pairs: StatePair?...) -> [TensorArgument] {
    pairs.flatMap { pair in pair.map { [$0.s, $0.z] } ?? [] }
}

/// The tensors of the triple (none when it is absent).
func tensors(_ triple: StateTriple?) -> [TensorArgument] { triple.map { [$0.s, $0.z, $0.c] } ?? [] }

/// A state pair's views in the call's state type S.
func stateView<S: AttentionScalar>(_ pair: StatePair, _: S.Type) -> LinearStateView<S> {
    LinearStateView(s: pair.s.view(S.self), z: pair.z.view(S.self))
}

func mutableStateView<S: AttentionScalar>(_ pair: StatePair, _: S.Type) -> MutableLinearStateView<S> {
    MutableLinearStateView(s: pair.s.mutableView(S.self), z: pair.z.mutableView(S.self))
}

/// A state triple's views in the call's state type S.
func favorStateView<S: AttentionScalar>(_ triple: StateTriple, _: S.Type) -> FavorStateView<S> {
    FavorStateView(s: triple.s.view(S.self), z: triple.z.view(S.self), c: triple.c.view(S.self))
}

func mutableFavorStateView<S: AttentionScalar>(_ triple: StateTriple, _: S.Type) -> MutableFavorStateView<S> {
    MutableFavorStateView(s: triple.s.mutableView(S.self), z: triple.z.mutableView(S.self), c: triple.c.mutableView(S.self))
}

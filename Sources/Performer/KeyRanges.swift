// The per-batch key arrays of the options structs (kv_lengths, kv_starts): B caller-owned
// entries each, where B is q's batch size. They are read only once q, k and v agree on B, so
// a call with mismatched batches fails on the shapes instead of reading past the array.
import CPerformerABI
import PerformerCore

/// q.shape[0] after checking that k and v have the same batch size (PerformerCore's messages).
func keyArrayBatch(_ q: TensorArgument, _ k: TensorArgument, _ v: TensorArgument) throws(PerformerError) -> Int {
    let b = q.shape[0]
    guard k.shape[0] == b else {
        throw PerformerError(.shapeMismatch, "k.shape[0] = \(k.shape[0]) but q.shape[0] = \(b) (batch)")
    }
    guard v.shape[0] == b else {
        throw PerformerError(.shapeMismatch, "v.shape[0] = \(v.shape[0]) but q.shape[0] = \(b) (batch)")
    }
    return b
}

/// The `batch` entries at `pointer` as Ints, or nil for a NULL pointer.
func keyArray(_ pointer: UnsafePointer<Int64>?, batch: Int) -> [Int]? {
    pointer.map { UnsafeBufferPointer(start: $0, count: max(batch, 0)).map { Int($0) } }
}

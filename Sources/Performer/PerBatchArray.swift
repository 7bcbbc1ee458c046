// Per-batch arrays of the options structs (kv_lengths: one entry per batch element). Reading
// one is the last step of argument reading: the batch size comes from the tensors, so it is
// read only once every tensor agrees on it, and copied only when the copy can be allocated.
import CPerformerABI
import PerformerCore

/// The `batch` entries of `pointer` (nil when it is NULL), where `batch` = shape[0] of the first
/// tensor in `tensors`, after checking that every tensor in `tensors` (all the call's tensors,
/// each of which has the batch as its first dimension) has that batch: a q.shape[0] larger
/// than k's must not make the library read past a kv_lengths array sized for k. A batch too
/// large to copy (an empty q with shape[0] = 2^50) is OUT_OF_MEMORY, not an abort.
func readPerBatch(_ pointer: UnsafePointer<Int64>?, name: String, tensors: [TensorArgument])
    throws(PerformerError) -> [Int]? {
    guard let pointer, let first = tensors.first else { return nil }
    let batch = first.shape[0]
    for tensor in tensors.dropFirst() where tensor.shape[0] != batch {
        throw PerformerError(.shapeMismatch, "\(tensor.name).shape[0] = \(tensor.shape[0]) but \(first.name).shape[0] = \(batch) (batch)")
    }
    try MemoryReservation.check(count: batch, of: MemoryLayout<Int>.stride, for: "a copy of \(name) (\(batch) entries)")
    return UnsafeBufferPointer(start: pointer, count: batch).map { Int($0) }
}

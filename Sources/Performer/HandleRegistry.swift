// The opaque handles of the C ABI (decoders, projections) and the process-wide table of live
// ones. A handle is not a pointer: it encodes a slot of the table and that slot's generation,
// so a destroyed handle, a double destroy, a garbage value or a handle of another kind is
// recognized by looking at the table alone, never by dereferencing the value.
import CPerformerABI
import Glibc
import PerformerCore

/// The kinds of handle, as the C header names their types.
enum HandleKind: UInt8 {
    case linearDecoder, favorDecoder, favorProjection

    var typeName: String {
        switch self {
        case .linearDecoder: "performer_linear_decoder_t"
        case .favorDecoder: "performer_favor_decoder_t"
        case .favorProjection: "performer_favor_projection_t"
        }
    }
}

/// A class whose instances the C ABI hands out as handles of one kind.
protocol RegisteredHandle: AnyObject {
    static var handleKind: HandleKind { get }
}

extension RegisteredHandle {
    /// A new handle for `object` (the table keeps it alive until `unregister`).
    static func register(_ object: Self) throws(PerformerError) -> OpaquePointer {
        try HandleRegistry.shared.insert(object, kind: handleKind)
    }

    /// The live object of `handle`, or an error naming the argument `name`: NULL is
    /// PERFORMER_ERROR_NULL_POINTER; a value that is not a live handle of this kind is
    /// PERFORMER_ERROR_INVALID_ARGUMENT. The object stays alive while the caller holds it.
    static func lookup(_ handle: OpaquePointer?, name: String) throws(PerformerError) -> Self {
        guard let handle else { throw PerformerError(.nullPointer, "\(name) is NULL") }
        switch HandleRegistry.shared.find(handle, kind: handleKind) {
        case .live(let object):
            // The table records the kind each object was registered with: this is its class.
            return unsafeDowncast(object, to: Self.self)
        case .otherKind(let kind):
            throw PerformerError(.invalidArgument, "\(name) is a \(kind.typeName), not a \(handleKind.typeName)")
        case .unknown:
            throw PerformerError(.invalidArgument,
                                 "\(name) is not a live \(handleKind.typeName) (destroyed, or not a handle)")
        }
    }

    /// Ends `handle` (the destroy functions): NULL, an unknown or destroyed handle and a handle
    /// of another kind are ignored. The object is freed once no call in flight holds it.
    static func unregister(_ handle: OpaquePointer?) {
        guard let handle else { return }
        HandleRegistry.shared.remove(handle, kind: handleKind)
    }
}

/// The table of live handles: slots reused through a free list, each with a generation that
/// grows when its handle is destroyed. A handle is generation << 24 | slot: 2^24 live handles
/// at most, and a stale handle is recognized until its slot has been reused 2^40 times.
/// One mutex guards the table; a lookup holds it for a few loads and a retain.
final class HandleRegistry {
    static let shared = HandleRegistry()

    enum Lookup {
        case live(AnyObject)
        case otherKind(HandleKind)
        case unknown
    }

    private struct Slot {
        var object: AnyObject?
        var kind: HandleKind
        var generation: UInt64
    }

    private static let slotBits = 24
    private static let slotMask: UInt64 = (1 << slotBits) - 1
    private static let generationMask: UInt64 = (1 << (64 - slotBits)) - 1

    private var slots = [Slot]()
    private var freeSlots = [Int]()
    private var live = 0
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    private init() {
        pthread_mutex_init(lock, nil)
        // fork() while another thread holds the lock would leave it locked in the child: the
        // forking thread takes it first, so the table is whole and unlocked on both sides.
        pthread_atfork({ HandleRegistry.shared.acquire() },
                       { HandleRegistry.shared.release() },
                       { HandleRegistry.shared.release() })
    }

    private func acquire() { pthread_mutex_lock(lock) }
    private func release() { pthread_mutex_unlock(lock) }

    /// The number of live handles.
    var count: Int {
        acquire()
        defer { release() }
        return live
    }

    func insert(_ object: AnyObject, kind: HandleKind) throws(PerformerError) -> OpaquePointer {
        acquire()
        defer { release() }
        let index: Int
        if let reused = freeSlots.popLast() {
            index = reused
        } else {
            guard slots.count <= Int(Self.slotMask) else {
                throw PerformerError(.outOfMemory, "too many live handles (\(slots.count)): destroy some first")
            }
            slots.append(Slot(object: nil, kind: kind, generation: 1))
            index = slots.count - 1
        }
        slots[index].object = object
        slots[index].kind = kind
        live += 1
        // Generations start at 1, so no handle is NULL.
        return OpaquePointer(bitPattern: UInt(slots[index].generation << UInt64(Self.slotBits) | UInt64(index)))!
    }

    func find(_ handle: OpaquePointer, kind: HandleKind) -> Lookup {
        let value = UInt64(UInt(bitPattern: handle))
        let index = Int(value & Self.slotMask), generation = value >> UInt64(Self.slotBits)
        acquire()
        defer { release() }
        guard index < slots.count else { return .unknown }
        let slot = slots[index]
        guard slot.generation == generation, let object = slot.object else { return .unknown }
        return slot.kind == kind ? .live(object) : .otherKind(slot.kind)
    }

    /// Ends `handle` if it is a live handle of `kind`; else does nothing.
    func remove(_ handle: OpaquePointer, kind: HandleKind) {
        // The object's last reference (when no call in flight holds it) is dropped when this
        // returns, outside the lock: a decoder's deinit frees its state.
        _ = take(handle, kind: kind)
    }

    private func take(_ handle: OpaquePointer, kind: HandleKind) -> AnyObject? {
        let value = UInt64(UInt(bitPattern: handle))
        let index = Int(value & Self.slotMask), generation = value >> UInt64(Self.slotBits)
        acquire()
        defer { release() }
        guard index < slots.count, slots[index].generation == generation, slots[index].kind == kind,
              let object = slots[index].object else { return nil }
        slots[index].object = nil
        let next = (generation + 1) & Self.generationMask
        slots[index].generation = next == 0 ? 1 : next
        freeSlots.append(index)
        live -= 1
        return object
    }
}

@_cdecl("performer_live_handle_count")
public func performer_live_handle_count() -> Int64 {
    Int64(HandleRegistry.shared.count)
}

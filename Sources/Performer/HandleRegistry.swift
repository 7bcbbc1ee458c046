// The opaque handles of the C ABI (decoders, projections) and the process-wide table of live
// ones. A handle is not a pointer: it encodes a slot of the table and that slot's generation,
// so a destroyed handle, a double destroy, a garbage value or a handle of another kind is
// recognized by looking at the table alone, never by dereferencing the value.
import CPerformerABI
import CPerformerSupport
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
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
        if let object = HandleRegistry.shared.find(handle, kind: handleKind) {
            // The table records the kind each object was registered with: this is its class.
            return unsafeDowncast(object, to: Self.self)
        }
        if let kind = HandleRegistry.shared.liveKind(handle) {
            throw PerformerError(.invalidArgument, "\(name) is a \(kind.typeName), not a \(handleKind.typeName)")
        }
        throw PerformerError(.invalidArgument, "\(name) is not a live \(handleKind.typeName) (destroyed, or not a handle)")
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
/// One spin lock guards the table; a lookup holds it for a few loads and a retain.
final class HandleRegistry {
    static let shared = HandleRegistry()

    private struct Slot {
        var object: AnyObject?
        var kind: HandleKind
        var generation: UInt64
    }

    private static let slotBits = 24
    private static let slotMask: UInt64 = (1 << slotBits) - 1
    private static let generationMask: UInt64 = (1 << (64 - slotBits)) - 1

    private struct Table {
        var slots = [Slot]()
        var freeSlots = [Int]()
        var live = 0
    }

    // Behind pointers held in constants: accesses need no dynamic exclusivity checks (a class's
    // `var` calls into the runtime on every access). These and the spin lock (a pthread mutex
    // costs ~50 instructions more) keep the lookup near 70 instructions (RELIABILITY.md, 8).
    private let table = UnsafeMutablePointer<Table>.allocate(capacity: 1)
    private let lock = UnsafeMutablePointer<Int32>.allocate(capacity: 1)

    private init() {
        table.initialize(to: Table())
        lock.initialize(to: 0)
        // fork() while another thread holds the lock would leave it locked in the child: the
        // forking thread takes it first, so the table is whole and unlocked on both sides.
        pthread_atfork({ HandleRegistry.shared.acquire() },
                       { HandleRegistry.shared.release() },
                       { HandleRegistry.shared.release() })
    }

    private func acquire() { psupport_spin_lock(lock) }
    private func release() { psupport_spin_unlock(lock) }

    /// The number of live handles.
    var count: Int {
        acquire()
        defer { release() }
        return table.pointee.live
    }

    func insert(_ object: AnyObject, kind: HandleKind) throws(PerformerError) -> OpaquePointer {
        acquire()
        defer { release() }
        let index: Int
        if let reused = table.pointee.freeSlots.popLast() {
            index = reused
        } else {
            let used = table.pointee.slots.count
            guard used <= Int(Self.slotMask) else {
                throw PerformerError(.outOfMemory, "too many live handles (\(used)): destroy some first")
            }
            table.pointee.slots.append(Slot(object: nil, kind: kind, generation: 1))
            index = used
        }
        table.pointee.slots[index].object = object
        table.pointee.slots[index].kind = kind
        table.pointee.live += 1
        // Generations start at 1, so no handle is NULL.
        let generation = table.pointee.slots[index].generation
        return OpaquePointer(bitPattern: UInt(generation << UInt64(Self.slotBits) | UInt64(index)))!
    }

    /// The object of `handle` when it is a live handle of `kind`, else nil.
    func find(_ handle: OpaquePointer, kind: HandleKind) -> AnyObject? {
        let value = UInt64(UInt(bitPattern: handle))
        let index = Int(value & Self.slotMask), generation = value >> UInt64(Self.slotBits)
        acquire()
        defer { release() }
        guard index < table.pointee.slots.count else { return nil }
        let slot = table.pointee.slots[index]
        return slot.generation == generation && slot.kind == kind ? slot.object : nil
    }

    /// The kind of `handle` when it is a live handle of any kind, else nil (for error messages).
    func liveKind(_ handle: OpaquePointer) -> HandleKind? {
        let value = UInt64(UInt(bitPattern: handle))
        let index = Int(value & Self.slotMask), generation = value >> UInt64(Self.slotBits)
        acquire()
        defer { release() }
        guard index < table.pointee.slots.count else { return nil }
        let slot = table.pointee.slots[index]
        return slot.generation == generation && slot.object != nil ? slot.kind : nil
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
        guard index < table.pointee.slots.count else { return nil }
        let slot = table.pointee.slots[index]
        guard slot.generation == generation, slot.kind == kind, let object = slot.object else { return nil }
        let next = (generation + 1) & Self.generationMask
        table.pointee.slots[index] = Slot(object: nil, kind: kind, generation: next == 0 ? 1 : next)
        table.pointee.freeSlots.append(index)
        table.pointee.live -= 1
        return object
    }
}

@_cdecl("performer_live_handle_count")
public func performer_live_handle_count() -> Int64 {
    Int64(HandleRegistry.shared.count)
}

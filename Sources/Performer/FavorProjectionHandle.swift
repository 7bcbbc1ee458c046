// FAVOR+ projections (performer.h: "FAVOR+"): an opaque handle (HandleRegistry.swift) for
// PerformerCore's FavorProjection value, guarded by a mutex so that redraw may run while other
// threads use it.
import CPerformerABI
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerCore

/// What a performer_favor_projection_t stands for.
final class FavorProjectionHandle: RegisteredHandle {
    static let handleKind = HandleKind.favorProjection
    private var projection: FavorProjection
    private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    init(_ projection: FavorProjection) {
        self.projection = projection
        pthread_mutex_init(lock, nil)
    }

    deinit {
        pthread_mutex_destroy(lock)
        lock.deallocate()
    }

    /// A copy of the current projection (W is shared copy-on-write: cheap).
    var snapshot: FavorProjection {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        return projection
    }

    /// The next draw; the projection is unchanged when it throws.
    func redraw() throws(PerformerError) {
        pthread_mutex_lock(lock)
        defer { pthread_mutex_unlock(lock) }
        var next = projection
        try next.redraw()
        projection = next
    }

    /// The projection of `handle`: NULL, destroyed, unknown and other kinds of handle are
    /// errors naming `name`.
    static func from(_ handle: performer_favor_projection_t?, name: String = "projection")
        throws(PerformerError) -> FavorProjectionHandle {
        try lookup(handle, name: name)
    }
}

/// An Int64 size argument as Int (every Int64 fits on the 64-bit platforms this builds for).
private func size(_ value: Int64) -> Int { Int(truncatingIfNeeded: value) }

@_cdecl("performer_favor_projection_create")
public func performer_favor_projection_create(
    _ projection: UnsafeMutablePointer<performer_favor_projection_t?>?, _ dim: Int64, _ num_features: Int64,
    _ kind: performer_favor_projection_kind, _ norms: performer_favor_norms, _ seed: UInt64
) -> performer_status {
    withStatus { () throws(PerformerError) in
        guard let projection else { throw PerformerError(.nullPointer, "projection is NULL") }
        let kind = try FavorProjectionKind(code: Int32(truncatingIfNeeded: kind.rawValue))
        let norms = try FavorNorms(code: Int32(truncatingIfNeeded: norms.rawValue))
        let made = try FavorProjection(dim: size(dim), numFeatures: size(num_features), kind: kind, norms: norms,
                                       seed: seed)
        projection.pointee = try FavorProjectionHandle.register(FavorProjectionHandle(made))
    }
}

@_cdecl("performer_favor_projection_create_from_matrix")
public func performer_favor_projection_create_from_matrix(
    _ projection: UnsafeMutablePointer<performer_favor_projection_t?>?, _ w: UnsafePointer<performer_tensor_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        guard let projection else { throw PerformerError(.nullPointer, "projection is NULL") }
        let w = try TensorArgument(w, name: "W")
        try expectMatrixShape(w)
        let (m, d) = (w.shape[2], w.shape[3])
        guard d >= 1 else { throw PerformerError(.invalidArgument, "W.shape[3] = 0: dim must be at least 1") }
        guard m >= 1 else { throw PerformerError(.invalidArgument, "W.shape[2] = 0: num_features must be at least 1") }
        _ = try w.byteRange()
        // W in float64 (gathered here, kept by the projection) and in float32; a broadcast W
        // can describe far more entries than memory holds.
        try MemoryReservation.check(count: m * d, of: 8 + 4, for: "the projection W (\(m) × \(d))")
        let entries = gather(w)
        let made = try FavorProjection(matrix: entries, numFeatures: m, dim: d)
        projection.pointee = try FavorProjectionHandle.register(FavorProjectionHandle(made))
    }
}

/// Throws unless w is 1 × 1 × m × D.
private func expectMatrixShape(_ w: TensorArgument) throws(PerformerError) {
    for axis in 0..<2 where w.shape[axis] != 1 {
        throw PerformerError(.shapeMismatch, "\(w.name).shape[\(axis)] = \(w.shape[axis]) but must be 1 (\(w.name) is 1 × 1 × m × D)")
    }
}

/// Every element of `t` in row-major order, as Double (exact for every dtype). Strides and
/// extent already checked.
func gather(_ t: TensorArgument) -> [Double] {
    var result = [Double]()
    result.reserveCapacity(t.shape[0] * t.shape[1] * t.shape[2] * t.shape[3])
    forEachOffset(t) { offset in
        switch t.dtype {
        case .float32: result.append(Double(t.data.assumingMemoryBound(to: Float.self)[offset]))
        case .float64: result.append(t.data.assumingMemoryBound(to: Double.self)[offset])
        case .float16: result.append(Double(Float(t.data.assumingMemoryBound(to: Float16.self)[offset])))
        case .bfloat16: result.append(Double(Float(t.data.assumingMemoryBound(to: BFloat16.self)[offset])))
        }
    }
    return result
}

/// Writes `values` (row-major, count = t's element count) into `t`, rounding to its dtype (a
/// half dtype through float32: pass float32 values for a single rounding).
func scatter(_ values: [Double], into t: TensorArgument) {
    var index = 0
    forEachOffset(t) { offset in
        switch t.dtype {
        case .float32: t.data.assumingMemoryBound(to: Float.self)[offset] = Float(values[index])
        case .float64: t.data.assumingMemoryBound(to: Double.self)[offset] = values[index]
        case .float16: t.data.assumingMemoryBound(to: Float16.self)[offset] = Float16(Float(values[index]))
        case .bfloat16: t.data.assumingMemoryBound(to: BFloat16.self)[offset] = BFloat16(Float(values[index]))
        }
        index += 1
    }
}

/// Calls `body` with the element offset of every index of `t`, in row-major order.
func forEachOffset(_ t: TensorArgument, _ body: (Int) -> Void) {
    let (s, st) = (t.shape, t.strides)
    for a in 0..<s[0] {
        for b in 0..<s[1] {
            for c in 0..<s[2] {
                for d in 0..<s[3] { body(a * st[0] + b * st[1] + c * st[2] + d * st[3]) }
            }
        }
    }
}

@_cdecl("performer_favor_projection_destroy")
public func performer_favor_projection_destroy(_ projection: performer_favor_projection_t?) {
    FavorProjectionHandle.unregister(projection)
}

@_cdecl("performer_favor_projection_redraw")
public func performer_favor_projection_redraw(_ projection: performer_favor_projection_t?) -> performer_status {
    withStatus { () throws(PerformerError) in try FavorProjectionHandle.from(projection).redraw() }
}

@_cdecl("performer_favor_projection_get_matrix")
public func performer_favor_projection_get_matrix(
    _ projection: performer_favor_projection_t?, _ out: UnsafeMutablePointer<performer_tensor_t>?
) -> performer_status {
    withStatus { () throws(PerformerError) in
        let p = try FavorProjectionHandle.from(projection).snapshot
        let out = try TensorArgument(out, name: "out")
        try expectMatrixShape(out)
        for (axis, want, name) in [(2, p.numFeatures, "num_features"), (3, p.dim, "dim")] where out.shape[axis] != want {
            throw PerformerError(.shapeMismatch, "out.shape[\(axis)] = \(out.shape[axis]) but the projection's \(name) = \(want) (out is 1 × 1 × m × D = [1, 1, \(p.numFeatures), \(p.dim)])")
        }
        _ = try out.byteRange()
        try TensorLayout.checkNoSelfOverlap(shape: out.shape, strides: out.strides, name: "out")
        switch out.dtype {
        case .float64: scatter(p.matrix, into: out)
        // Half: the float32 W the kernels use, rounded once (docs/HALF_PRECISION.md).
        case .float32, .float16, .bfloat16: scatter(p.matrixFloat.map { Double($0) }, into: out)
        }
    }
}

/// Runs `read` on the projection and stores its result in `*value`.
private func getter<V>(_ projection: performer_favor_projection_t?, _ value: UnsafeMutablePointer<V>?,
                       _ read: (FavorProjection) throws(PerformerError) -> V) -> performer_status {
    withStatus { () throws(PerformerError) in
        let p = try FavorProjectionHandle.from(projection).snapshot
        guard let value else { throw PerformerError(.nullPointer, "value is NULL") }
        value.pointee = try read(p)
    }
}

private func callerMatrix(_ what: String) -> PerformerError {
    PerformerError(.invalidArgument, "projection: W was supplied by the caller, so it has no \(what)")
}

@_cdecl("performer_favor_projection_get_dim")
public func performer_favor_projection_get_dim(
    _ projection: performer_favor_projection_t?, _ value: UnsafeMutablePointer<Int64>?
) -> performer_status {
    getter(projection, value) { p throws(PerformerError) in Int64(p.dim) }
}

@_cdecl("performer_favor_projection_get_num_features")
public func performer_favor_projection_get_num_features(
    _ projection: performer_favor_projection_t?, _ value: UnsafeMutablePointer<Int64>?
) -> performer_status {
    getter(projection, value) { p throws(PerformerError) in Int64(p.numFeatures) }
}

@_cdecl("performer_favor_projection_get_seed")
public func performer_favor_projection_get_seed(
    _ projection: performer_favor_projection_t?, _ value: UnsafeMutablePointer<UInt64>?
) -> performer_status {
    getter(projection, value) { p throws(PerformerError) in
        guard let seed = p.seed else { throw callerMatrix("seed") }
        return seed
    }
}

@_cdecl("performer_favor_projection_get_draw")
public func performer_favor_projection_get_draw(
    _ projection: performer_favor_projection_t?, _ value: UnsafeMutablePointer<UInt64>?
) -> performer_status {
    getter(projection, value) { p throws(PerformerError) in p.draw }
}

@_cdecl("performer_favor_projection_get_kind")
public func performer_favor_projection_get_kind(
    _ projection: performer_favor_projection_t?, _ value: UnsafeMutablePointer<performer_favor_projection_kind>?
) -> performer_status {
    getter(projection, value) { p throws(PerformerError) in
        guard let kind = p.kind else { throw callerMatrix("projection kind") }
        return performer_favor_projection_kind(rawValue: .init(truncatingIfNeeded: kind.rawValue))
    }
}

@_cdecl("performer_favor_projection_get_norms")
public func performer_favor_projection_get_norms(
    _ projection: performer_favor_projection_t?, _ value: UnsafeMutablePointer<performer_favor_norms>?
) -> performer_status {
    getter(projection, value) { p throws(PerformerError) in
        guard let norms = p.norms else { throw callerMatrix("norms") }
        return performer_favor_norms(rawValue: .init(truncatingIfNeeded: norms.rawValue))
    }
}

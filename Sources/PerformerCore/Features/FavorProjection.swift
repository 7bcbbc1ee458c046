import PerformerKernelInterface

/// How the rows of a FAVOR+ projection are drawn (ALGORITHMS.md §3). Raw values are the C ABI codes.
public enum FavorProjectionKind: Int32, Sendable, CaseIterable {
    /// ⌈m/D⌉ stacked blocks, each a Haar-random orthogonal D×D matrix (sign-corrected QR of a
    /// standard Gaussian matrix); the first m rows; then row norms (`FavorNorms`). The default.
    case orthogonal = 0
    /// Independent standard Gaussian rows.
    case iid = 1

    /// The kind's name ("orthogonal", "iid"), as messages spell it.
    public var name: String { self == .orthogonal ? "orthogonal" : "iid" }

    /// The kind called `name` ("orthogonal", "iid"); throws naming `argument` otherwise.
    public init(name: String, argument: String = "kind") throws(PerformerError) {
        guard let kind = Self.allCases.first(where: { $0.name == name }) else {
            throw PerformerError(.invalidArgument, "\(argument) = \"\(name)\" is not a projection kind (orthogonal, iid)")
        }
        self = kind
    }

    /// The kind with C code `code`; throws naming `argument` otherwise.
    public init(code: Int32, argument: String = "kind") throws(PerformerError) {
        guard let kind = Self(rawValue: code) else {
            throw PerformerError(.invalidArgument, "\(argument) = \(code) is not a projection kind (0 orthogonal, 1 iid)")
        }
        self = kind
    }
}

/// How the rows of a projection are scaled. Raw values are the C ABI codes.
public enum FavorNorms: Int32, Sendable, CaseIterable {
    /// Row i gets the norm of an independent D-dimensional standard Gaussian vector (chi(D)),
    /// so every row is distributed as a standard Gaussian vector. The default. For `iid` rows
    /// this is already their own norm: iid rows are left as drawn.
    case chi = 0
    /// Every row has norm √D exactly.
    case fixed = 1

    /// The norms' name ("chi", "fixed").
    public var name: String { self == .chi ? "chi" : "fixed" }

    /// The norms called `name` ("chi", "fixed"); throws naming `argument` otherwise.
    public init(name: String, argument: String = "norms") throws(PerformerError) {
        guard let norms = Self.allCases.first(where: { $0.name == name }) else {
            throw PerformerError(.invalidArgument, "\(argument) = \"\(name)\" is not a norm kind (chi, fixed)")
        }
        self = norms
    }

    /// The norms with C code `code`; throws naming `argument` otherwise.
    public init(code: Int32, argument: String = "norms") throws(PerformerError) {
        guard let norms = Self(rawValue: code) else {
            throw PerformerError(.invalidArgument, "\(argument) = \(code) is not a norm kind (0 chi, 1 fixed)")
        }
        self = norms
    }
}

/// The random projection W (m × D, rows w₁…w_m) of FAVOR+ features: drawn from the seeded
/// generator of docs/FAVOR.md (same seed and draw → the same W on every build), or given by
/// the caller. A value type: `redraw()` replaces W by the next draw of the same generator.
public struct FavorProjection: Sendable, Equatable {
    /// D, the input (head) dimension: columns of W.
    public let dim: Int
    /// m, the number of random features: rows of W.
    public let numFeatures: Int
    /// How W was drawn; nil when the caller supplied it.
    public let kind: FavorProjectionKind?
    /// How the rows were scaled; nil when the caller supplied W.
    public let norms: FavorNorms?
    /// The generator seed; nil when the caller supplied W.
    public let seed: UInt64?
    /// Which draw of the generator W is (0 for the first; `redraw()` adds 1).
    public private(set) var draw: UInt64
    /// W in float64, row-major m × D: `matrix[i * dim + j]` = W[i][j].
    public private(set) var matrix: [Double]
    /// W rounded to float32, row-major m × D (what float32 features use).
    public private(set) var matrixFloat: [Float]

    /// Whether W came from the caller (and so cannot be redrawn).
    public var isCallerMatrix: Bool { seed == nil }

    /// Draws W: `numFeatures` × `dim`, `kind` (default orthogonal), `norms` (default chi),
    /// from `seed`, as draw number `draw` (0 for a fresh projection; pass a saved `draw` to
    /// recreate a projection that had been redrawn).
    public init(dim: Int, numFeatures: Int, kind: FavorProjectionKind = .orthogonal, norms: FavorNorms = .chi,
                seed: UInt64 = 0, draw: UInt64 = 0) throws(PerformerError) {
        try Self.checkSizes(dim: dim, numFeatures: numFeatures, orthogonal: kind == .orthogonal)
        try Self.reserveDrawing(dim: dim, numFeatures: numFeatures, kind: kind)
        self.dim = dim
        self.numFeatures = numFeatures
        self.kind = kind
        self.norms = norms
        self.seed = seed
        self.draw = draw
        self.matrix = Self.drawMatrix(dim: dim, numFeatures: numFeatures, kind: kind, norms: norms, seed: seed, draw: draw)
        self.matrixFloat = matrix.map { Float($0) }
    }

    /// W given by the caller: `matrix` row-major `numFeatures` × `dim`, copied. Every entry
    /// must be finite.
    public init(matrix: [Double], numFeatures: Int, dim: Int) throws(PerformerError) {
        try Self.checkSizes(dim: dim, numFeatures: numFeatures, orthogonal: false)
        guard matrix.count == numFeatures * dim else {
            throw PerformerError(.shapeMismatch, "W has \(matrix.count) entries but num_features × dim = \(numFeatures) × \(dim) = \(numFeatures * dim)")
        }
        if let bad = matrix.firstIndex(where: { !$0.isFinite }) {
            throw PerformerError(.invalidArgument, "W[\(bad / dim)][\(bad % dim)] = \(matrix[bad]) is not finite")
        }
        try MemoryReservation.check(ScratchSize(numFeatures) * dim * MemoryLayout<Float>.stride,
                                    for: "W in float32 (\(numFeatures) × \(dim))")
        self.dim = dim
        self.numFeatures = numFeatures
        self.kind = nil
        self.norms = nil
        self.seed = nil
        self.draw = 0
        self.matrix = matrix
        self.matrixFloat = matrix.map { Float($0) }
    }

    /// W given by the caller in float32 (converted exactly to float64).
    public init(matrix: [Float], numFeatures: Int, dim: Int) throws(PerformerError) {
        try self.init(matrix: matrix.map { Double($0) }, numFeatures: numFeatures, dim: dim)
    }

    /// Replaces W by the generator's next draw (`draw + 1`). Never looks at data. Throws when
    /// W came from the caller (there is no generator to draw from).
    public mutating func redraw() throws(PerformerError) {
        guard let seed, let kind, let norms else {
            throw PerformerError(.invalidArgument, "projection: W was supplied by the caller, so it has no generator to redraw from")
        }
        try Self.reserveDrawing(dim: dim, numFeatures: numFeatures, kind: kind)
        draw &+= 1
        matrix = Self.drawMatrix(dim: dim, numFeatures: numFeatures, kind: kind, norms: norms, seed: seed, draw: draw)
        matrixFloat = matrix.map { Float($0) }
    }

    /// W[row][column] in float64.
    public subscript(row: Int, column: Int) -> Double { matrix[row * dim + column] }

    /// W in float32 or float64.
    public func matrix<T: AttentionScalar>(as _: T.Type) -> [T] {
        // A bit cast, not `as! [T]`: in generic code that cast converts the array element by
        // element through the runtime (0.75M instructions for a 64 × 64 W, three quarters of a
        // tiny FAVOR+ call); T is exactly Float or Double here, so the arrays are the same.
        if T.self == Float.self { return unsafeBitCast(matrixFloat, to: [T].self) }
        precondition(T.self == Double.self, "AttentionScalar is Float or Double")
        return unsafeBitCast(matrix, to: [T].self)
    }

    // MARK: - Drawing

    /// The generator purposes (docs/FAVOR.md): the Gaussian entries, and the norm vectors.
    static let entriesPurpose: UInt64 = 0
    static let normsPurpose: UInt64 = 1

    /// Throws `.outOfMemory` unless drawing W can allocate what it needs: W in float64 and in
    /// float32, the generator's Gaussian entries (m × D, or D × D per orthogonal block plus
    /// that block's factorization, about three more D × D).
    static func reserveDrawing(dim d: Int, numFeatures m: Int, kind: FavorProjectionKind) throws(PerformerError) {
        let w = ScratchSize(m) * d
        let temporary = kind == .orthogonal ? 4 * ScratchSize(d) * d : w
        try MemoryReservation.check(w * (8 + 4) + temporary * 8, for: "the projection W (\(m) × \(d))")
    }

    static func checkSizes(dim: Int, numFeatures: Int, orthogonal: Bool) throws(PerformerError) {
        guard dim >= 1 else { throw PerformerError(.invalidArgument, "dim = \(dim): must be at least 1") }
        guard numFeatures >= 1 else {
            throw PerformerError(.invalidArgument, "num_features = \(numFeatures): must be at least 1")
        }
        let (count, overflow) = numFeatures.multipliedReportingOverflow(by: dim)
        guard !overflow, count <= 1 << 40 else {
            throw PerformerError(.sizeOverflow, "num_features × dim = \(numFeatures) × \(dim) is too large")
        }
        if orthogonal {
            let blocks = (numFeatures + dim - 1) / dim
            let (square, o1) = dim.multipliedReportingOverflow(by: dim)
            let (total, o2) = square.multipliedReportingOverflow(by: blocks)
            guard !o1, !o2, total <= 1 << 40 else {
                throw PerformerError(.sizeOverflow, "orthogonal blocks of dim × dim = \(dim) × \(dim) are too large")
            }
        }
    }

    /// The matrix of draw `draw` (docs/FAVOR.md, "Projections"), row-major m × D, float64.
    static func drawMatrix(dim d: Int, numFeatures m: Int, kind: FavorProjectionKind, norms: FavorNorms,
                           seed: UInt64, draw: UInt64) -> [Double] {
        let entries = FavorRandom(seed: seed, draw: draw, purpose: entriesPurpose)
        var w: [Double]
        switch kind {
        case .iid:
            w = entries.normals(from: 0, count: m * d)
            if norms == .fixed {
                let target = Double(d).squareRoot()
                for i in 0..<m {
                    let n = rowNorm(w, row: i, dim: d)
                    // A zero row (probability 0) stays zero.
                    let factor = n > 0 ? target / n : 0
                    for j in 0..<d { w[i * d + j] *= factor }
                }
            }
            return w
        case .orthogonal:
            w = [Double](repeating: 0, count: m * d)
            let blocks = (m + d - 1) / d
            for block in 0..<blocks {
                let gaussian = entries.normals(from: UInt64(block) * UInt64(d * d), count: d * d)
                let q = haarOrthogonal(gaussian, dim: d)
                let rows = min(d, m - block * d)
                for r in 0..<rows {
                    for j in 0..<d { w[(block * d + r) * d + j] = q[r * d + j] }
                }
            }
            let normSource = FavorRandom(seed: seed, draw: draw, purpose: normsPurpose)
            for i in 0..<m {
                let length: Double
                if norms == .chi {
                    let g = normSource.normals(from: UInt64(i) * UInt64(d), count: d)
                    var sum = 0.0
                    for value in g { sum += value * value }
                    length = sum.squareRoot()
                } else {
                    length = Double(d).squareRoot()
                }
                for j in 0..<d { w[i * d + j] *= length }
            }
            return w
        }
    }

    static func rowNorm(_ w: [Double], row: Int, dim d: Int) -> Double {
        var sum = 0.0
        for j in 0..<d { sum += w[row * d + j] * w[row * d + j] }
        return sum.squareRoot()
    }

    /// Q · diag(sign(diag R)) for the Householder QR decomposition G = QR of the row-major
    /// d × d matrix `g`, returned row-major. Reflections, in order k = 0 … d−2: x = G'[k..<d, k],
    /// α = −sign(x₀)‖x‖ (sign(0) = +1), v = x − α e₀, H_k = I − 2vvᵀ/(vᵀv) (skipped when
    /// vᵀv = 0); Q = H₀H₁…H_{d−2}, accumulated right to left from the identity.
    /// sign(R_kk) for R_kk = 0 is +1.
    static func haarOrthogonal(_ g: [Double], dim d: Int) -> [Double] {
        var a = g
        var reflectors = [[Double]]()
        reflectors.reserveCapacity(max(d - 1, 0))
        for k in 0..<max(d - 1, 0) {
            var normSquared = 0.0
            for i in k..<d { normSquared += a[i * d + k] * a[i * d + k] }
            let norm = normSquared.squareRoot()
            let alpha = a[k * d + k] >= 0 ? -norm : norm
            var v = [Double](repeating: 0, count: d - k)
            for i in k..<d { v[i - k] = a[i * d + k] }
            v[0] -= alpha
            var vv = 0.0
            for value in v { vv += value * value }
            if vv == 0 {
                reflectors.append([])
                continue
            }
            let factor = 2.0 / vv
            for j in k..<d {
                var t = 0.0
                for i in k..<d { t += v[i - k] * a[i * d + j] }
                t *= factor
                for i in k..<d { a[i * d + j] -= t * v[i - k] }
            }
            reflectors.append(v)
        }
        // Q = H₀ H₁ … H_{d−2} I: apply H_k on the left, k from last to first.
        var q = [Double](repeating: 0, count: d * d)
        for i in 0..<d { q[i * d + i] = 1 }
        for k in stride(from: reflectors.count - 1, through: 0, by: -1) {
            let v = reflectors[k]
            if v.isEmpty { continue }
            var vv = 0.0
            for value in v { vv += value * value }
            let factor = 2.0 / vv
            for j in 0..<d {
                var t = 0.0
                for i in k..<d { t += v[i - k] * q[i * d + j] }
                t *= factor
                for i in k..<d { q[i * d + j] -= t * v[i - k] }
            }
        }
        // Q · diag(sign(R_kk)): flip column k where R_kk < 0.
        for k in 0..<d where a[k * d + k] < 0 {
            for i in 0..<d { q[i * d + k] = -q[i * d + k] }
        }
        return q
    }
}

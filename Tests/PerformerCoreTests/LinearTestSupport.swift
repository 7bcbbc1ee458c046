#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import XCTest
import PerformerCore

// Shared pieces of the linear-attention tests: a seeded generator, strided test tensors, one
// problem's inputs, a float64 direct reference with explicit N × L masked similarity matrices,
// and a runner that calls the library.

/// SplitMix64: reproducible inputs on every platform.
struct LinearTestRandom {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func uniform() -> Double { Double(next() >> 11) / Double(1 << 53) }
    mutating func normal() -> Double {
        let u = max(uniform(), 1e-300), v = uniform()
        return (-2 * log(u)).squareRoot() * cos(2 * Double.pi * v)
    }
    mutating func array(_ count: Int, positive: Bool = false) -> [Double] {
        (0..<count).map { _ in positive ? 0.1 + uniform() : normal() }
    }
}

/// A rank-4 tensor in memory the test owns, either contiguous or laid out as B × N × H × (D + 1)
/// (axes 1 and 2 swapped, rows padded) to exercise non-contiguous strides. Padding holds a
/// sentinel so tests can see a kernel never writes outside the view.
final class LinearTestTensor<T: AttentionScalar> {
    static var sentinel: T { 4242 }
    let shape: SIMD4<Int>
    let strides: SIMD4<Int>
    let storage: UnsafeMutablePointer<T>
    let capacity: Int

    init(shape: SIMD4<Int>, strided: Bool = false, values: [Double]? = nil) {
        self.shape = shape
        if strided {
            let row = shape[3] + 1
            strides = SIMD4(shape[2] * shape[1] * row, row, shape[1] * row, 1)
            capacity = max(1, shape[0] * shape[1] * shape[2] * row)
        } else {
            strides = contiguousStrides(shape)
            capacity = max(1, shape[0] * shape[1] * shape[2] * shape[3])
        }
        storage = .allocate(capacity: capacity)
        storage.initialize(repeating: Self.sentinel, count: capacity)
        set(values ?? [Double](repeating: 0, count: count))
    }

    deinit { storage.deallocate() }

    var count: Int { shape[0] * shape[1] * shape[2] * shape[3] }

    private func offset(_ i: Int) -> Int {
        let d = i % shape[3], n = (i / shape[3]) % shape[2], h = (i / (shape[3] * shape[2])) % shape[1]
        let b = i / (shape[3] * shape[2] * shape[1])
        return b * strides[0] + h * strides[1] + n * strides[2] + d * strides[3]
    }

    /// Logical elements in row-major order.
    var values: [Double] { (0..<count).map { Double(storage[offset($0)]) } }
    var rawValues: [T] { (0..<count).map { storage[offset($0)] } }

    func set(_ values: [Double]) {
        precondition(values.count == count)
        for i in 0..<count { storage[offset(i)] = T(values[i]) }
    }

    /// Padding positions still hold the sentinel.
    var paddingUntouched: Bool {
        var used = [Bool](repeating: false, count: capacity)
        for i in 0..<count { used[offset(i)] = true }
        return (0..<capacity).allSatisfy { used[$0] || storage[$0] == Self.sentinel }
    }

    var view: TensorView<T> { TensorView(base: storage, shape: shape, strides: strides) }
    var mutableView: MutableTensorView<T> { MutableTensorView(base: storage, shape: shape, strides: strides) }

    /// Position `n` of axis 2 as a B×H×1×D view (one token).
    func token(_ n: Int) -> TensorView<T> {
        TensorView(base: storage + n * strides[2], shape: SIMD4(shape[0], shape[1], 1, shape[3]), strides: strides)
    }
    func mutableToken(_ n: Int) -> MutableTensorView<T> {
        MutableTensorView(base: storage + n * strides[2], shape: SIMD4(shape[0], shape[1], 1, shape[3]), strides: strides)
    }
    /// Positions start ..< start + length of axis 2.
    func slice(_ start: Int, _ length: Int) -> TensorView<T> {
        TensorView(base: storage + start * strides[2], shape: SIMD4(shape[0], shape[1], length, shape[3]), strides: strides)
    }
    func mutableSlice(_ start: Int, _ length: Int) -> MutableTensorView<T> {
        MutableTensorView(base: storage + start * strides[2], shape: SIMD4(shape[0], shape[1], length, shape[3]), strides: strides)
    }
}

/// One test problem: sizes, options and which state arguments are used.
struct LinearCase: CustomStringConvertible {
    var b = 1, h = 1, hk = 1, n = 4, l = 4, d = 3, m = 2
    var causal = false
    var featureMap: LinearAttentionOptions.FeatureMap = .eluPlusOne
    var epsilon = 1e-6
    var keyLengths: [Int]? = nil
    var keyStarts: [Int]? = nil
    /// Pass S0, z0 and dS_N, dz_N, ask for dS0, dz0 and S_N, z_N (non-causal: a memory).
    var withState = false
    var strided = false
    /// false: the un-normalized product φ(q_i)ᵀS_i.
    var normalize = true
    /// Identity features of both signs (otherwise they are kept positive).
    var mixedSigns = false

    var options: LinearAttentionOptions {
        LinearAttentionOptions(causal: causal, featureMap: featureMap, epsilon: epsilon, keyLengths: keyLengths,
                               keyStarts: keyStarts, normalize: normalize)
    }
    var qShape: SIMD4<Int> { SIMD4(b, h, n, d) }
    var kShape: SIMD4<Int> { SIMD4(b, hk, l, d) }
    var vShape: SIMD4<Int> { SIMD4(b, hk, l, m) }
    var oShape: SIMD4<Int> { SIMD4(b, h, n, m) }
    var sShape: SIMD4<Int> { SIMD4(b, h, d, m) }
    var zShape: SIMD4<Int> { SIMD4(b, h, d, 1) }
    var denShape: SIMD4<Int> { SIMD4(b, h, n, 1) }
    var description: String {
        "B\(b) H\(h) Hk\(hk) N\(n) L\(l) D\(d) M\(m) causal=\(causal) \(featureMap) eps=\(epsilon) kv=\(keyLengths.map { "\($0)" } ?? "-") starts=\(keyStarts.map { "\($0)" } ?? "-") state=\(withState) strided=\(strided) normalize=\(normalize) mixed=\(mixedSigns)"
    }
}

/// Inputs of one problem in float64 (rounded to the tested precision before use).
struct LinearInputs {
    var q, k, v, dout: [Double]
    var s0, z0, dsN, dzN: [Double]

    init(_ c: LinearCase, seed: UInt64) {
        var random = LinearTestRandom(seed: seed)
        // The identity map takes features as given: keep them positive so denominators are too.
        let positive = c.featureMap == .identity && !c.mixedSigns
        q = random.array(c.b * c.h * c.n * c.d, positive: positive)
        k = random.array(c.b * c.hk * c.l * c.d, positive: positive)
        v = random.array(c.b * c.hk * c.l * c.m)
        dout = random.array(c.b * c.h * c.n * c.m)
        // z0 positive: a plausible accumulated normalizer.
        s0 = random.array(c.b * c.h * c.d * c.m)
        z0 = random.array(c.b * c.h * c.d, positive: true)
        dsN = random.array(c.b * c.h * c.d * c.m)
        dzN = random.array(c.b * c.h * c.d)
    }

    /// The same inputs rounded to T.
    func rounded<T: AttentionScalar>(to _: T.Type) -> LinearInputs {
        var copy = self
        let r: ([Double]) -> [Double] = { $0.map { Double(T($0)) } }
        copy.q = r(q); copy.k = r(k); copy.v = r(v); copy.dout = r(dout)
        copy.s0 = r(s0); copy.z0 = r(z0); copy.dsN = r(dsN); copy.dzN = r(dzN)
        return copy
    }
}

/// Everything a forward + backward produces, as logical row-major float64 arrays.
struct LinearResults {
    var out: [Double], sN: [Double], zN: [Double]
    var dq: [Double], dk: [Double], dv: [Double], ds0: [Double], dz0: [Double]
    /// φ(q_i)ᵀz_i without ε (B×H×N).
    var den: [Double]
}

func featureValue(_ x: Double, _ map: LinearAttentionOptions.FeatureMap) -> Double {
    switch map {
    case .eluPlusOne: return x > 0 ? x + 1 : exp(x)
    case .relu: return max(x, 0)
    case .identity: return x
    }
}

func featureSlope(_ x: Double, _ map: LinearAttentionOptions.FeatureMap) -> Double {
    switch map {
    case .eluPlusOne: return x > 0 ? 1 : exp(x)
    case .relu: return x > 0 ? 1 : 0
    case .identity: return 1
    }
}

/// The float64 direct reference: per head, explicit N × L masked similarity A_ij = φ(q_i)·φ(k_j)
/// (j ≤ i when causal; φ(k_j) = 0 for padded keys), outputs and gradients by the chain rule on
/// those matrices — no chunks, no running state.
func linearReference(_ c: LinearCase, _ x: LinearInputs) -> LinearResults {
    linearReference(c, x, arithmetic: Double.self)
}

/// The direct reference computed in `R` arithmetic (every product and sum rounded to R; φ and
/// φ' evaluated in float64 and rounded): Float gives the straightforward float32 evaluation the
/// half-precision tests compare against.
func linearReference<R: BinaryFloatingPoint>(_ c: LinearCase, _ x: LinearInputs, arithmetic _: R.Type) -> LinearResults {
    let (n, l, d, m) = (c.n, c.l, c.d, c.m)
    var r = LinearResults(out: .init(repeating: 0, count: c.b * c.h * n * m),
                          sN: .init(repeating: 0, count: c.b * c.h * d * m), zN: .init(repeating: 0, count: c.b * c.h * d),
                          dq: .init(repeating: 0, count: x.q.count), dk: .init(repeating: 0, count: x.k.count),
                          dv: .init(repeating: 0, count: x.v.count),
                          ds0: .init(repeating: 0, count: c.b * c.h * d * m), dz0: .init(repeating: 0, count: c.b * c.h * d),
                          den: .init(repeating: 0, count: c.b * c.h * n))
    let xv = x.v.map { R($0) }, xdout = x.dout.map { R($0) }
    var dkSum = [R](repeating: 0, count: x.k.count), dvSum = [R](repeating: 0, count: x.v.count)
    let group = c.h / c.hk
    for b in 0..<c.b {
        let limit = c.keyLengths?[b] ?? l, start = c.keyStarts?[b] ?? 0
        for h in 0..<c.h {
            let hk = h / group
            let qBase = (b * c.h + h) * n * d, kBase = (b * c.hk + hk) * l * d
            let vBase = (b * c.hk + hk) * l * m, oBase = (b * c.h + h) * n * m
            let sBase = (b * c.h + h) * d * m, zBase = (b * c.h + h) * d
            let useState = c.withState
            let s0 = (0..<(d * m)).map { R(useState ? x.s0[sBase + $0] : 0) }
            let z0 = (0..<d).map { R(useState ? x.z0[zBase + $0] : 0) }
            let dsN = (0..<(d * m)).map { R(useState ? x.dsN[sBase + $0] : 0) }
            let dzN = (0..<d).map { R(useState ? x.dzN[zBase + $0] : 0) }
            let fq = (0..<(n * d)).map { R(featureValue(x.q[qBase + $0], c.featureMap)) }
            let fk = (0..<(l * d)).map { (start..<limit).contains($0 / d) ? R(featureValue(x.k[kBase + $0], c.featureMap)) : 0 }
            func visible(_ i: Int, _ j: Int) -> Bool { j < limit && j >= start && (!c.causal || j <= i) }
            var a = [R](repeating: 0, count: n * l)
            for i in 0..<n { for j in 0..<l where visible(i, j) {
                a[i * l + j] = (0..<d).reduce(0) { $0 + fq[i * d + $1] * fk[j * d + $1] }
            } }
            var dnum = [R](repeating: 0, count: n * m), dden = [R](repeating: 0, count: n)
            for i in 0..<n {
                var num = (0..<m).map { col in (0..<d).reduce(R(0)) { $0 + fq[i * d + $1] * s0[$1 * m + col] } }
                var den = (0..<d).reduce(R(0)) { $0 + fq[i * d + $1] * z0[$1] }
                for j in 0..<l {
                    den += a[i * l + j]
                    for col in 0..<m { num[col] += a[i * l + j] * xv[vBase + j * m + col] }
                }
                r.den[(b * c.h + h) * n + i] = Double(den)
                // Un-normalized: o = num, as if den were 1 and fixed.
                den = c.normalize ? den + R(c.epsilon) : 1
                guard den != 0 else { continue }
                var dot = R(0)
                for col in 0..<m {
                    let o = num[col] / den
                    r.out[oBase + i * m + col] = Double(o)
                    let g = xdout[oBase + i * m + col]
                    dot += g * o
                    dnum[i * m + col] = g / den
                }
                dden[i] = c.normalize ? -dot / den : 0
            }
            // Final state and the gradients.
            for f in 0..<d {
                r.zN[zBase + f] = Double(z0[f] + (0..<l).reduce(R(0)) { $0 + fk[$1 * d + f] })
                for col in 0..<m {
                    r.sN[sBase + f * m + col] = Double(s0[f * m + col] + (0..<l).reduce(R(0)) { $0 + fk[$1 * d + f] * xv[vBase + $1 * m + col] })
                }
            }
            var da = [R](repeating: 0, count: n * l)
            for i in 0..<n { for j in 0..<l where visible(i, j) {
                da[i * l + j] = (0..<m).reduce(dden[i]) { $0 + dnum[i * m + $1] * xv[vBase + j * m + $1] }
            } }
            for i in 0..<n {
                for f in 0..<d {
                    var g = (0..<l).reduce(R(0)) { $0 + da[i * l + $1] * fk[$1 * d + f] }
                    g += (0..<m).reduce(R(0)) { $0 + s0[f * m + $1] * dnum[i * m + $1] } + z0[f] * dden[i]
                    r.dq[qBase + i * d + f] = Double(R(featureSlope(x.q[qBase + i * d + f], c.featureMap)) * g)
                }
            }
            for j in 0..<l {
                for f in 0..<d where (start..<limit).contains(j) {
                    var g = (0..<n).reduce(R(0)) { $0 + da[$1 * l + j] * fq[$1 * d + f] }
                    g += (0..<m).reduce(R(0)) { $0 + dsN[f * m + $1] * xv[vBase + j * m + $1] } + dzN[f]
                    dkSum[kBase + j * d + f] += R(featureSlope(x.k[kBase + j * d + f], c.featureMap)) * g
                }
                for col in 0..<m {
                    var g = (0..<n).reduce(R(0)) { $0 + a[$1 * l + j] * dnum[$1 * m + col] }
                    g += (0..<d).reduce(R(0)) { $0 + dsN[$1 * m + col] * fk[j * d + $1] }
                    dvSum[vBase + j * m + col] += g
                }
            }
            for f in 0..<d {
                r.dz0[zBase + f] = Double(dzN[f] + (0..<n).reduce(R(0)) { $0 + fq[$1 * d + f] * dden[$1] })
                for col in 0..<m {
                    r.ds0[sBase + f * m + col] = Double(dsN[f * m + col] + (0..<n).reduce(R(0)) { $0 + fq[$1 * d + f] * dnum[$1 * m + col] })
                }
            }
        }
    }
    r.dk = dkSum.map { Double($0) }
    r.dv = dvSum.map { Double($0) }
    if !c.withState {
        // Without state arguments the library reports no state: compare zeros with zeros.
        for i in r.sN.indices { r.sN[i] = 0; r.ds0[i] = 0 }
        for i in r.zN.indices { r.zN[i] = 0; r.dz0[i] = 0 }
    }
    return r
}

/// Runs the library's forward and backward in precision T on `x` (rounded to T).
func runLinear<T: AttentionScalar>(_ c: LinearCase, _ x: LinearInputs, as _: T.Type, file: StaticString = #filePath, line: UInt = #line) throws -> LinearResults {
    let t = LinearCallTensors<LinearTestTensor<T>, LinearTestTensor<T>>(c, x)
    let state = c.withState
    try LinearAttention.forward(
        query: t.q.view, key: t.k.view, value: t.v.view, output: t.out.mutableView,
        initialState: state ? t.initialState : nil, finalState: state ? t.finalState : nil,
        denominators: t.den.mutableView, options: c.options)
    try LinearAttention.backward(
        query: t.q.view, key: t.k.view, value: t.v.view, outputGradient: t.dout.view,
        queryGradient: t.dq.mutableView, keyGradient: t.dk.mutableView, valueGradient: t.dv.mutableView,
        initialState: state ? t.initialState : nil, finalStateGradient: state ? t.finalStateGradient : nil,
        initialStateGradient: state ? t.initialStateGradient : nil, options: c.options)
    t.checkPadding(c, file: file, line: line)
    return t.results(c)
}

/// ‖a − b‖ / ‖b‖ (absolute error when ‖b‖ = 0).
func linearRelativeError(_ a: [Double], _ b: [Double]) -> Double {
    precondition(a.count == b.count)
    var diff = 0.0, norm = 0.0
    for i in 0..<a.count {
        diff += (a[i] - b[i]) * (a[i] - b[i])
        norm += b[i] * b[i]
    }
    return norm > 0 ? (diff / norm).squareRoot() : diff.squareRoot()
}

/// Compares every field of two results within `tolerance` (relative error per tensor).
func assertClose(_ got: LinearResults, _ want: LinearResults, tolerance: Double, _ context: String,
                 file: StaticString = #filePath, line: UInt = #line) {
    let pairs: [(String, [Double], [Double])] = [
        ("out", got.out, want.out), ("S_N", got.sN, want.sN), ("z_N", got.zN, want.zN),
        ("dq", got.dq, want.dq), ("dk", got.dk, want.dk), ("dv", got.dv, want.dv),
        ("dS0", got.ds0, want.ds0), ("dz0", got.dz0, want.dz0), ("denominators", got.den, want.den),
    ]
    for (name, a, b) in pairs {
        let error = linearRelativeError(a, b)
        XCTAssert(error <= tolerance, "\(name): relative error \(error) > \(tolerance) for \(context)", file: file, line: line)
    }
}

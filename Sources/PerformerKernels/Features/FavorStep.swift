import Glibc
import PerformerKernelInterface

// One recurrent FAVOR+ step per head in the scaled form of docs/FAVOR.md §4 ("Decoder step"):
// the key is folded into (S̃, z̃, c) with a per-feature running max c, then the query reads the
// state with the shift γ = max_f (a_f(q) + c_f), so the denominator is never below ν².
// Projections and exponentials are evaluated in float64; the state is kept in the element type.

@inline(__always)
private func projectVector<T: BinaryFloatingPoint>(
    _ t: FavorStepTask, _ x: UnsafeRawPointer, stride: Int, xHat: UnsafeMutablePointer<Double>,
    u: UnsafeMutablePointer<Double>, _: T.Type
) -> Double {
    let d = t.dim
    let source = x.assumingMemoryBound(to: T.self)
    var n = 0.0
    for c in 0..<d {
        let value = Double(source[c * stride]) * t.inputScale
        xHat[c] = value
        n += value * value
    }
    let w = t.projection.assumingMemoryBound(to: T.self)
    for f in 0..<t.numFeatures {
        var sum = 0.0
        for c in 0..<d { sum += Double(w[f * d + c]) * xHat[c] }
        u[f] = sum
    }
    return n / 2
}

func favorStepHead<T: BinaryFloatingPoint>(_ task: UnsafePointer<FavorStepTask>, _: T.Type) {
    let t = task.pointee
    let m = t.numFeatures, mv = t.valueDim
    let count = t.map.featureCount(numFeatures: m)
    let xHat = t.scratch.bindMemory(to: Double.self, capacity: t.dim + m + count)
    let u = xHat + t.dim
    let e = u + m
    let s = t.stateS.assumingMemoryBound(to: T.self)
    let z = t.stateZ.assumingMemoryBound(to: T.self)
    let shift = t.stateC.assumingMemoryBound(to: T.self)
    let value = t.value.assumingMemoryBound(to: T.self)
    let nu = t.map == .hyperbolic ? 1 / Double(2 * m).squareRoot() : 1 / Double(m).squareRoot()

    @inline(__always) func rescaleRow(_ f: Int, by factor: T) {
        z[f] *= factor
        for j in 0..<mv { s[f * mv + j] *= factor }
    }
    /// Fills e with the exponents a(x) of an exponential map.
    @inline(__always) func exponents(half h: Double) {
        for f in 0..<m {
            e[f] = u[f] - h
            if t.map == .hyperbolic { e[m + f] = -u[f] - h }
        }
    }

    // 1. Fold the key in: e becomes its scaled features.
    let keyHalf = projectVector(t, t.key, stride: t.keyStride, xHat: xHat, u: u, T.self)
    switch t.map {
    case .positive, .hyperbolic:
        exponents(half: keyHalf)
        for f in 0..<count {
            // Shifts are kept rounded to the element type; every factor uses the stored values.
            let old = Double(shift[f])
            let new = Double(T(max(old, e[f])))
            if new > old { rescaleRow(f, by: old == -.infinity ? 0 : T(exp(old - new))) }
            shift[f] = T(new)
            e[f] = nu * exp(e[f] - new)
        }
    case .trigonometric:
        let old = Double(shift[0])
        let new = Double(T(max(old, keyHalf)))
        if new > old {
            let factor: T = old == -.infinity ? 0 : T(exp(old - new))
            for f in 0..<count { rescaleRow(f, by: factor) }
        }
        for f in 0..<count { shift[f] = T(new) }
        let weight = exp(keyHalf - Double(shift[0])) / Double(m).squareRoot()
        for f in 0..<m {
            e[f] = weight * sin(u[f])
            e[m + f] = weight * cos(u[f])
        }
    case .relu:
        for f in 0..<m { e[f] = max(u[f], 0) + t.reluOffset }
    }
    for f in 0..<count {
        let weight = T(e[f])
        z[f] += weight
        for j in 0..<mv { s[f * mv + j] += weight * value[j * t.valueStride] }
    }

    // 2. Read the state with the query: e becomes Q̃, and the ε term its scaled ε.
    let queryHalf = projectVector(t, t.query, stride: t.queryStride, xHat: xHat, u: u, T.self)
    var epsilonTerm = 0.0
    switch t.map {
    case .positive, .hyperbolic:
        exponents(half: queryHalf)
        var gamma = -Double.infinity
        for f in 0..<count {
            e[f] += Double(shift[f])
            gamma = max(gamma, e[f])
        }
        for f in 0..<count { e[f] = nu * exp(e[f] - gamma) }
        if t.epsilon > 0 { epsilonTerm = exp(log(t.epsilon) - gamma) }
    case .trigonometric:
        for f in 0..<m {
            e[f] = sin(u[f]) / Double(m).squareRoot()
            e[m + f] = cos(u[f]) / Double(m).squareRoot()
        }
        if t.epsilon > 0 { epsilonTerm = exp(log(t.epsilon) - queryHalf - Double(shift[0])) }
    case .relu:
        for f in 0..<m { e[f] = max(u[f], 0) + t.reluOffset }
        epsilonTerm = t.epsilon
    }
    var den = epsilonTerm
    for f in 0..<count { den += e[f] * Double(z[f]) }
    let out = t.output.assumingMemoryBound(to: T.self)
    // An underflowed (or otherwise unusable) denominator gives a zero row, never NaN or Inf.
    let usable = den != 0 && den.isFinite
    for j in 0..<mv {
        var num = 0.0
        if usable { for f in 0..<count { num += e[f] * Double(s[f * mv + j]) } }
        out[j * t.outputStride] = usable ? T(num / den) : 0
    }
}

func makeFavorStepKernels() -> FavorStepKernels {
    FavorStepKernels(
        scratchBytes: { d, m, _ in (d + 3 * m) * MemoryLayout<Double>.stride },
        stepFloat: { favorStepHead($0, Float.self) },
        stepDouble: { favorStepHead($0, Double.self) })
}

import Glibc
import PerformerKernelInterface

// Row-at-a-time FAVOR+ features and their backward (docs/FAVOR.md, "Feature maps").
// Per row: x̂ = x·s^(1/2), n = ‖x̂‖², u = W x̂, then the map. Exponentials and trigonometric
// functions are evaluated in float64 and rounded once to the element type; the exponential
// maps take the exponent u − n/2 whole, so a feature is finite whenever its value is.
// Correct for every shape; a GEMM-based kernel can replace the u = W x̂ loop for speed.

@inline(__always)
private func load<T: BinaryFloatingPoint>(_ m: StridedMatrix, _ row: Int, _ column: Int, as _: T.Type) -> T {
    m.base.assumingMemoryBound(to: T.self)[row * m.rowStride + column * m.columnStride]
}

@inline(__always)
private func store<T: BinaryFloatingPoint>(_ m: StridedMatrix, _ row: Int, _ column: Int, _ value: T) {
    m.base.assumingMemoryBound(to: T.self)[row * m.rowStride + column * m.columnStride] = value
}

/// Fills `xHat` (D) and `u` (m) for row `i`; returns n = ‖x̂‖².
@inline(__always)
private func project<T: BinaryFloatingPoint>(
    _ t: RandomFeatureTask, row i: Int, xHat: UnsafeMutablePointer<T>, u: UnsafeMutablePointer<T>
) -> T {
    let d = t.dim, m = t.numFeatures
    let sigma = T(t.inputScale)
    var n: T = 0
    for c in 0..<d {
        let value = load(t.input, i, c, as: T.self) * sigma
        xHat[c] = value
        n += value * value
    }
    let w = t.projection.assumingMemoryBound(to: T.self)
    for f in 0..<m {
        var sum: T = 0
        let row = w + f * d
        for c in 0..<d { sum += row[c] * xHat[c] }
        u[f] = sum
    }
    return n
}

func randomFeatureForwardRows<T: BinaryFloatingPoint>(_ task: UnsafePointer<RandomFeatureTask>, _: T.Type) {
    let t = task.pointee
    let d = t.dim, m = t.numFeatures
    let xHat = t.scratch.bindMemory(to: T.self, capacity: d + m)
    let u = xHat + d
    let inverseRootM = 1 / Double(m).squareRoot()
    let inverseRoot2M = 1 / Double(2 * m).squareRoot()
    for i in 0..<t.rowCount {
        let half = Double(project(t, row: i, xHat: xHat, u: u)) / 2
        switch t.map {
        case .positive:
            for f in 0..<m { store(t.output, i, f, T(exp(Double(u[f]) - half) * inverseRootM)) }
        case .hyperbolic:
            for f in 0..<m {
                let uf = Double(u[f])
                store(t.output, i, f, T(exp(uf - half) * inverseRoot2M))
                store(t.output, i, m + f, T(exp(-uf - half) * inverseRoot2M))
            }
        case .trigonometric:
            // exp(n/2) overflows (to +inf) exactly when the mathematical feature scale does.
            let factor = exp(half) * inverseRootM
            for f in 0..<m {
                let uf = Double(u[f])
                store(t.output, i, f, T(factor * sin(uf)))
                store(t.output, i, m + f, T(factor * cos(uf)))
            }
        case .relu:
            let kappa = T(t.reluOffset)
            for f in 0..<m { store(t.output, i, f, max(u[f], 0) + kappa) }
        }
    }
}

/// dx from dφ: with g_u = ∂L/∂u and g_n = ∂L/∂n, dx̂ = Wᵀ g_u + 2 g_n x̂ and dx = s^(1/2) dx̂.
func randomFeatureBackwardRows<T: BinaryFloatingPoint>(_ task: UnsafePointer<RandomFeatureTask>, _: T.Type) {
    let t = task.pointee
    let d = t.dim, m = t.numFeatures
    let xHat = t.scratch.bindMemory(to: T.self, capacity: d + 2 * m)
    let u = xHat + d
    let gu = u + m
    let inverseRootM = 1 / Double(m).squareRoot()
    let inverseRoot2M = 1 / Double(2 * m).squareRoot()
    let w = t.projection.assumingMemoryBound(to: T.self)
    let sigma = T(t.inputScale)
    for i in 0..<t.rowCount {
        let half = Double(project(t, row: i, xHat: xHat, u: u)) / 2
        var gn = 0.0
        switch t.map {
        case .positive:
            // φ_f = exp(u_f − n/2)/√m: ∂φ_f/∂u_f = φ_f, ∂φ_f/∂n = −φ_f/2.
            for f in 0..<m {
                let phi = exp(Double(u[f]) - half) * inverseRootM
                let g = Double(load(t.featureGradient, i, f, as: T.self)) * phi
                gu[f] = T(g)
                gn -= g / 2
            }
        case .hyperbolic:
            for f in 0..<m {
                let uf = Double(u[f])
                let plus = Double(load(t.featureGradient, i, f, as: T.self)) * (exp(uf - half) * inverseRoot2M)
                let minus = Double(load(t.featureGradient, i, m + f, as: T.self)) * (exp(-uf - half) * inverseRoot2M)
                gu[f] = T(plus - minus)
                gn -= (plus + minus) / 2
            }
        case .trigonometric:
            // φ_s = e^{n/2} sin(u)/√m, φ_c = e^{n/2} cos(u)/√m: ∂φ_s/∂u = φ_c, ∂φ_c/∂u = −φ_s,
            // ∂φ/∂n = φ/2.
            let factor = exp(half) * inverseRootM
            for f in 0..<m {
                let uf = Double(u[f])
                let s = factor * sin(uf), c = factor * cos(uf)
                let gs = Double(load(t.featureGradient, i, f, as: T.self))
                let gc = Double(load(t.featureGradient, i, m + f, as: T.self))
                gu[f] = T(gs * c - gc * s)
                gn += (gs * s + gc * c) / 2
            }
        case .relu:
            // Subgradient 0 at u = 0.
            for f in 0..<m {
                gu[f] = u[f] > 0 ? load(t.featureGradient, i, f, as: T.self) : 0
            }
        }
        let twoGn = T(2 * gn)
        for c in 0..<d {
            var sum: T = 0
            for f in 0..<m { sum += w[f * d + c] * gu[f] }
            store(t.output, i, c, (sum + twoGn * xHat[c]) * sigma)
        }
    }
}

func makeRandomFeatureKernels() -> RandomFeatureKernels {
    RandomFeatureKernels(
        rowBlock: 64,
        scratchBytes: { d, m, elementSize in (d + 2 * m) * elementSize },
        forwardFloat: { randomFeatureForwardRows($0, Float.self) },
        forwardDouble: { randomFeatureForwardRows($0, Double.self) },
        backwardFloat: { randomFeatureBackwardRows($0, Float.self) },
        backwardDouble: { randomFeatureBackwardRows($0, Double.self) })
}

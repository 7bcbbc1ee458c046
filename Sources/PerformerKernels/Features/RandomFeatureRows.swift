#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import PerformerKernelInterface

// FAVOR+ features and their backward for the rows of one task (docs/FAVOR.md, "Feature maps").
// The padded Wᵀ panel (and W for the backward) is packed once per task; then per sub-block of
// `featureSubBlock` rows: x̂ = x·s^(1/2) and n = ‖x̂‖² per row, U = X̂·Wᵀ as one `blockProduct`,
// then the map on whole rows. The backward recomputes U, forms g_u row by row and dX̂ = G_u·W
// as a second product.
// Exponentials take the exponent u − n/2 whole, so a feature is finite whenever its value is:
// float32 with the vector exp2 (ν·2^{a·log2 e}), float64 with the range-reduced vector exp
// (Kernels/VectorNaturalExp.swift), which keeps full float64 accuracy; sin and cos are always
// float64.

/// Rows per sub-block (the scratch holds one); a task covers `rowBlock` rows (makeRandomFeatureKernels),
/// so the W panels are packed once per 512 rows rather than once per 64.
private let featureSubBlock = 64

/// Columns of every padded panel: a multiple of the micro-kernel tile on any ISA.
@inline(__always)
private func panelColumns(_ n: Int, elementSize: Int) -> Int {
    let tile = 128 / elementSize
    return (max(n, 1) + tile - 1) / tile * tile
}

/// Scratch of one task (rowBlock rows), in elements of T.
private struct FeatureScratch<T: KernelScalar> {
    /// Padded widths: D and m (and C = 2m) rounded up to whole tiles.
    let dp: Int, mp: Int, cp: Int
    /// Wᵀ (D × mp) and W (m × dp), zero-padded.
    let wt, w: UnsafeMutablePointer<T>
    /// X̂ (rows × dp), U (rows × mp), G_u (rows × mp), dX̂ (rows × dp), one feature row (cp), n/2 (rows).
    let xHat, u, gu, dxHat, phi, half: UnsafeMutablePointer<T>

    static func elements(dim d: Int, numFeatures m: Int, rows: Int, elementSize: Int) -> ScratchSize {
        let width = panelColumns(1, elementSize: elementSize)  // the tile width panelColumns rounds to
        let dp = ScratchSize(max(d, 1)).roundedUp(to: width), mp = ScratchSize(max(m, 1)).roundedUp(to: width)
        let cp = (2 * ScratchSize(max(m, 1))).roundedUp(to: width)
        return d * mp + m * dp + 2 * rows * dp + 2 * rows * mp + cp + panelColumns(rows, elementSize: elementSize)
    }

    init(_ base: UnsafeMutableRawPointer, dim d: Int, numFeatures m: Int, rows: Int) {
        let size = MemoryLayout<T>.stride
        dp = panelColumns(d, elementSize: size)
        mp = panelColumns(m, elementSize: size)
        cp = panelColumns(2 * m, elementSize: size)
        let p = base.bindMemory(to: T.self, capacity: Self.elements(dim: d, numFeatures: m, rows: rows, elementSize: size).value)
        wt = p
        w = wt + d * mp
        xHat = w + m * dp
        u = xHat + rows * dp
        gu = u + rows * mp
        dxHat = gu + rows * mp
        phi = dxHat + rows * dp
        half = phi + cp
    }
}

/// Packs the padded Wᵀ panel (and, for the backward, W).
@inline(__always)
private func packProjection<T: KernelScalar>(_ t: RandomFeatureTask, _ s: FeatureScratch<T>, backward: Bool) {
    let d = t.dim, m = t.numFeatures
    let w = t.projection.assumingMemoryBound(to: T.self)
    for col in 0..<d {
        let target = s.wt + col * s.mp
        for f in 0..<m { target[f] = w[f * d + col] }
        for f in m..<s.mp { target[f] = 0 }
    }
    if backward {
        for f in 0..<m {
            let target = s.w + f * s.dp
            for col in 0..<d { target[col] = w[f * d + col] }
            for col in d..<s.dp { target[col] = 0 }
        }
    }
}

/// x̂ and n/2 of the task's rows r0 ..< r0 + rows, and U = X̂·Wᵀ.
@inline(__always)
private func projectRows<T: KernelScalar>(_ t: RandomFeatureTask, _ s: FeatureScratch<T>, _ r0: Int, _ rows: Int) {
    let d = t.dim, sigma = T(t.inputScale)
    for i in 0..<rows {
        s.half[i] = packScaledRow(t.input, row: r0 + i, count: d, scale: sigma, into: s.xHat + i * s.dp) / 2
    }
    blockProduct(rows: rows, columns: s.mp, depth: d, a: s.xHat, aRowStride: s.dp, aDepthStride: 1,
                 b: s.wt, bRowStride: s.mp, c: s.u, cRowStride: s.mp, accumulate: false)
}

/// φ_f = ν·exp(±u_f − h) for f < count (sign −1: the hyperbolic map's second half), into `phi`:
/// float32 on the vector exp2, float64 with the C library's exp.
@inline(__always)
private func exponentialFeatures<T: KernelScalar>(
    _ u: UnsafePointer<T>, count: Int, sign: T, half h: T, nu: Double, into phi: UnsafeMutablePointer<T>
) {
    if T.self == Float.self {
        let scale = T.splat(T(nu)), log2e = T.splat(T.log2e), hv = T.splat(h), signV = T.splat(sign)
        var f = 0
        while f + T.lanes <= count {
            let a = T.sub(T.mul(signV, T.load(u + f)), hv)
            T.store(T.mul(scale, T.exp2(T.mul(a, log2e))), phi + f)
            f += T.lanes
        }
        while f < count {
            phi[f] = T(exp(Double(sign * u[f] - h)) * nu)
            f += 1
        }
    } else {
        // float64: the range-reduced vector exp (full accuracy), the C library's exp for a
        // vector with an exponent outside its range and for the tail.
        let scale = T.splat(T(nu)), hv = T.splat(h), signV = T.splat(sign), zero = T.splat(0)
        let low = T(vectorNaturalExpRange.lowerBound), high = T(vectorNaturalExpRange.upperBound)
        let hd = Double(h), sd = Double(sign)
        var f = 0
        while f + T.lanes <= count {
            let a = T.sub(T.mul(signV, T.load(u + f)), hv)
            if T.maxAcross(a) <= high && -T.maxAcross(T.sub(zero, a)) >= low {
                T.store(T.mul(scale, vectorNaturalExp(T.self, a)), phi + f)
            } else {
                for l in 0..<T.lanes { phi[f + l] = T(exp(sd * Double(u[f + l]) - hd) * nu) }
            }
            f += T.lanes
        }
        while f < count {
            phi[f] = T(exp(sd * Double(u[f]) - hd) * nu)
            f += 1
        }
    }
}

@inline(__always)
private func storeRow<T: KernelScalar>(_ m: StridedMatrix, _ row: Int, _ values: UnsafePointer<T>, count: Int) {
    let target = m.base.assumingMemoryBound(to: T.self) + row * m.rowStride
    if m.columnStride == 1 {
        target.update(from: values, count: count)
    } else {
        for f in 0..<count { target[f * m.columnStride] = values[f] }
    }
}

/// The task's rows, sub-block by sub-block: φ into the output, or (backward) dx.
func randomFeatureRows<T: KernelScalar>(_ task: UnsafePointer<RandomFeatureTask>, backward: Bool, _: T.Type) {
    let t = task.pointee
    let s = FeatureScratch<T>(t.scratch, dim: t.dim, numFeatures: t.numFeatures, rows: featureSubBlock)
    packProjection(t, s, backward: backward)
    var r0 = 0
    while r0 < t.rowCount {
        let rows = min(featureSubBlock, t.rowCount - r0)
        projectRows(t, s, r0, rows)
        if backward {
            backwardRows(t, s, r0, rows)
        } else {
            forwardFeatures(t, s, r0, rows)
        }
        r0 += rows
    }
}

/// φ of the projected rows r0 ..< r0 + rows, into the output.
@inline(__always)
private func forwardFeatures<T: KernelScalar>(_ t: RandomFeatureTask, _ s: FeatureScratch<T>, _ r0: Int, _ rows: Int) {
    let m = t.numFeatures
    let inverseRootM = 1 / Double(m).squareRoot()
    let inverseRoot2M = 1 / Double(2 * m).squareRoot()
    let count = t.map.featureCount(numFeatures: m)
    for i in 0..<rows {
        let u = s.u + i * s.mp, h = s.half[i]
        switch t.map {
        case .positive:
            exponentialFeatures(u, count: m, sign: 1, half: h, nu: inverseRootM, into: s.phi)
        case .hyperbolic:
            exponentialFeatures(u, count: m, sign: 1, half: h, nu: inverseRoot2M, into: s.phi)
            exponentialFeatures(u, count: m, sign: -1, half: h, nu: inverseRoot2M, into: s.phi + m)
        case .trigonometric:
            // exp(n/2) overflows (to +inf) exactly when the mathematical feature scale does.
            let factor = exp(Double(h)) * inverseRootM
            for f in 0..<m {
                let uf = Double(u[f])
                s.phi[f] = T(factor * sin(uf))
                s.phi[m + f] = T(factor * cos(uf))
            }
        case .relu:
            let kappa = T(t.reluOffset)
            for f in 0..<m { s.phi[f] = max(u[f], 0) + kappa }
        }
        storeRow(t.output, r0 + i, s.phi, count: count)
    }
}

/// g_u = dφ ∘ φ′ from the exponential features of `phi` (one row; `sign` −1 for the hyperbolic
/// map's second half, whose ∂/∂u is −φ): gu (=|+=) sign·g, returns Σ g.
@inline(__always)
private func exponentialGradient<T: KernelScalar>(
    _ dphi: StridedMatrix, row: Int, offset: Int, _ phi: UnsafePointer<T>, count: Int, sign: T,
    add: Bool, into gu: UnsafeMutablePointer<T>
) -> T {
    let base = dphi.base.assumingMemoryBound(to: T.self) + row * dphi.rowStride + offset * dphi.columnStride
    let step = dphi.columnStride, signV = T.splat(sign)
    var sum: T = 0, sv = T.splat(0)
    var f = 0
    if step == 1 {
        while f + T.lanes <= count {
            let g = T.mul(T.load(base + f), T.load(phi + f))
            T.store(add ? T.fma(signV, g, T.load(gu + f)) : T.mul(signV, g), gu + f)
            sv = T.add(sv, g)
            f += T.lanes
        }
    }
    while f < count {
        let g = base[f * step] * phi[f]
        gu[f] = add ? gu[f] + sign * g : sign * g
        sum += g
        f += 1
    }
    return sum + T.sumHalving(sv)
}

/// dx of the projected rows r0 ..< r0 + rows, into the output: with g_u = ∂L/∂u and
/// g_n = ∂L/∂n, dx̂ = Wᵀ g_u + 2 g_n x̂ and dx = s^(1/2) dx̂; G_u·W for the sub-block is one product.
@inline(__always)
private func backwardRows<T: KernelScalar>(_ t: RandomFeatureTask, _ s: FeatureScratch<T>, _ r0: Int, _ rows: Int) {
    let d = t.dim, m = t.numFeatures
    let inverseRootM = 1 / Double(m).squareRoot()
    let inverseRoot2M = 1 / Double(2 * m).squareRoot()
    let gradientBase = t.featureGradient.base.assumingMemoryBound(to: T.self)
    @inline(__always) func dphi(_ i: Int, _ f: Int) -> T {
        gradientBase[(r0 + i) * t.featureGradient.rowStride + f * t.featureGradient.columnStride]
    }
    for i in 0..<rows {
        let u = s.u + i * s.mp, gu = s.gu + i * s.mp, h = s.half[i]
        var gn = 0.0
        switch t.map {
        case .positive:
            // φ_f = exp(u_f − n/2)/√m: ∂φ_f/∂u_f = φ_f, ∂φ_f/∂n = −φ_f/2.
            exponentialFeatures(u, count: m, sign: 1, half: h, nu: inverseRootM, into: s.phi)
            let sum = exponentialGradient(t.featureGradient, row: r0 + i, offset: 0, s.phi, count: m, sign: 1,
                                          add: false, into: gu)
            gn = -Double(sum) / 2
        case .hyperbolic:
            // ∂φ₊/∂u = φ₊, ∂φ₋/∂u = −φ₋, ∂φ/∂n = −φ/2.
            exponentialFeatures(u, count: m, sign: 1, half: h, nu: inverseRoot2M, into: s.phi)
            exponentialFeatures(u, count: m, sign: -1, half: h, nu: inverseRoot2M, into: s.phi + m)
            let plus = exponentialGradient(t.featureGradient, row: r0 + i, offset: 0, s.phi, count: m, sign: 1,
                                           add: false, into: gu)
            let minus = exponentialGradient(t.featureGradient, row: r0 + i, offset: m, s.phi + m, count: m, sign: -1,
                                            add: true, into: gu)
            gn = -(Double(plus) + Double(minus)) / 2
        case .trigonometric:
            // φ_s = e^{n/2} sin(u)/√m, φ_c = e^{n/2} cos(u)/√m: ∂φ_s/∂u = φ_c, ∂φ_c/∂u = −φ_s,
            // ∂φ/∂n = φ/2.
            let factor = exp(Double(h)) * inverseRootM
            for f in 0..<m {
                let uf = Double(u[f])
                let sv = factor * sin(uf), cv = factor * cos(uf)
                let gs = Double(dphi(i, f)), gc = Double(dphi(i, m + f))
                gu[f] = T(gs * cv - gc * sv)
                gn += (gs * sv + gc * cv) / 2
            }
        case .relu:
            // Subgradient 0 at u = 0.
            for f in 0..<m { gu[f] = u[f] > 0 ? dphi(i, f) : 0 }
        }
        // n/2 is no longer needed: its slot keeps the row's 2·g_n for after the product.
        s.half[i] = T(2 * gn)
    }
    blockProduct(rows: rows, columns: s.dp, depth: m, a: s.gu, aRowStride: s.mp, aDepthStride: 1,
                 b: s.w, bRowStride: s.dp, c: s.dxHat, cRowStride: s.dp, accumulate: false)
    let sigma = T(t.inputScale)
    let out = t.output.base.assumingMemoryBound(to: T.self)
    for i in 0..<rows {
        let twoGn = s.half[i], x = s.xHat + i * s.dp, g = s.dxHat + i * s.dp
        let target = out + (r0 + i) * t.output.rowStride
        for col in 0..<d { target[col * t.output.columnStride] = (g[col] + twoGn * x[col]) * sigma }
    }
}

func makeRandomFeatureKernels() -> RandomFeatureKernels {
    RandomFeatureKernels(
        rowBlock: 8 * featureSubBlock,
        scratchBytes: { d, m, elementSize in
            (FeatureScratch<Float>.elements(dim: d, numFeatures: m, rows: featureSubBlock, elementSize: elementSize) * elementSize).value
        },
        forwardFloat: { randomFeatureRows($0, backward: false, Float.self) },
        forwardDouble: { randomFeatureRows($0, backward: false, Double.self) },
        backwardFloat: { randomFeatureRows($0, backward: true, Float.self) },
        backwardDouble: { randomFeatureRows($0, backward: true, Double.self) })
}

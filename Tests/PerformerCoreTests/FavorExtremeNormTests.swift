import Glibc
import XCTest
import PerformerCore

/// Causal FAVOR+ (exponential kinds) at input norms up to 1000 (issue 13, item 9): the chunk
/// unit bounded every term, but when a query's and a key's large features differ every term of
/// the row underflowed (float32 from ‖x‖ ~ 30: inf/NaN outputs, wrong zeros, NaN gradients).
/// Against a float64 log-domain reference (no materialized features, which overflow there) and,
/// for the gradients, against the library's own non-causal float64 path row by row.
final class FavorExtremeNormTests: XCTestCase {
    /// o_i from the exponents a_f(x) = ±u_f − n/2 in float64, every kernel term shifted by the
    /// row's largest one, so no norm overflows or underflows it.
    static func logDomainReference(_ fc: FavorCase, _ x: FavorInputs, _ w: FavorProjection) -> [Double] {
        precondition(fc.b == 1 && fc.h == 1 && fc.hk == 1 && !fc.hasState && fc.epsilon == 0)
        func exponents(_ row: ArraySlice<Double>) -> [Double] {
            let s = (1 / Double(fc.d).squareRoot()).squareRoot()
            let xHat = row.map { $0 * s }
            let half = xHat.reduce(0) { $0 + $1 * $1 } / 2
            let u = (0..<fc.m).map { f in (0..<fc.d).reduce(0.0) { $0 + w[f, $1] * xHat[$1] } }
            return fc.kind == .hyperbolic ? u.map { $0 - half } + u.map { -$0 - half } : u.map { $0 - half }
        }
        let aq = (0..<fc.n).map { exponents(x.q[($0 * fc.d)..<(($0 + 1) * fc.d)]) }
        let ak = (0..<fc.l).map { exponents(x.k[($0 * fc.d)..<(($0 + 1) * fc.d)]) }
        var out = [Double](repeating: 0, count: fc.n * fc.mv)
        for i in 0..<fc.n {
            let keys = fc.causal ? 0...i : 0...(fc.l - 1)
            var top = -Double.infinity
            for j in keys { for f in 0..<fc.c { top = max(top, aq[i][f] + ak[j][f]) } }
            var den = 0.0, num = [Double](repeating: 0, count: fc.mv)
            for j in keys {
                let weight = (0..<fc.c).reduce(0.0) { $0 + exp(aq[i][$1] + ak[j][$1] - top) }
                den += weight
                for col in 0..<fc.mv { num[col] += weight * x.v[j * fc.mv + col] }
            }
            for col in 0..<fc.mv { out[i * fc.mv + col] = num[col] / den }
        }
        return out
    }

    static func inputs(_ fc: FavorCase, _ w: FavorProjection, norm: Double) -> FavorInputs {
        var x = FavorInputs(fc, projection: w, prefix: 0)
        x.q = normalizedRows(x.q, width: fc.d, norm: norm)
        x.k = normalizedRows(x.k, width: fc.d, norm: norm)
        return x
    }

    /// The issue's minimal case: D = m = 2, orthogonal chi projection seed 7, one query and one
    /// key of norm ~ 100 and ~ 137, v = 1: the output is exactly 1 (causal gave inf).
    func testIssueMinimalCaseIsExact() throws {
        let original = Runtime.kernelISA
        defer { try? Runtime.selectKernels(original) }
        let w = try FavorProjection(dim: 2, numFeatures: 2, kind: .orthogonal, norms: .chi, seed: 7)
        for kind in [FavorFeatureKind.positive, .hyperbolic] {
            for causal in [true, false] {
                let fc = FavorCase(n: 1, l: 1, d: 2, m: 2, mv: 1, causal: causal, kind: kind)
                var x = FavorInputs(fc, projection: w, prefix: 0)
                x.q = [-64.2554932, 40.6247025]
                x.k = [96.5603104, -97.3792801]
                x.v = [1]
                for isa in Runtime.supportedISAs {
                    try Runtime.selectKernels(isa)
                    let w32 = try FavorProjection(matrix: w.matrixFloat, numFeatures: 2, dim: 2)
                    let got32 = try runFavor(fc, x.rounded(to: Float.self), w32, as: Float.self)
                    let got64 = try runFavor(fc, x, w, as: Double.self)
                    XCTAssertEqual(got32.out[0], 1, accuracy: 1e-6, "float32 \(isa) \(fc)")
                    XCTAssertEqual(got64.out[0], 1, accuracy: 1e-14, "float64 \(isa) \(fc)")
                    // One key: o = v whatever q, so ∂o/∂q = ∂o/∂k = 0, ∂o/∂v = 1.
                    for (name, g) in [("dq", got32.dq), ("dk", got32.dk), ("dq64", got64.dq), ("dk64", got64.dk)] {
                        XCTAssert(g.allSatisfy { $0.isFinite && abs($0) < 1e-3 }, "\(name) \(g) \(isa) \(fc)")
                    }
                    XCTAssertEqual(got32.dv[0], x.dout[0], accuracy: 1e-5 * abs(x.dout[0]), "dv \(isa) \(fc)")
                }
            }
        }
    }

    /// N = L = 150 (three chunks) at norms 1 … 1000, float32 (every ISA) and float64: finite, and
    /// within the error the rounding of the exponents allows (float32 rounds n/2 ~ ‖x‖²/(2√D)
    /// and u; measured ≤ 3e-4 at every norm, the non-causal path alike, float64 ≤ 1e-12).
    func testCausalForwardIsFiniteAndAccurateUpToNorm1000() throws {
        let original = Runtime.kernelISA
        defer { try? Runtime.selectKernels(original) }
        for kind in [FavorFeatureKind.positive, .hyperbolic] {
            for norm in [1.0, 10, 30, 100, 300, 1000] {
                let fc = FavorCase(n: 150, l: 150, d: 4, m: 8, mv: 3, causal: true, kind: kind, seed: UInt64(norm) + 3)
                let w = try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: 11)
                let x = Self.inputs(fc, w, norm: norm)
                let want64 = Self.logDomainReference(fc, x, w)
                let got64 = try runFavor(fc, x, w, as: Double.self, backward: false)
                XCTAssertLessThan(linearRelativeError(got64.out, want64), 1e-11, "float64 norm \(norm) \(kind)")
                let w32 = try FavorProjection(matrix: w.matrixFloat, numFeatures: fc.m, dim: fc.d)
                let x32 = x.rounded(to: Float.self)
                let want32 = Self.logDomainReference(fc, x32, w32)
                var bidirectional = fc
                bidirectional.causal = false
                let wantAll = Self.logDomainReference(bidirectional, x32, w32)
                let tolerance = 4e-6 * max(1, norm)
                for isa in Runtime.supportedISAs {
                    try Runtime.selectKernels(isa)
                    let got32 = try runFavor(fc, x32, w32, as: Float.self, backward: false)
                    XCTAssert(got32.out.allSatisfy { $0.isFinite }, "non-finite float32 \(isa) norm \(norm) \(kind)")
                    let error = linearRelativeError(got32.out, want32)
                    XCTAssertLessThan(error, tolerance, "float32 \(isa) norm \(norm) \(kind)")
                    let all = try runFavor(bidirectional, x32, w32, as: Float.self, backward: false)
                    let errorAll = linearRelativeError(all.out, wantAll)
                    XCTAssertLessThan(errorAll, tolerance, "non-causal float32 \(isa) norm \(norm)")
                    print("FAVOR+ causal float32 \(kind.name) \(isa) norm \(norm): relative error \(error) (non-causal \(errorAll), float64 \(linearRelativeError(got64.out, want64)))")
                    // Every output row lies in the convex hull of the values it sees.
                    for i in 0..<fc.n {
                        for col in 0..<fc.mv {
                            let seen = (0...i).map { x32.v[$0 * fc.mv + col] }
                            let o = got32.out[i * fc.mv + col]
                            XCTAssert(o >= seen.min()! - 1e-5 && o <= seen.max()! + 1e-5, "row \(i) outside the hull \(isa) \(norm)")
                        }
                    }
                }
            }
        }
    }

    /// Gradients at norms up to 1000 equal the sum, over rows i, of the non-causal backward of
    /// query i against keys 0 … i (kv_lengths = i + 1), the path that was always stable.
    func testCausalGradientsMatchRowByRowNonCausalUpToNorm1000() throws {
        let original = Runtime.kernelISA
        defer { try? Runtime.selectKernels(original) }
        for kind in [FavorFeatureKind.positive, .hyperbolic] {
            for norm in [3.0, 30, 100, 1000] {
                let fc = FavorCase(n: 70, l: 70, d: 4, m: 6, mv: 2, causal: true, kind: kind, seed: UInt64(norm) + 40)
                let w = try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: 12)
                let w32 = try FavorProjection(matrix: w.matrixFloat, numFeatures: fc.m, dim: fc.d)
                let x = Self.inputs(fc, w, norm: norm).rounded(to: Float.self)
                var dq = [Double](repeating: 0, count: x.q.count), dk = [Double](repeating: 0, count: x.k.count)
                var dv = [Double](repeating: 0, count: x.v.count)
                for i in 0..<fc.n {
                    let row = FavorCase(n: 1, l: fc.l, d: fc.d, m: fc.m, mv: fc.mv, kind: kind, keyLengths: [i + 1])
                    var xi = x
                    xi.q = Array(x.q[(i * fc.d)..<((i + 1) * fc.d)])
                    xi.dout = Array(x.dout[(i * fc.mv)..<((i + 1) * fc.mv)])
                    let r = try runFavor(row, xi, w32, as: Double.self)
                    for col in 0..<fc.d { dq[i * fc.d + col] = r.dq[col] }
                    for e in dk.indices { dk[e] += r.dk[e] }
                    for e in dv.indices { dv[e] += r.dv[e] }
                }
                let got64 = try runFavor(fc, x, w32, as: Double.self)
                for (name, a, b) in [("dq", got64.dq, dq), ("dk", got64.dk, dk), ("dv", got64.dv, dv)] {
                    XCTAssertLessThan(linearRelativeError(a, b), 1e-10, "float64 \(name) norm \(norm) \(kind)")
                }
                for isa in Runtime.supportedISAs {
                    try Runtime.selectKernels(isa)
                    let got32 = try runFavor(fc, x, w32, as: Float.self)
                    for (name, a, b) in [("dq", got32.dq, dq), ("dk", got32.dk, dk), ("dv", got32.dv, dv)] {
                        XCTAssert(a.allSatisfy { $0.isFinite }, "non-finite float32 \(name) \(isa) norm \(norm) \(kind)")
                        XCTAssertLessThan(linearRelativeError(a, b), 5e-5 * max(1, norm), "float32 \(name) \(isa) norm \(norm) \(kind)")
                        print("FAVOR+ causal gradient \(name) \(kind.name) \(isa) norm \(norm): float32 \(linearRelativeError(a, b)), float64 \(linearRelativeError(name == "dq" ? got64.dq : name == "dk" ? got64.dk : got64.dv, b))")
                    }
                }
            }
        }
    }

    /// Which rows are evaluated alone depends only on rows ≤ i: changing the inputs after
    /// position p leaves outputs ≤ p unchanged bit for bit, at a norm where many rows are.
    func testCausalityHoldsBitForBitAtNorm100() throws {
        let fc = FavorCase(n: 130, l: 130, d: 4, m: 8, mv: 3, causal: true, kind: .positive, seed: 77)
        let w = try FavorProjection(dim: fc.d, numFeatures: fc.m, seed: 13)
        let w32 = try FavorProjection(matrix: w.matrixFloat, numFeatures: fc.m, dim: fc.d)
        let x = Self.inputs(fc, w, norm: 100).rounded(to: Float.self)
        let base = try runFavor(fc, x, w32, as: Float.self, backward: false)
        for p in [0, 20, 63, 64, 100] {
            var changed = x
            var random = LinearTestRandom(seed: UInt64(p) + 1)
            for e in ((p + 1) * fc.d)..<x.k.count { changed.k[e] = Double(Float(random.normal() * 50)) }
            for e in ((p + 1) * fc.d)..<x.q.count { changed.q[e] = Double(Float(random.normal() * 50)) }
            let got = try runFavor(fc, changed, w32, as: Float.self, backward: false)
            XCTAssertEqual(Array(got.out[0..<((p + 1) * fc.mv)]), Array(base.out[0..<((p + 1) * fc.mv)]), "p = \(p)")
        }
    }
}

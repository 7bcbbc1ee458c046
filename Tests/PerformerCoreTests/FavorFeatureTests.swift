#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import XCTest
import PerformerCore

final class FavorFeatureTests: XCTestCase {
    let shape = SIMD4(2, 3, 5, 7)  // B, H, N, D

    func input(_ seed: UInt64, norm: Double? = nil, shape: SIMD4<Int>? = nil) throws -> Tensor<Double> {
        let shape = shape ?? self.shape
        var rng = FavorTestRandom(seed)
        let d = shape[3]
        var values = rng.normals(shape[0] * shape[1] * shape[2] * d)
        if let norm {
            for r in 0..<(values.count / d) {
                let length = values[(r * d)..<((r + 1) * d)].reduce(0) { $0 + $1 * $1 }.squareRoot()
                for c in 0..<d { values[r * d + c] *= norm / length }
            }
        }
        return try Tensor(shape: shape, elements: values)
    }

    func rows(_ t: Tensor<Double>) -> [[Double]] {
        let d = t.shape[3]
        return (0..<(t.elements.count / max(d, 1))).map { Array(t.elements[($0 * d)..<(($0 + 1) * d)]) }
    }

    func testEveryKindMatchesTheFloat64Formula() throws {
        let x = try input(1)
        for kind in FavorFeatureKind.allCases {
            for (m, projectionKind) in [(11, FavorProjectionKind.orthogonal), (4, .iid)] {
                let w = try FavorProjection(dim: 7, numFeatures: m, kind: projectionKind, seed: 5)
                for scale in [nil, 0.3] {
                    let options = FavorFeatureOptions(kind: kind, scale: scale, reluOffset: kind == .relu ? 0.01 : 1e-3)
                    let reference = rows(x).flatMap { referenceFeatures($0, w, kind: kind, scale: scale, kappa: options.reluOffset) }
                    let got = try favorFeatures(x, w, options)
                    XCTAssertEqual(got.shape, SIMD4(2, 3, 5, kind.featureCount(numFeatures: m)))
                    XCTAssertLessThan(relativeError(got.elements, reference), 1e-14, "\(kind) float64")
                    let x32 = try Tensor<Float>(shape: x.shape, elements: x.elements.map { Float($0) })
                    let got32 = try favorFeatures(x32, w, options)
                    XCTAssertLessThan(relativeError(got32.elements.map { Double($0) }, reference), 2e-6, "\(kind) float32")
                }
            }
        }
    }

    func testManyRowsCrossSubBlocksAndTasks() throws {
        // 1100 rows per head: several 64-row sub-blocks and 512-row tasks, a partial one of each;
        // D = 20 and m = 37 leave vector tails. Forward against the formula, backward row by
        // row against one-row calls (which run a single partial sub-block).
        let (h, n, d, m) = (2, 1100, 20, 37)
        let x = try input(21, shape: SIMD4(1, h, n, d))
        let w = try FavorProjection(dim: d, numFeatures: m, seed: 6)
        let x32 = try Tensor<Float>(shape: x.shape, elements: x.elements.map { Float($0) })
        for kind in FavorFeatureKind.allCases {
            let options = FavorFeatureOptions(kind: kind, scale: 0.4)
            let c = kind.featureCount(numFeatures: m)
            let reference = rows(x).flatMap { referenceFeatures($0, w, kind: kind, scale: 0.4, kappa: options.reluOffset) }
            XCTAssertLessThan(relativeError(try favorFeatures(x, w, options).elements, reference), 1e-14, "\(kind)")
            XCTAssertLessThan(relativeError(try favorFeatures(x32, w, options).elements.map { Double($0) }, reference),
                              2e-6, "\(kind) float32")
            var rng = FavorTestRandom(31)
            let dphi = try Tensor<Double>(shape: SIMD4(1, h, n, c), elements: rng.normals(h * n * c))
            let dx = try featureBackward(x, dphi, w, options)
            let d32 = try Tensor<Float>(shape: dphi.shape, elements: dphi.elements.map { Float($0) })
            let dx32 = try featureBackward(x32, d32, w, options)
            XCTAssertLessThan(relativeError(dx32.elements.map { Double($0) }, dx.elements), 1e-5, "\(kind) float32")
            for row in stride(from: 0, to: h * n, by: 13) {
                let xRow = try Tensor<Double>(shape: SIMD4(1, 1, 1, d), elements: Array(x.elements[(row * d)..<((row + 1) * d)]))
                let gRow = try Tensor<Double>(shape: SIMD4(1, 1, 1, c), elements: Array(dphi.elements[(row * c)..<((row + 1) * c)]))
                let single = try featureBackward(xRow, gRow, w, options).elements
                XCTAssertLessThan(relativeError(Array(dx.elements[(row * d)..<((row + 1) * d)]), single), 1e-13, "\(kind) row \(row)")
            }
        }
    }

    func testStridedInputAndOutput() throws {
        // x stored B×N×H×D and φ stored B×N×H×C, both seen as B×H×N×C through strides.
        let (b, h, n, d, m) = (2, 3, 4, 5, 6)
        let w = try FavorProjection(dim: d, numFeatures: m, seed: 2)
        let contiguous = try input(7, shape: SIMD4(b, h, n, d))
        var permuted = [Double](repeating: 0, count: contiguous.elements.count)
        for bi in 0..<b { for hi in 0..<h { for ni in 0..<n { for di in 0..<d {
            permuted[((bi * n + ni) * h + hi) * d + di] = contiguous[bi, hi, ni, di]
        } } } }
        for kind in FavorFeatureKind.allCases {
            let options = FavorFeatureOptions(kind: kind)
            let c = kind.featureCount(numFeatures: m)
            let expected = try favorFeatures(contiguous, w, options)
            var out = [Double](repeating: .nan, count: b * n * h * c)
            try permuted.withUnsafeBufferPointer { xp in
                try out.withUnsafeMutableBufferPointer { op in
                    let xv = TensorView(base: xp.baseAddress!, shape: SIMD4(b, h, n, d), strides: SIMD4(n * h * d, d, h * d, 1))
                    let ov = MutableTensorView(base: op.baseAddress!, shape: SIMD4(b, h, n, c), strides: SIMD4(n * h * c, c, h * c, 1))
                    try FavorFeatures.forward(input: xv, projection: w, output: ov, options: options)
                }
            }
            for bi in 0..<b { for hi in 0..<h { for ni in 0..<n { for ci in 0..<c {
                XCTAssertEqual(out[((bi * n + ni) * h + hi) * c + ci], expected[bi, hi, ni, ci])
            } } } }
        }
    }

    func testLargeNormsGiveAccurateFiniteExponentialFeatures() throws {
        // |x| = 30, D = 64, m = 256: exponents u − ‖x̂‖²/2 ≈ −56 ± 11·3, tiny but representable
        // in float32; evaluated whole, they stay accurate to |exponent| × float32 rounding.
        let w = try FavorProjection(dim: 64, numFeatures: 256, seed: 1)
        let x = try input(3, norm: 30, shape: SIMD4(1, 1, 6, 64))
        let x32 = try Tensor<Float>(shape: x.shape, elements: x.elements.map { Float($0) })
        for kind in [FavorFeatureKind.positive, .hyperbolic] {
            let options = FavorFeatureOptions(kind: kind)
            let reference = rows(x32.map64).flatMap { referenceFeatures($0, w, kind: kind) }
            let got64 = try favorFeatures(x32.map64, w, options).elements
            XCTAssertLessThan(relativeError(got64, reference), 1e-12)
            let got = try favorFeatures(x32, w, options).elements.map { Double($0) }
            XCTAssertTrue(got.allSatisfy { $0.isFinite && $0 >= 0 })
            // Relative error per element ≈ |exponent| · float32 rounding of u and ‖x̂‖².
            for (g, r) in zip(got, reference) where r > 1e-30 {
                XCTAssertEqual(g, r, accuracy: 5e-5 * r)
            }
        }
    }

    func testTrigonometricScaleOverflowsAsDocumented() throws {
        // exp(‖x̂‖²/2) with ‖x̂‖² = 900/√4 = 450 is exp(225): finite in float64, +inf in float32.
        let w = try FavorProjection(dim: 4, numFeatures: 3, seed: 1)
        let x = try input(4, norm: 30, shape: SIMD4(1, 1, 2, 4))
        let options = FavorFeatureOptions(kind: .trigonometric)
        XCTAssertTrue(try favorFeatures(x, w, options).elements.allSatisfy { $0.isFinite })
        let x32 = try Tensor<Float>(shape: x.shape, elements: x.elements.map { Float($0) })
        XCTAssertTrue(try favorFeatures(x32, w, options).elements.allSatisfy { $0.isInfinite })
    }

    func testBackwardMatchesCentralFiniteDifferences() throws {
        let x = try input(9, shape: SIMD4(1, 2, 3, 5))
        let w = try FavorProjection(dim: 5, numFeatures: 4, seed: 8)
        for kind in FavorFeatureKind.allCases {
            let options = FavorFeatureOptions(kind: kind, scale: 0.7)
            let c = kind.featureCount(numFeatures: 4)
            var rng = FavorTestRandom(77)
            let dphi = try Tensor<Double>(shape: SIMD4(1, 2, 3, c), elements: rng.normals(6 * c))
            func loss(_ t: Tensor<Double>) throws -> Double {
                zip(try favorFeatures(t, w, options).elements, dphi.elements).reduce(0) { $0 + $1.0 * $1.1 }
            }
            let dx = try featureBackward(x, dphi, w, options)
            var numeric = [Double]()
            for i in x.elements.indices {
                var plus = x, minus = x
                let h = 1e-6
                plus.elements[i] += h
                minus.elements[i] -= h
                numeric.append((try loss(plus) - loss(minus)) / (2 * h))
            }
            XCTAssertLessThan(relativeError(dx.elements, numeric), 1e-7, "\(kind)")
            // float32 backward agrees with float64.
            let x32 = try Tensor<Float>(shape: x.shape, elements: x.elements.map { Float($0) })
            let d32 = try Tensor<Float>(shape: dphi.shape, elements: dphi.elements.map { Float($0) })
            let dx32 = try featureBackward(x32, d32, w, options)
            XCTAssertLessThan(relativeError(dx32.elements.map { Double($0) }, dx.elements), 1e-5, "\(kind) float32")
        }
    }

    func featureBackward<T: AttentionScalar>(_ x: Tensor<T>, _ dphi: Tensor<T>, _ w: FavorProjection,
                                             _ options: FavorFeatureOptions) throws -> Tensor<T> {
        var dx = try Tensor<T>(shape: x.shape)
        try x.withView { xv throws(PerformerError) in
            try dphi.withView { gv throws(PerformerError) in
                try dx.withMutableView { dv throws(PerformerError) in
                    try FavorFeatures.backward(input: xv, featureGradient: gv, projection: w, inputGradient: dv, options: options)
                }
            }
        }
        return dx
    }

    func testEmptyTensorsAreFine() throws {
        let w = try FavorProjection(dim: 3, numFeatures: 2)
        let x = try Tensor<Float>(shape: SIMD4(2, 0, 4, 3))
        XCTAssertEqual(try favorFeatures(x, w).shape, SIMD4(2, 0, 4, 2))
    }

    func testBadInputIsRejectedBeforeWriting() throws {
        let w = try FavorProjection(dim: 4, numFeatures: 3)
        let x = try Tensor<Double>(shape: SIMD4(1, 1, 2, 4), repeating: 1)
        func expect(_ status: PerformerStatus, _ fragment: String, _ body: () throws -> Void, line: UInt = #line) {
            XCTAssertThrowsError(try body(), line: line) { error in
                let e = error as? PerformerError
                XCTAssertEqual(e?.status, status, line: line)
                XCTAssertTrue(e?.message.contains(fragment) ?? false, "\(String(describing: e))", line: line)
            }
        }
        let wrongDim = try Tensor<Double>(shape: SIMD4(1, 1, 2, 5))
        expect(.shapeMismatch, "x.shape[3] = 5 but projection.dim = 4") { _ = try favorFeatures(wrongDim, w) }
        expect(.invalidArgument, "scale = -1.0") { _ = try favorFeatures(x, w, FavorFeatureOptions(scale: -1)) }
        expect(.invalidArgument, "scale = inf") { _ = try favorFeatures(x, w, FavorFeatureOptions(scale: .infinity)) }
        expect(.invalidArgument, "relu_offset = nan") {
            _ = try favorFeatures(x, w, FavorFeatureOptions(kind: .relu, reluOffset: .nan))
        }
        expect(.invalidArgument, "features = \"softmax\"") { _ = try FavorFeatureKind(name: "softmax") }
        expect(.invalidArgument, "features = 4") { _ = try FavorFeatureKind(code: 4) }
        // Output of the wrong width (hyperbolic needs 2m = 6), left untouched.
        var out = try Tensor<Double>(shape: SIMD4(1, 1, 2, 3), repeating: -7)
        expect(.shapeMismatch, "features.shape[3] = 3 but expected 6") {
            try x.withView { xv throws(PerformerError) in
                try out.withMutableView { ov throws(PerformerError) in
                    try FavorFeatures.forward(input: xv, projection: w, output: ov, options: FavorFeatureOptions(kind: .hyperbolic))
                }
            }
        }
        XCTAssertEqual(out.elements, [Double](repeating: -7, count: 6))
        // Output overlapping the input.
        var shared = [Double](repeating: 1, count: 8)
        expect(.aliasing, "output features overlaps input x") {
            try shared.withUnsafeMutableBufferPointer { p throws(PerformerError) in
                let xv = TensorView(base: UnsafePointer(p.baseAddress!), shape: SIMD4(1, 1, 2, 4))
                let ov = MutableTensorView(base: p.baseAddress! + 2, shape: SIMD4(1, 1, 2, 3))
                try FavorFeatures.forward(input: xv, projection: w, output: ov)
            }
        }
        // Backward: dφ of the wrong width, dx of the wrong shape.
        let dphi = try Tensor<Double>(shape: SIMD4(1, 1, 2, 4))
        expect(.shapeMismatch, "dfeatures.shape[3] = 4 but expected 3") { _ = try featureBackward(x, dphi, w, FavorFeatureOptions()) }
        let dphiOK = try Tensor<Double>(shape: SIMD4(1, 1, 2, 3))
        var dx = try Tensor<Double>(shape: SIMD4(1, 1, 3, 4))
        expect(.shapeMismatch, "dx.shape[2] = 3 but expected 2") {
            try x.withView { xv throws(PerformerError) in
                try dphiOK.withView { gv throws(PerformerError) in
                    try dx.withMutableView { dv throws(PerformerError) in
                        try FavorFeatures.backward(input: xv, featureGradient: gv, projection: w, inputGradient: dv)
                    }
                }
            }
        }
    }
}

extension Tensor where Element == Float {
    var map64: Tensor<Double> { try! Tensor<Double>(shape: shape, elements: elements.map { Double($0) }) }
}

import PerformerCore
import XCTest

/// The backward against central finite differences of the library's own float64 forward, for
/// the scalar loss Σ out ∘ W with a random W (so dout = W). Independent of the reference: a
/// backward that disagrees with the derivative of the forward fails here even if both were
/// wrong the same way in the reference.
final class SoftmaxGradientCheckTests: XCTestCase {
    private static let step = 1e-5
    private static let tolerance = 1e-7

    private func forwardLoss(_ spec: SoftmaxCase, _ q: Tensor<Double>, _ k: Tensor<Double>, _ v: Tensor<Double>,
                             _ weights: Tensor<Double>) throws -> Double {
        var out = try Tensor<Double>(shape: spec.outputShape)
        try q.withView { q in try k.withView { k in try v.withView { v in
            try out.withMutableView { out in
                try SoftmaxAttention.forward(query: q, key: k, value: v, output: out, options: spec.options)
            }
        } } }
        return zip(out.elements, weights.elements).map { $0 * $1 }.reduce(0, +)
    }

    /// Central differences of the loss with respect to every element of q, k and v.
    private func numericGradients(_ spec: SoftmaxCase, _ inputs: SoftmaxInputs) throws -> [DenseTensor] {
        let weights = inputs.dout.tensor(Double.self)
        var tensors = [inputs.q.tensor(Double.self), inputs.k.tensor(Double.self), inputs.v.tensor(Double.self)]
        var gradients: [DenseTensor] = []
        for which in 0..<3 {
            var gradient = DenseTensor(shape: tensors[which].shape)
            for index in tensors[which].elements.indices {
                let original = tensors[which].elements[index]
                tensors[which].elements[index] = original + Self.step
                let plus = try forwardLoss(spec, tensors[0], tensors[1], tensors[2], weights)
                tensors[which].elements[index] = original - Self.step
                let minus = try forwardLoss(spec, tensors[0], tensors[1], tensors[2], weights)
                tensors[which].elements[index] = original
                gradient.values[index] = (plus - minus) / (2 * Self.step)
            }
            gradients.append(gradient)
        }
        return gradients
    }

    private func check(_ spec: SoftmaxCase, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) throws {
        let inputs = SoftmaxInputs.random(spec, seed: seed)
        let numeric = try numericGradients(spec, inputs)
        let names = ["dq", "dk", "dv"]
        for (name, gradient) in zip(names, numeric) {
            XCTAssertGreaterThan(gradient.values.map(abs).max() ?? 0, 1e-3, "\(spec): \(name) is trivially zero; weak case",
                                 file: file, line: line)
        }
        // The reference's analytic gradients agree with the numeric ones (validates the reference).
        let reference = inputs.reference(spec)
        for (name, (analytic, numericGradient)) in zip(names, zip([reference.dq, reference.dk, reference.dv], numeric)) {
            XCTAssertLessThanOrEqual(relativeError(analytic, numericGradient), Self.tolerance, "reference \(name) \(spec)",
                                     file: file, line: line)
        }
        try forEachSupportedISA { isa in
            let (_, outputs) = try SoftmaxHarness.run(spec, inputs, as: Double.self)
            for (name, (analytic, numericGradient)) in zip(names, zip([outputs.dq!, outputs.dk!, outputs.dv!], numeric)) {
                XCTAssertLessThanOrEqual(relativeError(analytic, numericGradient), Self.tolerance,
                                         "\(name) \(spec) isa=\(isa)", file: file, line: line)
                for (a, n) in zip(analytic.values, numericGradient.values) {
                    XCTAssertEqual(a, n, accuracy: 1e-7, "\(name) element \(spec) isa=\(isa)", file: file, line: line)
                }
            }
        }
    }

    func testGradientsMatchFiniteDifferencesNotCausalWithKeyLengthsAndGroupedHeads() throws {
        try check(SoftmaxCase(batch: 2, heads: 2, keyHeads: 1, queries: 5, keys: 7, headDim: 3, valueDim: 4,
                              keyLengths: [7, 4]), seed: 200)
    }

    func testGradientsMatchFiniteDifferencesCausalSquare() throws {
        try check(SoftmaxCase(batch: 1, heads: 2, keyHeads: 2, queries: 6, keys: 6, headDim: 5, valueDim: 2,
                              causal: true, scale: 0.8), seed: 201)
    }

    func testGradientsMatchFiniteDifferencesCausalMoreQueriesThanKeysWithPadding() throws {
        // Rows 0 and 1 see no key (i + L − N < 0); batch 1 also pads to 2 keys.
        try check(SoftmaxCase(batch: 2, heads: 1, queries: 6, keys: 4, headDim: 4, valueDim: 3, causal: true,
                              keyLengths: [4, 2]), seed: 202)
    }

    func testGradientsMatchFiniteDifferencesCausalFewerQueriesThanKeys() throws {
        try check(SoftmaxCase(batch: 1, heads: 2, keyHeads: 1, queries: 3, keys: 8, headDim: 2, valueDim: 5, causal: true,
                              keyLengths: [6]), seed: 203)
    }
}

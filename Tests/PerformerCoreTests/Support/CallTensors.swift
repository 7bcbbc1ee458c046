import XCTest
import PerformerCore

/// A test tensor of any element type (LinearTestTensor for float32/float64, HalfTestTensor for
/// float16/bfloat16): what the linear and FAVOR+ runners set up, pass and read back.
protocol TestTensorStorage: AnyObject {
    associatedtype Element: TensorElement
    init(shape: SIMD4<Int>, strided: Bool, values: [Double]?)
    var count: Int { get }
    /// Logical elements in row-major order.
    var values: [Double] { get }
    /// Padding positions still hold the sentinel.
    var paddingUntouched: Bool { get }
    var view: TensorView<Element> { get }
    var mutableView: MutableTensorView<Element> { get }
}

extension LinearTestTensor: TestTensorStorage {}
extension HalfTestTensor: TestTensorStorage {}

/// Every tensor of one linear-attention forward + backward (`runLinear`, `runLinearHalf`):
/// q, k, v, dout and the outputs out, dq, dk, dv in Token's element type; the states, their
/// gradients and the denominators in State's (the token type, or float32 for half tokens).
struct LinearCallTensors<Token: TestTensorStorage, State: TestTensorStorage> {
    let q, k, v, dout, out, dq, dk, dv: Token
    let s0, z0, dsN, dzN, sN, zN, ds0, dz0, den: State

    init(_ c: LinearCase, _ x: LinearInputs) {
        let st = c.strided
        q = Token(shape: c.qShape, strided: st, values: x.q)
        k = Token(shape: c.kShape, strided: st, values: x.k)
        v = Token(shape: c.vShape, strided: st, values: x.v)
        dout = Token(shape: c.oShape, strided: st, values: x.dout)
        out = Token(shape: c.oShape, strided: st, values: nil)
        dq = Token(shape: c.qShape, strided: st, values: nil)
        dk = Token(shape: c.kShape, strided: st, values: nil)
        dv = Token(shape: c.vShape, strided: st, values: nil)
        s0 = State(shape: c.sShape, strided: st, values: x.s0)
        z0 = State(shape: c.zShape, strided: st, values: x.z0)
        dsN = State(shape: c.sShape, strided: st, values: x.dsN)
        dzN = State(shape: c.zShape, strided: st, values: x.dzN)
        sN = State(shape: c.sShape, strided: st, values: nil)
        zN = State(shape: c.zShape, strided: st, values: nil)
        ds0 = State(shape: c.sShape, strided: st, values: nil)
        dz0 = State(shape: c.zShape, strided: st, values: nil)
        den = State(shape: c.denShape, strided: st, values: nil)
    }

    /// Fails unless every output was written inside its view only.
    func checkPadding(_ c: LinearCase, file: StaticString, line: UInt) {
        for (name, t) in [("out", out), ("dq", dq), ("dk", dk), ("dv", dv)] {
            XCTAssert(t.paddingUntouched, "\(name) written outside its view: \(c)", file: file, line: line)
        }
        for (name, t) in [("S_N", sN), ("z_N", zN), ("dS0", ds0), ("dz0", dz0), ("denominators", den)] {
            XCTAssert(t.paddingUntouched, "\(name) written outside its view: \(c)", file: file, line: line)
        }
    }

    /// The results as float64 arrays; without state arguments the states read as zeros.
    func results(_ c: LinearCase) -> LinearResults {
        let state = c.withState
        let zeros: (Int) -> [Double] = { [Double](repeating: 0, count: $0) }
        return LinearResults(out: out.values, sN: state ? sN.values : zeros(sN.count), zN: state ? zN.values : zeros(zN.count),
                             dq: dq.values, dk: dk.values, dv: dv.values,
                             ds0: state ? ds0.values : zeros(ds0.count), dz0: state ? dz0.values : zeros(dz0.count),
                             den: den.values)
    }
}

/// Every tensor of one FAVOR+ forward + backward (`runFavor`, `runFavorHalf`): tokens and
/// their gradients in Token's element type, the state triple and its gradients in State's.
struct FavorCallTensors<Token: TestTensorStorage, State: TestTensorStorage> {
    let q, k, v, dout, out, dq, dk, dv: Token
    let s0, z0, c0, dsN, dzN, sN, zN, cN, ds0, dz0: State

    init(_ fc: FavorCase, _ x: FavorInputs) {
        let st = fc.strided
        q = Token(shape: fc.qShape, strided: st, values: x.q)
        k = Token(shape: fc.kShape, strided: st, values: x.k)
        v = Token(shape: fc.vShape, strided: st, values: x.v)
        dout = Token(shape: fc.oShape, strided: st, values: x.dout)
        out = Token(shape: fc.oShape, strided: st, values: nil)
        dq = Token(shape: fc.qShape, strided: st, values: nil)
        dk = Token(shape: fc.kShape, strided: st, values: nil)
        dv = Token(shape: fc.vShape, strided: st, values: nil)
        s0 = State(shape: fc.sShape, strided: st, values: x.s0)
        z0 = State(shape: fc.zShape, strided: st, values: x.z0)
        c0 = State(shape: fc.zShape, strided: st, values: x.c0)
        dsN = State(shape: fc.sShape, strided: st, values: x.dsN)
        dzN = State(shape: fc.zShape, strided: st, values: x.dzN)
        sN = State(shape: fc.sShape, strided: st, values: nil)
        zN = State(shape: fc.zShape, strided: st, values: nil)
        cN = State(shape: fc.zShape, strided: st, values: nil)
        ds0 = State(shape: fc.sShape, strided: st, values: nil)
        dz0 = State(shape: fc.zShape, strided: st, values: nil)
    }

    /// Fails unless every output was written inside its view only.
    func checkPadding(_ fc: FavorCase, file: StaticString, line: UInt) {
        for (name, t) in [("out", out), ("dq", dq), ("dk", dk), ("dv", dv)] {
            XCTAssert(t.paddingUntouched, "\(name) written outside its view: \(fc)", file: file, line: line)
        }
        for (name, t) in [("S_N", sN), ("z_N", zN), ("c_N", cN), ("dS0", ds0), ("dz0", dz0)] {
            XCTAssert(t.paddingUntouched, "\(name) written outside its view: \(fc)", file: file, line: line)
        }
    }
}

extension LinearCallTensors where State.Element: AttentionScalar {
    var initialState: LinearStateView<State.Element> { LinearStateView(s: s0.view, z: z0.view) }
    var finalState: MutableLinearStateView<State.Element> { MutableLinearStateView(s: sN.mutableView, z: zN.mutableView) }
    var finalStateGradient: LinearStateView<State.Element> { LinearStateView(s: dsN.view, z: dzN.view) }
    var initialStateGradient: MutableLinearStateView<State.Element> {
        MutableLinearStateView(s: ds0.mutableView, z: dz0.mutableView)
    }
}

extension FavorCallTensors where State.Element: AttentionScalar {
    var initialState: FavorStateView<State.Element> { FavorStateView(s: s0.view, z: z0.view, c: c0.view) }
    var finalState: MutableFavorStateView<State.Element> {
        MutableFavorStateView(s: sN.mutableView, z: zN.mutableView, c: cN.mutableView)
    }
    var finalStateGradient: LinearStateView<State.Element> { LinearStateView(s: dsN.view, z: dzN.view) }
    var initialStateGradient: MutableLinearStateView<State.Element> {
        MutableLinearStateView(s: ds0.mutableView, z: dz0.mutableView)
    }
}

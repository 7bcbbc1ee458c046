"""Results of the installed `performer` package against a float64 direct reference."""

import numpy as np
import pytest

import performer
import reference

RNG = np.random.default_rng(20240611)

# (B, H, Hk, N, L, D, M)
SHAPES = [
    (2, 4, 4, 33, 47, 16, 16),    # N != L, odd sizes
    (1, 3, 3, 1, 17, 8, 5),       # N = 1, M != D
    (2, 2, 2, 9, 1, 7, 3),        # L = 1
    (2, 6, 2, 19, 23, 12, 20),    # grouped-query heads (3 per key head), M > D
    (1, 4, 1, 13, 13, 64, 64),    # multi-query
    (1, 1, 1, 97, 131, 5, 1),     # primes, M = 1
    (1, 2, 1, 8, 29, 256, 9),     # large D
]

SHAPE_IDS = ["x".join(map(str, s)) for s in SHAPES]


def make(shape, dtype, rng=RNG):
    B, H, Hk, N, L, D, M = shape
    q = rng.standard_normal((B, H, N, D)).astype(dtype)
    k = rng.standard_normal((B, Hk, L, D)).astype(dtype)
    v = rng.standard_normal((B, Hk, L, M)).astype(dtype)
    dout = rng.standard_normal((B, H, N, M)).astype(dtype)
    return q, k, v, dout


def rel_err(x, ref):
    x = np.asarray(x, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert x.shape == ref.shape
    finite = np.isfinite(ref)
    # -inf lse entries (fully masked rows) must match exactly.
    assert np.array_equal(np.isfinite(x), finite), "non-finite entries differ"
    assert np.all(x[~finite] == ref[~finite])
    # Relative to the reference's norm, absolute below norm 1: gradients that vanish
    # mathematically (e.g. dq with a single key) are rounding noise in the reference.
    denom = max(np.linalg.norm(ref[finite]), 1.0)
    return np.linalg.norm(x[finite] - ref[finite]) / denom


TOL = {np.float32: 1e-5, np.float64: 1e-12}


def check_case(q, k, v, dout, dtype, **opts):
    out, lse = performer.softmax_attention(q, k, v, return_lse=True, **opts)
    assert out.dtype == dtype and lse.dtype == dtype
    assert out.shape == q.shape[:3] + v.shape[3:] and lse.shape == q.shape[:3]
    ref_out, ref_lse, _ = reference.forward(q, k, v, opts.get("causal", False), opts.get("scale"),
                                            opts.get("kv_lengths"))
    tol = TOL[dtype]
    assert rel_err(out, ref_out) <= tol
    assert rel_err(lse, ref_lse) <= tol
    # The forward without lse gives the same out.
    np.testing.assert_array_equal(performer.softmax_attention(q, k, v, **opts), out)

    dq, dk, dv = performer.softmax_attention_backward(q, k, v, out, lse, dout, **opts)
    assert (dq.dtype, dk.dtype, dv.dtype) == (dtype, dtype, dtype)
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
    ref_dq, ref_dk, ref_dv = reference.backward(q, k, v, dout, opts.get("causal", False), opts.get("scale"),
                                                opts.get("kv_lengths"))
    assert rel_err(dq, ref_dq) <= tol
    assert rel_err(dk, ref_dk) <= tol
    assert rel_err(dv, ref_dv) <= tol
    return out, lse, dq, dk, dv


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_plain(shape, dtype):
    check_case(*make(shape, dtype), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=SHAPE_IDS)
def test_causal(shape, dtype):
    check_case(*make(shape, dtype), dtype, causal=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("N, L", [(31, 31), (10, 40), (40, 10), (1, 9), (9, 1), (7, 8)])
def test_causal_bottom_right(N, L, dtype):
    shape = (2, 2, 1, N, L, 8, 6)
    out, lse, dq, dk, dv = check_case(*make(shape, dtype), dtype, causal=True)
    # Query i sees key j iff j <= i + L - N: with N > L the first N - L queries see nothing.
    empty = max(N - L, 0)
    assert np.all(out[:, :, :empty] == 0) and np.all(np.isneginf(lse[:, :, :empty]))
    assert np.all(dq[:, :, :empty] == 0)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(dq))
    # The last query sees every key: it equals the non-causal result's last row.
    full = performer.softmax_attention(*make(shape, dtype, np.random.default_rng(1))[:3])
    part = performer.softmax_attention(*make(shape, dtype, np.random.default_rng(1))[:3], causal=True)
    np.testing.assert_allclose(part[:, :, -1], full[:, :, -1], rtol=TOL[dtype], atol=TOL[dtype])


def test_causality_bit_exact():
    q, k, v, _ = make((1, 2, 2, 24, 24, 16, 8), np.float32)
    out = performer.softmax_attention(q, k, v, causal=True)
    k2, v2 = k.copy(), v.copy()
    k2[:, :, 12:] += 3.0
    v2[:, :, 12:] -= 5.0
    out2 = performer.softmax_attention(q, k2, v2, causal=True)
    np.testing.assert_array_equal(out[:, :, :12], out2[:, :, :12])
    assert not np.allclose(out[:, :, 12:], out2[:, :, 12:])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_kv_lengths(causal, dtype):
    shape = (4, 4, 2, 11, 17, 8, 5)
    q, k, v, dout = make(shape, dtype)
    lengths = [0, 1, 9, 17]
    out, lse, dq, dk, dv = check_case(q, k, v, dout, dtype, causal=causal, kv_lengths=lengths)
    # Batch 0 has no keys: zero outputs and gradients, lse -inf.
    assert np.all(out[0] == 0) and np.all(np.isneginf(lse[0]))
    assert np.all(dq[0] == 0) and np.all(dk[0] == 0) and np.all(dv[0] == 0)
    # Keys past a batch's length get no gradient.
    assert np.all(dk[2, :, 9:] == 0) and np.all(dv[2, :, 9:] == 0)
    # A NumPy array of lengths and a tuple work the same as a list.
    for form in (np.array(lengths, dtype=np.int32), tuple(lengths), np.array(lengths, dtype=np.uint64)):
        np.testing.assert_array_equal(
            performer.softmax_attention(q, k, v, causal=causal, kv_lengths=form), out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_scale(dtype):
    q, k, v, dout = make((1, 2, 2, 6, 9, 4, 3), dtype)
    check_case(q, k, v, dout, dtype, scale=0.37)
    check_case(q, k, v, dout, dtype, scale=0.0)
    check_case(q, k, v, dout, dtype, scale=-2, causal=True)
    # The default is 1/sqrt(D).
    np.testing.assert_array_equal(performer.softmax_attention(q, k, v),
                                  performer.softmax_attention(q, k, v, scale=None))
    np.testing.assert_allclose(performer.softmax_attention(q, k, v, scale=0.5),
                               performer.softmax_attention(q, k, v), rtol=TOL[dtype] * 10)


@pytest.mark.parametrize("causal, kv_lengths", [(False, None), (True, None), (True, [3, 2]), (False, [4, 0])])
def test_gradients_finite_differences(causal, kv_lengths):
    rng = np.random.default_rng(7)
    B, H, Hk, N, L, D, M = 2, 2, 1, 3, 4, 3, 2
    q = rng.standard_normal((B, H, N, D))
    k = rng.standard_normal((B, Hk, L, D))
    v = rng.standard_normal((B, Hk, L, M))
    g = rng.standard_normal((B, H, N, M))
    opts = dict(causal=causal, kv_lengths=kv_lengths, scale=0.8)

    def loss(q, k, v):
        return float((performer.softmax_attention(q, k, v, **opts) * g).sum())

    out, lse = performer.softmax_attention(q, k, v, return_lse=True, **opts)
    grads = performer.softmax_attention_backward(q, k, v, out, lse, g, **opts)
    h = 1e-6
    for which, x in enumerate((q, k, v)):
        numeric = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            args = [q, k, v]
            plus, minus = x.copy(), x.copy()
            plus[idx] += h
            minus[idx] -= h
            args[which] = plus
            f_plus = loss(*args)
            args[which] = minus
            f_minus = loss(*args)
            numeric[idx] = (f_plus - f_minus) / (2 * h)
        np.testing.assert_allclose(grads[which], numeric, rtol=1e-6, atol=1e-7)


def _forward_backward(q, k, v, dout, **opts):
    out, lse = performer.softmax_attention(q, k, v, return_lse=True, **opts)
    return (out, lse) + performer.softmax_attention_backward(q, k, v, out, lse, dout, **opts)


def _assert_same(results, expected, dtype):
    for got, want in zip(results, expected):
        np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_strided_inputs(dtype):
    rng = np.random.default_rng(3)
    B, H, Hk, N, L, D, M = 2, 4, 2, 13, 21, 8, 6
    # B x N x H x D buffers seen as B x H x N x D, as attention layers store them.
    q = rng.standard_normal((B, N, H, D)).astype(dtype).transpose(0, 2, 1, 3)
    k = rng.standard_normal((B, L, Hk, D)).astype(dtype).transpose(0, 2, 1, 3)
    v = rng.standard_normal((B, L, Hk, M)).astype(dtype).transpose(0, 2, 1, 3)
    dout = rng.standard_normal((B, N, H, M)).astype(dtype).transpose(0, 2, 1, 3)
    assert not q.flags.c_contiguous
    cases = {
        "transposed": (q, k, v, dout),
        # negative strides along positions and features
        "reversed": (q[:, :, ::-1], k[:, :, ::-1, ::-1], v[:, ::-1, ::-1], dout[..., ::-1]),
        # every other element of larger arrays
        "sliced": tuple(np.repeat(np.repeat(x, 2, axis=2), 3, axis=3)[:, :, ::2, 1::3] for x in (q, k, v, dout)),
        # zero strides: one batch of keys and values broadcast over B
        "broadcast": (q, np.broadcast_to(k[:1], k.shape), np.broadcast_to(v[:1], v.shape), dout),
    }
    for name, (sq, sk, sv, sd) in cases.items():
        for opts in ({}, {"causal": True, "kv_lengths": [L, 5]}):
            got = _forward_backward(sq, sk, sv, sd, **opts)
            want = _forward_backward(*(np.ascontiguousarray(x) for x in (sq, sk, sv, sd)), **opts)
            _assert_same(got, want, dtype)
            # and against the reference
            ref_out, _, _ = reference.forward(sq, sk, sv, opts.get("causal", False), None, opts.get("kv_lengths"))
            assert rel_err(got[0], ref_out) <= TOL[dtype], name


def test_strided_outputs_through_extension():
    """The extension writes into any writable strided buffers, including lse as a 3-D slice."""
    from performer import _performer

    q, k, v, dout = make((2, 3, 3, 7, 9, 4, 5), np.float64)
    out_ref, lse_ref = performer.softmax_attention(q, k, v, return_lse=True, causal=True)
    out = np.zeros((2, 7, 3, 5)).transpose(0, 2, 1, 3)        # B x N x H x M storage
    lse = np.zeros((2, 3, 14))[:, ::-1, ::2]                   # negative and doubled strides
    _performer.softmax_forward(q, k, v, out, lse, True, None, None)
    close = dict(rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(out, out_ref, **close)
    np.testing.assert_allclose(lse, lse_ref, **close)
    dq_ref, dk_ref, dv_ref = performer.softmax_attention_backward(q, k, v, out_ref, lse_ref, dout, causal=True)
    dq = np.zeros((2, 7, 3, 4)).transpose(0, 2, 1, 3)
    dk = np.zeros((2, 3, 9, 8))[..., ::-2]
    dv = np.zeros((5, 9, 3, 2)).transpose(3, 2, 1, 0)
    _performer.softmax_backward(q, k, v, out, lse, dout, dq, dk, dv, True, None, None)
    np.testing.assert_allclose(dq, dq_ref, **close)
    np.testing.assert_allclose(dk, dk_ref, **close)
    np.testing.assert_allclose(dv, dv_ref, **close)


def test_memoryview_inputs():
    q, k, v, dout = make((1, 2, 2, 5, 6, 4, 3), np.float32)
    views = [memoryview(bytearray(x.tobytes())).cast("f", shape=list(x.shape)) for x in (q, k, v)]
    out = performer.softmax_attention(*views)
    np.testing.assert_array_equal(out, performer.softmax_attention(q, k, v))
    out, lse = performer.softmax_attention(memoryview(q), memoryview(k), memoryview(v), return_lse=True)
    dq, _, _ = performer.softmax_attention_backward(*views, memoryview(out), memoryview(lse), memoryview(dout))
    ref_dq, _, _ = reference.backward(q, k, v, dout)
    assert rel_err(dq, ref_dq) <= 1e-5


def test_threads_give_same_results():
    q, k, v, dout = make((2, 4, 4, 64, 80, 32, 32), np.float32)
    try:
        performer.set_num_threads(1)
        one = _forward_backward(q, k, v, dout, causal=True)
        performer.set_num_threads(2)
        two = _forward_backward(q, k, v, dout, causal=True)
    finally:
        performer.set_num_threads(0)
    _assert_same(two, one, np.float32)


def test_concurrent_calls_from_python_threads():
    import threading

    cases = [make((1, 2, 2, 40 + i, 50, 16, 8), np.float64, np.random.default_rng(i)) for i in range(6)]
    expected = [performer.softmax_attention(q, k, v, causal=True) for q, k, v, _ in cases]
    results = [None] * len(cases)
    errors = []

    def work(i):
        try:
            for _ in range(5):
                q, k, v, _ = cases[i]
                results[i] = performer.softmax_attention(q, k, v, causal=True)
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("B, N, L, M", [(0, 3, 4, 5), (1, 0, 4, 5), (1, 3, 0, 5), (1, 3, 4, 0)])
def test_empty_sizes(B, N, L, M):
    rng = np.random.default_rng(5)
    q = rng.standard_normal((B, 2, N, 4))
    k = rng.standard_normal((B, 2, L, 4))
    v = rng.standard_normal((B, 2, L, M))
    out, lse = performer.softmax_attention(q, k, v, return_lse=True, causal=True)
    assert out.shape == (B, 2, N, M) and lse.shape == (B, 2, N)
    ref_out, ref_lse, _ = reference.forward(q, k, v, True)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(np.isneginf(lse), np.isneginf(ref_lse))   # L = 0: no keys
    dq, dk, dv = performer.softmax_attention_backward(q, k, v, out, lse, np.ones_like(out), causal=True)
    assert dq.shape == q.shape and dk.shape == k.shape and dv.shape == v.shape
    ref = reference.backward(q, k, v, np.ones_like(out), True)
    for got, want in zip((dq, dk, dv), ref):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

"""float16 NumPy arrays through softmax, linear and FAVOR+ attention and their backwards, the
softmax merge and the decoders (docs/HALF_PRECISION.md): computed in float32, each output
rounded once; lse, states (a decoder's too) and denominators in float32.

Accuracy rule (FlashAttention's): against the float64 reference on the same float16 inputs,
our output and every gradient has a max error <= 2x that of a straightforward float16
implementation with float32 sums (`_float16_baseline`), plus a relative (L2) bound of 2e-3."""

import numpy as np
import pytest

import performer
import reference

RNG = np.random.default_rng(20261205)


def _float16_baseline(q, k, v, dout, causal=False, kv_lengths=None):
    """Scores and probabilities materialized in float32, sums in float32, results in float16."""
    f = np.float32
    q, k, v, dout = (np.asarray(x, dtype=f) for x in (q, k, v, dout))
    B, H, N, D = q.shape
    Hk, L = k.shape[1], k.shape[2]
    group = H // Hk
    kk, vv = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    i, j = np.arange(N)[:, None], np.arange(L)[None, :]
    mask = np.ones((B, 1, N, L), dtype=bool)
    if causal:
        mask &= (j <= i + (L - N))[None, None]
    if kv_lengths is not None:
        mask &= j[None, None] < np.asarray(kv_lengths).reshape(B, 1, 1, 1)
    s = f(1 / np.sqrt(D))
    scores = np.where(mask, s * np.einsum("bhnd,bhld->bhnl", q, kk), f(-np.inf)).astype(f)
    row_max = scores.max(axis=-1, keepdims=True)
    p = np.exp(scores - row_max).astype(f)
    p /= p.sum(axis=-1, keepdims=True)
    out = np.einsum("bhnl,bhlm->bhnm", p, vv).astype(np.float16)
    dvv = np.einsum("bhnl,bhnm->bhlm", p, dout)
    dp = np.einsum("bhnm,bhlm->bhnl", dout, vv)
    delta = (dout * out.astype(f)).sum(axis=-1, keepdims=True)
    ds = p * (dp - delta)
    dq = s * np.einsum("bhnl,bhld->bhnd", ds, kk)
    dk = (s * np.einsum("bhnl,bhnd->bhld", ds, q)).reshape(B, Hk, group, L, D).sum(axis=2)
    dv = dvv.reshape(B, Hk, group, L, v.shape[3]).sum(axis=2)
    return tuple(x.astype(np.float16) for x in (out, dq, dk, dv))


def _make(B, H, Hk, N, L, D, M):
    return tuple(RNG.standard_normal(shape).astype(np.float16)
                 for shape in ((B, H, N, D), (B, Hk, L, D), (B, Hk, L, M), (B, H, N, M)))


def _max_error(x, y):
    return float(np.max(np.abs(np.asarray(x, np.float64) - y))) if np.size(y) else 0.0


@pytest.mark.parametrize("shape,causal,kv_lengths", [
    ((2, 2, 2, 40, 33, 16, 24), False, None),
    ((1, 4, 2, 70, 70, 32, 16), True, None),          # causal, grouped-query heads
    ((2, 2, 1, 21, 30, 8, 8), True, [30, 11]),        # key lengths
    ((1, 4, 1, 3, 200, 64, 64), False, None),         # few queries (the decoding path)
])
def test_float16_accuracy_rule(shape, causal, kv_lengths):
    q, k, v, dout = _make(*shape)
    out, lse = performer.softmax_attention(q, k, v, causal=causal, kv_lengths=kv_lengths, return_lse=True)
    assert out.dtype == np.float16 and lse.dtype == np.float32
    dq, dk, dv = performer.softmax_attention_backward(q, k, v, out, lse, dout, causal=causal, kv_lengths=kv_lengths)
    assert dq.dtype == dk.dtype == dv.dtype == np.float16
    ref_out, ref_lse, _ = reference.forward(q, k, v, causal, None, kv_lengths)
    ref_grads = reference.backward(q, k, v, dout, causal, None, kv_lengths)
    baseline = _float16_baseline(q, k, v, dout, causal, kv_lengths)
    np.testing.assert_allclose(lse, ref_lse, rtol=1e-5, atol=1e-5)
    for name, ours, exact, base in zip(("out", "dq", "dk", "dv"), (out, dq, dk, dv), (ref_out,) + ref_grads, baseline):
        assert np.all(np.isfinite(ours)), name
        ours_error, base_error = _max_error(ours, exact), _max_error(base, exact)
        assert ours_error <= 2 * base_error + 1e-6, (name, ours_error, base_error)
        relative = np.linalg.norm(ours.astype(np.float64) - exact) / np.linalg.norm(exact)
        assert relative <= 2e-3, (name, relative)


def test_float16_strided_views_match_contiguous():
    q, k, v, dout = _make(2, 2, 2, 17, 19, 8, 12)
    out, lse = performer.softmax_attention(q, k, v, return_lse=True)
    # Sequence-major q, reversed keys, a transposed output buffer.
    q_seq = np.ascontiguousarray(q.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    k_rev = np.ascontiguousarray(k[:, :, ::-1])[:, :, ::-1]
    out_buffer = np.zeros((2, 17, 2, 12), dtype=np.float16)
    performer.softmax_attention(q_seq, k_rev, v, out=out_buffer.transpose(0, 2, 1, 3))
    assert np.array_equal(out_buffer.transpose(0, 2, 1, 3), out)
    dq, dk, dv = performer.softmax_attention_backward(q, k, v, out, lse, dout)
    dq2, dk2, dv2 = performer.softmax_attention_backward(q_seq, k_rev, v, out, lse, dout)
    for a, b in ((dq, dq2), (dk, dk2), (dv, dv2)):
        assert np.array_equal(a, b)


def test_float16_large_scores_do_not_overflow():
    # |q.k| far past float16's 65504: the scores are float32.
    q, k, v, _ = _make(1, 1, 1, 20, 20, 64, 8)
    q, k = (x * np.float16(80) for x in (q, k))
    out, lse = performer.softmax_attention(q, k, v, scale=1.0, return_lse=True)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(lse))
    assert np.max(np.abs(lse)) > 65504
    ref_out, _, _ = reference.forward(q, k, v, scale=1.0)
    assert _max_error(out, ref_out) <= 2 * _max_error(ref_out.astype(np.float16), ref_out) + 1e-3


def test_float16_dtype_errors():
    q, k, v, dout = _make(1, 1, 1, 4, 5, 8, 8)
    with pytest.raises(TypeError, match="k has dtype float32 but q has float16"):
        performer.softmax_attention(q, k.astype(np.float32), v)
    out, lse = performer.softmax_attention(q, k, v, return_lse=True)
    with pytest.raises(TypeError, match="lse has dtype float16 but the lse of a float16 call has float32"):
        performer.softmax_attention_backward(q, k, v, out, lse.astype(np.float16), dout)
    # A float16 lse buffer is refused by the library, naming lse; nothing is written.
    out_buffer = np.full((1, 1, 4, 8), 7, dtype=np.float16)
    with pytest.raises(TypeError, match="lse.dtype = float16 but must be float32"):
        performer.softmax_attention(q, k, v, out=out_buffer, lse=np.zeros((1, 1, 4), dtype=np.float16))
    assert np.all(out_buffer == 7)


def test_float16_merge_is_the_float32_merge_rounded():
    q, k, v, _ = _make(2, 2, 1, 9, 20, 8, 8)
    out_a, lse_a = performer.softmax_attention(q, k[:, :, :12], v[:, :, :12], return_lse=True)
    out_b, lse_b = performer.softmax_attention(q, k[:, :, 12:], v[:, :, 12:], return_lse=True)
    assert lse_a.dtype == np.float32
    out, lse = performer.softmax_merge(out_a, lse_a, out_b, lse_b)
    out32, lse32 = performer.softmax_merge(out_a.astype(np.float32), lse_a, out_b.astype(np.float32), lse_b)
    assert out.dtype == np.float16 and lse.dtype == np.float32
    assert np.array_equal(out, out32.astype(np.float16)) and np.array_equal(lse, lse32)
    # The merge of the halves is the whole call to one rounding of the output.
    whole = performer.softmax_attention(q, k, v).astype(np.float64)
    assert np.max(np.abs(out - whole)) <= 2 * 2.0 ** -10 * max(1.0, np.max(np.abs(whole)))
    # In place over A.
    performer.softmax_merge(out_a, lse_a, out_b, lse_b, out=out_a, lse=lse_a)
    assert np.array_equal(out_a, out) and np.array_equal(lse_a, lse)
    with pytest.raises(TypeError, match=r"lse_a has dtype float16 but the lse of a float16 call has float32"):
        performer.softmax_merge(out_a, lse_a.astype(np.float16), out_b, lse_b)
    with pytest.raises(TypeError, match=r"out_b has dtype float32 but out_a has float16"):
        performer.softmax_merge(out_a, lse_a, out_b.astype(np.float32), lse_b)


def test_float16_state_only_calls_are_the_float32_calls_rounded():
    _, k, v, _ = _make(1, 1, 2, 1, 50, 8, 6)
    wide = (k.astype(np.float32), v.astype(np.float32))
    state = performer.linear_state(k, v, heads=4, kv_lengths=[41])
    assert all(x.dtype == np.float32 for x in state)
    assert all(np.array_equal(a, b) for a, b in zip(state, performer.linear_state(*wide, heads=4, kv_lengths=[41])))
    ds = (RNG.standard_normal(state[0].shape).astype(np.float32), RNG.standard_normal(state[1].shape).astype(np.float32))
    grads = performer.linear_state_backward(k, v, *ds)
    assert all(a.dtype == np.float16 and np.array_equal(a, b.astype(np.float16))
               for a, b in zip(grads, performer.linear_state_backward(*wide, *ds)))
    w = performer.FavorProjection(8, 8, seed=2)
    for features in ("positive", "hyperbolic", "trigonometric", "relu"):
        triple = performer.favor_state(k * np.float16(0.5), v, w, features=features, heads=2)
        triple32 = performer.favor_state(wide[0] * np.float32(0.5), wide[1], w, features=features, heads=2)
        assert all(a.dtype == np.float32 and np.array_equal(a, b) for a, b in zip(triple, triple32))
        dstate = (np.ones_like(triple[0]), np.ones_like(triple[1]))
        grads = performer.favor_state_backward(k * np.float16(0.5), v, w, *dstate, features=features)
        grads32 = performer.favor_state_backward(wide[0] * np.float32(0.5), wide[1], w, *dstate, features=features)
        assert all(np.array_equal(a, b.astype(np.float16)) for a, b in zip(grads, grads32))


# ------------------------------------------------------------------ linear attention


def _linear_direct(q, k, v, dout, causal, kv_lengths, s0, z0, dtype, eps=1e-6):
    """elu+1 linear attention and its gradients through the explicit masked N x L matrix
    A = phi(q) phi(k)^T, every operation in `dtype` (float64: the reference; float32: the
    straightforward implementation of the accuracy rule)."""
    q, k, v, dout, s0, z0 = (np.asarray(x, dtype=dtype) for x in (q, k, v, dout, s0, z0))
    B, H, N, D = q.shape
    Hk, L = k.shape[1], k.shape[2]
    group = H // Hk
    kk, vv = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    phi = lambda x: np.where(x > 0, x + 1, np.exp(np.minimum(x, 0))).astype(dtype)
    slope = lambda x: np.where(x > 0, 1, np.exp(np.minimum(x, 0))).astype(dtype)
    keep = np.ones((B, 1, L, 1), dtype=dtype)
    if kv_lengths is not None:
        keep = (np.arange(L)[None, None, :, None] < np.asarray(kv_lengths).reshape(B, 1, 1, 1)).astype(dtype)
    fq, fk = phi(q), phi(kk) * keep
    a = np.einsum("bhnc,bhlc->bhnl", fq, fk)
    if causal:
        a = np.where(np.arange(L)[None, :] <= np.arange(N)[:, None], a, dtype(0)).astype(dtype)
    num = np.einsum("bhnc,bhcm->bhnm", fq, s0) + np.einsum("bhnl,bhlm->bhnm", a, vv)
    den = np.einsum("bhnc,bhc->bhn", fq, z0) + a.sum(axis=-1) + dtype(eps)
    out = num / den[..., None]
    g = dout / den[..., None]
    dden = -(g * out).sum(axis=-1)
    da = np.einsum("bhnm,bhlm->bhnl", g, vv) + dden[..., None]
    if causal:
        da = np.where(np.arange(L)[None, :] <= np.arange(N)[:, None], da, dtype(0)).astype(dtype)
    dfq = np.einsum("bhnl,bhlc->bhnc", da, fk) + np.einsum("bhcm,bhnm->bhnc", s0, g) + dden[..., None] * z0[:, :, None, :]
    dq = dfq * slope(q)
    dk = (np.einsum("bhnl,bhnc->bhlc", da, fq) * slope(kk) * keep).reshape(B, Hk, group, L, D).sum(axis=2)
    dv = np.einsum("bhnl,bhnm->bhlm", a, g).reshape(B, Hk, group, L, v.shape[3]).sum(axis=2)
    ds0, dz0 = np.einsum("bhnc,bhnm->bhcm", fq, g), np.einsum("bhnc,bhn->bhc", fq, dden)
    return out, dq, dk, dv, ds0, dz0


@pytest.mark.parametrize("shape,causal,kv_lengths", [
    ((2, 2, 2, 40, 33, 16, 24), False, None),
    ((1, 4, 2, 150, 150, 32, 16), True, None),        # causal past a chunk, grouped-query heads
    ((2, 2, 1, 30, 30, 8, 8), True, [30, 11]),        # key lengths
])
def test_float16_linear_accuracy_rule(shape, causal, kv_lengths):
    B, H, Hk, N, L, D, M = shape
    q, k, v, dout = _make(*shape)
    s0 = RNG.standard_normal((B, H, D, M)).astype(np.float32)
    z0 = (0.1 + RNG.random((B, H, D))).astype(np.float32)
    out, (sn, zn), den = performer.linear_attention(q, k, v, causal=causal, kv_lengths=kv_lengths,
                                                    initial_state=(s0, z0), return_state=True, return_denominators=True)
    assert out.dtype == np.float16 and sn.dtype == zn.dtype == den.dtype == np.float32
    dq, dk, dv, (ds0, dz0) = performer.linear_attention_backward(q, k, v, dout, causal=causal, kv_lengths=kv_lengths,
                                                                  initial_state=(s0, z0))
    assert dq.dtype == dk.dtype == dv.dtype == np.float16 and ds0.dtype == dz0.dtype == np.float32
    exact = _linear_direct(q, k, v, dout, causal, kv_lengths, s0, z0, np.float64)
    base = _linear_direct(q, k, v, dout, causal, kv_lengths, s0, z0, np.float32)
    base = tuple(x.astype(np.float16) for x in base[:4]) + base[4:]
    for name, ours, want, straightforward in zip(("out", "dq", "dk", "dv", "dS0", "dz0"), (out, dq, dk, dv, ds0, dz0),
                                                 exact, base):
        assert np.all(np.isfinite(ours)), name
        ours_error, base_error = _max_error(ours, want), _max_error(straightforward, want)
        assert ours_error <= 2 * base_error + 1e-6 * max(1.0, float(np.max(np.abs(want)))), (name, ours_error, base_error)


def test_float16_linear_is_the_float32_call_rounded():
    q, k, v, dout = _make(1, 2, 1, 70, 70, 8, 8)
    wide = tuple(x.astype(np.float32) for x in (q, k, v, dout))
    for causal in (False, True):
        out, state = performer.linear_attention(q, k, v, causal=causal, return_state=True)
        out32, state32 = performer.linear_attention(*wide[:3], causal=causal, return_state=True)
        assert np.array_equal(out, out32.astype(np.float16))
        assert all(np.array_equal(a, b) for a, b in zip(state, state32))
        grads = performer.linear_attention_backward(q, k, v, dout, causal=causal)
        grads32 = performer.linear_attention_backward(*wide, causal=causal)
        assert all(np.array_equal(a, b.astype(np.float16)) for a, b in zip(grads, grads32))


def test_float16_linear_state_dtype_errors():
    q, k, v, dout = _make(1, 1, 1, 4, 4, 8, 8)
    s0, z0 = np.zeros((1, 1, 8, 8), np.float16), np.zeros((1, 1, 8), np.float16)
    with pytest.raises(TypeError, match=r"has dtype float16 but the state of a float16 call has float32"):
        performer.linear_attention(q, k, v, initial_state=(s0, z0))
    with pytest.raises(TypeError, match=r"has dtype float16 but the state of a float16 call has float32"):
        performer.linear_attention_backward(q, k, v, dout, dstate=(s0, z0))
    # A caller's float16 buffer for the float32 denominators is refused by the library; nothing written.
    out = np.full((1, 1, 4, 8), 7, dtype=np.float16)
    with pytest.raises(TypeError, match=r"denominators.dtype = float16 but must be float32"):
        performer.linear_attention(q, k, v, out=out, denominators=np.zeros((1, 1, 4), np.float16))
    assert np.all(out == 7)


# ------------------------------------------------------------------ FAVOR+


@pytest.mark.parametrize("features", ["positive", "hyperbolic", "trigonometric", "relu"])
def test_float16_favor_is_the_float32_call_rounded(features):
    q, k, v, dout = _make(1, 2, 1, 40, 40, 8, 8)
    q, k = (x * np.float16(0.5) for x in (q, k))
    wide = tuple(x.astype(np.float32) for x in (q, k, v, dout))
    w = performer.FavorProjection(8, 16, seed=3)
    for causal in (False, True):
        options = dict(causal=causal, features=features)
        if causal:
            out, state = performer.favor_attention(q, k, v, w, return_state=True, **options)
            out32, state32 = performer.favor_attention(*wide[:3], w, return_state=True, **options)
            assert all(x.dtype == np.float32 for x in state)
            assert all(np.array_equal(a, b) for a, b in zip(state, state32))
            dstate = (np.ones_like(state[0]), np.ones_like(state[1]))
            grads = performer.favor_attention_backward(q, k, v, dout, w, dstate=dstate, **options)
            grads32 = performer.favor_attention_backward(*wide, w, dstate=dstate, **options)
        else:
            out, out32 = performer.favor_attention(q, k, v, w, **options), performer.favor_attention(*wide[:3], w, **options)
            grads = performer.favor_attention_backward(q, k, v, dout, w, **options)
            grads32 = performer.favor_attention_backward(*wide, w, **options)
        assert out.dtype == np.float16 and np.array_equal(out, out32.astype(np.float16))
        assert all(a.dtype == np.float16 and np.array_equal(a, b.astype(np.float16)) for a, b in zip(grads, grads32))
    phi = performer.favor_features(q, w, features=features)
    assert phi.dtype == np.float16
    assert np.array_equal(phi, performer.favor_features(wide[0], w, features=features).astype(np.float16))


def test_float16_favor_accuracy_against_float64():
    # Positive features, not causal: out within the rule's bound of the float64 evaluation.
    q, k, v, _ = _make(1, 2, 1, 30, 30, 8, 8)
    q, k = (x * np.float16(0.5) for x in (q, k))
    w = performer.FavorProjection(8, 16, seed=4)
    out = performer.favor_attention(q, k, v, w)
    def direct(dtype):
        fq = performer.favor_features(q.astype(np.float64), w).astype(dtype)
        fk = performer.favor_features(k.astype(np.float64), w).astype(dtype)
        a = np.einsum("bhnc,bhlc->bhnl", fq, np.repeat(fk, 2, axis=1))
        return np.einsum("bhnl,bhlm->bhnm", a, np.repeat(v.astype(dtype), 2, axis=1)) / a.sum(-1, keepdims=True)
    exact = direct(np.float64)
    assert _max_error(out, exact) <= 2 * _max_error(direct(np.float32).astype(np.float16), exact) + 1e-6


def test_float16_favor_state_dtype_errors():
    q, k, v, _ = _make(1, 1, 1, 4, 4, 8, 8)
    w = performer.FavorProjection(8, 8, seed=1)
    state = tuple(np.zeros(shape, np.float16) for shape in ((1, 1, 8, 8), (1, 1, 8), (1, 1, 8)))
    with pytest.raises(TypeError, match=r"has dtype float16 but the state of a float16 call has float32"):
        performer.favor_attention(q, k, v, w, causal=True, initial_state=state)


# ------------------------------------------------------------------ decoders


def _positions(x, t):
    return x[:, :, t]


@pytest.mark.parametrize("feature_map", ["elu+1", "relu", "identity"])
def test_float16_linear_decoder_is_the_float32_decoder_rounded(feature_map):
    # Prefill 5 tokens, then step; from a loaded float32 state; and on a caller's float32 state.
    q, k, v, _ = _make(2, 4, 2, 12, 12, 8, 6)
    if feature_map == "identity":
        q, k = np.abs(q), np.abs(k)
    s0 = RNG.standard_normal((2, 4, 8, 6)).astype(np.float32)
    z0 = (np.abs(RNG.standard_normal((2, 4, 8))) + 0.5).astype(np.float32)
    half = performer.LinearDecoder(2, 4, 8, 6, key_heads=2, feature_map=feature_map, dtype="float16")
    single = performer.LinearDecoder(2, 4, 8, 6, key_heads=2, feature_map=feature_map, dtype="float32")
    assert half.dtype == np.float16 and half.state_dtype == np.float32 and single.state_dtype == np.float32
    for d in (half, single):
        d.set_state(s0, z0)
    wide = tuple(x.astype(np.float32) for x in (q, k, v))
    outs = [half.prefill(q[:, :, :5], k[:, :, :5], v[:, :, :5])]
    outs32 = [single.prefill(*(x[:, :, :5] for x in wide))]
    for t in range(5, 12):
        outs.append(half.step(q[:, :, t], k[:, :, t], v[:, :, t])[:, :, None])
        outs32.append(single.step(*(x[:, :, t] for x in wide))[:, :, None])
    out, out32 = np.concatenate(outs, axis=2), np.concatenate(outs32, axis=2)
    assert out.dtype == np.float16 and np.array_equal(out, out32.astype(np.float16))
    state, state32 = half.state, single.state
    assert all(x.dtype == np.float32 for x in state)
    assert all(np.array_equal(a, b) for a, b in zip(state, state32))
    # The half causal forward from the same state: the same outputs to one rounding.
    forward = performer.linear_attention(q, k, v, causal=True, feature_map=feature_map, initial_state=(s0, z0))
    spacing = np.spacing(np.maximum(np.abs(out), np.abs(forward)).astype(np.float16)).astype(np.float64)
    assert np.all(np.abs(out.astype(np.float64) - forward) <= spacing)
    # A caller-owned float32 state gives the decoder's own bits.
    caller = performer.LinearDecoder(2, 4, 8, 6, key_heads=2, feature_map=feature_map, dtype="float16")
    S, z = s0.copy(), z0.copy()
    half.set_state(s0, z0)
    for t in range(12):
        mine = caller.step(q[:, :, t], k[:, :, t], v[:, :, t], state=(S, z))
        own = half.step(q[:, :, t], k[:, :, t], v[:, :, t])
        assert np.array_equal(mine, own)
    assert all(np.array_equal(a, b) for a, b in zip((S, z), half.state))


def test_float16_linear_decoder_dtype_errors():
    d = performer.LinearDecoder(1, 1, 8, 8, dtype=np.float16)
    q = np.ones((1, 1, 8), np.float16)
    out = np.full((1, 1, 8), 7, np.float16)
    with pytest.raises(TypeError, match=r"q has dtype float32 but the decoder has float16"):
        d.step(q.astype(np.float32), q, q, out=out)
    with pytest.raises(TypeError, match=r"S has dtype float16 but the decoder's state"):
        d.set_state(np.zeros((1, 1, 8, 8), np.float16), np.zeros((1, 1, 8), np.float16))
    with pytest.raises(TypeError, match=r"z has dtype float16 but the decoder's state"):
        d.step(q, q, q, out=out, state=(np.zeros((1, 1, 8, 8), np.float32), np.zeros((1, 1, 8), np.float16)))
    assert np.all(out == 7)
    with pytest.raises(TypeError, match=r"dtype must be"):
        performer.LinearDecoder(1, 1, 8, 8, dtype="int8")


@pytest.mark.parametrize("features", ["positive", "hyperbolic", "trigonometric", "relu"])
def test_float16_favor_decoder_is_the_float32_decoder_rounded(features):
    q, k, v, _ = _make(2, 2, 2, 10, 10, 8, 6)
    q, k = (x * np.float16(0.5) for x in (q, k))
    w = performer.FavorProjection(8, 16, seed=7)
    eps = 1e-3 if features == "trigonometric" else 0.0
    half = performer.FavorDecoder(w, 2, 2, 6, features=features, eps=eps, dtype="float16")
    single = performer.FavorDecoder(w, 2, 2, 6, features=features, eps=eps, dtype="float32")
    assert half.dtype == np.float16 and half.state_dtype == np.float32
    wide = tuple(x.astype(np.float32) for x in (q, k, v))
    out = np.stack([half.step(q[:, :, t], k[:, :, t], v[:, :, t]) for t in range(10)], axis=2)
    out32 = np.stack([single.step(*(x[:, :, t] for x in wide)) for t in range(10)], axis=2)
    assert out.dtype == np.float16 and np.array_equal(out, out32.astype(np.float16))
    assert all(x.dtype == np.float32 and np.array_equal(x, y) for x, y in zip(half.state, single.state))
    forward = performer.favor_attention(q, k, v, w, causal=True, features=features, eps=eps)
    spacing = np.spacing(np.maximum(np.abs(out), np.abs(forward)).astype(np.float16)).astype(np.float64)
    assert np.all(np.abs(out.astype(np.float64) - forward) <= 2 * spacing)
    # set_state takes the float32 triple back; a float16 triple is refused.
    resumed = performer.FavorDecoder(w, 2, 2, 6, features=features, eps=eps, dtype="float16")
    resumed.state = half.state
    assert np.array_equal(resumed.step(q[:, :, 0], k[:, :, 1], v[:, :, 2]), half.step(q[:, :, 0], k[:, :, 1], v[:, :, 2]))
    with pytest.raises(TypeError, match=r"S has dtype float16 but the decoder's state"):
        resumed.set_state(*(x.astype(np.float16) for x in half.state))


def test_float16_projection_from_a_half_matrix_is_exact():
    w16 = performer.FavorProjection(8, 6, seed=2).matrix.astype(np.float32).astype(np.float16)
    p = performer.FavorProjection.from_matrix(w16)
    assert np.array_equal(p.matrix, w16.astype(np.float64))
    q, k, v, _ = _make(1, 1, 1, 5, 5, 8, 4)
    assert np.array_equal(performer.favor_attention(q, k, v, p),
                          performer.favor_attention(q, k, v, performer.FavorProjection.from_matrix(w16.astype(np.float32))))

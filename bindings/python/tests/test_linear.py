"""Linear attention through the installed package: linear_attention, linear_attention_backward,
LinearDecoder -- against a float64 NumPy reference built from explicit N x L masked matrices,
finite-difference gradients, pieces = one call = decoder steps, errors, strides, the GIL,
leaks, and the decoder's speed (printed; only a loose sanity bound is asserted)."""

import gc
import os
import sys
import threading
import time

import numpy as np
import pytest

import performer
from helpers import REPO, assert_gil_released, numeric_grad, run_example

FEATURE_MAPS = ["elu+1", "relu", "identity"]


# ---------------------------------------------------------------------------------------------
# The reference (ALGORITHMS.md section 2, written directly)
# ---------------------------------------------------------------------------------------------

def phi(x, feature_map):
    if feature_map == "elu+1":
        return np.where(x > 0, x + 1, np.exp(np.minimum(x, 0)))
    if feature_map == "relu":
        return np.maximum(x, 0)
    return x


def reference(q, k, v, causal=False, feature_map="elu+1", eps=1e-6, kv_lengths=None, initial_state=None):
    """Returns (out, (S_N, z_N)) in float64; the attention matrix of every head is built in full."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    B, H, N, D = q.shape
    Hk, L, M = k.shape[1], k.shape[2], v.shape[3]
    group = H // Hk
    fq = phi(q, feature_map)
    fk = phi(np.repeat(k, group, axis=1), feature_map)
    vv = np.repeat(v, group, axis=1)
    i, j = np.arange(N)[:, None], np.arange(L)[None, :]
    mask = np.ones((B, 1, N, L), dtype=bool)
    keys = np.ones((B, 1, L), dtype=bool)
    if causal:
        mask &= (j <= i)[None, None]
    if kv_lengths is not None:
        lengths = np.asarray(kv_lengths).reshape(B, 1, 1)
        keys &= np.arange(L)[None, None] < lengths
        mask &= keys[:, :, None, :]
    a = np.where(mask, np.einsum("bhnd,bhld->bhnl", fq, fk), 0.0)
    num = a @ vv
    den = a.sum(-1) + eps
    s0 = np.zeros((B, H, D, M))
    z0 = np.zeros((B, H, D))
    if initial_state is not None:
        s0 = np.asarray(initial_state[0], dtype=np.float64)
        z0 = np.asarray(initial_state[1], dtype=np.float64)
        num = num + fq @ s0
        den = den + np.einsum("bhnd,bhd->bhn", fq, z0)
    safe = np.where(den == 0, 1.0, den)
    out = np.where(den[..., None] == 0, 0.0, num / safe[..., None])
    fk_kept = fk * keys[..., None]
    sn = s0 + np.einsum("bhld,bhlm->bhdm", fk_kept, vv)
    zn = z0 + fk_kept.sum(2)
    return out, (sn, zn)


def rel_err(x, ref):
    ref = np.asarray(ref, dtype=np.float64)
    return np.abs(np.asarray(x, dtype=np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30)


def inputs(B=2, H=4, Hk=2, N=6, L=None, D=5, M=3, dtype=np.float64, feature_map="elu+1", seed=0):
    rng = np.random.default_rng(seed)
    L = N if L is None else L
    q = rng.standard_normal((B, H, N, D))
    k = rng.standard_normal((B, Hk, L, D))
    v = rng.standard_normal((B, Hk, L, M))
    if feature_map == "identity":   # features: positive, so denominators stay away from 0
        q, k = 0.1 + np.abs(q), 0.1 + np.abs(k)
    return q.astype(dtype), k.astype(dtype), v.astype(dtype)


def state(B=2, H=4, D=5, M=3, dtype=np.float64, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((B, H, D, M)).astype(dtype), (0.5 + rng.random((B, H, D))).astype(dtype)


# ---------------------------------------------------------------------------------------------
# Forward against the reference
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", [False, True])
@pytest.mark.parametrize("gqa", [False, True])
def test_forward_matches_reference(dtype, feature_map, causal, lengths, gqa):
    Hk = 2 if gqa else 4
    N, L = (7, 7) if causal else (5, 9)
    q, k, v = inputs(Hk=Hk, N=N, L=L, dtype=dtype, feature_map=feature_map)
    kv = [L - 3, L] if lengths else None
    out = performer.linear_attention(q, k, v, causal=causal, feature_map=feature_map, kv_lengths=kv)
    ref, _ = reference(q, k, v, causal, feature_map, 1e-6, kv)
    assert out.dtype == dtype and out.shape == ref.shape
    assert rel_err(out, ref) <= (1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_causal_state_matches_reference(dtype, feature_map):
    q, k, v = inputs(dtype=dtype, feature_map=feature_map)
    s0, z0 = state(dtype=dtype)
    out, (sn, zn) = performer.linear_attention(q, k, v, causal=True, feature_map=feature_map,
                                               initial_state=(s0, z0), return_state=True)
    ref, (rs, rz) = reference(q, k, v, True, feature_map, 1e-6, None, (s0, z0))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert sn.shape == (2, 4, 5, 3) and zn.shape == (2, 4, 5)
    assert rel_err(out, ref) <= tol and rel_err(sn, rs) <= tol and rel_err(zn, rz) <= tol


def test_eps_zero_and_empty_rows():
    q, k, v = inputs(feature_map="relu")
    out = performer.linear_attention(q, k, v, feature_map="relu", eps=0.0, kv_lengths=[0, 3])
    ref, _ = reference(q, k, v, False, "relu", 0.0, [0, 3])
    assert np.all(out[0] == 0)                      # no key at all: zero rows, never NaN
    assert np.isfinite(out).all() and rel_err(out, ref) <= 1e-12
    big = performer.linear_attention(q, k, v, eps=10.0)
    assert rel_err(big, reference(q, k, v, False, "elu+1", 10.0)[0]) <= 1e-12


def test_padding_zeroes_phi_k_not_v():
    q, k, v = inputs(B=1, N=6)
    k2, v2 = k.copy(), v.copy()
    k2[:, :, 4:] = 3.0
    v2[:, :, 4:] = -1e6
    for causal in (False, True):
        a = performer.linear_attention(q, k, v, causal=causal, kv_lengths=[4])
        b = performer.linear_attention(q, k2, v2, causal=causal, kv_lengths=[4])
        assert np.array_equal(a, b)
        # elu+1 maps 0 to 1: zeroing v instead of phi(k) would keep the padded keys in the
        # denominator, and give another result.
        v0 = v.copy()
        v0[:, :, 4:] = 0
        wrong = performer.linear_attention(q, k, v0, causal=causal)
        assert not np.allclose(a[:, :, -1], wrong[:, :, -1])


def test_causality_bit_for_bit():
    q, k, v = inputs(N=9, dtype=np.float32)
    out = performer.linear_attention(q, k, v, causal=True)
    for t in (0, 4, 8):
        q2, k2, v2 = q.copy(), k.copy(), v.copy()
        q2[:, :, t + 1:] = 7.0
        k2[:, :, t + 1:] = -7.0
        v2[:, :, t + 1:] = 100.0
        out2 = performer.linear_attention(q2, k2, v2, causal=True)
        assert np.array_equal(out[:, :, :t + 1], out2[:, :, :t + 1])


# ---------------------------------------------------------------------------------------------
# Gradients: finite differences of the reference (float64)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("lengths", [False, True])
def test_gradients_finite_differences(feature_map, causal, lengths):
    B, H, Hk, N, D, M = 2, 4, 2, 5, 3, 2
    q, k, v = inputs(B, H, Hk, N, None if causal else 6, D, M, feature_map=feature_map, seed=3)
    L = k.shape[2]
    kv = [L - 2, L] if lengths else None
    rng = np.random.default_rng(4)
    dout = rng.standard_normal((B, H, N, M))
    s0, z0 = state(B, H, D, M, seed=5)
    gs, gz = rng.standard_normal((B, H, D, M)), rng.standard_normal((B, H, D))
    init = (s0, z0) if causal else None

    def loss():
        out, (sn, zn) = reference(q, k, v, causal, feature_map, 1e-6, kv, init)
        total = (dout * out).sum()
        if causal:
            total += (gs * sn).sum() + (gz * zn).sum()
        return total

    grads = performer.linear_attention_backward(
        q, k, v, dout, causal=causal, feature_map=feature_map, kv_lengths=kv, initial_state=init,
        dstate=(gs, gz) if causal else None)
    expected = [numeric_grad(loss, x) for x in (q, k, v)]
    assert len(grads) == (4 if causal else 3)
    for name, got, want in zip(("dq", "dk", "dv"), grads, expected):
        assert got.shape == want.shape
        assert rel_err(got, want) <= 1e-6, name
    if causal:
        ds0, dz0 = grads[3]
        assert rel_err(ds0, numeric_grad(loss, s0)) <= 1e-6
        assert rel_err(dz0, numeric_grad(loss, z0)) <= 1e-6


@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
@pytest.mark.parametrize("causal", [False, True])
def test_float32_gradients(feature_map, causal):
    q, k, v = inputs(N=8, feature_map=feature_map, seed=6)
    dout = np.random.default_rng(7).standard_normal((2, 4, 8, 3))
    init = state(seed=8) if causal else None
    exact = performer.linear_attention_backward(q, k, v, dout, causal=causal, feature_map=feature_map,
                                                initial_state=init)
    f32 = [x.astype(np.float32) for x in (q, k, v, dout)]
    init32 = tuple(x.astype(np.float32) for x in init) if causal else None
    single = performer.linear_attention_backward(*f32, causal=causal, feature_map=feature_map,
                                                 initial_state=init32)
    for a, b in zip(single[:3], exact[:3]):
        assert a.dtype == np.float32 and rel_err(a, b) <= 1e-5
    if causal:
        for a, b in zip(single[3], exact[3]):
            assert rel_err(a, b) <= 1e-5


# ---------------------------------------------------------------------------------------------
# One call = pieces with carried state = decoder steps
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pieces_equal_one_call(dtype):
    q, k, v = inputs(N=11, dtype=dtype, seed=9)
    dout = np.random.default_rng(10).standard_normal((2, 4, 11, 3)).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    out, (sn, zn) = performer.linear_attention(q, k, v, causal=True, return_state=True)
    dq, dk, dv = performer.linear_attention_backward(q, k, v, dout, causal=True)
    cut = 4
    a, b = slice(0, cut), slice(cut, None)
    out1, mid = performer.linear_attention(q[:, :, a], k[:, :, a], v[:, :, a], causal=True, return_state=True)
    out2, (sn2, zn2) = performer.linear_attention(q[:, :, b], k[:, :, b], v[:, :, b], causal=True,
                                                  initial_state=mid, return_state=True)
    assert rel_err(np.concatenate([out1, out2], 2), out) <= tol
    assert rel_err(sn2, sn) <= tol and rel_err(zn2, zn) <= tol
    # Gradients through the carried state: piece 2 gives dLoss/d(mid), piece 1 takes it as dstate.
    dq2, dk2, dv2, dmid = performer.linear_attention_backward(q[:, :, b], k[:, :, b], v[:, :, b], dout[:, :, b],
                                                              causal=True, initial_state=mid)
    dq1, dk1, dv1 = performer.linear_attention_backward(q[:, :, a], k[:, :, a], v[:, :, a], dout[:, :, a],
                                                        causal=True, dstate=dmid)
    for whole, parts in ((dq, (dq1, dq2)), (dk, (dk1, dk2)), (dv, (dv1, dv2))):
        assert rel_err(np.concatenate(parts, 2), whole) <= 10 * tol


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
@pytest.mark.parametrize("gqa", [False, True])
def test_decoder_equals_one_call(dtype, feature_map, gqa):
    B, H, D, M, N = 2, 4, 5, 3, 9
    Hk = 2 if gqa else H
    q, k, v = inputs(B, H, Hk, N, None, D, M, dtype=dtype, feature_map=feature_map, seed=11)
    s0, z0 = state(B, H, D, M, dtype=dtype, seed=12)
    tol = 1e-5 if dtype == "float32" else 1e-12
    ref, (rs, rz) = performer.linear_attention(q, k, v, causal=True, feature_map=feature_map,
                                               initial_state=(s0, z0), return_state=True)
    dec = performer.LinearDecoder(B, H, D, M, feature_map=feature_map, key_heads=Hk if gqa else None,
                                  dtype=dtype)
    assert (dec.batch, dec.heads, dec.key_heads, dec.dim, dec.value_dim) == (B, H, Hk, D, M)
    assert dec.dtype == np.dtype(dtype) and dec.feature_map == feature_map and dec.eps == 1e-6
    s, z = dec.state
    assert s.shape == (B, H, D, M) and z.shape == (B, H, D) and not s.any() and not z.any()
    # Steps from a state that was set.
    dec.state = (s0, z0)
    steps = np.stack([dec.step(q[:, :, t], k[:, :, t], v[:, :, t]) for t in range(N)], axis=2)
    assert steps.dtype == np.dtype(dtype) and rel_err(steps, ref) <= tol
    s, z = dec.state
    assert rel_err(s, rs) <= tol and rel_err(z, rz) <= tol
    # Prefill, then decode (into a preallocated output).
    dec.set_state(s0, z0)
    prompt = dec.prefill(q[:, :, :4], k[:, :, :4], v[:, :, :4])
    out = np.empty((B, H, M), dtype=dtype)
    rest = []
    for t in range(4, N):
        assert dec.step(q[:, :, t], k[:, :, t], v[:, :, t], out) is out
        rest.append(out.copy())
    assert rel_err(np.concatenate([prompt, np.stack(rest, 2)], 2), ref) <= tol
    # reset = a new sequence: from zeros.
    dec.reset()
    assert not dec.state[0].any()
    plain = performer.linear_attention(q, k, v, causal=True, feature_map=feature_map)
    assert rel_err(dec.prefill(q, k, v), plain) <= tol
    # A forward's final state primes the decoder.
    _, final = performer.linear_attention(q[:, :, :5], k[:, :, :5], v[:, :, :5], causal=True,
                                          feature_map=feature_map, return_state=True)
    dec.state = final
    nxt = dec.step(q[:, :, 5], k[:, :, 5], v[:, :, 5])
    assert rel_err(nxt, plain[:, :, 5]) <= tol


def test_decoder_state_is_a_copy():
    dec = performer.LinearDecoder(1, 2, 3, 4, dtype="float64")
    s0, z0 = state(1, 2, 3, 4)
    dec.set_state(s0, z0)
    s0[...] = 0
    s, z = dec.state
    s[...] = 99
    assert np.abs(dec.state[0]).max() > 0 and np.abs(dec.state[0]).max() < 99
    assert not np.shares_memory(dec.state[0], dec.state[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decoder_step_on_caller_state(dtype):
    """step(state=(S, z)) updates the caller's arrays in place with the bits of the decoder's
    own state, for contiguous and transposed/strided layouts, and leaves the own state alone."""
    B, H, Hk, D, M, n = 2, 4, 2, 5, 19, 6
    rng = np.random.default_rng(41)
    q = rng.standard_normal((B, H, n, D)).astype(dtype)
    k = rng.standard_normal((B, Hk, n, D)).astype(dtype)
    v = rng.standard_normal((B, Hk, n, M)).astype(dtype)
    own = performer.LinearDecoder(B, H, D, M, key_heads=Hk, dtype=dtype)
    shared = performer.LinearDecoder(B, H, D, M, key_heads=Hk, dtype=dtype)
    plain = (np.zeros((B, H, D, M), dtype), np.zeros((B, H, D), dtype))
    # S with M as its slowest axis inside each head, z every other element of a wider buffer.
    strided = (np.zeros((B, H, M, D), dtype).transpose(0, 1, 3, 2), np.zeros((B, H, 2 * D), dtype)[:, :, ::2])
    for t in range(n):
        expected = own.step(q[:, :, t], k[:, :, t], v[:, :, t])
        for st in (plain, strided):
            got = shared.step(q[:, :, t], k[:, :, t], v[:, :, t], state=st)
            assert np.array_equal(got, expected)
    S, z = own.state
    for st in (plain, strided):
        assert np.array_equal(st[0], S) and np.array_equal(st[1], z)
    assert not shared.state[0].any() and not shared.state[1].any()


def test_decoder_step_on_gapped_caller_state_full_rows():
    """D = M = 64 (the step's whole-row column blocks) on a caller state with gaps between rows,
    heads and z entries: the decoder's own bits, the gaps untouched."""
    B, H, D, M, n = 1, 8, 64, 64, 5
    rng = np.random.default_rng(43)
    q, k = rng.standard_normal((2, B, H, n, D)).astype(np.float32) * 0.5
    v = rng.standard_normal((B, H, n, M)).astype(np.float32)
    own, shared = performer.LinearDecoder(B, H, D, M), performer.LinearDecoder(B, H, D, M)
    s_buffer = np.full((B, H + 1, D + 3, M + 16), 7.0, np.float32)
    z_buffer = np.full((B, H, 3 * D), 7.0, np.float32)
    S, z = s_buffer[:, :H, :D, 8:8 + M], z_buffer[:, :, ::3]
    S[...], z[...] = 0, 0
    out = np.empty((B, H, M), np.float32)
    for t in range(n):
        expected = own.step(q[:, :, t], k[:, :, t], v[:, :, t])
        shared.step(q[:, :, t], k[:, :, t], v[:, :, t], out, state=(S, z))
        assert np.array_equal(out, expected)
    own_S, own_z = own.state
    assert np.array_equal(S, own_S) and np.array_equal(z, own_z)
    s_gaps = np.ones(s_buffer.shape, bool)
    s_gaps[:, :H, :D, 8:8 + M] = False
    z_gaps = np.ones(z_buffer.shape, bool)
    z_gaps[:, :, ::3] = False
    assert (s_buffer[s_gaps] == 7).all() and (z_buffer[z_gaps] == 7).all()


def test_decoder_caller_state_overlapping_output():
    """out inside S, or z inside S: refused naming both, nothing written."""
    dec = performer.LinearDecoder(1, 2, 3, 4)
    q, v = np.ones((1, 2, 3), np.float32), np.ones((1, 2, 4), np.float32)
    S, z = np.zeros((1, 2, 3, 4), np.float32), np.zeros((1, 2, 3), np.float32)
    with pytest.raises(ValueError, match="output out overlaps output S"):
        dec.step(q, q, v, S[:, :, 0, :], state=(S, z))
    with pytest.raises(ValueError, match="output S overlaps output z"):
        dec.step(q, q, v, state=(S, S[:, :, :, 0]))
    assert not S.any() and not z.any()


def test_decoder_state_arrays_own_their_memory():
    dec = performer.LinearDecoder(2, 3, 4, 5, dtype="float64")
    s0, z0 = state(2, 3, 4, 5)
    dec.set_state(s0, z0)
    S, z = dec.state
    for array, expected in ((S, s0), (z, z0)):
        assert array.flags.owndata and array.flags.c_contiguous and array.flags.writeable
        assert array.dtype == np.float64 and np.array_equal(array, expected)
    half = performer.LinearDecoder(1, 2, 3, 4, dtype="float16")
    assert [a.dtype for a in half.state] == [np.float32, np.float32]
    fd = performer.FavorDecoder(performer.FavorProjection(4, 6, seed=1), 1, 2, 5)
    S, z, c = fd.state
    assert S.shape == (1, 2, 6, 5) and z.shape == c.shape == (1, 2, 6)
    assert all(a.flags.owndata and a.dtype == np.float32 for a in (S, z, c))


def test_decoder_caller_state_errors():
    dec = performer.LinearDecoder(1, 2, 3, 4)
    q = np.ones((1, 2, 3), np.float32)
    v = np.ones((1, 2, 4), np.float32)
    S, z = np.zeros((1, 2, 3, 4), np.float32), np.zeros((1, 2, 3), np.float32)
    with pytest.raises(TypeError, match="state must be a pair"):
        dec.step(q, q, v, state=S)
    with pytest.raises(ValueError, match=r"S.shape\[3\] = 5"):
        dec.step(q, q, v, state=(np.zeros((1, 2, 3, 5), np.float32), z))
    with pytest.raises(TypeError, match="z has dtype float64"):
        dec.step(q, q, v, state=(S, z.astype(np.float64)))
    with pytest.raises(ValueError, match="z"):
        dec.step(q, q, v, state=(S, S.reshape(-1)[:6].reshape(1, 2, 3)))
    frozen = S.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="S"):
        dec.step(q, q, v, state=(frozen, z))
    assert not S.any() and not z.any()


def test_decoder_state_copy_speed(capsys):
    """get/set of a B=1, H=8, 64 x 64 state: one block copy each (printed beside NumPy's copy)."""
    dec = performer.LinearDecoder(1, 8, 64, 64)
    S, z = np.ones((1, 8, 64, 64), np.float32), np.ones((1, 8, 64), np.float32)
    results = {}
    for name, call in (("state", lambda: dec.state), ("set_state", lambda: dec.set_state(S, z)),
                       ("numpy copy", lambda: (S.copy(), z.copy()))):
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(2000):
                call()
            best = min(best, (time.perf_counter() - start) / 2000 * 1e6)
        results[name] = best
    with capsys.disabled():
        print("\nLinearDecoder state (B=1, H=8, 64 x 64, float32): get %.2f us, set %.2f us, numpy copy %.2f us"
              % (results["state"], results["set_state"], results["numpy copy"]))
    assert results["state"] < 1000 and results["set_state"] < 1000


# ---------------------------------------------------------------------------------------------
# Strided inputs
# ---------------------------------------------------------------------------------------------

def test_strided_inputs():
    q, k, v = inputs(N=7, seed=13)
    ref = performer.linear_attention(q, k, v, causal=True, kv_lengths=[5, 7])
    # B x N x H x D buffers seen as B x H x N x D, and reversed/negatively strided copies.
    qt = np.ascontiguousarray(q.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    kt = np.ascontiguousarray(k[:, :, ::-1])[:, :, ::-1]
    vt = np.asfortranarray(v)
    assert not qt.flags.c_contiguous and kt.strides[2] < 0
    out = performer.linear_attention(qt, kt, vt, causal=True, kv_lengths=[5, 7])
    assert rel_err(out, ref) <= 1e-12
    # Strided states.
    s0, z0 = state(seed=14)
    s0t = np.asfortranarray(s0)
    z0t = np.repeat(z0, 2, axis=2)[:, :, ::2]      # stride 2 along C
    a = performer.linear_attention(q, k, v, causal=True, initial_state=(s0, z0))
    b = performer.linear_attention(qt, kt, vt, causal=True, initial_state=(s0t, z0t))
    assert rel_err(b, a) <= 1e-12
    # Decoder tokens: q[:, :, t] of a 4-D array is already a strided view.
    dec = performer.LinearDecoder(2, 4, 5, 3, key_heads=2, dtype="float64")
    steps = np.stack([dec.step(qt[:, :, t], kt[:, :, t], vt[:, :, t]) for t in range(7)], 2)
    assert rel_err(steps, performer.linear_attention(q, k, v, causal=True)) <= 1e-12


def test_memoryview_inputs():
    q, k, v = inputs(B=1, H=2, Hk=2, N=3, D=2, M=2, dtype=np.float32)
    views = [memoryview(x) for x in (q, k, v)]
    assert rel_err(performer.linear_attention(*views), performer.linear_attention(q, k, v)) == 0


# ---------------------------------------------------------------------------------------------
# Errors name the argument
# ---------------------------------------------------------------------------------------------

def _expect(error, match, call):
    with pytest.raises(error, match=match):
        call()


def test_forward_errors():
    q, k, v = inputs()
    s0, z0 = state()
    f = performer.linear_attention
    _expect(ValueError, "feature_map", lambda: f(q, k, v, feature_map="gelu"))
    _expect(TypeError, "feature_map", lambda: f(q, k, v, feature_map=1))
    _expect(TypeError, "eps", lambda: f(q, k, v, eps="small"))
    _expect(TypeError, "eps", lambda: f(q, k, v, eps=None))
    _expect(ValueError, "eps = -1", lambda: f(q, k, v, eps=-1))
    _expect(ValueError, "eps = nan", lambda: f(q, k, v, eps=float("nan")))
    _expect(TypeError, "k has dtype float32", lambda: f(q, k.astype(np.float32), v))
    _expect(TypeError, "q has dtype int64", lambda: f(q.astype(np.int64), k, v))
    _expect(ValueError, "v must have 4 dimensions", lambda: f(q, k, v[0]))
    _expect(ValueError, r"k.shape\[3\] = 4 but q.shape\[3\] = 5", lambda: f(q, k[..., :4], v))
    _expect(ValueError, "as many queries as keys", lambda: f(q, k[:, :, :5], v[:, :, :5], causal=True))
    _expect(ValueError, "kv_lengths has 3 entries", lambda: f(q, k, v, kv_lengths=[1, 2, 3]))
    _expect(ValueError, r"kv_lengths\[1\] = 7", lambda: f(q, k, v, kv_lengths=[1, 7]))
    _expect(TypeError, "initial_state must be a pair", lambda: f(q, k, v, causal=True, initial_state=s0))
    _expect(ValueError, r"initial_state\[0\] \(S\) has shape \(2, 4, 5, 2\)",
            lambda: f(q, k, v, causal=True, initial_state=(s0[..., :2], z0)))
    _expect(ValueError, r"initial_state\[1\] \(z\) must have 3 dimensions",
            lambda: f(q, k, v, causal=True, initial_state=(s0, z0[..., None])))
    _expect(TypeError, r"initial_state\[1\] \(z\) has dtype float32",
            lambda: f(q, k, v, causal=True, initial_state=(s0, z0.astype(np.float32))))


def test_backward_errors():
    q, k, v = inputs()
    s0, z0 = state()
    dout = np.ones((2, 4, 6, 3))
    b = performer.linear_attention_backward
    _expect(ValueError, "dout has shape", lambda: b(q, k, v, dout[:, :, :5]))
    _expect(TypeError, "dout has dtype float32", lambda: b(q, k, v, dout.astype(np.float32)))
    _expect(ValueError, r"dstate\[0\] \(S\) has shape", lambda: b(q, k, v, dout, causal=True, dstate=(s0[:1], z0)))
    _expect(ValueError, "feature_map", lambda: b(q, k, v, dout, feature_map="ELU"))
    _expect(ValueError, "eps = -0.5", lambda: b(q, k, v, dout, eps=-0.5))


def test_decoder_errors():
    D = performer.LinearDecoder
    _expect(TypeError, "batch must be an int", lambda: D("1", 2, 3, 4))
    _expect(TypeError, "value_dim must be an int", lambda: D(1, 2, 3, 4.0))
    _expect(ValueError, "key_heads = 3", lambda: D(1, 4, 3, 4, key_heads=3))
    _expect(ValueError, "head dim must be at least 1", lambda: D(1, 4, 0, 4))
    _expect(ValueError, "batch = -1", lambda: D(-1, 4, 3, 4))
    _expect(TypeError, "dtype", lambda: D(1, 4, 3, 4, dtype="int32"))
    _expect(TypeError, "dtype", lambda: D(1, 4, 3, 4, dtype="no such dtype"))
    _expect(ValueError, "feature_map", lambda: D(1, 4, 3, 4, feature_map="softmax"))
    _expect(ValueError, "eps = -1", lambda: D(1, 4, 3, 4, eps=-1))
    _expect(ValueError, "fit in 64 bits", lambda: D(1, 1, 1, 2 ** 62))
    _expect(ValueError, "does not fit in 64 bits", lambda: D(2 ** 64, 1, 1, 1))

    dec = D(2, 4, 5, 3, key_heads=2)
    q = np.zeros((2, 4, 5), np.float32)
    k = np.zeros((2, 2, 5), np.float32)
    v = np.zeros((2, 2, 3), np.float32)
    dec.step(q, k, v)
    before = dec.state
    _expect(TypeError, "q has dtype float64 but the decoder has float32", lambda: dec.step(q.astype(np.float64), k, v))
    _expect(ValueError, "q must have 3 dimensions", lambda: dec.step(q[:, :, None], k, v))
    _expect(ValueError, r"k.shape\[1\] = 4", lambda: dec.step(q, q, v))
    _expect(ValueError, r"v.shape\[3\] = 2", lambda: dec.step(q, k, v[..., :2]))
    _expect(ValueError, "out", lambda: dec.step(q, k, v, np.zeros((2, 4, 3), np.float32)[::-1, :, :2]))
    _expect(ValueError, "out: ", lambda: dec.step(q, k, v, _read_only((2, 4, 3))))
    _expect(TypeError, "q must be a float32 or float64 array", lambda: dec.step([[0.0]], k, v))
    _expect(ValueError, "as many queries as keys", lambda: dec.prefill(q[:, :, None], k[:, :, None].repeat(2, 2),
                                                                       v[:, :, None].repeat(2, 2)))
    _expect(TypeError, "state must be a pair", lambda: setattr(dec, "state", q))
    _expect(ValueError, r"S.shape\[2\] = 4", lambda: dec.set_state(np.zeros((2, 4, 4, 3), np.float32),
                                                                   np.zeros((2, 4, 4), np.float32)))
    _expect(TypeError, "z has dtype float64", lambda: dec.set_state(before[0], before[1].astype(np.float64)))
    s, z = dec.state
    assert np.array_equal(s, before[0]) and np.array_equal(z, before[1]), "a failed call changed the state"


def _read_only(shape):
    a = np.zeros(shape, np.float32)
    a.setflags(write=False)
    return a


def test_no_reference_leaks_or_exports_on_errors():
    q, k, v = inputs(dtype=np.float32)
    views = [memoryview(bytearray(x.tobytes())).cast("f", shape=list(x.shape)) for x in (q, k, v)]
    s0, z0 = (x.astype(np.float32) for x in state())
    dec = performer.LinearDecoder(2, 4, 5, 3, key_heads=2)
    calls = [
        (ValueError, lambda: performer.linear_attention(*views, eps=-1)),
        (ValueError, lambda: performer.linear_attention(*views, causal=True, initial_state=(s0[:1], z0))),
        (ValueError, lambda: performer.linear_attention(*views, causal=True, kv_lengths=[9, 9])),
        (TypeError, lambda: dec.step(views[0][:, :, 0], views[1][:, :, 0], q[:, :, 0].astype(np.float64))),
        (ValueError, lambda: dec.step(q[:, :, 0], q[:, :, 0], v[:, :, 0])),
    ]
    for error, call in calls:
        with pytest.raises(error):
            call()
    tracked = [q, k, v, s0, z0, dec] + views
    gc.collect()
    before = [sys.getrefcount(x) for x in tracked]
    for _ in range(100):
        for error, call in calls:
            try:
                call()
            except error:
                pass
    gc.collect()
    assert [sys.getrefcount(x) for x in tracked] == before
    for view in views:
        view.release()    # BufferError if an export was left behind


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_decoders_are_freed():
    # Each decoder holds 8 x 64 x 128 doubles (512 KiB): 600 leaked ones would be ~300 MiB.
    for _ in range(20):
        performer.LinearDecoder(1, 8, 64, 128, dtype="float64").step(
            np.zeros((1, 8, 64)), np.zeros((1, 8, 64)), np.zeros((1, 8, 128)))
    gc.collect()
    start = _rss_bytes()
    for _ in range(600):
        dec = performer.LinearDecoder(1, 8, 64, 128, dtype="float64")
        dec.step(np.zeros((1, 8, 64)), np.zeros((1, 8, 64)), np.zeros((1, 8, 128)))
        del dec
    gc.collect()
    assert _rss_bytes() - start < 64 * 2 ** 20


def test_decoder_subclass_and_cycles_are_collected():
    import weakref

    dec = performer.LinearDecoder(1, 1, 2, 2)
    dec.self_reference = dec      # a cycle through the instance dict
    ref = weakref.ref(dec)
    del dec
    gc.collect()
    assert ref() is None


# ---------------------------------------------------------------------------------------------
# Threads: the GIL is released; distinct decoders run concurrently
# ---------------------------------------------------------------------------------------------

def test_gil_released_in_linear_attention():
    rng = np.random.default_rng(0)

    def backward_call(n):
        q = rng.standard_normal((1, 8, n, 64)).astype(np.float32)
        return lambda: performer.linear_attention_backward(q, q, q, q, causal=True)

    assert_gil_released(backward_call, [4096 << i for i in range(7)])


def test_distinct_decoders_in_threads():
    q, k, v = inputs(B=1, H=8, Hk=4, N=50, D=16, M=12, dtype=np.float32, seed=15)

    def decode():
        dec = performer.LinearDecoder(1, 8, 16, 12, key_heads=4)
        return np.stack([dec.step(q[:, :, t], k[:, :, t], v[:, :, t]) for t in range(50)], 2)

    serial = decode()
    results = [None] * 6

    def worker(i):
        results[i] = decode()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        assert np.array_equal(r, serial)


# ---------------------------------------------------------------------------------------------
# Speed of a decoder step through Python (printed; the assertion is only a sanity bound)
# ---------------------------------------------------------------------------------------------

def test_decoder_step_speed(capsys):
    B, H, D, M = 1, 8, 64, 64
    rng = np.random.default_rng(16)
    q, k = (rng.standard_normal((B, H, D)).astype(np.float32) for _ in range(2))
    v = rng.standard_normal((B, H, M)).astype(np.float32)
    out = np.empty((B, H, M), np.float32)
    dec = performer.LinearDecoder(B, H, D, M)
    results = {}
    for name, call in (("new output", lambda: dec.step(q, k, v)), ("out=", lambda: dec.step(q, k, v, out))):
        for _ in range(500):
            call()
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(2000):
                call()
            best = min(best, (time.perf_counter() - start) / 2000 * 1e6)
        results[name] = best
    with capsys.disabled():
        print("\nLinearDecoder.step (float32, B=1, H=8, D=M=64): %.2f us/token (new output), %.2f us/token "
              "(out=)" % (results["new output"], results["out="]))
    assert results["out="] < 1000


# ---------------------------------------------------------------------------------------------
# The example runs and checks itself; the API is exported and documented
# ---------------------------------------------------------------------------------------------

def test_linear_api_exported():
    for name in ("linear_attention", "linear_attention_backward", "LinearDecoder"):
        assert name in performer.__all__ and getattr(performer, name).__doc__
    for method in ("step", "prefill", "reset", "set_state"):
        assert getattr(performer.LinearDecoder, method).__doc__
    package = os.path.dirname(os.path.abspath(performer.__file__))
    with open(os.path.join(package, "__init__.pyi")) as f:
        stubs = f.read()
    assert "def linear_attention(" in stubs and "class LinearDecoder" in stubs


def test_linear_example_runs():
    result = run_example("linear_decode.py")
    assert result.returncode == 0, result.stdout.decode()
    assert b"ok" in result.stdout


def test_docs_example_runs():
    import re

    with open(os.path.join(REPO, "docs", "LINEAR.md")) as f:
        example = re.findall(r"```python\n(.*?)```", f.read(), re.S)[0]
    exec(compile(example, "docs/LINEAR.md", "exec"), {})

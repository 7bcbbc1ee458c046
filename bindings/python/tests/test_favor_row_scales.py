"""favor_attention(return_row_scales=True): the row units U_i and scaled denominators den_i
of the FAVOR+ forward (docs/FAVOR.md section 4). The output is unchanged bit for bit;
den_i * e^{U_i} is the float64 denominator; U_i bounds a_f(q_i) + c0_f for the initial triple;
and the initial triple's gradient formed from the queries with them (docs/DISTRIBUTED.md)
equals the backward's, at moderate norms and at norms of 30, causal and not, every kind."""

import math

import numpy as np
import pytest

import performer
from test_favor import KINDS, norm_30, phi, qkv, rng


def exponents(x, W, scale=None):
    """(a_f for the exponential kinds: u - n/2 then -u - n/2, n/2) of every row, float64."""
    x = np.asarray(x, dtype=np.float64)
    s = 1 / math.sqrt(x.shape[-1]) if scale is None else scale
    xh = x * math.sqrt(s)
    u = xh @ W.T
    half = (xh * xh).sum(-1, keepdims=True) / 2
    return u, half


def scaled_query_features(q, W, kind, c0, U):
    """Q~'_if = phi_f(q_i) e^{c0_f - U_i}, formed without phi itself (it under/overflows)."""
    m = W.shape[0]
    u, half = exponents(q, W)
    Uc = U.astype(np.float64)[..., None]
    c0 = c0.astype(np.float64)[:, :, None, :]
    if kind == "positive":
        return np.exp(u - half + c0 - Uc) / math.sqrt(m)
    if kind == "hyperbolic":
        a = np.concatenate([u - half, -u - half], -1)
        return np.exp(a + c0 - Uc) / math.sqrt(2 * m)
    if kind == "trigonometric":
        return np.exp(half + c0 - Uc) / math.sqrt(m) * np.concatenate([np.sin(u), np.cos(u)], -1)
    return phi(q, W, kind) * np.exp(c0 - Uc)


def query_side_gradient(q, W, kind, c0, U, den, out, dout):
    """(dS~0, dz~0) = (sum_i Q~'_i g_i^T, -sum_i Q~'_i (g_i . o_i)), g_i = dout_i / den_i."""
    den = den.astype(np.float64)
    safe = np.where(den == 0, 1.0, den)
    g = np.where((den == 0)[..., None], 0.0, dout.astype(np.float64) / safe[..., None])
    qt = scaled_query_features(q, W, kind, c0, U)
    go = (g * out.astype(np.float64)).sum(-1)
    return np.einsum("bhnc,bhnm->bhcm", qt, g), -np.einsum("bhnc,bhn->bhc", qt, go)


def problem(kind, dtype, large, seed=71, N=37):
    """q, k, v of N rows and an initial triple from 19 earlier keys (favor_state, H heads)."""
    B, H, Hk, D, M, m = 2, 4, 2, 8, 3, 6
    p = performer.FavorProjection(D, m, seed=seed)
    q, k, v = qkv(seed + 1, B, H, Hk, N, N, D, M, np.float64)
    _, kp, vp = qkv(seed + 2, B, H, Hk, 19, 19, D, M, np.float64)
    if large:
        q, k, v = norm_30(q, k, v, np.float64)
        _, kp, vp = norm_30(q, kp, vp, np.float64)
    q, k, v, kp, vp = (x.astype(dtype) for x in (q, k, v, kp, vp))
    st0 = performer.favor_state(kp, vp, p, features=kind, heads=H)
    return p, q, k, v, st0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("causal", [False, True])
def test_outputs_unchanged_bit_for_bit(kind, dtype, causal):
    p, q, k, v, st0 = problem(kind, dtype, False)
    want, want_state = performer.favor_attention(q, k, v, p, causal=causal, features=kind, eps=1e-3,
                                                 initial_state=st0, return_state=True)
    got, got_state, (U, den) = performer.favor_attention(q, k, v, p, causal=causal, features=kind, eps=1e-3,
                                                         initial_state=st0, return_state=True,
                                                         return_row_scales=True)
    np.testing.assert_array_equal(got, want)
    for a, b in zip(got_state, want_state):
        np.testing.assert_array_equal(a, b)
    state_dtype = np.float32 if dtype == np.float16 else dtype
    assert U.shape == den.shape == q.shape[:3] and U.dtype == den.dtype == state_dtype
    assert np.isfinite(U).all() and np.isfinite(den).all()
    assert kind == "trigonometric" or (den > 0).all()
    only, (U2, den2) = performer.favor_attention(q, k, v, p, causal=causal, features=kind, eps=1e-3,
                                                 initial_state=st0, return_row_scales=True)
    np.testing.assert_array_equal(only, want)
    np.testing.assert_array_equal(U2, U)
    np.testing.assert_array_equal(den2, den)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_denominator_and_unit_bound(kind, dtype, causal):
    """den_i e^{U_i} = sum_j phi(q_i).phi(k_j) + phi(q_i).z0 + eps in float64; U_i >= a_f(q_i) + c0_f."""
    eps = 1e-3
    p, q, k, v, (S0, z0, c0) = problem(kind, dtype, False)
    _, (U, den) = performer.favor_attention(q, k, v, p, causal=causal, features=kind, eps=eps,
                                            initial_state=(S0, z0, c0), return_row_scales=True)
    W = p.matrix
    H, Hk = q.shape[1], k.shape[1]
    fq = phi(q, W, kind)
    fk = phi(np.repeat(k, H // Hk, axis=1), W, kind)
    a = np.einsum("bhnc,bhlc->bhnl", fq, fk)
    if causal:
        a = np.tril(a)
    z0_math = np.exp(c0.astype(np.float64)) * z0
    want = a.sum(-1) + np.einsum("bhnc,bhc->bhn", fq, z0_math) + eps
    got = den.astype(np.float64) * np.exp(U.astype(np.float64))
    # Trigonometric terms have either sign: judge against the sum of their magnitudes.
    size = np.abs(a).sum(-1) + np.einsum("bhnc,bhc->bhn", np.abs(fq), np.abs(z0_math)) + eps
    tol = 1e-12 if dtype == np.float64 else 2e-5
    assert (np.abs(got - want) <= tol * size).all()
    # U_i bounds every scaled feature of the initial triple: e^{a_f + c0_f - U_i} <= 1.
    qt = scaled_query_features(q, W, kind, c0, U)
    nu = 1 / math.sqrt(2 * W.shape[0]) if kind == "hyperbolic" else 1 / math.sqrt(W.shape[0])
    if kind in ("positive", "hyperbolic"):
        assert qt.max() <= nu * (1 + 1e-5)
    if kind == "trigonometric":
        assert np.abs(qt).max() <= nu * (1 + 1e-5)


# Large norms (|q| ~ 30) only for the exponential kinds: relu features do not overflow, and
# trigonometric ones have no stable form there.
@pytest.mark.parametrize("kind,large", [(kind, False) for kind in KINDS] + [("positive", True), ("hyperbolic", True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_query_side_gradient_equals_backward(kind, large, dtype, causal):
    """The initial triple's gradient from the queries, U and den equals the backward's dS0, dz0."""
    eps = 0.0 if large else 1e-3  # at norm 30 every phi(q).phi(k) is ~e^-100: eps would zero every row
    p, q, k, v, st0 = problem(kind, dtype, large)
    out, (U, den) = performer.favor_attention(q, k, v, p, causal=causal, features=kind, eps=eps,
                                              initial_state=st0, return_row_scales=True)
    dout = rng(5).standard_normal(out.shape).astype(dtype)
    _, _, _, (dS0, dz0) = performer.favor_attention_backward(q, k, v, dout, p, causal=causal, features=kind,
                                                            eps=eps, initial_state=st0)
    assert (den != 0).all()  # every row sees a key and gives an output
    gS, gz = query_side_gradient(q, p.matrix, kind, st0[2], U, den, out, dout)
    assert np.isfinite(gS).all() and np.isfinite(gz).all()
    tol = 1e-10 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(gS, dS0, rtol=tol, atol=tol * np.abs(dS0).max())
    np.testing.assert_allclose(gz, dz0, rtol=tol, atol=tol * np.abs(dz0).max())


def test_large_norms_finite_and_rows_without_keys():
    """|q| = |k| = 30 in float32: finite U and den > 0; a row that sees no key gets den 0, U -inf."""
    p, q, k, v, _ = problem("positive", np.float32, True)
    _, (U, den) = performer.favor_attention(q, k, v, p, causal=True, return_row_scales=True)
    assert np.isfinite(U).all() and np.isfinite(den).all() and (den > 0).all()
    out, (U, den) = performer.favor_attention(q, k, v, p, kv_lengths=[0, 5], return_row_scales=True)
    assert (den[0] == 0).all() and (U[0] == -np.inf).all() and (out[0] == 0).all()
    assert (den[1] > 0).all()


def test_errors_name_the_argument():
    p, q, k, v, _ = problem("positive", np.float64, False)
    B, H, N = q.shape[:3]
    with pytest.raises(ValueError, match="row_units"):
        performer.favor_attention(q, k, v, p, row_scales=(np.empty((B, H, N + 1)), np.empty((B, H, N))))
    with pytest.raises(ValueError, match="row_denominators"):
        performer.favor_attention(q, k, v, p, row_scales=(np.empty((B, H, N)), np.empty((B, H - 1, N))))
    with pytest.raises(TypeError, match="row_units"):
        performer.favor_attention(q, k, v, p, row_scales=(np.empty((B, H, N), np.float32), np.empty((B, H, N))))
    with pytest.raises(TypeError, match="row_scales"):
        performer.favor_attention(q, k, v, p, row_scales=(np.empty((B, H, N)),))
    out = np.empty((B, H, N, v.shape[3]))
    scales = np.zeros((2, B, H, N))
    with pytest.raises(ValueError, match="overlaps"):
        performer.favor_attention(q, k, v, p, out=out, row_scales=(scales[0], scales[0]))
    np.testing.assert_array_equal(scales, 0)  # nothing written on error

"""FAVOR+ state-only calls (favor_state, favor_state_backward) through the installed package:
the state equals a causal favor_attention's final state over the same keys (every feature
kind, initial state, GQA with Hs = H and Hs = Hk, key lengths and starts, norms of 30), the
backward against finite differences in float64, and argument errors."""

import numpy as np
import pytest

import performer
from helpers import numeric_grad
from test_favor import KINDS, norm_30, phi, qkv, rng


def feature_count(kind, m):
    return 2 * m if kind in ("hyperbolic", "trigonometric") else m


def causal_final_state(q, k, v, p, kind, initial_state=None, **keys):
    """The final state (S~, z~, c) of a causal favor_attention over all of k, v (H = q's heads)."""
    _, st = performer.favor_attention(q, k, v, p, causal=True, features=kind, initial_state=initial_state,
                                      return_state=True, **keys)
    return st


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("large", [False, True])
def test_state_equals_causal_final_state(kind, dtype, large):
    if large and kind == "relu":
        pytest.skip("relu features do not overflow")
    B, H, Hk, N, D, M, m = 2, 4, 2, 11, 8, 3, 6
    p = performer.FavorProjection(D, m, seed=3)
    q, k, v = qkv(61, B, H, Hk, N, N, D, M, np.float64)
    if large:
        q, k, v = norm_30(q, k, v, np.float64)
    q, k, v = (x.astype(dtype) for x in (q, k, v))
    keys = dict(kv_lengths=[N, 8], kv_starts=[2, 0])
    tol = 1e-10 if dtype == np.float64 else 1e-4
    want = causal_final_state(q, k, v, p, kind, **keys)
    got = performer.favor_state(k, v, p, features=kind, heads=H, **keys)
    assert [x.shape for x in got] == [(B, H, feature_count(kind, m), M)] + [(B, H, feature_count(kind, m))] * 2
    np.testing.assert_array_equal(got[2], want[2])
    for a, b in zip(got[:2], want[:2]):
        assert a.dtype == dtype and np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())
    # From an initial state (the state of a prefix): the causal forward continuing from it.
    st0 = causal_final_state(q, k[:, :, ::-1].copy(), v, p, kind)
    want = causal_final_state(q, k, v, p, kind, initial_state=st0, **keys)
    got = performer.favor_state(k, v, p, features=kind, initial_state=st0, **keys)
    np.testing.assert_array_equal(got[2], want[2])
    for a, b in zip(got[:2], want[:2]):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())
    # Hs = Hk (the default without an initial state): one state per key head, shared by its group.
    per_key = performer.favor_state(k, v, p, features=kind, **keys)
    per_query = performer.favor_state(k, v, p, features=kind, heads=H, **keys)
    for a, b in zip(per_key, per_query):
        assert a.shape[1] == Hk
        np.testing.assert_array_equal(np.repeat(a, H // Hk, axis=1), b)


def test_state_is_the_mathematical_sum():
    B, Hk, L, D, M, m = 1, 2, 9, 4, 3, 8
    p = performer.FavorProjection(D, m, seed=4)
    _, k, v = qkv(62, B, Hk, Hk, L, L, D, M, np.float64)
    S, z, c = performer.favor_state(k, v, p, kv_lengths=[7])
    fk = phi(k[:, :, :7], p.matrix, "positive")
    np.testing.assert_allclose(np.exp(c)[..., None] * S, np.einsum("bhlc,bhlm->bhcm", fk, v[:, :, :7]), rtol=1e-12)
    np.testing.assert_allclose(np.exp(c) * z, fk.sum(2), rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("heads", [1, 2])
def test_state_backward_matches_finite_differences(kind, heads):
    B, Hk, L, D, M, m = 2, 1, 5, 3, 2, 4
    p = performer.FavorProjection(D, m, seed=5)
    _, k, v = qkv(63, B, Hk, Hk, L, L, D, M, np.float64)
    g = rng(64)
    C = feature_count(kind, m)
    ws, wz = g.standard_normal((B, heads, C, M)), g.standard_normal((B, heads, C))
    keys = dict(kv_lengths=[5, 4], kv_starts=[1, 0])
    st0 = performer.favor_state(k[:, :, ::-1].copy(), v, p, features=kind, heads=heads)
    st0 = [x.copy() for x in st0]
    _, _, c_ref = performer.favor_state(k, v, p, features=kind, initial_state=st0, **keys)

    def loss():
        # The mathematical state, rescaled by the base point's shift (held fixed).
        S, z, c = performer.favor_state(k, v, p, features=kind, initial_state=st0, **keys)
        scale = np.exp(c - c_ref)
        return float((ws * S * scale[..., None]).sum() + (wz * z * scale).sum())

    dk, dv, (ds0, dz0) = performer.favor_state_backward(k, v, p, ws, wz, features=kind, initial_state=st0, **keys)
    for got, x in ((dk, k), (dv, v), (ds0, st0[0]), (dz0, st0[1])):
        want = numeric_grad(loss, x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(want).max()))
    # Without an initial state: (dk, dv) only.
    _, _, c_ref = performer.favor_state(k, v, p, features=kind, heads=heads, **keys)

    def loss0():
        S, z, c = performer.favor_state(k, v, p, features=kind, heads=heads, **keys)
        scale = np.exp(c - c_ref)
        return float((ws * S * scale[..., None]).sum() + (wz * z * scale).sum())

    dk, dv = performer.favor_state_backward(k, v, p, ws, wz, features=kind, **keys)
    for got, x in ((dk, k), (dv, v)):
        want = numeric_grad(loss0, x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * max(1.0, np.abs(want).max()))


def test_state_errors():
    p = performer.FavorProjection(4, 3, seed=1)
    _, k, v = qkv(65, 1, 2, 2, 5, 5, 4, 2, np.float64)
    with pytest.raises(ValueError, match="k.shape\\[3\\] = 5"):
        performer.favor_state(np.zeros((1, 2, 5, 5)), v, p)
    with pytest.raises(ValueError, match="S_out.shape\\[1\\] = 3"):
        performer.favor_state(k, v, p, heads=3)
    S, z, c = performer.favor_state(k, v, p)
    with pytest.raises(ValueError, match="c0\\[0, 0, 0\\]"):
        performer.favor_state(k, v, p, initial_state=(S, z, np.full_like(c, np.nan)))
    with pytest.raises(ValueError, match="kv_lengths"):
        performer.favor_state(k, v, p, kv_lengths=[9])

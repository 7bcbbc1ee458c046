"""Linear attention's un-normalized product (normalize=False, return_denominators) and the
state-only calls (linear_state, linear_state_backward), plus non-causal calls against a memory
state, through the installed package: against a float64 NumPy reference with explicit N x L
matrices and finite differences."""

import numpy as np
import pytest

import performer
from helpers import numeric_grad
from test_linear import FEATURE_MAPS, inputs, phi, rel_err, state


def numerator(q, k, v, causal=False, feature_map="elu+1", kv_lengths=None, initial_state=None):
    """(sum_j (phi(q_i).phi(k_j)) v_j + phi(q_i)^T S0, phi(q_i)^T z) in float64, written directly."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    B, H, N, D = q.shape
    group = H // k.shape[1]
    L, M = k.shape[2], v.shape[3]
    fq = phi(q, feature_map)
    fk = phi(np.repeat(k, group, axis=1), feature_map)
    vv = np.repeat(v, group, axis=1)
    mask = np.ones((B, 1, N, L), dtype=bool)
    if causal:
        mask &= (np.arange(L)[None, :] <= np.arange(N)[:, None])[None, None]
    if kv_lengths is not None:
        mask &= (np.arange(L)[None, :] < np.asarray(kv_lengths)[:, None])[:, None, None, :]
    a = np.where(mask, np.einsum("bhnd,bhld->bhnl", fq, fk), 0.0)
    num, den = a @ vv, a.sum(-1)
    if initial_state is not None:
        num = num + fq @ np.asarray(initial_state[0], dtype=np.float64)
        den = den + np.einsum("bhnd,bhd->bhn", fq, np.asarray(initial_state[1], dtype=np.float64))
    return num, den


def key_state(k, v, heads, feature_map="elu+1", kv_lengths=None, initial_state=None):
    """S, z of the keys for `heads` state heads, in float64."""
    k, v = np.asarray(k, dtype=np.float64), np.asarray(v, dtype=np.float64)
    group = heads // k.shape[1]
    fk = phi(np.repeat(k, group, axis=1), feature_map)
    if kv_lengths is not None:
        fk = fk * (np.arange(k.shape[2])[None, :] < np.asarray(kv_lengths)[:, None])[:, None, :, None]
    s = np.einsum("bhld,bhlm->bhdm", fk, np.repeat(v, group, axis=1))
    z = fk.sum(2)
    if initial_state is not None:
        s, z = s + initial_state[0], z + initial_state[1]
    return s, z


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_unnormalized_matches_reference(dtype, feature_map, causal, with_state):
    q, k, v = inputs(N=7, L=7 if causal else 9, dtype=dtype, feature_map=feature_map)
    if feature_map == "identity":   # mixed signs: nothing divides
        rng = np.random.default_rng(9)
        q, k = rng.standard_normal(q.shape).astype(dtype), rng.standard_normal(k.shape).astype(dtype)
    init = state(dtype=dtype) if with_state else None
    kv = [k.shape[2] - 2, k.shape[2]]
    out, den = performer.linear_attention(q, k, v, causal=causal, feature_map=feature_map, kv_lengths=kv,
                                          initial_state=init, normalize=False, return_denominators=True)
    num, ref_den = numerator(q, k, v, causal, feature_map, kv, init)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert den.shape == (2, 4, 7) and den.dtype == dtype
    assert rel_err(out, num) <= tol and rel_err(den, ref_den) <= tol
    # Normalized with the same denominators: out = num / (den + eps).
    normalized, (sn, zn), den2 = performer.linear_attention(
        q, k, v, causal=causal, feature_map=feature_map, kv_lengths=kv, initial_state=init, eps=0.25,
        return_state=True, return_denominators=True)
    assert np.array_equal(den, den2)
    if feature_map != "identity":
        assert rel_err(normalized, num / (ref_den + 0.25)[..., None]) <= tol


@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
@pytest.mark.parametrize("causal", [False, True])
def test_unnormalized_gradients_finite_differences(feature_map, causal):
    B, H, Hk, N, D, M = 2, 4, 2, 5, 3, 2
    rng = np.random.default_rng(11)
    q, k = rng.standard_normal((B, H, N, D)), rng.standard_normal((B, Hk, N if causal else 6, D))
    v = rng.standard_normal((B, Hk, k.shape[2], M))
    kv = [k.shape[2] - 2, k.shape[2]]
    dout = rng.standard_normal((B, H, N, M))
    s0, z0 = state(B, H, D, M, seed=12)

    def loss():
        return (dout * numerator(q, k, v, causal, feature_map, kv, (s0, z0))[0]).sum()

    dq, dk, dv, (ds0, dz0) = performer.linear_attention_backward(
        q, k, v, dout, causal=causal, feature_map=feature_map, kv_lengths=kv, initial_state=(s0, z0),
        normalize=False)
    for name, got, x in (("dq", dq, q), ("dk", dk, k), ("dv", dv, v), ("dS0", ds0, s0)):
        assert rel_err(got, numeric_grad(loss, x)) <= 1e-6, name
    assert np.abs(dz0).max() == 0   # z does not enter the un-normalized output


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("heads", [2, 4])
def test_linear_state_matches_reference_and_causal_final_state(dtype, heads):
    q, k, v = inputs(N=9, dtype=dtype)
    kv = [9, 4]
    init = state(H=heads, dtype=dtype)
    s, z = performer.linear_state(k, v, kv_lengths=kv, initial_state=init)
    rs, rz = key_state(k, v, heads, kv_lengths=kv, initial_state=init)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert s.shape == (2, heads, 5, 3) and z.shape == (2, heads, 5)
    assert rel_err(s, rs) <= tol and rel_err(z, rz) <= tol
    if heads == 4:
        _, (sn, zn) = performer.linear_attention(q, k, v, causal=True, kv_lengths=kv, initial_state=init,
                                                 return_state=True)
        assert rel_err(s, sn) <= tol and rel_err(z, zn) <= tol
    s2, z2 = performer.linear_state(k, v, kv_lengths=kv, heads=heads)
    assert s2.shape == (2, heads, 5, 3)
    assert rel_err(s2, key_state(k, v, heads, kv_lengths=kv)[0]) <= tol


@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
def test_linear_state_backward_finite_differences(feature_map):
    q, k, v = inputs(N=5, D=3, M=2, feature_map=feature_map, seed=2)
    rng = np.random.default_rng(13)
    ws, wz = rng.standard_normal((2, 4, 3, 2)), rng.standard_normal((2, 4, 3))
    init = state(D=3, M=2, seed=14)
    kv = [5, 3]

    def loss():
        s, z = key_state(k, v, 4, feature_map, kv, init)
        return (ws * s).sum() + (wz * z).sum()

    dk, dv, (ds0, dz0) = performer.linear_state_backward(k, v, ws, wz, feature_map=feature_map, kv_lengths=kv,
                                                         initial_state=init)
    assert rel_err(dk, numeric_grad(loss, k)) <= 1e-6
    assert rel_err(dv, numeric_grad(loss, v)) <= 1e-6
    assert np.array_equal(ds0, ws) and np.array_equal(dz0, wz)
    dk2, dv2 = performer.linear_state_backward(k, v, ws, wz, feature_map=feature_map, kv_lengths=kv)
    assert np.array_equal(dk, dk2) and np.array_equal(dv, dv2)


@pytest.mark.parametrize("normalize", [True, False])
def test_memory_equals_concatenated_keys(normalize):
    q, k, v = inputs(N=4, L=150)
    lm = 128
    memory = performer.linear_state(k[:, :, :lm], v[:, :, :lm], heads=4)
    out = performer.linear_attention(q, k[:, :, lm:], v[:, :, lm:], initial_state=memory, normalize=normalize)
    whole = performer.linear_attention(q, k, v, normalize=normalize)
    assert rel_err(out, whole) <= 1e-13
    # L = 0: attention against the memory alone.
    only = performer.linear_attention(q, k[:, :, :0], v[:, :, :0], initial_state=memory, normalize=normalize)
    assert rel_err(only, performer.linear_attention(q, k[:, :, :lm], v[:, :, :lm], normalize=normalize)) <= 1e-13
    # Gradients: the call's, then the memory's through linear_state_backward.
    dout = np.random.default_rng(15).standard_normal(out.shape)
    dq, dk, dv, (ds0, dz0) = performer.linear_attention_backward(
        q, k[:, :, lm:], v[:, :, lm:], dout, initial_state=memory, normalize=normalize)
    dkm, dvm = performer.linear_state_backward(k[:, :, :lm], v[:, :, :lm], ds0, dz0)
    wq, wk, wv = performer.linear_attention_backward(q, k, v, dout, normalize=normalize)
    assert rel_err(dq, wq) <= 1e-12
    assert rel_err(np.concatenate([dkm, dk], axis=2), wk) <= 1e-12
    assert rel_err(np.concatenate([dvm, dv], axis=2), wv) <= 1e-12


def test_state_errors():
    q, k, v = inputs()
    s0, z0 = state()
    with pytest.raises(ValueError, match=r"S_out.shape\[1\] = 3"):
        performer.linear_state(k, v, heads=3)
    with pytest.raises(ValueError, match=r"v.shape\[1\] = 1 but k.shape\[1\] = 2"):
        performer.linear_state(k, v[:, :1])
    with pytest.raises(ValueError, match=r"initial_state\[0\] \(S\) has shape"):
        performer.linear_state(k, v, initial_state=(s0[:, :, :2], z0), heads=4)
    with pytest.raises(ValueError, match=r"dstate\[1\] \(z\) has shape"):
        performer.linear_state_backward(k, v, s0, z0[:, :2])
    with pytest.raises(TypeError, match="v has dtype float32 but k has float64"):
        performer.linear_state(k, v.astype(np.float32))
    with pytest.raises(ValueError, match=r"kv_lengths\[1\] = 9"):
        performer.linear_state(k, v, kv_lengths=[1, 9])


def test_state_api_exported():
    for name in ("linear_state", "linear_state_backward"):
        assert name in performer.__all__ and getattr(performer, name).__doc__

"""Non-causal FAVOR+ against a memory state (cross attention against favor_state's triple), as
linear attention's memory: the output equals one call over the memory's keys followed by the
call's own (float64 materialized reference and the library's one call; every feature kind, GQA,
L = 0, key lengths and starts, memory and call keys of very different norms so that the shifts
c disagree); the final state; gradients of q, k, v and of the memory (S~0, z~0) by finite
differences and through favor_state_backward; an exact in-place final state."""

import numpy as np
import pytest

import performer
from helpers import numeric_grad
from test_favor import KINDS, attention_reference, log_space_reference, qkv, rel, rng


def split(k, v, lm):
    return (k[:, :, :lm], v[:, :, :lm]), (k[:, :, lm:], v[:, :, lm:])


def math_state(triple):
    """The mathematical state (S, z) of a scaled triple, in float64."""
    s, z, c = (np.asarray(x, dtype=np.float64) for x in triple)
    e = np.where(c == -np.inf, 0.0, np.exp(c))
    return e[..., None] * s, e * z


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_memory_equals_concatenated_keys(kind, dtype):
    B, H, Hk, N, L, D, M, m, lm = 2, 4, 2, 5, 13, 8, 3, 12, 8
    p = performer.FavorProjection(D, m, seed=71)
    eps = 0.0 if kind == "trigonometric" else 1e-3
    q, k, v = qkv(72, B, H, Hk, N, L, D, M, dtype)
    (km, vm), (kc, vc) = split(k, v, lm)
    memory = performer.favor_state(km, vm, p, features=kind, heads=H)
    out, final = performer.favor_attention(q, kc, vc, p, features=kind, eps=eps, initial_state=memory,
                                           return_state=True)
    ref = attention_reference(q, k, v, p.matrix, kind, eps=eps)
    tol = 1e-12 if dtype == np.float64 else (1e-4 if kind == "trigonometric" else 2e-5)
    assert out.dtype == dtype and rel(out, ref) <= tol
    whole = performer.favor_attention(q, k, v, p, features=kind, eps=eps)
    assert rel(out, whole.astype(np.float64)) <= tol
    # The final state is the memory plus these keys: the state of all keys.
    want = performer.favor_state(k, v, p, features=kind, heads=H)
    for a, b in zip(math_state(final), math_state(want)):
        assert rel(a, b) <= tol
    # L = 0: attention against the memory alone.
    only = performer.favor_attention(q, kc[:, :, :0], vc[:, :, :0], p, features=kind, eps=eps, initial_state=memory)
    assert rel(only, attention_reference(q, km, vm, p.matrix, kind, eps=eps)) <= tol
    # The mathematical state itself, (S, z, 0), is the same memory.
    S, z = math_state(memory)
    plain = (S.astype(dtype), z.astype(dtype), np.zeros_like(memory[2]))
    again = performer.favor_attention(q, kc, vc, p, features=kind, eps=eps, initial_state=plain)
    assert rel(again, ref) <= tol * 10


@pytest.mark.parametrize("causal_memory", [False, True])
def test_memory_with_key_ranges(causal_memory):
    """kv_starts / kv_lengths of one call over all keys, split between the memory (its own range)
    and the call (the rest of the range); the memory may also come from a causal forward."""
    B, H, N, L, D, M, m, lm = 3, 2, 4, 12, 6, 3, 10, 7
    p = performer.FavorProjection(D, m, seed=73)
    q, k, v = qkv(74, B, H, H, N, L, D, M, np.float64)
    starts, lengths = [0, 3, 9], [12, 10, 11]
    (km, vm), (kc, vc) = split(k, v, lm)
    m_starts = [min(s, lm) for s in starts]
    m_lengths = [min(n, lm) for n in lengths]
    c_starts = [max(s - lm, 0) for s in starts]
    c_lengths = [max(n - lm, 0) for n in lengths]
    if causal_memory:
        _, memory = performer.favor_attention(k[:, :, :lm], km, vm, p, causal=True, kv_starts=m_starts,
                                              kv_lengths=m_lengths, return_state=True)
    else:
        memory = performer.favor_state(km, vm, p, heads=H, kv_starts=m_starts, kv_lengths=m_lengths)
    out = performer.favor_attention(q, kc, vc, p, initial_state=memory, kv_starts=c_starts, kv_lengths=c_lengths)
    whole = performer.favor_attention(q, k, v, p, kv_starts=starts, kv_lengths=lengths)
    assert rel(out, whole) <= 1e-12
    dout = rng(75).standard_normal(out.shape)
    dq, dk, dv, (ds0, dz0) = performer.favor_attention_backward(
        q, kc, vc, dout, p, initial_state=memory, kv_starts=c_starts, kv_lengths=c_lengths)
    wq, wk, wv = performer.favor_attention_backward(q, k, v, dout, p, kv_starts=starts, kv_lengths=lengths)
    assert rel(dq, wq) <= 1e-11
    np.testing.assert_allclose(dk, wk[:, :, lm:], rtol=1e-10, atol=1e-12 * np.abs(wk).max())
    np.testing.assert_allclose(dv, wv[:, :, lm:], rtol=1e-10, atol=1e-12 * np.abs(wv).max())
    if not causal_memory:
        dkm, dvm = performer.favor_state_backward(km, vm, p, ds0, dz0, heads=H, kv_starts=m_starts,
                                                  kv_lengths=m_lengths)
        np.testing.assert_allclose(dkm, wk[:, :, :lm], rtol=1e-10, atol=1e-12 * np.abs(wk).max())
        np.testing.assert_allclose(dvm, wv[:, :, :lm], rtol=1e-10, atol=1e-12 * np.abs(wv).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("memory_norm, call_norm", [(0.5, 30.0), (30.0, 0.5), (30.0, 30.0)])
def test_memory_shift_rescaling_at_large_norms(dtype, memory_norm, call_norm):
    """The memory's c and the call's key shifts differ by hundreds: the output stays the
    function (log-space float64 reference), finite, like one call over all keys."""
    B, H, N, L, D, M, m, lm = 1, 2, 6, 12, 16, 4, 32, 6
    p = performer.FavorProjection(D, m, seed=76)
    q, k, v = qkv(77, B, H, H, N, L, D, M, np.float64)
    k = k / np.linalg.norm(k, axis=-1, keepdims=True)
    k[:, :, :lm] *= memory_norm
    k[:, :, lm:] *= call_norm
    q = q / np.linalg.norm(q, axis=-1, keepdims=True) * 20
    q, k, v = (x.astype(dtype) for x in (q, k, v))
    (km, vm), (kc, vc) = split(k, v, lm)
    memory = performer.favor_state(km, vm, p, heads=H)
    out = performer.favor_attention(q, kc, vc, p, initial_state=memory)
    assert np.isfinite(out).all()
    ref = log_space_reference(q, k, v, p.matrix, False)
    assert rel(out, ref) <= (2e-5 if dtype == np.float32 else 1e-11)
    grads = performer.favor_attention_backward(q, kc, vc, np.ones_like(out), p, initial_state=memory)
    assert all(np.isfinite(x).all() for x in grads[:3]) and all(np.isfinite(x).all() for x in grads[3])


@pytest.mark.parametrize("kind", KINDS)
def test_memory_gradients_finite_differences(kind):
    """dq, dk, dv and (dS~0, dz~0) with c0 held fixed, against central differences of the
    float64 materialized reference on the mathematical memory exp(c0) * (S~0, z~0)."""
    B, H, Hk, N, L, D, M, m = 1, 2, 1, 3, 4, 4, 3, 5
    p = performer.FavorProjection(D, m, seed=78)
    W = p.matrix
    eps = 0.0 if kind == "trigonometric" else 1e-3
    q, k, v = qkv(79, B, H, Hk, N, L, D, M, np.float64)
    _, km, vm = qkv(80, B, H, H, 5, 5, D, M, np.float64)
    S0, z0, c0 = (x.copy() for x in performer.favor_state(km, vm, p, features=kind))
    dout = rng(81).standard_normal((B, H, N, M))
    dq, dk, dv, (dS0, dz0) = performer.favor_attention_backward(q, k, v, dout, p, features=kind, eps=eps,
                                                                initial_state=(S0, z0, c0))
    e = np.exp(c0)

    def loss():
        out = attention_reference(q, k, v, W, kind, eps=eps, initial=(e[..., None] * S0, e * z0))
        return float((dout * out).sum())

    for got, x in ((dq, q), (dk, k), (dv, v), (dS0, S0), (dz0, z0)):
        want = numeric_grad(loss, x)
        assert rel(got, want) <= 1e-6


@pytest.mark.parametrize("kind", ["positive", "trigonometric"])
def test_memory_final_state_gradient_and_in_place(kind):
    """With dstate the backward adds the state's own gradient (= favor_state_backward with the
    memory as its initial state); the final state may be written over the memory."""
    B, H, N, L, D, M, m = 2, 2, 4, 6, 4, 3, 6
    p = performer.FavorProjection(D, m, seed=82)
    q, k, v = qkv(83, B, H, H, N, L, D, M, np.float64)
    _, km, vm = qkv(84, B, H, H, 5, 5, D, M, np.float64)
    memory = performer.favor_state(km, vm, p, features=kind)
    g = rng(85)
    dout = g.standard_normal((B, H, N, M))
    C = memory[0].shape[2]
    ws, wz = g.standard_normal((B, H, C, M)), g.standard_normal((B, H, C))
    dq, dk, dv, (ds0, dz0) = performer.favor_attention_backward(q, k, v, dout, p, features=kind,
                                                                initial_state=memory, dstate=(ws, wz))
    aq, ak, av, (as0, az0) = performer.favor_attention_backward(q, k, v, dout, p, features=kind, initial_state=memory)
    bk, bv, (bs0, bz0) = performer.favor_state_backward(k, v, p, ws, wz, features=kind, initial_state=memory)
    assert rel(dq, aq) <= 1e-13
    for got, want in ((dk, ak + bk), (dv, av + bv), (ds0, as0 + bs0), (dz0, az0 + bz0)):
        assert rel(got, want) <= 1e-12
    # In place: the memory's arrays receive the final state.
    out, final = performer.favor_attention(q, k, v, p, features=kind, initial_state=memory, return_state=True)
    inplace = [x.copy() for x in memory]
    out2 = performer.favor_attention(q, k, v, p, features=kind, initial_state=inplace, final_state=inplace)[0]
    np.testing.assert_array_equal(out2, out)
    for a, b in zip(inplace, final):
        np.testing.assert_array_equal(a, b)


def test_memory_errors_name_the_argument():
    B, H, N, D, M, m = 1, 2, 3, 4, 3, 6
    p = performer.FavorProjection(D, m)
    q, k, v = qkv(86, B, H, H, N, N, D, M, np.float64)
    S, z, c = np.zeros((B, H, m, M)), np.zeros((B, H, m)), np.full((B, H, m), -np.inf)
    with pytest.raises(ValueError, match=r"initial_state\[0\] \(S\)"):
        performer.favor_attention(q, k, v, p, features="hyperbolic", initial_state=(S, z, c))
    bad = c.copy()
    bad[0, 1, 2] = np.inf
    with pytest.raises(ValueError, match=r"c0\[0, 1, 2\] = inf"):
        performer.favor_attention(q, k, v, p, initial_state=(S, z, bad))
    with pytest.raises(ValueError, match=r"dstate\[1\] \(z\)"):
        performer.favor_attention_backward(q, k, v, np.ones((B, H, N, M)), p, dstate=(S, z[:, :, :1]))
    dS = S.copy()
    dS[0, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="dS_N"):
        performer.favor_attention_backward(q, k, v, np.ones((B, H, N, M)), p, dstate=(dS, z))

"""performer.linear_initial_state_gradient: the query-side gradient of a linear forward's initial
state (dS0, dz0) from q, out, dout and the forward's denominators, through the installed
package: against a float64 reference written from the formula, against the backward's own
(dS0, dz0) (no dstate), strided views, N = 1, zero denominators, un-normalized, float16, errors."""

import numpy as np
import pytest

import performer
from test_linear import FEATURE_MAPS, inputs, phi, rel_err, state
from test_linear_state import numerator


def formula(q, out, den, dout, eps, feature_map, normalize=True):
    """dS0 = sum_i phi(q_i) g_i^T, dz0 = -sum_i phi(q_i) (g_i . out_i), g_i = dout_i / d_i, in float64."""
    q, out, dout = (np.asarray(x, dtype=np.float64) for x in (q, out, dout))
    fq = phi(q, feature_map)
    if not normalize:
        return np.einsum("bhnc,bhnm->bhcm", fq, dout), np.zeros(fq.shape[:2] + fq.shape[3:])
    d = np.asarray(den, dtype=np.float64) + eps
    g = np.divide(dout, d[..., None], out=np.zeros_like(dout), where=d[..., None] != 0)
    return np.einsum("bhnc,bhnm->bhcm", fq, g), -np.einsum("bhnc,bhn->bhc", fq, (g * out).sum(-1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("feature_map", FEATURE_MAPS)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("n", [1, 6, 200])
def test_matches_reference_and_backward(dtype, feature_map, causal, n):
    q, k, v = inputs(N=n, dtype=dtype, feature_map=feature_map)
    init = state(dtype=dtype)
    dout = np.random.default_rng(5).standard_normal((2, 4, n, 3)).astype(dtype)
    kv = [n, max(n - 2, 0)]
    eps = 0.01
    out, den = performer.linear_attention(q, k, v, causal=causal, feature_map=feature_map, eps=eps, kv_lengths=kv,
                                          initial_state=init, return_denominators=True)
    ds0, dz0 = performer.linear_initial_state_gradient(q, out, dout, den, feature_map=feature_map, eps=eps)
    assert ds0.dtype == dtype and ds0.shape == (2, 4, 5, 3) and dz0.shape == (2, 4, 5)
    # float64 reference: the exact out and den of the float64 inputs.
    num, den64 = numerator(q, k, v, causal=causal, feature_map=feature_map, kv_lengths=kv, initial_state=init)
    ref_s, ref_z = formula(q, num / (den64 + eps)[..., None], den64, dout, eps, feature_map)
    tol = 2e-4 if dtype == np.float32 else 1e-11
    assert rel_err(ds0, ref_s) < tol and rel_err(dz0, ref_z) < tol
    _, _, _, (bs, bz) = performer.linear_attention_backward(q, k, v, dout, causal=causal, feature_map=feature_map,
                                                            eps=eps, kv_lengths=kv, initial_state=init)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    assert rel_err(ds0, bs) < tol and rel_err(dz0, bz) < tol


def test_strided_views():
    q, k, v = inputs(N=40, dtype=np.float32)
    init = state(dtype=np.float32)
    out, den = performer.linear_attention(q, k, v, causal=True, initial_state=init, return_denominators=True)
    dout = np.random.default_rng(2).standard_normal(out.shape).astype(np.float32)
    want = performer.linear_initial_state_gradient(q, out, dout, den)
    # B x N x H x D storage seen as B x H x N x D; every other column of wider buffers.
    qt = np.ascontiguousarray(q.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    wide = np.zeros(out.shape[:3] + (2 * out.shape[3],), np.float32)
    wide[..., ::2] = dout
    dent = np.ascontiguousarray(den.T).T
    got = performer.linear_initial_state_gradient(qt, out, wide[..., ::2], dent)
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_zero_denominators_give_what_the_backward_gives():
    """relu, eps = 0, queries with no positive feature: den = 0, out = 0, no contribution, no NaN."""
    q, k, v = inputs(N=8, dtype=np.float64, feature_map="relu")
    q[:, :, ::3] = -np.abs(q[:, :, ::3]) - 0.1
    init = state(dtype=np.float64)
    out, den = performer.linear_attention(q, k, v, causal=True, feature_map="relu", eps=0, initial_state=init,
                                          return_denominators=True)
    assert (den[:, :, ::3] == 0).all()
    dout = np.random.default_rng(3).standard_normal(out.shape)
    ds0, dz0 = performer.linear_initial_state_gradient(q, out, dout, den, feature_map="relu", eps=0)
    _, _, _, (bs, bz) = performer.linear_attention_backward(q, k, v, dout, causal=True, feature_map="relu", eps=0,
                                                            initial_state=init)
    assert np.isfinite(ds0).all() and np.isfinite(dz0).all()
    assert rel_err(ds0, bs) < 1e-12 and rel_err(dz0, bz) < 1e-12


def test_unnormalized_takes_no_denominators():
    rng = np.random.default_rng(4)
    q, k, v = (rng.standard_normal(s) for s in ((1, 2, 9, 4), (1, 2, 9, 4), (1, 2, 9, 3)))
    init = (rng.standard_normal((1, 2, 4, 3)), rng.standard_normal((1, 2, 4)))
    out = performer.linear_attention(q, k, v, causal=True, feature_map="identity", normalize=False, initial_state=init)
    dout = rng.standard_normal(out.shape)
    ds0, dz0 = performer.linear_initial_state_gradient(q, out, dout, None, feature_map="identity", normalize=False)
    _, _, _, (bs, bz) = performer.linear_attention_backward(q, k, v, dout, causal=True, feature_map="identity",
                                                            normalize=False, initial_state=init)
    assert rel_err(ds0, bs) < 1e-12 and (dz0 == 0).all() and (bz == 0).all()


def test_float16_is_the_float32_call_on_the_widened_rows():
    q, k, v = inputs(N=30, dtype=np.float16)
    out, den = performer.linear_attention(q, k, v, causal=True, return_denominators=True)
    assert den.dtype == np.float32
    dout = np.random.default_rng(6).standard_normal(out.shape).astype(np.float16)
    ds0, dz0 = performer.linear_initial_state_gradient(q, out, dout, den)
    assert ds0.dtype == np.float32 and dz0.dtype == np.float32
    want = performer.linear_initial_state_gradient(q.astype(np.float32), out.astype(np.float32),
                                                   dout.astype(np.float32), den)
    assert np.array_equal(ds0, want[0]) and np.array_equal(dz0, want[1])


def test_errors_name_the_argument():
    q, k, v = inputs(N=5, dtype=np.float32)
    out, den = performer.linear_attention(q, k, v, return_denominators=True)
    with pytest.raises(ValueError, match="denominators"):
        performer.linear_initial_state_gradient(q, out, out, None)
    with pytest.raises(ValueError, match="denominators.shape"):
        performer.linear_initial_state_gradient(q, out, out, den[:, :, :4])
    with pytest.raises(ValueError, match="dout.shape"):
        performer.linear_initial_state_gradient(q, out, out[:, :, :4], den)
    with pytest.raises(ValueError, match="out.shape"):
        performer.linear_initial_state_gradient(q, out[:, :2], out[:, :2], den)
    with pytest.raises(TypeError, match="dout"):
        performer.linear_initial_state_gradient(q, out, out.astype(np.float64), den)
    with pytest.raises(ValueError, match="eps"):
        performer.linear_initial_state_gradient(q, out, out, den, eps=-1)
    with pytest.raises(ValueError, match="feature_map"):
        performer.linear_initial_state_gradient(q, out, out, den, feature_map="softmax")

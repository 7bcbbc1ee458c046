"""Small linear-attention calls (the library's direct form, no C x M state: a decode-sized call
and the like) against a float64 reference with explicit N x L score matrices, at the shapes and
inputs where such a form is easiest to get wrong; and the common call's Python fast path keeps
every message of the general one."""

import numpy as np
import pytest

import performer
from test_linear import phi, rel_err


def reference(q, k, v, causal=False, feature_map="elu+1", eps=1e-6, kv_lengths=None, kv_starts=None,
              normalize=True):
    """(out, den) in float64: den_i = sum_j a_ij without eps; out = num / (den + eps), 0 where that is 0."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    B, H, N, _ = q.shape
    Hk, L = k.shape[1], k.shape[2]
    group = H // Hk
    fq, fk = phi(q, feature_map), phi(np.repeat(k, group, axis=1), feature_map)
    vv = np.repeat(v, group, axis=1)
    j = np.arange(L)
    keys = np.ones((B, L), dtype=bool)
    if kv_lengths is not None:
        keys &= j[None] < np.asarray(kv_lengths)[:, None]
    if kv_starts is not None:
        keys &= j[None] >= np.asarray(kv_starts)[:, None]
    mask = np.broadcast_to(keys[:, None, None, :], (B, 1, N, L))
    if causal:
        mask = mask & (j[None, :] <= np.arange(N)[:, None])[None, None]
    a = np.where(mask, np.einsum("bhnd,bhld->bhnl", fq, fk), 0.0)
    num, den = a @ vv, a.sum(-1)
    if not normalize:
        return num, den
    total = den + eps
    out = np.where(total[..., None] == 0, 0.0, num / np.where(total == 0, 1.0, total)[..., None])
    return out, den


def _inputs(B, H, Hk, N, L, D, M, dtype, seed, mixed=False, positive=False):
    rng = np.random.default_rng(seed)
    q, k, v = rng.standard_normal((B, H, N, D)), rng.standard_normal((B, Hk, L, D)), rng.standard_normal((B, Hk, L, M))
    if positive:
        q, k = 0.1 + np.abs(q), 0.1 + np.abs(k)
    return q.astype(dtype), k.astype(dtype), v.astype(dtype)


TOL = {np.float32: 1e-5, np.float64: 1e-12}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("feature_map", ["elu+1", "relu", "identity"])
@pytest.mark.parametrize("causal", [False, True])
def test_one_query_one_key(dtype, feature_map, causal):
    q, k, v = _inputs(1, 1, 1, 1, 1, 64, 64, dtype, 1, positive=feature_map == "identity")
    out, den = performer.linear_attention(q, k, v, causal=causal, feature_map=feature_map, eps=0.1,
                                          return_denominators=True)
    want, want_den = reference(q, k, v, causal, feature_map, 0.1)
    assert rel_err(out, want) <= TOL[dtype] and rel_err(den, want_den) <= TOL[dtype]
    # The common call (no state, no denominators) gives the same result.
    assert np.array_equal(performer.linear_attention(q, k, v, causal=causal, feature_map=feature_map, eps=0.1), out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decode_step_of_eight_heads_against_gqa_keys(dtype):
    q, k, v = _inputs(2, 8, 2, 1, 5, 64, 64, dtype, 2)
    assert rel_err(performer.linear_attention(q, k, v), reference(q, k, v)[0]) <= TOL[dtype]


@pytest.mark.parametrize("eps", [0.0, 1e-6])
def test_no_keys_gives_zeros(eps):
    q, k, v = _inputs(1, 2, 1, 3, 0, 8, 8, np.float64, 3)
    out, den = performer.linear_attention(q, k, v, eps=eps, return_denominators=True)
    assert not out.any() and not den.any()


@pytest.mark.parametrize("causal", [False, True])
def test_every_key_masked_by_starts_and_lengths(causal):
    q, k, v = _inputs(2, 2, 1, 4, 4, 16, 8, np.float64, 4)
    out = performer.linear_attention(q, k, v, causal=causal, kv_lengths=[2, 4], kv_starts=[2, 4])
    assert not out.any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_key_starts_and_lengths(dtype, causal):
    q, k, v = _inputs(2, 2, 2, 6, 6, 32, 16, dtype, 5)
    got = performer.linear_attention(q, k, v, causal=causal, kv_lengths=[5, 6], kv_starts=[2, 1])
    want = reference(q, k, v, causal, kv_lengths=[5, 6], kv_starts=[2, 1])[0]
    assert rel_err(got, want) <= TOL[dtype]
    if causal:  # rows before the first real key see nothing
        assert not got[0, :, :2].any() and not got[1, :, :1].any()


def test_relu_rows_with_zero_denominator_and_eps_zero():
    q, k, v = _inputs(1, 1, 1, 4, 4, 32, 16, np.float64, 6)
    q[0, 0, 1] = -np.abs(q[0, 0, 1]) - 0.5   # phi(q_1) = 0: den_1 = 0
    k[0, 0, 0] = -np.abs(k[0, 0, 0]) - 0.5   # phi(k_0) = 0: causal row 0 sees nothing
    out, den = performer.linear_attention(q, k, v, causal=True, feature_map="relu", eps=0.0, return_denominators=True)
    assert np.isfinite(out).all() and not out[0, 0, :2].any() and not den[0, 0, :2].any()
    want, want_den = reference(q, k, v, True, "relu", 0.0)
    assert rel_err(out, want) <= 1e-12 and rel_err(den, want_den) <= 1e-12


@pytest.mark.parametrize("causal", [False, True])
def test_unnormalized_identity_features_of_both_signs(causal):
    q, k, v = _inputs(2, 4, 2, 5, 5, 16, 8, np.float64, 7)
    out, den = performer.linear_attention(q, k, v, causal=causal, feature_map="identity", normalize=False,
                                          return_denominators=True)
    want, want_den = reference(q, k, v, causal, "identity", normalize=False)
    assert rel_err(out, want) <= 1e-12 and rel_err(den, want_den) <= 1e-12


def test_elu_queries_whose_features_underflow():
    q, k, v = _inputs(1, 1, 1, 3, 3, 16, 8, np.float32, 8)
    q[0, 0, 1] = -100.0
    out = performer.linear_attention(q, k, v, causal=True)
    assert np.isfinite(out).all()
    assert rel_err(out, reference(q, k, v, True)[0]) <= 1e-5


def test_strided_inputs_and_output():
    q, k, v = _inputs(2, 4, 2, 3, 5, 32, 16, np.float64, 9)
    qs, ks, vs = (np.ascontiguousarray(x.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3) for x in (q, k, v))
    buffer = np.full((2, 3, 4, 17), 7.0)
    out = buffer[..., :16].transpose(0, 2, 1, 3)
    performer.linear_attention(qs[..., ::1], ks, vs, out=out)
    assert rel_err(out, reference(q, k, v)[0]) <= 1e-12
    assert (buffer[..., 16] == 7.0).all()


def test_fast_path_keeps_messages():
    q, k, v = _inputs(1, 2, 1, 1, 1, 8, 8, np.float64, 10)
    with pytest.raises(ValueError, match="feature_map must be 'elu\\+1', 'relu' or 'identity', not 'gelu'"):
        performer.linear_attention(q, k, v, feature_map="gelu")
    with pytest.raises(TypeError, match="feature_map must be a str"):
        performer.linear_attention(q, k, v, feature_map=1)
    with pytest.raises(TypeError, match="eps must be a real number, not str"):
        performer.linear_attention(q, k, v, eps="1")
    with pytest.raises(ValueError, match="eps = -1"):
        performer.linear_attention(q, k, v, eps=-1.0)
    with pytest.raises(TypeError, match="k has dtype float32 but q has float64"):
        performer.linear_attention(q, k.astype(np.float32), v)
    with pytest.raises(ValueError, match="causal linear attention needs as many queries as keys"):
        performer.linear_attention(q, np.concatenate([k, k], 2), np.concatenate([v, v], 2), causal=True)
    with pytest.raises(ValueError, match="out"):
        performer.linear_attention(q, k, v, out=np.empty((1, 2, 1, 7)))
    # eps as an int takes the general path and gives the same result as the float.
    assert np.array_equal(performer.linear_attention(q, k, v, eps=1), performer.linear_attention(q, k, v, eps=1.0))

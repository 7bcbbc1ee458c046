"""Issue 13, item 9: results at extreme magnitudes and for non-finite inputs
(docs/RELIABILITY.md, include/performer.h "Numerics")."""

import numpy as np
import pytest

import performer


def _log_domain_favor(q, k, v, W, kind, causal):
    """float64 FAVOR+ output (positive/hyperbolic) from the exponents, each row shifted by its
    largest kernel term: exact where materialized features overflow or underflow."""
    D = q.shape[-1]
    s = (1 / np.sqrt(D)) ** 0.5

    def exponents(x):
        xh = x.astype(np.float64) * s
        u = xh @ W.T
        half = (xh * xh).sum(-1, keepdims=True) / 2
        return np.concatenate([u - half, -u - half], -1) if kind == "hyperbolic" else u - half

    aq, ak = exponents(q), exponents(k)
    terms = aq[:, None, :] + ak[None, :, :]  # N x L x C
    if causal:
        mask = np.tril(np.ones((q.shape[0], k.shape[0]), bool))
        terms = np.where(mask[:, :, None], terms, -np.inf)
    top = terms.max(axis=(1, 2), keepdims=True)
    weights = np.exp(terms - top).sum(-1)
    return weights @ v.astype(np.float64) / weights.sum(-1, keepdims=True)


def test_favor_causal_minimal_case_from_the_issue():
    p = performer.FavorProjection(2, 2, kind="orthogonal", norms="chi", seed=7)
    q = np.array([[[[-64.2554932, 40.6247025]]]], np.float32)
    k = np.array([[[[96.5603104, -97.3792801]]]], np.float32)
    v = np.ones((1, 1, 1, 1), np.float32)
    for features in ("positive", "hyperbolic"):
        for causal in (True, False):
            out = performer.favor_attention(q, k, v, p, causal=causal, features=features)
            assert out[0, 0, 0, 0] == pytest.approx(1, abs=1e-6)
            dq, dk, dv = performer.favor_attention_backward(q, k, v, np.ones_like(v), p, causal=causal, features=features)
            assert np.all(np.abs(dq) < 1e-3) and np.all(np.abs(dk) < 1e-3)
            assert dv[0, 0, 0, 0] == pytest.approx(1, abs=1e-6)


@pytest.mark.parametrize("features", ["positive", "hyperbolic"])
@pytest.mark.parametrize("norm", [10.0, 100.0, 1000.0])
def test_favor_causal_up_to_norm_1000_float32(features, norm):
    rng = np.random.default_rng(int(norm) + (features == "hyperbolic"))
    N, D, m, M = 140, 4, 8, 3
    p = performer.FavorProjection(D, m, seed=5)
    W = p.matrix.astype(np.float32).astype(np.float64)

    def rows():
        x = rng.standard_normal((N, D))
        return (x * norm / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    q, k = rows(), rows()
    v = rng.standard_normal((N, M)).astype(np.float32)
    out = performer.favor_attention(q[None, None], k[None, None], v[None, None], p, causal=True, features=features)[0, 0]
    assert np.isfinite(out).all()
    want = _log_domain_favor(q, k, v, W, features, causal=True)
    # float32 rounds the exponents (n/2 ~ |x|^2 / (2 sqrt D)); the Swift test measures <= 3e-4.
    assert np.linalg.norm(out - want) / np.linalg.norm(want) < 4e-6 * max(1.0, norm)
    dq, dk, dv = performer.favor_attention_backward(q[None, None], k[None, None], v[None, None],
                                                    np.ones((1, 1, N, M), np.float32), p, causal=True, features=features)
    assert np.isfinite(dq).all() and np.isfinite(dk).all() and np.isfinite(dv).all()


@pytest.mark.parametrize("D", [2, 16])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_tiny_query_features_give_the_value(D, dtype):
    # elu+1 of -100 is e^-100: subnormal in float32 (or 0 in the vector path); one key, so o = v.
    q = np.full((1, 1, 1, D), -100, dtype)
    k = np.random.default_rng(1).standard_normal((1, 1, 1, D)).astype(dtype)
    v = np.array([[[[0.5, -2.0, 3.0]]]], dtype)
    for causal in (False, True):
        out = performer.linear_attention(q, k, v, causal=causal, eps=0.0)
        np.testing.assert_allclose(out, v, rtol=1e-6)
        dq, dk, dv = performer.linear_attention_backward(q, k, v, np.ones_like(v), causal=causal, eps=0.0)
        assert np.abs(dq).max() < 1e-5 and np.abs(dk).max() < 1e-5
        np.testing.assert_allclose(dv, np.ones_like(v), rtol=1e-6)


@pytest.mark.parametrize("eps", [0.0, 1e-45])
def test_rows_without_keys_are_zero_for_any_eps(eps):
    rng = np.random.default_rng(3)
    q, k = rng.standard_normal((2, 1, 1, 3, 4)).astype(np.float32)
    v = rng.standard_normal((1, 1, 3, 2)).astype(np.float32)
    out = performer.linear_attention(q, k, v, eps=eps, kv_lengths=[0])
    assert np.array_equal(out, np.zeros_like(out))
    p = performer.FavorProjection(4, 4, seed=1)
    for features in ("positive", "hyperbolic", "trigonometric", "relu"):
        for causal in (False, True):
            out = performer.favor_attention(q, k, v, p, causal=causal, features=features, eps=eps, kv_lengths=[0])
            assert np.array_equal(out, np.zeros_like(out)), (features, causal)


def test_favor_relu_tiny_offset_gives_the_quotient():
    # q = 0: phi(q) = relu_offset everywhere, which cancels: o = sum_j w_j v_j / sum_j w_j with
    # w_j = sum_f phi_f(k_j).
    rng = np.random.default_rng(4)
    p = performer.FavorProjection(4, 6, seed=2)
    q = np.zeros((1, 1, 3, 4), np.float32)
    k = rng.standard_normal((1, 1, 3, 4)).astype(np.float32)
    v = rng.standard_normal((1, 1, 3, 2)).astype(np.float32)
    phik = np.maximum(k[0, 0].astype(np.float64) * 0.5 ** 0.5 @ p.matrix.T, 0) + 1e-45
    w = phik.sum(-1)
    for causal in (False, True):
        out = performer.favor_attention(q, k, v, p, features="relu", relu_offset=1e-45, causal=causal)[0, 0]
        for i in range(3):
            seen = slice(0, i + 1) if causal else slice(0, 3)
            want = w[seen] @ v[0, 0, seen].astype(np.float64) / w[seen].sum()
            np.testing.assert_allclose(out[i], want, rtol=1e-5)
        dq, dk, dv = performer.favor_attention_backward(q, k, v, np.ones_like(v), p, features="relu",
                                                        relu_offset=1e-45, causal=causal)
        assert np.isfinite(dq).all() and np.isfinite(dk).all() and np.isfinite(dv).all()


@pytest.mark.parametrize("dtype,magnitude", [(np.float32, 1e9), (np.float64, 1e19)])
def test_softmax_backward_with_huge_scores_is_bounded(dtype, magnitude):
    rng = np.random.default_rng(5)
    q, k = (rng.uniform(-1, 1, (2, 1, 1, 40, 4)) * np.sqrt(magnitude)).astype(dtype)
    v = rng.uniform(-1, 1, (1, 1, 40, 3)).astype(dtype)
    dout = rng.uniform(-1, 1, (1, 1, 40, 3)).astype(dtype)
    for causal in (False, True):
        out, lse = performer.softmax_attention(q, k, v, causal=causal, return_lse=True)
        assert np.isfinite(out).all()
        dq, dk, dv = performer.softmax_attention_backward(q, k, v, out, lse, dout, causal=causal)
        assert np.isfinite(dq).all() and np.isfinite(dk).all()
        assert np.all(np.abs(dv) <= np.abs(dout).sum())


def test_non_finite_inputs_stay_in_their_rows():
    # Documented: a non-finite q_i or k_j affects only what depends on it (causal: rows >= its
    # position, its head); status OK.
    rng = np.random.default_rng(6)
    q, k, v = rng.standard_normal((3, 1, 2, 100, 8)).astype(np.float32)
    base = performer.softmax_attention(q, k, v, causal=True)
    for bad in (np.nan, np.inf, -np.inf):
        k2 = k.copy()
        k2[0, 1, 70, 2] = bad
        out = performer.softmax_attention(q, k2, v, causal=True)
        assert np.array_equal(out[:, 0], base[:, 0])
        assert np.array_equal(out[:, 1, :70], base[:, 1, :70])

"""FAVOR+ through the installed package: FavorProjection, favor_features, FavorDecoder --
projections (orthogonality, chi norms, determinism, redraw, from_matrix, the generator of
docs/FAVOR.md re-implemented in NumPy), every feature kind against a NumPy float64 formula,
the decoder against a NumPy causal reference with materialized phi(Q) phi(K)^T, large-norm
stability, unbiasedness of the kernel estimate, and errors that name the argument."""

import gc
import math
import threading

import numpy as np
import pytest

import performer
from helpers import numeric_grad, run_example

KINDS = ["positive", "hyperbolic", "trigonometric", "relu"]


# ---------------------------------------------------------------------------------------------
# References (ALGORITHMS.md section 3 and docs/FAVOR.md, written directly)
# ---------------------------------------------------------------------------------------------

def phi(x, W, kind, scale=None, relu_offset=1e-3):
    """phi(x) of every row of x (..., D) in float64."""
    x = np.asarray(x, dtype=np.float64)
    D = x.shape[-1]
    m = W.shape[0]
    s = 1 / math.sqrt(D) if scale is None else scale
    xh = x * math.sqrt(s)
    u = xh @ W.T
    n = (xh * xh).sum(-1, keepdims=True)
    if kind == "positive":
        return np.exp(u - n / 2) / math.sqrt(m)
    if kind == "hyperbolic":
        return np.concatenate([np.exp(u - n / 2), np.exp(-u - n / 2)], -1) / math.sqrt(2 * m)
    if kind == "trigonometric":
        return np.exp(n / 2) / math.sqrt(m) * np.concatenate([np.sin(u), np.cos(u)], -1)
    return np.maximum(u, 0) + relu_offset


def causal_reference(q, k, v, W, kind, eps=0.0, scale=None):
    """out[b, h, i] = sum_{j<=i} A_ij v_j / (sum_{j<=i} A_ij + eps), A = phi(Q) phi(K)^T in full."""
    fq, fk = phi(q, W, kind, scale), phi(k, W, kind, scale)
    a = np.einsum("bhnc,bhlc->bhnl", fq, fk)
    a = np.tril(a)
    num = a @ np.asarray(v, dtype=np.float64)
    den = a.sum(-1, keepdims=True) + eps
    return np.where(den == 0, 0.0, num / np.where(den == 0, 1.0, den))


def norm_30(q, k, v, dtype):
    """q and k rescaled to norm 30 (most float32 positive features underflow there), all in dtype."""
    q = (q / np.linalg.norm(q, axis=-1, keepdims=True) * 30).astype(dtype)
    k = (k / np.linalg.norm(k, axis=-1, keepdims=True) * 30).astype(dtype)
    return q, k, v.astype(dtype)


def log_space_reference(q, k, v, W, causal):
    """Positive-feature attention in float64 from log-weights, finite where phi underflows:
    weight_ij = sum_f exp(a_f(q_i) + a_f(k_j)), a = u - n/2 (default scale)."""
    s = math.sqrt(1 / math.sqrt(q.shape[-1]))
    qh, kh = q.astype(np.float64) * s, k.astype(np.float64) * s
    aq = qh @ W.T - (qh * qh).sum(-1, keepdims=True) / 2
    ak = kh @ W.T - (kh * kh).sum(-1, keepdims=True) / 2
    logits = aq[:, :, :, None, :] + ak[:, :, None, :, :]  # b h i j f
    if causal:
        N = q.shape[2]
        logits = np.where(np.tril(np.ones((N, N), dtype=bool))[None, None, :, :, None], logits, -np.inf)
    weights = np.exp(logits - logits.max(axis=(3, 4), keepdims=True)).sum(-1)
    return weights @ v.astype(np.float64) / weights.sum(-1, keepdims=True)


GAMMA = 0x9E3779B97F4A7C15
MASK = (1 << 64) - 1


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def normal(seed, draw, purpose, i):
    key = mix64(mix64(mix64((seed + GAMMA) & MASK) ^ ((draw * 0xD1B54A32D192ED03) & MASK))
                ^ ((purpose * 0xABC98388FB8FAC03) & MASK))
    p = i // 2
    u1 = ((mix64((key + (2 * p + 1) * GAMMA) & MASK) >> 11) + 1) * 2.0 ** -53
    u2 = (mix64((key + (2 * p + 2) * GAMMA) & MASK) >> 11) * 2.0 ** -53
    r, theta = math.sqrt(-2 * math.log(u1)), 2 * math.pi * u2
    return r * math.cos(theta) if i % 2 == 0 else r * math.sin(theta)


def rng(seed):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------
# Projections
# ---------------------------------------------------------------------------------------------

def test_projection_attributes_and_defaults():
    p = performer.FavorProjection(16, 40)
    assert (p.dim, p.num_features, p.kind, p.norms, p.seed, p.draw) == (16, 40, "orthogonal", "chi", 0, 0)
    W = p.matrix
    assert W.shape == (40, 16) and W.dtype == np.float64 and W.flags.c_contiguous
    W[0, 0] = 1e9  # a copy: the projection is unchanged
    assert p.matrix[0, 0] != 1e9
    assert "FavorProjection(dim=16, num_features=40" in repr(p)


@pytest.mark.parametrize("norms", ["chi", "fixed"])
def test_orthogonal_rows_within_blocks(norms):
    D, m = 8, 20
    W = performer.FavorProjection(D, m, norms=norms, seed=5).matrix
    for start in range(0, m, D):
        block = W[start:start + D]
        gram = block @ block.T
        off = gram - np.diag(np.diag(gram))
        assert np.abs(off).max() <= 1e-12 * np.diag(gram).max()
    norms_ = np.linalg.norm(W, axis=1)
    if norms == "fixed":
        np.testing.assert_allclose(norms_, math.sqrt(D), rtol=1e-13)
    else:
        assert np.ptp(norms_) > 0.1  # chi-distributed, not constant


def test_chi_norm_mean():
    """Mean of the chi(D) row norms = sqrt(2) Gamma((D+1)/2) / Gamma(D/2), within 4 standard errors."""
    D, m = 16, 4096
    norms = np.linalg.norm(performer.FavorProjection(D, m, seed=1).matrix, axis=1)
    expected = math.sqrt(2) * math.exp(math.lgamma((D + 1) / 2) - math.lgamma(D / 2))
    sd = math.sqrt(D - expected ** 2)
    assert abs(norms.mean() - expected) < 4 * sd / math.sqrt(m)


def test_determinism_redraw_and_seed():
    a = performer.FavorProjection(6, 9, kind="iid", seed=123)
    b = performer.FavorProjection(6, 9, kind="iid", seed=123)
    c = performer.FavorProjection(6, 9, kind="iid", seed=124)
    assert np.array_equal(a.matrix, b.matrix)
    assert not np.array_equal(a.matrix, c.matrix)
    before = a.matrix
    a.redraw()
    assert a.draw == 1 and not np.array_equal(before, a.matrix)
    b.redraw()
    assert np.array_equal(a.matrix, b.matrix)
    # The first rows do not depend on m.
    wide = performer.FavorProjection(6, 30, kind="iid", seed=123)
    assert np.array_equal(wide.matrix[:9], before)


def test_iid_matrix_is_the_documented_generator():
    D, m, seed = 5, 4, 77
    p = performer.FavorProjection(D, m, kind="iid", seed=seed)
    expected = np.array([[normal(seed, 0, 0, i * D + j) for j in range(D)] for i in range(m)])
    np.testing.assert_allclose(p.matrix, expected, rtol=1e-13, atol=0)
    p.redraw()
    expected = np.array([[normal(seed, 1, 0, i * D + j) for j in range(D)] for i in range(m)])
    np.testing.assert_allclose(p.matrix, expected, rtol=1e-13, atol=0)
    fixed = performer.FavorProjection(D, m, kind="iid", norms="fixed", seed=seed).matrix
    first = np.array([[normal(seed, 0, 0, i * D + j) for j in range(D)] for i in range(m)])
    np.testing.assert_allclose(fixed, first / np.linalg.norm(first, axis=1, keepdims=True) * math.sqrt(D),
                               rtol=1e-13)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_from_matrix_round_trip(dtype):
    W = rng(1).standard_normal((7, 3)).astype(dtype)
    p = performer.FavorProjection.from_matrix(W[::-1].T.T[::-1])  # a strided view of W itself
    assert (p.dim, p.num_features, p.seed, p.kind, p.norms, p.draw) == (3, 7, None, None, None, 0)
    assert np.array_equal(p.matrix, W.astype(np.float64))
    with pytest.raises(ValueError, match="caller"):
        p.redraw()
    assert np.array_equal(p.matrix, W.astype(np.float64))
    # Transposed memory (column-major) and a memoryview work too.
    Wt = np.asfortranarray(W)
    assert np.array_equal(performer.FavorProjection.from_matrix(memoryview(Wt)).matrix, W.astype(np.float64))
    assert "from_matrix" in repr(p)


def test_projection_errors():
    with pytest.raises(ValueError, match="num_features"):
        performer.FavorProjection(4, 0)
    with pytest.raises(ValueError, match="dim"):
        performer.FavorProjection(0, 4)
    with pytest.raises(ValueError, match="kind"):
        performer.FavorProjection(4, 4, kind="gaussian")
    with pytest.raises(TypeError, match="kind"):
        performer.FavorProjection(4, 4, kind=1)
    with pytest.raises(ValueError, match="norms"):
        performer.FavorProjection(4, 4, norms="unit")
    with pytest.raises(ValueError, match="seed"):
        performer.FavorProjection(4, 4, seed=-1)
    with pytest.raises(ValueError, match="seed"):
        performer.FavorProjection(4, 4, seed=2 ** 64)
    with pytest.raises(TypeError, match="seed"):
        performer.FavorProjection(4, 4, seed=1.5)
    with pytest.raises(TypeError, match="dim"):
        performer.FavorProjection("4", 4)
    with pytest.raises(ValueError, match="too large"):
        performer.FavorProjection(1 << 21, 1 << 21, kind="iid")
    with pytest.raises(ValueError, match="W must have 2 dimensions"):
        performer.FavorProjection.from_matrix(np.ones((1, 3, 4)))
    with pytest.raises(TypeError, match="W"):
        performer.FavorProjection.from_matrix(np.ones((3, 4), dtype=np.int64))
    with pytest.raises(TypeError, match="W"):
        performer.FavorProjection.from_matrix([[1.0, 2.0]])
    with pytest.raises(ValueError, match="at least one"):
        performer.FavorProjection.from_matrix(np.ones((0, 4)))
    bad = np.ones((3, 4))
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match=r"W\[2\]\[1\]"):
        performer.FavorProjection.from_matrix(bad)
    p = performer.FavorProjection(4, 4)
    with pytest.raises(RuntimeError, match="already"):
        p._create(4, 4, 0, 0, 0)


def test_projection_concurrent_redraw_reads_whole_draws():
    p = performer.FavorProjection(8, 16, seed=9)
    draws = []
    q = performer.FavorProjection(8, 16, seed=9)
    for _ in range(30):
        draws.append(q.matrix)
        q.redraw()
    draws.append(q.matrix)
    seen = []
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            seen.append(p.matrix)

    thread = threading.Thread(target=reader)
    thread.start()
    for _ in range(30):
        p.redraw()
    stop.set()
    thread.join()
    assert seen
    for W in seen:
        assert any(np.array_equal(W, d) for d in draws)


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_features_match_formula(kind, dtype):
    p = performer.FavorProjection(8, 12, seed=2)
    x = (rng(3).standard_normal((2, 5, 3, 8)) * 0.8).astype(dtype).transpose(0, 2, 1, 3)  # B x H x N x D view
    out = performer.favor_features(x, p, features=kind)
    C = 24 if kind in ("hyperbolic", "trigonometric") else 12
    assert out.shape == (2, 3, 5, C) and out.dtype == dtype
    ref = phi(x, p.matrix, kind)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    assert np.abs(out - ref).max() <= tol * np.abs(ref).max()
    # is_query does not change the map.
    assert np.array_equal(performer.favor_features(x, p, features=kind, is_query=False), out)


@pytest.mark.parametrize("kind", KINDS)
def test_features_custom_scale_and_offset(kind):
    p = performer.FavorProjection(4, 6, kind="iid", seed=4)
    x = rng(5).standard_normal((1, 2, 7, 4))
    out = performer.favor_features(x, p, features=kind, scale=0.3, relu_offset=0.5)
    np.testing.assert_allclose(out, phi(x, p.matrix, kind, scale=0.3, relu_offset=0.5), rtol=1e-13, atol=1e-300)


def test_kernel_estimate_is_unbiased():
    """phi(q).phi(k) averaged over 400 independent projections approaches exp(s q.k), within
    5 standard errors of the sample (for each of positive, hyperbolic, trigonometric)."""
    D, m = 4, 8
    q = rng(6).standard_normal((1, 1, 1, D)) * 0.7
    k = rng(7).standard_normal((1, 1, 1, D)) * 0.7
    exact = math.exp((q * k).sum() / math.sqrt(D))
    for kind in ("positive", "hyperbolic", "trigonometric"):
        values = []
        for seed in range(400):
            p = performer.FavorProjection(D, m, seed=seed)
            values.append(float((performer.favor_features(q, p, features=kind)
                                 * performer.favor_features(k, p, features=kind)).sum()))
        values = np.array(values)
        assert abs(values.mean() - exact) < 5 * values.std(ddof=1) / math.sqrt(len(values)), kind


def test_features_errors():
    p = performer.FavorProjection(4, 3)
    x = np.ones((1, 1, 2, 4), dtype=np.float32)
    with pytest.raises(ValueError, match=r"x.shape\[3\] = 5 but projection.dim = 4"):
        performer.favor_features(np.ones((1, 1, 2, 5)), p)
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        performer.favor_features(np.ones((2, 4)), p)
    with pytest.raises(TypeError, match="x"):
        performer.favor_features(np.ones((1, 1, 2, 4), dtype=np.int32), p)
    with pytest.raises(TypeError, match="projection"):
        performer.favor_features(x, p.matrix)
    with pytest.raises(ValueError, match="features"):
        performer.favor_features(x, p, features="softmax")
    with pytest.raises(TypeError, match="features"):
        performer.favor_features(x, p, features=0)
    with pytest.raises(ValueError, match="scale"):
        performer.favor_features(x, p, scale=-1.0)
    with pytest.raises(ValueError, match="scale"):
        performer.favor_features(x, p, scale=float("nan"))
    with pytest.raises(TypeError, match="scale"):
        performer.favor_features(x, p, scale="0.5")
    with pytest.raises(ValueError, match="relu_offset"):
        performer.favor_features(x, p, features="relu", relu_offset=-1)
    with pytest.raises(TypeError, match="is_query"):
        performer.favor_features(x, p, is_query=None)


# ---------------------------------------------------------------------------------------------
# The decoder
# ---------------------------------------------------------------------------------------------

def tokens(seed, B, H, N, D, M, dtype, amplitude=0.8):
    """N tokens of every head: q, k B x H x N x D, v B x H x N x M."""
    return qkv(seed, B, H, H, N, N, D, M, dtype, amplitude)


def run(decoder, q, k, v, start=0, stop=None):
    stop = q.shape[2] if stop is None else stop
    return np.stack([decoder.step(q[:, :, i], k[:, :, i], v[:, :, i]) for i in range(start, stop)], axis=2)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decoder_matches_causal_reference(kind, dtype):
    B, H, N, D, M, m = 2, 3, 9, 8, 5, 16
    p = performer.FavorProjection(D, m, seed=11)
    eps = 0.0 if kind == "trigonometric" else 1e-3
    dec = performer.FavorDecoder(p, B, H, M, features=kind, eps=eps, dtype=dtype)
    q, k, v = tokens(12, B, H, N, D, M, dtype)
    W = p.matrix
    p.redraw()  # the decoder keeps the W it was created with
    out = run(dec, q, k, v)
    ref = causal_reference(q, k, v, W, kind, eps)
    tol = 2e-5 if dtype == np.float32 else 1e-11
    assert np.abs(out - ref).max() <= tol * np.abs(ref).max()
    # The scaled state is the mathematical one.
    S, z, c = dec.state
    C = dec.num_features
    assert S.shape == (B, H, C, M) and z.shape == c.shape == (B, H, C)
    fk = phi(k, W, kind)
    S_ref = np.einsum("bhnc,bhnm->bhcm", fk, v.astype(np.float64))
    np.testing.assert_allclose(np.exp(c)[..., None] * S, S_ref, rtol=tol * 10, atol=tol * np.abs(S_ref).max())
    np.testing.assert_allclose(np.exp(c) * z, fk.sum(2), rtol=tol * 10, atol=tol * np.abs(fk.sum(2)).max())


@pytest.mark.parametrize("kind", ["positive", "hyperbolic", "relu"])
def test_decoder_pieces_state_and_reset(kind):
    B, H, N, D, M = 1, 2, 8, 4, 3
    p = performer.FavorProjection(D, 6, kind="iid", seed=21)
    q, k, v = tokens(22, B, H, N, D, M, np.float64)
    one = performer.FavorDecoder(p, B, H, M, features=kind, dtype="float64")
    full = run(one, q, k, v)
    first = performer.FavorDecoder(p, B, H, M, features=kind, dtype="float64")
    run(first, q, k, v, 0, 3)
    second = performer.FavorDecoder(p, B, H, M, features=kind, dtype="float64")
    second.state = first.state
    np.testing.assert_allclose(run(second, q, k, v, 3), full[:, :, 3:], rtol=1e-12, atol=1e-14)
    # (S, z, 0): the mathematical state.
    S, z, c = first.state
    third = performer.FavorDecoder(p, B, H, M, features=kind, dtype="float64")
    third.set_state(np.exp(c)[..., None] * S, np.exp(c) * z, np.zeros_like(c))
    np.testing.assert_allclose(run(third, q, k, v, 3), full[:, :, 3:], rtol=1e-12, atol=1e-14)
    one.reset()
    S, z, c = one.state
    assert not S.any() and not z.any() and np.all(c == (0 if kind == "relu" else -np.inf))
    assert np.array_equal(one.step(q[:, :, 0], k[:, :, 0], v[:, :, 0]), full[:, :, 0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_decoder_large_norms_finite_and_exact(dtype):
    """Queries and keys of norm 30: phi underflows, the stabilized decoder does not."""
    B, H, N, D, M = 1, 2, 6, 16, 4
    p = performer.FavorProjection(D, 32, seed=31)
    q, k, v = norm_30(*tokens(32, B, H, N, D, M, np.float64), dtype)
    # Most float32 features underflow to 0 (so a naive evaluation from phi could not work).
    assert (performer.favor_features(q.astype(np.float32), p) == 0).mean() > 0.5
    out = run(performer.FavorDecoder(p, B, H, M, dtype=dtype), q, k, v)
    assert np.isfinite(out).all()
    ref = log_space_reference(q, k, v, p.matrix, causal=True)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert np.abs(out - ref).max() <= tol * np.abs(ref).max()


def test_decoder_attributes_and_out_argument():
    p = performer.FavorProjection(4, 5)
    dec = performer.FavorDecoder(p, 2, 3, 6, features="hyperbolic", scale=0.5, eps=1e-4)
    assert (dec.batch, dec.heads, dec.dim, dec.value_dim, dec.num_features) == (2, 3, 4, 6, 10)
    assert (dec.features, dec.scale, dec.eps, dec.dtype, dec.projection) == ("hyperbolic", 0.5, 1e-4,
                                                                             np.dtype(np.float32), p)
    q = np.ones((2, 3, 4), dtype=np.float32)
    out = np.zeros((2, 3, 6), dtype=np.float32)
    assert dec.step(q, q, np.ones((2, 3, 6), dtype=np.float32), out) is out
    # One key: out = K v / (K + eps) with K = phi(q).phi(k) (scale 0.5).
    f = performer.favor_features(q[:, :, None].astype(np.float64), p, features="hyperbolic", scale=0.5)
    kernel = (f * f).sum(-1)
    np.testing.assert_allclose(out, np.broadcast_to(kernel / (kernel + 1e-4), (2, 3, 6)), rtol=1e-6)
    assert "FavorDecoder(" in repr(dec)


def test_decoder_errors_leave_state_unchanged():
    p = performer.FavorProjection(4, 5)
    dec = performer.FavorDecoder(p, 1, 2, 3, dtype="float64")
    q = np.ones((1, 2, 4))
    v = np.ones((1, 2, 3))
    dec.step(q, q, v)
    before = dec.state
    with pytest.raises(ValueError, match=r"q.shape\[3\]"):
        dec.step(np.ones((1, 2, 5)), q, v)
    with pytest.raises(TypeError, match="q has dtype float32"):
        dec.step(q.astype(np.float32), q, v)
    with pytest.raises(ValueError, match="v.shape"):
        dec.step(q, q, np.ones((1, 2, 4)))
    S, z, c = before
    bad_c = c.copy()
    bad_c[0, 1, 2] = np.inf
    with pytest.raises(ValueError, match=r"c\["):
        dec.state = (S, z, bad_c)
    bad_c[0, 1, 2] = -np.inf
    S2 = S.copy()
    S2[0, 1, 2] = 1.0
    with pytest.raises(ValueError, match="-inf"):
        dec.set_state(S2, z, bad_c)
    with pytest.raises(ValueError, match="z.shape"):
        dec.set_state(S, z[:, :, :2], c)
    with pytest.raises(TypeError, match="triple"):
        dec.state = (S, z)
    for a, b in zip(before, dec.state):
        assert np.array_equal(a, b)
    with pytest.raises(TypeError, match="projection"):
        performer.FavorDecoder(p.matrix, 1, 1, 1)
    with pytest.raises(ValueError, match="eps"):
        performer.FavorDecoder(p, 1, 1, 1, eps=-1)
    with pytest.raises(ValueError, match="batch"):
        performer.FavorDecoder(p, -1, 1, 1)
    with pytest.raises(ValueError, match="features"):
        performer.FavorDecoder(p, 1, 1, 1, features="elu+1")
    with pytest.raises(TypeError, match="dtype"):
        performer.FavorDecoder(p, 1, 1, 1, dtype="int8")
    relu = performer.FavorDecoder(p, 1, 1, 2, features="relu")
    S, z, c = relu.state
    with pytest.raises(ValueError, match="relu"):
        relu.state = (S, z, c + 1)


def test_no_leaks():
    """Creating and dropping many projections and decoders does not grow the process."""
    import resource

    def churn():
        for _ in range(300):
            p = performer.FavorProjection(32, 64)
            performer.FavorDecoder(p, 1, 4, 32)
            performer.FavorProjection.from_matrix(p.matrix)

    churn()
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    churn()
    gc.collect()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 20_000  # KiB


def test_favor_example_runs():
    result = run_example("favor_decode.py")
    assert result.returncode == 0, result.stdout.decode()
    assert result.stdout.decode().splitlines()[-1] == "ok"


# ---------------------------------------------------------------------------------------------
# Attention: favor_attention / favor_attention_backward
# ---------------------------------------------------------------------------------------------

def attention_reference(q, k, v, W, kind, causal=False, eps=0.0, kv_lengths=None, scale=None, relu_offset=1e-3,
                        initial=None):
    """Float64 FAVOR+ attention with the materialized matrix A = phi(Q) phi(K)^T per query head
    (GQA: query head h reads key head h // (H // Hk)); keys j >= kv_lengths[b] are removed,
    causal keeps j <= i; ``initial`` = the mathematical state (S0, z0) added to every row."""
    q, k, v = (np.asarray(x, dtype=np.float64) for x in (q, k, v))
    group = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    fq, fk = phi(q, W, kind, scale, relu_offset), phi(k, W, kind, scale, relu_offset)
    if kv_lengths is not None:
        keep = np.arange(k.shape[2])[None, :] < np.asarray(kv_lengths)[:, None]
        fk = fk * keep[:, None, :, None]
    a = np.einsum("bhnc,bhlc->bhnl", fq, fk)
    if causal:
        a = np.tril(a)
    num = a @ v
    den = a.sum(-1, keepdims=True) + eps
    if initial is not None:
        S0, z0 = initial
        num = num + fq @ S0
        den = den + (fq @ z0[..., None])
    return np.where(den == 0, 0.0, num / np.where(den == 0, 1.0, den))


def qkv(seed, B, H, Hk, N, L, D, M, dtype, amplitude=0.8):
    g = rng(seed)
    q = (g.standard_normal((B, H, N, D)) * amplitude).astype(dtype)
    k = (g.standard_normal((B, Hk, L, D)) * amplitude).astype(dtype)
    v = g.standard_normal((B, Hk, L, M)).astype(dtype)
    return q, k, v


def rel(x, ref):
    return np.linalg.norm(np.asarray(x, dtype=np.float64) - ref) / np.linalg.norm(ref)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_matches_materialized_reference(kind, dtype, causal):
    B, H, Hk, D, M, m = 2, 4, 2, 8, 5, 16
    N, L = (11, 11) if causal else (7, 11)
    p = performer.FavorProjection(D, m, seed=41)
    eps = 0.0 if kind == "trigonometric" else 1e-3
    q, k, v = qkv(42, B, H, Hk, N, L, D, M, dtype)
    q = np.swapaxes(np.swapaxes(q, 1, 2).copy(), 1, 2)  # a strided (B x N x H x D) view
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for lengths in (None, [L, 6]):
        out = performer.favor_attention(q, k, v, p, causal=causal, features=kind, eps=eps, kv_lengths=lengths)
        assert out.dtype == dtype and out.shape == (B, H, N, M)
        ref = attention_reference(q, k, v, p.matrix, kind, causal, eps, lengths)
        assert rel(out, ref) <= tol, (lengths, rel(out, ref))


def test_attention_custom_scale_and_relu_offset():
    B, H, N, D, M = 1, 2, 6, 4, 3
    p = performer.FavorProjection(D, 8, kind="iid", seed=43)
    q, k, v = qkv(44, B, H, H, N, N, D, M, np.float64)
    out = performer.favor_attention(q, k, v, p, features="relu", scale=0.3, relu_offset=0.2, eps=1e-2)
    ref = attention_reference(q, k, v, p.matrix, "relu", eps=1e-2, scale=0.3, relu_offset=0.2)
    assert rel(out, ref) <= 1e-12
    out = performer.favor_attention(q, k, v, p, features="hyperbolic", scale=0.7, causal=True)
    assert rel(out, attention_reference(q, k, v, p.matrix, "hyperbolic", True, scale=0.7)) <= 1e-12


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("causal", [False, True])
def test_attention_gradients_finite_differences(kind, causal):
    B, H, Hk, N, D, M, m = 1, 2, 1, 5, 4, 3, 6
    L = N if causal else 6
    p = performer.FavorProjection(D, m, seed=45)
    W = p.matrix
    eps = 0.0 if kind == "trigonometric" else 1e-3
    q, k, v = qkv(46, B, H, Hk, N, L, D, M, np.float64)
    lengths = [L - 1]
    g = rng(47).standard_normal((B, H, N, M))
    dq, dk, dv = performer.favor_attention_backward(q, k, v, g, p, causal=causal, features=kind, eps=eps,
                                                    kv_lengths=lengths)

    def loss():
        return (g * attention_reference(q, k, v, W, kind, causal, eps, lengths)).sum()

    nq, nk, nv = (numeric_grad(loss, x) for x in (q, k, v))
    for got, want, name in ((dq, nq, "dq"), (dk, nk, "dk"), (dv, nv, "dv")):
        assert rel(got, want) <= 1e-6, (name, rel(got, want))
    # The key padded out gets no gradient.
    assert not dk[:, :, L - 1].any() and not dv[:, :, L - 1].any()


@pytest.mark.parametrize("kind", KINDS)
def test_attention_float32_gradients(kind):
    B, H, Hk, N, D, M, m = 2, 4, 2, 13, 8, 6, 16
    p = performer.FavorProjection(D, m, seed=48)
    eps = 0.0 if kind == "trigonometric" else 1e-3
    q, k, v = qkv(49, B, H, Hk, N, N, D, M, np.float64)
    g = rng(50).standard_normal((B, H, N, M))
    for causal in (False, True):
        want = performer.favor_attention_backward(q, k, v, g, p, causal=causal, features=kind, eps=eps)
        got = performer.favor_attention_backward(*(x.astype(np.float32) for x in (q, k, v, g)), p, causal=causal,
                                                 features=kind, eps=eps)
        tol = 1e-4 if kind == "trigonometric" else 1e-5
        for a, b in zip(got, want):
            assert a.dtype == np.float32 and rel(a, b) <= tol, rel(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_attention_pieces_with_state_equal_one_call_and_decoder_steps(kind):
    B, H, N, D, M, m = 2, 3, 12, 8, 5, 16
    p = performer.FavorProjection(D, m, seed=51)
    eps = 0.0 if kind == "trigonometric" else 1e-3
    q, k, v = qkv(52, B, H, H, N, N, D, M, np.float64)
    opts = dict(causal=True, features=kind, eps=eps)
    one, (S, z, c) = performer.favor_attention(q, k, v, p, return_state=True, **opts)
    C = 2 * m if kind in ("hyperbolic", "trigonometric") else m
    assert S.shape == (B, H, C, M) and z.shape == c.shape == (B, H, C)
    # The final state is the mathematical sum over all keys.
    fk = phi(k, p.matrix, kind)
    np.testing.assert_allclose(np.exp(c)[..., None] * S, np.einsum("bhnc,bhnm->bhcm", fk, v), rtol=1e-10,
                               atol=1e-12 * np.abs(fk).max())
    # Three pieces with the carried state.
    cuts = [0, 4, 9, N]
    state, outs = None, []
    for a, b in zip(cuts, cuts[1:]):
        o, state = performer.favor_attention(q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], p, initial_state=state,
                                             return_state=True, **opts)
        outs.append(o)
    np.testing.assert_allclose(np.concatenate(outs, axis=2), one, rtol=1e-11, atol=1e-13)
    for x, y in zip(state, (S, z, c)):
        np.testing.assert_allclose(x, y, rtol=1e-11, atol=1e-13)
    # A decoder continues from the state of the first 5 positions.
    prefix, st = performer.favor_attention(q[:, :, :5], k[:, :, :5], v[:, :, :5], p, return_state=True, **opts)
    dec = performer.FavorDecoder(p, B, H, M, features=kind, eps=eps, dtype="float64")
    dec.state = st
    np.testing.assert_allclose(run(dec, q, k, v, 5), one[:, :, 5:], rtol=1e-11, atol=1e-13)
    # ... and a decoder's state continues into the forward.
    dec.reset()
    run(dec, q, k, v, 0, 7)
    rest = performer.favor_attention(q[:, :, 7:], k[:, :, 7:], v[:, :, 7:], p, initial_state=dec.state, **opts)
    np.testing.assert_allclose(rest, one[:, :, 7:], rtol=1e-11, atol=1e-13)
    # Backward in pieces: the second piece's (dS0, dz0) is the first piece's dstate.
    g = rng(53).standard_normal((B, H, N, M))
    full = performer.favor_attention_backward(q, k, v, g, p, **opts)
    _, st = performer.favor_attention(q[:, :, :5], k[:, :, :5], v[:, :, :5], p, return_state=True, **opts)
    dq2, dk2, dv2, dstate = performer.favor_attention_backward(q[:, :, 5:], k[:, :, 5:], v[:, :, 5:], g[:, :, 5:], p,
                                                               initial_state=st, **opts)
    dq1, dk1, dv1 = performer.favor_attention_backward(q[:, :, :5], k[:, :, :5], v[:, :, :5], g[:, :, :5], p,
                                                       dstate=dstate, **opts)
    for piece, whole in zip((np.concatenate([dq1, dq2], 2), np.concatenate([dk1, dk2], 2),
                             np.concatenate([dv1, dv2], 2)), full):
        assert rel(piece, whole) <= 1e-11


@pytest.mark.parametrize("kind", ["positive", "hyperbolic", "relu"])
def test_attention_initial_state_gradient_finite_differences(kind):
    B, H, N, D, M, m = 1, 2, 4, 4, 3, 5
    p = performer.FavorProjection(D, m, seed=54)
    W = p.matrix
    C = 2 * m if kind == "hyperbolic" else m
    q, k, v = qkv(55, B, H, H, N, N, D, M, np.float64)
    g = rng(56)
    S0 = np.abs(g.standard_normal((B, H, C, M)))
    z0 = np.abs(g.standard_normal((B, H, C))) + 0.5
    c0 = np.zeros((B, H, C))  # (S, z, 0): the mathematical state itself
    dout = g.standard_normal((B, H, N, M))
    dq, dk, dv, (dS0, dz0) = performer.favor_attention_backward(q, k, v, dout, p, causal=True, features=kind,
                                                                eps=1e-3, initial_state=(S0, z0, c0))

    def loss():
        return (dout * attention_reference(q, k, v, W, kind, True, 1e-3, initial=(S0, z0))).sum()

    nq, nk, nv, nS, nz = (numeric_grad(loss, x) for x in (q, k, v, S0, z0))
    for got, want in ((dq, nq), (dk, nk), (dv, nv), (dS0, nS), (dz0, nz)):
        assert rel(got, want) <= 1e-6
    # The forward from that state matches the reference too.
    out = performer.favor_attention(q, k, v, p, causal=True, features=kind, eps=1e-3, initial_state=(S0, z0, c0))
    assert rel(out, attention_reference(q, k, v, W, kind, True, 1e-3, initial=(S0, z0))) <= 1e-12


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_large_norms_finite_and_exact(dtype, causal):
    """|q| = |k| = 30: the features underflow, the stabilized attention does not."""
    B, H, N, D, M = 1, 2, 10, 16, 4
    p = performer.FavorProjection(D, 32, seed=57)
    q, k, v = norm_30(*qkv(58, B, H, H, N, N, D, M, np.float64), dtype)
    assert (performer.favor_features(q.astype(np.float32), p) == 0).mean() > 0.5
    out = performer.favor_attention(q, k, v, p, causal=causal)
    assert np.isfinite(out).all()
    ref = log_space_reference(q, k, v, p.matrix, causal)
    assert rel(out, ref) <= (1e-5 if dtype == np.float32 else 1e-12)
    grads = performer.favor_attention_backward(q, k, v, np.ones_like(out), p, causal=causal)
    assert all(np.isfinite(x).all() for x in grads)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_projection_entry_of_1e30_gives_finite_gradients(dtype, causal):
    """A finite W entry of 1e30 (accepted) makes exponents of ~1e30, whose rounding (~1e14)
    can put a difference against its running max above 0: the backward's key factors were then
    e^(1e14) = inf, and inf x 0 gave NaN in dk, dv (a fuzzer finding: non-causal, one real key
    by kv_starts, GQA). The factors are at most 1 mathematically, and stay so."""
    rng = np.random.default_rng(59)
    W = rng.integers(-16, 17, size=(4, 4)) / 8.0
    W[3, 1] = 1e30
    p = performer.FavorProjection.from_matrix(W)
    moderate = lambda *shape: (rng.integers(-16, 17, size=shape) / 8.0).astype(dtype)
    q, k, v, dout = moderate(2, 4, 4, 4), moderate(2, 1, 4, 4), moderate(2, 1, 4, 4), moderate(2, 4, 4, 4)
    k[:, :, 3, 1] = 1.0  # the real key's exponent of feature 3 is ~ +1e30
    q[1, 1, 1, 1] = 2.0
    starts = np.array([3, 3]) if not causal else None
    out = performer.favor_attention(q, k, v, p, causal=causal, scale=1.0, eps=1.0, kv_starts=starts)
    assert np.isfinite(out).all()
    grads = performer.favor_attention_backward(q, k, v, dout, p, causal=causal, scale=1.0, eps=1.0, kv_starts=starts)
    assert all(np.isfinite(x).all() for x in grads)


def test_attention_errors_name_the_argument():
    B, H, N, D, M, m = 1, 2, 5, 4, 3, 6
    p = performer.FavorProjection(D, m)
    q, k, v = qkv(59, B, H, H, N, N, D, M, np.float64)
    S = np.zeros((B, H, m, M))
    z = np.zeros((B, H, m))
    c = np.full((B, H, m), -np.inf)
    with pytest.raises(ValueError, match=r"projection.dim"):
        performer.favor_attention(q, k, v, performer.FavorProjection(D + 1, m))
    with pytest.raises(TypeError, match="projection"):
        performer.favor_attention(q, k, v, p.matrix)
    with pytest.raises(ValueError, match="features"):
        performer.favor_attention(q, k, v, p, features="elu+1")
    with pytest.raises(TypeError, match="k has dtype float32"):
        performer.favor_attention(q, k.astype(np.float32), v, p)
    with pytest.raises(ValueError, match=r"v.shape\[2\]"):
        performer.favor_attention(q, k, v[:, :, :3], p)
    with pytest.raises(ValueError, match="eps"):
        performer.favor_attention(q, k, v, p, eps=-1.0)
    with pytest.raises(ValueError, match="scale"):
        performer.favor_attention(q, k, v, p, scale=-1.0)
    with pytest.raises(ValueError, match="relu_offset"):
        performer.favor_attention(q, k, v, p, features="relu", relu_offset=-1.0)
    with pytest.raises(ValueError, match="kv_lengths"):
        performer.favor_attention(q, k, v, p, kv_lengths=[1, 2])
    with pytest.raises(ValueError, match=r"kv_lengths\[0\]"):
        performer.favor_attention(q, k, v, p, kv_lengths=[N + 1])
    with pytest.raises(ValueError, match="causal"):
        performer.favor_attention(q, k[:, :, :4], v[:, :, :4], p, causal=True)
    with pytest.raises(TypeError, match="triple"):
        performer.favor_attention(q, k, v, p, causal=True, initial_state=(S, z))
    # A positive-feature state (C = m) given to hyperbolic attention (C = 2m).
    with pytest.raises(ValueError, match=r"initial_state\[0\] \(S\)"):
        performer.favor_attention(q, k, v, p, causal=True, features="hyperbolic", initial_state=(S, z, c))
    with pytest.raises(ValueError, match=r"initial_state\[2\] \(c\)"):
        performer.favor_attention(q, k, v, p, causal=True, initial_state=(S, z, c[:, :, :2]))
    bad = c.copy()
    bad[0, 1, 2] = np.nan
    with pytest.raises(ValueError, match=r"c0\["):
        performer.favor_attention(q, k, v, p, causal=True, initial_state=(S, z, bad))
    S1 = S.copy()
    S1[0, 0, 0, 0] = 1.0
    with pytest.raises(ValueError, match="-inf"):
        performer.favor_attention(q, k, v, p, causal=True, initial_state=(S1, z, c))
    g = np.ones((B, H, N, M))
    with pytest.raises(ValueError, match="dout"):
        performer.favor_attention_backward(q, k, v, g[:, :, :2], p)
    with pytest.raises(ValueError, match=r"dstate\[1\] \(z\)"):
        performer.favor_attention_backward(q, k, v, g, p, causal=True, dstate=(S, z[:, :, :1]))
    dS = S.copy()
    dS[0, 0, 1, 1] = np.inf
    with pytest.raises(ValueError, match="dS_N"):
        performer.favor_attention_backward(q, k, v, g, p, causal=True, dstate=(dS, z))
    with pytest.raises(ValueError, match=r"projection.dim"):
        performer.favor_attention_backward(q, k, v, g, performer.FavorProjection(D + 2, m))


def test_attention_empty_rows_and_no_keys_give_zeros():
    B, H, N, D, M = 2, 1, 4, 4, 3
    p = performer.FavorProjection(D, 8)
    q, k, v = qkv(60, B, H, H, N, N, D, M, np.float64)
    out = performer.favor_attention(q, k, v, p, kv_lengths=[0, N])
    assert not out[0].any() and np.isfinite(out).all()
    dq, dk, dv = performer.favor_attention_backward(q, k, v, np.ones_like(out), p, kv_lengths=[0, N])
    assert not dq[0].any() and not dk[0].any() and not dv[0].any()


def test_favor_attention_example_runs():
    result = run_example("favor_attention.py")
    assert result.returncode == 0, result.stdout.decode()
    assert result.stdout.decode().splitlines()[-1] == "ok"

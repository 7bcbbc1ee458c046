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
    g = rng(seed)
    q = (g.standard_normal((B, H, N, D)) * amplitude).astype(dtype)
    k = (g.standard_normal((B, H, N, D)) * amplitude).astype(dtype)
    v = g.standard_normal((B, H, N, M)).astype(dtype)
    return q, k, v


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
    q, k, v = tokens(32, B, H, N, D, M, np.float64)
    q = (q / np.linalg.norm(q, axis=-1, keepdims=True) * 30).astype(dtype)
    k = (k / np.linalg.norm(k, axis=-1, keepdims=True) * 30).astype(dtype)
    v = v.astype(dtype)
    # Most float32 features underflow to 0 (so a naive evaluation from phi could not work).
    assert (performer.favor_features(q.astype(np.float32), p) == 0).mean() > 0.5
    out = run(performer.FavorDecoder(p, B, H, M, dtype=dtype), q, k, v)
    assert np.isfinite(out).all()
    # float64 log-space evaluation: weights sum_f exp(a_f(q_i) + a_f(k_j)), a = u - n/2.
    W = p.matrix
    s = math.sqrt(1 / math.sqrt(D))
    qh, kh = q.astype(np.float64) * s, k.astype(np.float64) * s
    aq = qh @ W.T - (qh * qh).sum(-1, keepdims=True) / 2
    ak = kh @ W.T - (kh * kh).sum(-1, keepdims=True) / 2
    logits = aq[:, :, :, None, :] + ak[:, :, None, :, :]  # b h i j f
    mask = np.tril(np.ones((N, N), dtype=bool))[None, None, :, :, None]
    logits = np.where(mask, logits, -np.inf)
    top = logits.max(axis=(3, 4), keepdims=True)
    weights = np.exp(logits - top).sum(-1)
    ref = weights @ v.astype(np.float64) / weights.sum(-1, keepdims=True)
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
    import os
    import subprocess
    import sys
    import tempfile

    repo = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, os.pardir))
    example = os.path.join(repo, "examples", "python", "favor_decode.py")
    result = subprocess.run([sys.executable, example], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            cwd=tempfile.gettempdir(), timeout=120)
    assert result.returncode == 0, result.stdout.decode()
    assert result.stdout.decode().splitlines()[-1] == "ok"

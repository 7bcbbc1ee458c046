"""performer.favor_initial_state_gradient: the query-side gradient of a FAVOR+ forward's initial
triple (dS~0, dz~0) from q, c0, the forward's row scales (U, den), out and dout, through the
installed package: against the float64 formula (test_favor_row_scales), the backward's own
(dS0, dz0), and the torch-built path it replaces in performer.torch.distributed (features as an
N x C array, then linear_initial_state_gradient with the identity map); every kind, causal or
not, GQA, norms of 30, N = 1, rows without output, strided views, errors."""

import math

import numpy as np
import pytest

import performer
from test_favor import KINDS
from test_favor_row_scales import problem, query_side_gradient


def torch_built(q, W, features, c0, units, dens, out, dout):
    """The former distributed path: Q_if = phi_f(q_i) e^{c0_f - U_i} / nu formed by torch as an
    N x C array (exponential kinds: one baddbmm and exp_), then the identity-map linear kernel."""
    torch = pytest.importorskip("torch")
    m, dim = W.shape
    dtype = out.dtype
    x = torch.from_numpy(q) * float(math.sqrt(1 / math.sqrt(dim)))
    w = torch.from_numpy(np.ascontiguousarray(W, dtype=dtype)).T
    row = torch.from_numpy(np.where(dens == 0, -np.inf, -units).astype(dtype))
    c = torch.from_numpy(np.asarray(c0, dtype=dtype))
    with np.errstate(invalid="ignore"):
        if features in ("positive", "hyperbolic"):
            b, h, n, d = x.shape
            term = (row - 0.5 * (x * x).sum(-1)).clamp_(min=float(np.finfo(dtype).min) / 2)
            xr = torch.cat([x, term[..., None]], -1).reshape(b * h, n, d + 1)
            if features == "hyperbolic":
                w = torch.cat([w, -w], 1)
            wr = torch.cat([w, torch.ones(1, w.shape[1], dtype=w.dtype)], 0)
            feats = torch.baddbmm(c.reshape(b * h, 1, -1), xr, wr.expand(b * h, d + 1, w.shape[1])).exp_()
            feats = feats.reshape(b, h, n, -1)
            nu = 1 / np.sqrt(m * (2 if features == "hyperbolic" else 1))
        elif features == "trigonometric":
            u = torch.matmul(x, w)
            weight = torch.exp(row + 0.5 * (x * x).sum(-1) + c[:, :, :1])
            feats = torch.cat([torch.sin(u), torch.cos(u)], -1) * weight[..., None]
            nu = 1 / np.sqrt(m)
        else:
            u = torch.matmul(x, w)
            feats = ((u.clamp(min=0).double() + 1e-3) * torch.exp(row.double()[..., None] + c.double()[:, :, None, :])
                     ).to(u.dtype)
            nu = 1.0
        den = (dens / dtype.type(nu)).astype(dtype)
    return performer.linear_initial_state_gradient(np.ascontiguousarray(feats.numpy()), out, dout, den,
                                                   feature_map="identity", eps=0.0)


def forward(kind, dtype, large, causal, N=37):
    eps = 0.0 if large else 1e-3
    p, q, k, v, st0 = problem(kind, dtype, large, N=N)
    out, (U, den) = performer.favor_attention(q, k, v, p, causal=causal, features=kind, eps=eps,
                                              initial_state=st0, return_row_scales=True)
    dout = np.random.default_rng(5).standard_normal(out.shape).astype(dtype)
    return p, q, k, v, st0, eps, out, U, den, dout


def close(got, want, tol):
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(np.abs(want).max(), 1e-300))


@pytest.mark.parametrize("kind,large", [(kind, False) for kind in KINDS] + [("positive", True), ("hyperbolic", True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_formula_backward_and_torch_path(kind, large, dtype, causal):
    p, q, k, v, st0, eps, out, U, den, dout = forward(kind, dtype, large, causal)
    dS0, dz0 = performer.favor_initial_state_gradient(q, p, st0[2], (U, den), out, dout, features=kind)
    C = st0[0].shape[2]
    assert dS0.dtype == dz0.dtype == dtype and dS0.shape == (2, 4, C, 3) and dz0.shape == (2, 4, C)
    tol = 1e-10 if dtype == np.float64 else 1e-4
    gS, gz = query_side_gradient(q, p.matrix, kind, st0[2], U, den, out, dout)
    close(dS0, gS, tol)
    close(dz0, gz, tol)
    _, _, _, (bS, bz) = performer.favor_attention_backward(q, k, v, dout, p, causal=causal, features=kind, eps=eps,
                                                           initial_state=st0)
    close(dS0, bS, tol)
    close(dz0, bz, tol)
    tS, tz = torch_built(q, p.matrix, kind, st0[2], U, den, out, dout)
    close(dS0, tS, tol)
    close(dz0, tz, tol)


@pytest.mark.parametrize("kind", KINDS)
def test_one_row_rows_without_output_and_strided_views(kind):
    p, q, k, v, st0, _, out, U, den, dout = forward(kind, np.float64, False, True, N=1)
    got = performer.favor_initial_state_gradient(q, p, st0[2], (U, den), out, dout, features=kind)
    want = query_side_gradient(q, p.matrix, kind, st0[2], U, den, out, dout)
    for a, b in zip(got, want):
        close(a, b, 1e-12)
    p, q, k, v, st0, _, out, U, den, dout = forward(kind, np.float64, False, False, N=70)
    den[0, 1, [0, 33, 69]] = 0  # a row that output zeros: nothing from it
    U[1, 2, [5, 40]] = -np.inf
    den_used = np.where(U == -np.inf, 0, den)
    want = query_side_gradient(q, p.matrix, kind, st0[2], np.where(U == -np.inf, 0, U), den_used, out, dout)
    # Every argument a strided view of a larger array.
    def strided(x):
        big = np.full(x.shape[:-1] + (2 * x.shape[-1],), np.nan, x.dtype)
        big[..., ::2] = x
        return big[..., ::2]
    def strided_rows(x):
        big = np.full(x.shape[:2] + (2 * x.shape[2],), np.nan, x.dtype)
        big[:, :, ::2] = x
        return big[:, :, ::2]
    got = performer.favor_initial_state_gradient(strided(q), p, strided(st0[2]), (strided_rows(U), strided_rows(den)),
                                                 strided(out), strided(dout), features=kind)
    for a, b in zip(got, want):
        assert np.isfinite(a).all()
        close(a, b, 1e-10)


def test_errors_name_the_argument_and_write_nothing():
    p, q, k, v, st0, _, out, U, den, dout = forward("positive", np.float64, False, False)
    c0 = st0[2]
    with pytest.raises(ValueError, match="row_units"):
        performer.favor_initial_state_gradient(q, p, c0, (U[:, :, 1:], den), out, dout)
    with pytest.raises(ValueError, match="c0"):
        performer.favor_initial_state_gradient(q, p, c0[:, :, 1:], (U, den), out, dout)
    with pytest.raises(ValueError, match="c0"):
        performer.favor_initial_state_gradient(q, p, np.full_like(c0, np.nan), (U, den), out, dout)
    with pytest.raises(ValueError, match="row_denominators"):
        performer.favor_initial_state_gradient(q, p, c0, (U, np.full_like(den, np.inf)), out, dout)
    with pytest.raises(ValueError, match="relu"):
        performer.favor_initial_state_gradient(q, p, np.ones_like(c0), (U, den), out, dout, features="relu")
    with pytest.raises(TypeError, match="row_denominators"):
        performer.favor_initial_state_gradient(q, p, c0, (U, den.astype(np.float32)), out, dout)
    with pytest.raises(TypeError, match="row_scales"):
        performer.favor_initial_state_gradient(q, p, c0, U, out, dout)
    with pytest.raises(TypeError, match="float32 or float64"):
        h = q.astype(np.float16)
        performer.favor_initial_state_gradient(h, p, c0, (U, den), out.astype(np.float16), dout.astype(np.float16))
    with pytest.raises(ValueError, match="projection.dim"):
        performer.favor_initial_state_gradient(q, performer.FavorProjection(5, 6), c0, (U, den), out, dout)

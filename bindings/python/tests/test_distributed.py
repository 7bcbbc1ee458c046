"""performer.torch.distributed: sequence parallelism over torch.distributed (gloo, CPU).

One spawn of 4 processes (torch.multiprocessing, a file:// rendezvous in a temporary
directory, the gloo backend) runs every case on the 4-rank world (group=None) and then on two
2-rank groups at once, {0, 2} and {1, 3} (group=, ranks that are not neighbours in the world).
Every rank checks its slice of the outputs and gradients against the single-process call on the
whole sequence, which it computes itself. One spawn because a process start with torch costs
seconds (tens of seconds on a loaded 2-core machine); it is bounded in time: a hung collective
fails the test instead of hanging CI.
"""

import datetime
import os
import tempfile
import time

import numpy as np
import pytest

import performer

try:
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
except ImportError:
    if os.environ.get("PERFORMER_REQUIRE_TORCH") == "1":
        raise
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")

SPAWN_TIMEOUT = 300     # seconds for the spawn, start-up included (about 100 s at load 20 on 2 cores)
COLLECTIVE_TIMEOUT = 60  # seconds a collective may wait before gloo gives up


# ---------------------------------------------------------------------------------------------
# Running ranks
# ---------------------------------------------------------------------------------------------

def _entry(rank, world, rendezvous, world_cases, pair_cases):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    performer.set_num_threads(1)
    dist.init_process_group("gloo", init_method="file://" + rendezvous, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=COLLECTIVE_TIMEOUT))
    try:
        for case in world_cases:
            globals()[case](rank, world, None)
        if pair_cases:
            # Every rank creates every group (new_group is collective); each joins its own.
            pairs = [dist.new_group([r, r + world // 2]) for r in range(world // 2)]
            group = pairs[rank % (world // 2)]
            for case in pair_cases:
                globals()[case](dist.get_rank(group), 2, group)
    finally:
        dist.destroy_process_group()


def run_ranks(world, world_cases, pair_cases=()):
    """Runs the named case functions on `world` spawned ranks, then `pair_cases` on 2-rank
    groups; fails on any rank's error or on timeout."""
    with tempfile.TemporaryDirectory() as tmp:
        context = mp.spawn(_entry, args=(world, os.path.join(tmp, "rendezvous"), world_cases, pair_cases),
                           nprocs=world, join=False)
        deadline = time.monotonic() + SPAWN_TIMEOUT
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                for process in context.processes:
                    if process.is_alive():
                        process.kill()
                pytest.fail("%d ranks did not finish %s, %s within %d s"
                            % (world, world_cases, pair_cases, SPAWN_TIMEOUT))


# ---------------------------------------------------------------------------------------------
# Helpers used in the ranks
# ---------------------------------------------------------------------------------------------

def _split(n, world, unequal):
    """Consecutive slice bounds of n positions over world ranks, equal or deliberately not."""
    if not unequal:
        bounds = [round(n * r / world) for r in range(world + 1)]
    else:
        weights = [1, 3, 2, 4][:world] if world <= 4 else [1 + r % 3 for r in range(world)]
        total = sum(weights)
        bounds = [0]
        for w in weights:
            bounds.append(bounds[-1] + n * w // total)
        bounds[-1] = n
    return bounds


def _positions(n, rank, world, unequal=False, layout="contiguous"):
    from performer.torch.distributed import layout_positions
    if layout == "zigzag":
        return layout_positions(n, world, rank, "zigzag")
    bounds = _split(n, world, unequal)
    return torch.arange(bounds[rank], bounds[rank + 1])


def _inputs(seed, b, h, hk, n, d, m, dtype, norm=1.0):
    g = np.random.default_rng(seed)
    q = g.standard_normal((b, h, n, d)) * norm
    k = g.standard_normal((b, hk, n, d)) * norm
    v = g.standard_normal((b, hk, n, m))
    dout = g.standard_normal((b, h, n, m))
    return [x.astype(dtype) for x in (q, k, v, dout)]


def _close(name, got, want, dtype):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert np.all(np.isfinite(got)), name
    scale = max(np.linalg.norm(want), 1e-30)
    error = np.linalg.norm(got - want) / scale
    assert error < (2e-5 if dtype == np.float32 else 1e-10), "%s: relative error %.3g" % (name, error)


def _check_slice(call, full, positions, q, k, v, dout, dtype):
    """Runs `call` on this rank's slice with autograd and compares with the full results."""
    index = positions.numpy()
    leaves = [torch.from_numpy(np.ascontiguousarray(x[:, :, index])).requires_grad_() for x in (q, k, v)]
    out = call(*leaves)
    out.backward(torch.from_numpy(np.ascontiguousarray(dout[:, :, index])))
    want_out, want_grads = full
    _close("out", out.detach().numpy(), want_out[:, :, index], dtype)
    for name, leaf, want in zip(("dq", "dk", "dv"), leaves, want_grads):
        _close(name, leaf.grad.numpy(), want[:, :, index], dtype)


# ---------------------------------------------------------------------------------------------
# Cases (each runs on every rank)
# ---------------------------------------------------------------------------------------------

def case_linear(rank, world, group):
    from performer.torch import distributed as pd
    n = 37
    for dtype in (np.float32, np.float64):
        for causal in (True, False):
            # relu with eps = 0 and no visible key in batch row 1: zero denominators, zero rows.
            for unequal, hk, fmap, eps, masks in ((False, 4, "elu+1", 1e-6, {}),
                                                  (True, 2, "elu+1", 1e-6, dict(kv_lengths=[30, 9])),
                                                  (True, 4, "elu+1", 1e-6, dict(kv_lengths=[33, 28], kv_starts=[5, 12])),
                                                  (False, 2, "relu", 0.0, dict(kv_lengths=[25, 0]))):
                q, k, v, dout = _inputs(11, 2, 4, hk, n, 8, 6, dtype)
                options = dict(causal=causal, feature_map=fmap, eps=eps, **masks)
                want = performer.linear_attention(q, k, v, **options)
                grads = performer.linear_attention_backward(q, k, v, dout, **options)
                _check_slice(lambda a, b, c: pd.linear_attention(a, b, c, group=group, **options), (want, grads),
                             _positions(n, rank, world, unequal), q, k, v, dout, dtype)


def case_favor(rank, world, group):
    from performer.torch import distributed as pd
    n = 29
    projection = performer.FavorProjection(8, 16, seed=3)
    for dtype, norm in ((np.float32, 1.0), (np.float64, 1.0), (np.float32, 6.0)):
        for causal in (True, False):
            for unequal, hk, lengths in ((False, 4, None), (True, 2, [25, 7])):
                q, k, v, dout = _inputs(5, 2, 4, hk, n, 8, 6, dtype, norm=norm)
                options = dict(causal=causal, kv_lengths=lengths)
                want = performer.favor_attention(q, k, v, projection, **options)
                grads = performer.favor_attention_backward(q, k, v, dout, projection, **options)
                _check_slice(lambda a, b, c: pd.favor_attention(a, b, c, projection, group=group, **options), (want, grads),
                             _positions(n, rank, world, unequal), q, k, v, dout, dtype)


def case_softmax(rank, world, group):
    from performer.torch import distributed as pd
    n = 41
    for dtype in (np.float32, np.float64):
        for causal in (True, False):
            for layout, unequal, hk, masks in (("contiguous", False, 4, {}),
                                               ("contiguous", True, 2, dict(kv_lengths=[33, 12])),
                                               ("zigzag", False, 2, dict(kv_lengths=[40, 20], kv_starts=[7, 0]))):
                q, k, v, dout = _inputs(7, 2, 4, hk, n, 8, 6, dtype)
                want, lse = performer.softmax_attention(q, k, v, causal=causal, return_lse=True, **masks)
                grads = performer.softmax_attention_backward(q, k, v, want, lse, dout, causal=causal, **masks)
                _check_slice(lambda a, b, c: pd.softmax_attention(a, b, c, causal=causal, layout=layout, group=group,
                                                                  **masks),
                             (want, grads), _positions(n, rank, world, unequal, layout), q, k, v, dout, dtype)


def _within_half_rounding(name, got, want, slack):
    """got equals want to within the half type's rounding: every element within one unit in
    the last place of the half type (at the larger of the two magnitudes) plus `slack` unit
    roundoffs u of the tensor's largest entry (u = 2^-11 float16, 2^-8 bfloat16): 0.5 for the
    state passing (float32 sums in another order; measured 0), 4 for the ring (measured 1.3),
    whose reference has its own half rounding where a gradient is the difference of larger
    terms: the single-process softmax backward reads the output rounded to half (Δ_i = dO_i·O_i),
    the ring's the float32 merged output."""
    dtype = want.dtype
    mantissa = {torch.float16: 10, torch.bfloat16: 7}[dtype]
    tiny = {torch.float16: 2.0 ** -24, torch.bfloat16: float(torch.finfo(torch.bfloat16).tiny)}[dtype]
    assert got.dtype == dtype and got.shape == want.shape, (name, got.dtype, got.shape, want.shape)
    g, w = got.double(), want.double()
    assert torch.isfinite(g).all(), name
    magnitude = torch.maximum(g.abs(), w.abs())
    ulp = torch.exp2(torch.floor(torch.log2(torch.clamp(magnitude, min=tiny))) - mantissa).clamp(min=tiny)
    unit = 2.0 ** -(mantissa + 1) * max(float(w.abs().max()), tiny)
    factor = float(((g - w).abs() - ulp).max()) / unit
    if os.environ.get("PERFORMER_TEST_VERBOSE"):
        print("%s %s: %.3g u max|want| beyond one ulp" % (name, dtype, factor), flush=True)
    assert factor <= slack, "%s (%s): differs by %.3g u max|want| beyond one ulp" % (name, dtype, factor)


def case_half(rank, world, group):
    """float16 and bfloat16 q, k, v: the distributed result equals the single-process half call
    (performer.torch) on the whole sequence to within the half type's rounding, outputs and
    gradients (linear and FAVOR+ causal and not with GQA and key lengths; softmax contiguous
    and zigzag)."""
    import performer.torch as pt
    from performer.torch import distributed as pd
    n = 33
    projection = performer.FavorProjection(8, 16, seed=3)
    calls = []  # (label, Hk, positions of a rank, single-process call, distributed call, slack)
    for causal in (True, False):
        options = dict(causal=causal, kv_lengths=[30, 9])
        unequal = lambda r: _positions(n, r, world, unequal=True)
        calls.append(("linear causal=%s" % causal, 2, unequal,
                      lambda a, b, c, o=options: pt.linear_attention(a, b, c, **o),
                      lambda a, b, c, o=options: pd.linear_attention(a, b, c, group=group, **o), 0.5))
        calls.append(("favor causal=%s" % causal, 2, unequal,
                      lambda a, b, c, o=options: pt.favor_attention(a, b, c, projection, **o),
                      lambda a, b, c, o=options: pd.favor_attention(a, b, c, projection, group=group, **o), 0.5))
        masks = dict(causal=causal, kv_lengths=[31, 20], kv_starts=[0, 4])
        for layout in ("contiguous", "zigzag"):
            calls.append(("softmax %s causal=%s" % (layout, causal), 4,
                          lambda r, lay=layout: _positions(n, r, world, layout=lay),
                          lambda a, b, c, o=masks: pt.softmax_attention(a, b, c, **o),
                          lambda a, b, c, o=masks, lay=layout: pd.softmax_attention(a, b, c, layout=lay, group=group,
                                                                                      **o), 4))
    for dtype in (torch.float16, torch.bfloat16):
        for label, hk, positions, single, split, slack in calls:
            q, k, v, dout = (torch.from_numpy(x).to(dtype) for x in _inputs(13, 2, 4, hk, n, 8, 6, np.float32))
            whole = [x.clone().requires_grad_() for x in (q, k, v)]
            want = single(*whole)
            want.backward(dout)
            index = positions(rank)
            part = [x[:, :, index].clone().requires_grad_() for x in (q, k, v)]
            out = split(*part)
            out.backward(dout[:, :, index])
            _within_half_rounding("out " + label, out.detach(), want.detach()[:, :, index], slack)
            for name, leaf, full in zip(("dq", "dk", "dv"), part, whole):
                _within_half_rounding(name + " " + label, leaf.grad, full.grad[:, :, index], slack)


def case_training(rank, world, group):
    """A tiny attention model trained on a sequence split over the ranks gives the losses of
    the same model trained in one process, step by step."""
    import performer.torch as pt
    from performer.torch import distributed as pd
    n, e, heads = 24, 8, 2
    projection = performer.FavorProjection(e // heads, 8, seed=1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, n, e, generator=g, dtype=torch.float64)
    target = torch.randn(1, n, e, generator=g, dtype=torch.float64)
    init = [torch.randn(e, e, generator=g, dtype=torch.float64) / e ** 0.5 for _ in range(4)]
    index = _positions(n, rank, world, unequal=True)

    def train(attention, x, target, reduce):
        params = [p.clone().requires_grad_() for p in init]
        losses = []
        for _ in range(4):
            wq, wk, wv, wo = params
            split = lambda t: t.view(1, t.shape[1], heads, e // heads).transpose(1, 2)
            o = attention(split(x @ wq), split(x @ wk), split(x @ wv))
            y = o.transpose(1, 2).reshape(1, -1, e) @ wo
            loss = ((y - target) ** 2).sum() / (n * e)
            for p in params:
                p.grad = None
            loss.backward()
            losses.append(reduce(loss.detach().clone()))
            with torch.no_grad():
                for p in params:
                    p -= 0.5 * reduce(p.grad)
        return losses

    def all_reduce(t):
        dist.all_reduce(t, group=group)
        return t

    for single, split in ((lambda q, k, v: pt.softmax_attention(q, k, v, causal=True),
                           lambda q, k, v: pd.softmax_attention(q, k, v, causal=True, group=group)),
                          (lambda q, k, v: pt.favor_attention(q, k, v, projection, causal=True),
                           lambda q, k, v: pd.favor_attention(q, k, v, projection, causal=True, group=group))):
        want = train(single, x, target, lambda t: t)
        got = train(split, x[:, index], target[:, index], all_reduce)
        assert want[-1] < want[0]
        for a, b in zip(got, want):
            assert abs(float(a) - float(b)) <= 1e-12 * abs(float(b)), (got, want)


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------

@needs_torch
def test_four_ranks_and_two_rank_groups_match_one_process():
    cases = ("case_linear", "case_favor", "case_softmax")
    run_ranks(4, cases, cases + ("case_training",))


@needs_torch
def test_half_precision_two_ranks_match_one_process():
    run_ranks(2, ("case_half",))


@needs_torch
def test_layout_positions():
    from performer.torch.distributed import layout_positions
    for n, world in ((16, 2), (41, 4), (5, 4)):
        for layout in ("contiguous", "zigzag"):
            parts = [layout_positions(n, world, r, layout) for r in range(world)]
            assert sorted(torch.cat(parts).tolist()) == list(range(n))
            sizes = [len(p) for p in parts]
            assert max(sizes) - min(sizes) <= 2
    # zigzag: rank r holds chunks r and 2P-1-r of 2P
    assert layout_positions(8, 2, 0, "zigzag").tolist() == [0, 1, 6, 7]
    assert layout_positions(8, 2, 1, "zigzag").tolist() == [2, 3, 4, 5]
    with pytest.raises(ValueError, match="layout"):
        layout_positions(8, 2, 0, "striped")


@needs_torch
def test_needs_an_initialized_group():
    from performer.torch import distributed as pd
    if dist.is_initialized():
        pytest.skip("a process group is initialized in this process")
    q = torch.zeros(1, 1, 2, 4)
    with pytest.raises(RuntimeError, match="init_process_group"):
        pd.softmax_attention(q, q, q)


@needs_torch
def test_half_inputs_need_one_dtype():
    from performer.torch import distributed as pd
    q = torch.zeros(1, 1, 2, 4, dtype=torch.float16)
    with pytest.raises(TypeError, match="k has dtype torch.float32 but q has dtype torch.float16"):
        pd.linear_attention(q, q.float(), q)
    with pytest.raises(TypeError, match="v has dtype torch.bfloat16"):
        pd.softmax_attention(q, q, q.bfloat16())


@needs_torch
def test_query_side_initial_state_gradient_equals_the_backward():
    """The folded backward's query-side gradient of the initial state (from out, the
    denominators and dout alone) equals the one the causal backward returns, with GQA, key
    lengths, and rows of zero denominator (relu, eps = 0, no visible key: gradient 0)."""
    from performer.torch.distributed import _query_state_gradient
    for dtype in (np.float32, np.float64):
        for fmap, eps, lengths in (("elu+1", 1e-6, [17, 5]), ("relu", 0.0, [13, 0])):
            q, k, v, dout = _inputs(3, 2, 4, 2, 19, 8, 6, dtype)
            s0 = np.abs(np.random.default_rng(4).standard_normal((2, 4, 8, 6))).astype(dtype)
            z0 = np.abs(np.random.default_rng(5).standard_normal((2, 4, 8))).astype(dtype)
            if fmap == "relu":
                s0[1], z0[1] = 0, 0  # batch row 1 sees no key at all
            options = dict(causal=True, feature_map=fmap, eps=eps, kv_lengths=lengths, initial_state=(s0, z0))
            out, den = performer.linear_attention(q, k, v, return_denominators=True, **options)
            want = performer.linear_attention_backward(q, k, v, dout, **options)[3]
            got = _query_state_gradient(q, out, den, dout, eps, fmap)
            for name, a, b in zip(("dS0", "dz0"), got, want):
                _close(name, a, b, dtype)
            if fmap == "relu":
                assert not got[0][1].any() and not got[1][1].any()


@needs_torch
def test_favor_query_side_initial_triple_gradient_equals_the_backward():
    """Causal FAVOR+ folded: the gradient of the scaled initial triple formed from the queries,
    the forward's row units and scaled denominators, out and dout equals the one the causal
    backward returns, for every feature kind, GQA, key lengths, a batch row with no key at all
    (zero rows, zero gradient) and, for the exponential kinds, norms of 30."""
    from performer.torch.distributed import _favor_query_state_gradient
    projection = performer.FavorProjection(8, 16, seed=5)
    for dtype in (np.float32, np.float64):
        for features in ("positive", "hyperbolic", "trigonometric", "relu"):
            for norm in ((1.0, 30.0) if features in ("positive", "hyperbolic") else (1.0,)):
                q, k, v, dout = _inputs(9, 2, 4, 2, 23, 8, 6, dtype, norm=norm / np.sqrt(8))
                kp, vp = (x[:, :2] for x in _inputs(10, 2, 2, 2, 11, 8, 6, dtype, norm=norm / np.sqrt(8))[1:3])
                eps = 1e-3 if norm == 1.0 else 0.0
                options = dict(causal=True, features=features, eps=eps)
                lengths = [19, 0]
                if features == "relu":
                    lengths, options["eps"] = [19, 12], 1e-3  # relu sees its constant offset everywhere
                initial = performer.favor_state(kp, vp, projection, features=features, heads=4,
                                                kv_lengths=[11, 0 if features != "relu" else 11])
                out, (units, dens) = performer.favor_attention(q, k, v, projection, kv_lengths=lengths,
                                                               initial_state=initial, return_row_scales=True, **options)
                want = performer.favor_attention_backward(q, k, v, dout, projection, kv_lengths=lengths,
                                                          initial_state=initial, **options)[3]
                got = _favor_query_state_gradient(q, projection, features, None, 1e-3, initial[2], units, dens,
                                                  out, dout)
                for name, a, b in zip(("dS0", "dz0"), got, want):
                    _close("%s %s norm %g %s" % (features, np.dtype(dtype).name, norm, name), a, b, dtype)
                if features != "relu":  # batch row 1 sees no key: zero rows, zero gradient
                    assert (dens[1] == 0).all() and not got[0][1].any() and not got[1][1].any()

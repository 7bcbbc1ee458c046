"""The ring's plan of softmax calls (performer.torch.distributed._Ring.pairs), without processes.

Each rank runs its queries against every rank's keys as a few softmax calls, joining key runs
that sit next to each other in the owner's buffer when one call computes the same thing. This
expands every call of every rank's plan into the (batch row, query position, key position) pairs
it lets through -- the call's causal mask is bottom-right aligned, its kv_lengths / kv_starts are
local to the joined run -- and checks that each visible pair is covered exactly once and nothing
else is, for both layouts, 1-4 ranks, unequal slices, causal or not, with and without key masks.
"""

import os
import types

import numpy as np
import pytest

try:
    import torch  # noqa: F401  (performer.torch.distributed imports it)
    from performer.torch import distributed as pd
except ImportError:
    if os.environ.get("PERFORMER_REQUIRE_TORCH") == "1":
        raise
    pd = None

pytestmark = pytest.mark.skipif(pd is None, reason="PyTorch is not installed")


def _positions(segments):
    """Row -> global position of a rank's buffer."""
    rows = {}
    for row, n, start in segments:
        for i in range(n):
            rows[row + i] = start + i
    return rows


def _covered(ring, size, batch):
    """Every (b, query position, key position) the plan's calls let through, with repeats."""
    mine = _positions(ring.segments[ring.g.rank])
    pairs = []
    for owner in range(size):
        theirs = _positions(ring.segments[owner])
        for (qrow, qn), (krow, kn), causal, local in ring.pairs(owner):
            for b in range(batch):
                lo = 0 if local["kv_starts"] is None else int(local["kv_starts"][b])
                hi = kn if local["kv_lengths"] is None else int(local["kv_lengths"][b])
                for i in range(qn):
                    for j in range(lo, hi):
                        if not causal or j <= i + (kn - qn):
                            pairs.append((b, mine[qrow + i], theirs[krow + j]))
    return pairs


def _visible(ring, batch, causal, starts, lengths):
    out = set()
    for row, n, qstart in ring.segments[ring.g.rank]:
        for qpos in range(qstart, qstart + n):
            for b in range(batch):
                lo = 0 if starts is None else starts[b]
                hi = sum(s[1] for seg in ring.segments for s in seg) if lengths is None else lengths[b]
                for kpos in range(lo, hi):
                    if not causal or kpos <= qpos:
                        out.add((b, qpos, kpos))
    return out


def _slices(layout, total, size):
    if layout == "zigzag":
        return [len(pd.layout_positions(total, size, r, layout)) for r in range(size)]
    cuts = np.linspace(0, total, size + 1).round().astype(int)
    cuts[1:-1] += 1  # unequal slices
    return [int(cuts[r + 1] - cuts[r]) for r in range(size)]


@pytest.mark.parametrize("layout", ["contiguous", "zigzag"])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_every_visible_pair_is_computed_exactly_once(layout, size, causal, masked):
    total, batch = 19, 2
    lengths = _slices(layout, total, size)
    starts, limits = ([3, 0], [total, 11]) if masked else (None, None)
    masks = pd._Masks(limits, starts, batch)
    kv = np.zeros((batch, 1, max(lengths), 1), dtype=np.float32)
    for rank in range(size):
        g = types.SimpleNamespace(rank=rank, size=size)
        ring = pd._Ring(g, layout, lengths, kv[:, :, :lengths[rank]], kv[:, :, :lengths[rank]], causal, masks,
                        with_grads=False)
        covered = _covered(ring, size, batch)
        assert len(covered) == len(set(covered)), "a (query, key) pair computed twice"
        assert set(covered) == _visible(ring, batch, causal, starts, limits)


def test_zigzag_joins_a_past_run_with_the_diagonal_and_two_past_runs():
    """Zigzag, 2 ranks, causal, no masks: rank 0 holds chunks 0 and 3 of 4. Its own keys take
    2 calls (chunk 0 causal; chunk 3 against chunks 0 and 3, causal bottom-right) and rank 1's
    keys 1 call (chunk 3 against chunks 1 and 2), where one call per key run took 3 and 2."""
    lengths = [8, 8]
    kv = np.zeros((1, 1, 8, 1), dtype=np.float32)
    ring = pd._Ring(types.SimpleNamespace(rank=0, size=2), "zigzag", lengths, kv, kv, True, pd._Masks(None, None, 1),
                    with_grads=False)
    own = [(q, k, c) for q, k, c, _ in ring.pairs(0)]
    other = [(q, k, c) for q, k, c, _ in ring.pairs(1)]
    assert own == [((0, 4), (0, 4), True), ((4, 4), (0, 8), True)]
    assert other == [((4, 4), (0, 8), False)]

"""performer.torch.distributed: sequence (context) parallelism across processes on torch.distributed.

Rank r of a process group holds a slice of the sequence's positions -- q, k, v of shape
B x H x n_r x D (k, v: B x Hk x n_r x D/M) -- and gets its slice of the output; autograd
flows to its q, k, v. Outputs and gradients equal one process's call on the whole sequence
to float rounding. Every rank of the group must make the same calls in the same order
(forward and backward are collectives), with the same options; slices may be unequal.

- :func:`linear_attention` and :func:`favor_attention` pass states (LASP-2 style): each rank
  folds its own keys into a state (``performer.linear_state`` / ``favor_state``), one
  ``all_gather`` of the states, a prefix combination (FAVOR+: the scaled triples combined
  with their max-shifts), then the local forward from that initial state. The backward: one
  all_gather of the initial-state gradients and a suffix combination. Both compute those
  gradients from the query side first (FAVOR+: in scaled units, from the forward's row units
  and scaled denominators) and hand the suffix combination to the local backward as its
  final-state gradient (no state backward; non-causal: no pass repeated at all). Causal: the
  state passing is pipelined over up to 8 groups of heads (one all_gather each), so that a
  rank waiting for another's states starts on the first group while the rest are computed.
  Communication per call O(P * B * H * C * M), independent of N.
- :func:`softmax_attention` is ring attention: key/value slices travel around the ring
  (isend/recv, overlapped with the computation), partial results are merged by log-sum-exp
  (``performer.softmax_merge``); the backward sends the blocks around again together with
  their dk, dv accumulators, which end at their owner. Causal blocks wholly in the future are
  skipped; ``layout="zigzag"`` balances the causal work (see :func:`layout_positions`).

dtypes: float32, float64, and the half types float16 and bfloat16, which run the whole
algorithm in float32 (states, their communication, ring blocks and merges) from the exactly
widened inputs and round the output and the gradients once, at the end, like the
single-process half call.

Positions: ``kv_lengths`` and ``kv_starts`` are in GLOBAL positions of the whole sequence
(as for the single-process call). Causal attention is over the whole sequence (N = L), so each
rank's q and k slices cover the same positions. See docs/DISTRIBUTED.md.
"""

import numpy as _np
import torch as _torch
import torch.distributed as _dist
from torch.autograd.function import once_differentiable as _once_differentiable

import performer as _performer
from performer import _common
from performer import favor as _favor
from performer.torch import _tensors

__all__ = ["linear_attention", "favor_attention", "softmax_attention", "layout_positions", "bytes_sent"]


# ---------------------------------------------------------------------------------------------
# Tensors <-> the NumPy-level performer API, without copies: the state-passing and ring
# algorithms call the library's state-only, merge and backward functions directly.
# ---------------------------------------------------------------------------------------------

def _to_numpy(name, tensor):
    """A NumPy view of a CPU tensor's memory (same strides; no copy), detached from autograd;
    refused with the same messages as performer.torch's own ops."""
    _tensors.check((name,), (tensor,))
    tensor = tensor.detach()
    if tensor.is_neg():
        # A lazily negated view (torch._neg_view) has no memory holding its values.
        tensor = tensor.resolve_neg()
    return tensor.numpy()


def _to_tensor(array):
    """Wraps a NumPy result (owned by nobody else) as a tensor sharing its memory."""
    return _torch.from_numpy(array)


def _kv_lengths(values):
    """kv_lengths / kv_starts as the performer functions take them: a tensor becomes B ints."""
    if isinstance(values, _torch.Tensor):
        return values.detach().cpu().numpy()
    return values


def _input_grads(ctx, grads):
    """The tensors of ``grads`` for the inputs whose gradients autograd asked for, else None."""
    return tuple(_to_tensor(g) if g is not None and ctx.needs_input_grad[i] else None
                 for i, g in enumerate(grads))

def _widen(q, k, v):
    """Half inputs (float16, bfloat16) as float32 tensors, differentiably, and the dtype to
    round the output back to (None for float32/float64 inputs, passed as they are). The
    widening is exact; the whole algorithm -- local calls, states and their all_gather, ring
    blocks, merges, gradient sums -- then runs in float32, and the output and (through
    autograd) the gradients are rounded to the half type once, at the end, as the
    single-process half call does."""
    half = q.dtype if isinstance(q, _torch.Tensor) and q.dtype in _tensors.HALF else None
    if half is None:
        return None, q, k, v
    for name, x in (("k", k), ("v", v)):
        if isinstance(x, _torch.Tensor) and x.dtype != half:
            raise TypeError("%s has dtype %s but q has dtype %s; q, k and v must have one dtype" % (name, x.dtype, half))
    _tensors.check(("q", "k", "v"), (q, k, v))
    return half, q.float(), k.float(), v.float()


def _narrow(out, half):
    return out if half is None else out.to(half)


_LAYOUTS = ("contiguous", "zigzag")

# Payload bytes this process has sent (an all_gather counts its tensor once per other rank, as
# a ring all-gather sends it): for benchmarks/distributed.py and communication estimates.
_bytes_sent = 0


def bytes_sent():
    """Payload bytes this process has sent through the functions of this module so far (an
    all_gather counts its contribution once per other rank). For measuring communication."""
    return _bytes_sent


def _count(nbytes):
    global _bytes_sent
    _bytes_sent += int(nbytes)


# ---------------------------------------------------------------------------------------------
# Groups, layouts, masks
# ---------------------------------------------------------------------------------------------

class _Group:
    """rank, size and the global ranks of a process group's ring neighbours."""

    def __init__(self, group):
        if not _dist.is_available() or not _dist.is_initialized():
            raise RuntimeError("performer.torch.distributed needs an initialized torch.distributed process group "
                               "(torch.distributed.init_process_group)")
        self.group = group
        self.rank = _dist.get_rank(group)
        self.size = _dist.get_world_size(group)
        if self.rank < 0:
            raise RuntimeError("this process is not a member of the given group")

    def global_rank(self, rank):
        rank %= self.size
        return rank if self.group is None else _dist.get_global_rank(self.group, rank)

    def all_gather(self, array):
        """Every rank's copy of a NumPy array of one shape and dtype (one collective)."""
        tensor = _torch.from_numpy(_np.ascontiguousarray(array))
        parts = [_torch.empty_like(tensor) for _ in range(self.size)]
        _dist.all_gather(parts, tensor, group=self.group)
        _count(tensor.numel() * tensor.element_size() * (self.size - 1))
        return [part.numpy() for part in parts]

    def start_all_gather(self, array):
        """Posts the all_gather of a NumPy array (every rank posts its gathers in the same
        order) and returns a function that waits for it and returns every rank's copy: the
        caller computes while the collective runs."""
        tensor = _torch.from_numpy(_np.ascontiguousarray(array))
        parts = [_torch.empty_like(tensor) for _ in range(self.size)]
        work = _dist.all_gather(parts, tensor, group=self.group, async_op=True)
        _count(tensor.numel() * tensor.element_size() * (self.size - 1))

        def wait(tensor=tensor):  # keeps the sent tensor alive until the collective is done
            work.wait()
            return [part.numpy() for part in parts]
        return wait

    def gather_payloads(self, payload):
        """Every rank's payload (a tuple of arrays, sent packed in one all_gather), in rank order."""
        return [_unpack(flat, payload) for flat in self.all_gather(_pack(payload))]

    def start_gather_payloads(self, payload):
        """Posts gather_payloads's all_gather and returns a function that waits for it and
        returns every rank's payload."""
        wait = self.start_all_gather(_pack(payload))
        return lambda: [_unpack(flat, payload) for flat in wait()]

    def lengths(self, n):
        """Every rank's slice length (one small all_gather)."""
        return [int(x[0]) for x in self.all_gather(_np.array([n], dtype=_np.int64))]


def _chunk_bounds(total, chunks):
    """Start positions of `chunks` near-equal chunks of `total` (first total % chunks one longer)."""
    base, extra = divmod(total, chunks)
    starts = [0]
    for c in range(chunks):
        starts.append(starts[-1] + base + (1 if c < extra else 0))
    return starts


def _segments(layout, lengths, rank):
    """Rank `rank`'s positions as (local row, length, global start) runs, given every rank's
    slice length."""
    if layout == "contiguous":
        return [(0, lengths[rank], sum(lengths[:rank]))]
    p = len(lengths)
    bounds = _chunk_bounds(sum(lengths), 2 * p)
    first, second = rank, 2 * p - 1 - rank
    a = bounds[first + 1] - bounds[first]
    return [(0, a, bounds[first]), (a, bounds[second + 1] - bounds[second], bounds[second])]


def _check_layout(layout, lengths, rank):
    if layout not in _LAYOUTS:
        raise ValueError("layout must be 'contiguous' or 'zigzag', not %r" % (layout,))
    if layout == "zigzag":
        p, total = len(lengths), sum(lengths)
        bounds = _chunk_bounds(total, 2 * p)
        for j in range(p):
            want = bounds[j + 1] - bounds[j] + bounds[2 * p - j] - bounds[2 * p - 1 - j]
            if lengths[j] != want:
                raise ValueError("layout='zigzag': rank %d holds %d positions but the zigzag layout of %d positions "
                                 "over %d ranks gives it %d (see layout_positions)" % (j, lengths[j], total, p, want))


def layout_positions(total_length, world_size, rank, layout="contiguous"):
    """The global positions rank `rank` of `world_size` holds, as a LongTensor (for
    ``x.index_select(2, positions)`` and to scatter results back).

    contiguous: near-equal consecutive slices (any other split into consecutive slices is
    accepted too). zigzag: the sequence cut into 2P near-equal chunks; rank r holds chunks r
    and 2P - 1 - r, so every rank has the same causal work (used by softmax_attention with
    ``layout="zigzag"``)."""
    if layout not in _LAYOUTS:
        raise ValueError("layout must be 'contiguous' or 'zigzag', not %r" % (layout,))
    if not 0 <= rank < world_size:
        raise ValueError("rank = %d is not in 0..%d" % (rank, world_size - 1))
    if layout == "contiguous":
        bounds = _chunk_bounds(total_length, world_size)
        return _torch.arange(bounds[rank], bounds[rank + 1])
    bounds = _chunk_bounds(total_length, 2 * world_size)
    second = 2 * world_size - 1 - rank
    return _torch.cat([_torch.arange(bounds[rank], bounds[rank + 1]),
                       _torch.arange(bounds[second], bounds[second + 1])])


def _global_keys(name, values, batch):
    """kv_lengths / kv_starts as an int64 array of B global positions, or None."""
    values = _kv_lengths(values)
    if values is None:
        return None
    array = _np.asarray(values)
    if array.ndim != 1 or array.shape[0] != batch or (array.size and array.dtype.kind not in "iu"):
        raise ValueError("%s must be B = %d ints (global positions)" % (name, batch))
    return array.astype(_np.int64)


def _local_keys(values, start, length):
    """Global key bounds as bounds within the run of positions [start, start + length)."""
    return None if values is None else _np.clip(values - start, 0, length)


class _Masks:
    """kv_lengths and kv_starts in global positions; `local(start, n)` gives a run's."""

    def __init__(self, kv_lengths, kv_starts, batch):
        self.lengths = _global_keys("kv_lengths", kv_lengths, batch)
        self.starts = _global_keys("kv_starts", kv_starts, batch)

    def __bool__(self):
        return self.lengths is not None or self.starts is not None

    def local(self, start, n):
        return dict(kv_lengths=_local_keys(self.lengths, start, n), kv_starts=_local_keys(self.starts, start, n))


def _slice_offset(g, n, masks):
    """This rank's first global position (contiguous slices); a collective only when masks need it."""
    if not masks:
        return 0
    return sum(g.lengths(n)[:g.rank])


def _check_slices(q, k, causal):
    if causal and q.shape[2] != k.shape[2]:
        raise ValueError("causal: q.shape[2] = %d but k.shape[2] = %d; each rank's q and k slices must cover the "
                         "same positions" % (q.shape[2], k.shape[2]))


# ---------------------------------------------------------------------------------------------
# Linear attention: states by all_gather, prefix sums (ALGORITHMS.md section 2, "State")
# ---------------------------------------------------------------------------------------------

def _sum_states(parts, ranks, dtype):
    """Sum of the state tuples of `ranks` (in float64, then `dtype`), or None when there are none."""
    if not ranks:
        return None
    return tuple(sum(parts[j][i].astype(_np.float64) for j in ranks).astype(dtype) for i in range(len(parts[0])))


def _pack(arrays):
    return _np.concatenate([_np.ascontiguousarray(a).reshape(-1) for a in arrays])


def _unpack(flat, like):
    out, at = [], 0
    for a in like:
        out.append(flat[at:at + a.size].reshape(a.shape))
        at += a.size
    return tuple(out)


# The causal state passing runs in up to this many groups of heads, one all_gather each, so that a
# rank that waits for another's states (forward) or state gradients (backward) starts on the
# first group while the later ones are still being computed: at P = 2 the last rank then waits
# for an eighth of the first rank's state pass instead of all of it, and the first rank no
# longer waits for the last rank's query-side gradient (docs/DISTRIBUTED.md, "Pipelining").
# 8 rather than 4: FAVOR+ at N = 32768, 2 ranks, rank 1 blocked 47 ms instead of 83 and its
# call 80 ms shorter (benchmarks/distributed_profile.py favor --groups 4 8, session 9).
# 1 turns it off (one group; benchmarks/distributed_profile.py --groups compares).
_PIPELINE_GROUPS = 8


def _head_groups(g, batch, heads, key_heads):
    """(query-head slice, key-head slice) of each group: ranges of whole key heads (a GQA key
    head and its query heads stay together), at most _PIPELINE_GROUPS of them, and no more than
    leave every group B x heads >= the library's threads on every rank (the library runs one
    task per head: smaller calls would idle threads). The ranks agree on the count with one
    small all_gather (their thread counts may differ)."""
    ratio = heads // key_heads
    count = max(1, min(key_heads, _PIPELINE_GROUPS, (batch * heads) // max(1, _performer.get_num_threads())))
    if g.size > 1:
        count = min(int(x[0]) for x in g.all_gather(_np.array([count], dtype=_np.int64)))
    bounds = _chunk_bounds(key_heads, count)
    return [(slice(a * ratio, b * ratio), slice(a, b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _query_state_gradient(q, out, den, dout, eps, feature_map):
    """The gradient of this rank's loss w.r.t. its initial state (S0, z0), from the query side
    alone (ALGORITHMS.md section 2): with d_i = den_i + eps and g_i = dout_i / d_i,
    dS0 = sum_i phi(q_i) g_i^T and dz0 = -sum_i phi(q_i) (g_i . out_i): one pass over the query
    rows in the library (performer.linear_initial_state_gradient). A zero denominator gave a
    zero output row and gives it zero gradients, as in the library's backward."""
    return _performer.linear_initial_state_gradient(q, out, dout, den, feature_map=feature_map, eps=eps)


class _LinearFunction(_torch.autograd.Function):
    """Causal: the state passing folded into the local calls, per head group
    (:func:`_head_groups`, one all_gather each). Forward: the state of the slice
    (linear_state; the last rank sends zeros: nobody reads its state), all_gather, the
    local causal forward from the prefix of the earlier ranks' states, which also returns its
    denominators. Backward: each rank but the first computes its initial state's gradient from
    the query side (one pass, :func:`_query_state_gradient`); all_gather; the sum of the
    later ranks' is the gradient of this rank's final state, which the local causal backward
    takes: it adds that gradient's key-side terms to dk, dv itself, so no state backward runs.

    Non-causal: nothing is computed twice. Forward: the slice's state, one all_gather, the sum
    of all states (the whole sequence's, summed in rank order on every rank), then the
    queries against it as a memory with no keys of their own. Backward: that call's backward
    gives dq and the memory's gradient (the query side), one all_gather, and their sum, the
    gradient of every key's state, gives dk, dv by one key pass (linear_state_backward)."""

    @staticmethod
    def forward(ctx, q, k, v, causal, feature_map, eps, kv_lengths, kv_starts, group):
        g = _Group(group)
        qn, kn, vn = _to_numpy("q", q), _to_numpy("k", k), _to_numpy("v", v)
        _check_slices(qn, kn, causal)
        masks = _Masks(kv_lengths, kv_starts, qn.shape[0])
        local = masks.local(_slice_offset(g, kn.shape[2], masks), kn.shape[2])
        options = dict(feature_map=feature_map, **local)
        if causal:
            out, den, groups, initial = _linear_causal_forward(g, qn, kn, vn, eps, options)
            out = _to_tensor(out)
            ctx.save_for_backward(q, k, v, out, _to_tensor(den))
            ctx.setup = (g, causal, eps, options, (groups, initial))
            return out
        state = _performer.linear_state(kn, vn, heads=qn.shape[1], **options)
        parts = g.gather_payloads(state)
        initial = _sum_states(parts, list(range(g.size)), qn.dtype)
        out = _to_tensor(_performer.linear_attention(qn, kn[:, :, :0], vn[:, :, :0], eps=eps,
                                                     initial_state=initial, feature_map=feature_map))
        ctx.save_for_backward(q, k, v)
        ctx.setup = (g, causal, eps, options, initial)
        return out

    @staticmethod
    @_once_differentiable
    def backward(ctx, dout):
        g, causal, eps, options, initial = ctx.setup
        q, k, v = ctx.saved_tensors[:3]
        qn, kn, vn, dn = _to_numpy("q", q), _to_numpy("k", k), _to_numpy("v", v), _to_numpy("dout", dout)
        feature_map = options["feature_map"]
        if not causal:
            dq, _, _, dmemory = _performer.linear_attention_backward(qn, kn[:, :, :0], vn[:, :, :0], dn, eps=eps,
                                                                     initial_state=initial, feature_map=feature_map)
            parts = g.gather_payloads(dmemory)
            dk, dv = _performer.linear_state_backward(kn, vn, *_sum_states(parts, list(range(g.size)), qn.dtype),
                                                      heads=qn.shape[1], **options)
            return _input_grads(ctx, (dq, dk, dv)) + (None,) * 6
        out, den = (_to_numpy(name, x) for name, x in zip(("out", "den"), ctx.saved_tensors[3:]))
        grads = _linear_causal_backward(g, qn, kn, vn, dn, out, den, eps, options, *initial)
        return _input_grads(ctx, grads) + (None,) * 6


def _linear_causal_forward(g, qn, kn, vn, eps, options):
    """The causal forward of one rank, pipelined over head groups: every group's slice state
    (linear_state; the last rank sends zeros: nobody reads its state) is posted to its own
    all_gather before the first is awaited; then per group, in order, the local causal forward
    from the prefix of the earlier ranks' states, with its denominators. Returns out, den and
    the head groups and the initial states per group (None on the first rank)."""
    b, h, n, _ = qn.shape
    m = vn.shape[3]
    groups = _head_groups(g, b, h, kn.shape[1])
    pending = []
    for qh, kh in groups:
        heads = qh.stop - qh.start
        if g.rank == g.size - 1 and g.size > 1:
            shape = (b, heads, kn.shape[3], m)
            state = (_np.zeros(shape, qn.dtype), _np.zeros(shape[:3], qn.dtype))
        else:
            state = _performer.linear_state(kn[:, kh], vn[:, kh], heads=heads, **options)
        pending.append(g.start_gather_payloads(state))
    out = _common._empty((b, h, n, m), qn.dtype)
    den = _common._empty((b, h, n), qn.dtype)
    initial = []
    for (qh, kh), gathered in zip(groups, pending):
        parts = gathered()
        start = _sum_states(parts, list(range(g.rank)), qn.dtype)
        _performer.linear_attention(qn[:, qh], kn[:, kh], vn[:, kh], causal=True, eps=eps, initial_state=start,
                                    out=out[:, qh], denominators=den[:, qh], **options)
        initial.append(start)
    return out, den, groups, initial


def _linear_causal_backward(g, qn, kn, vn, dn, out, den, eps, options, groups, initial):
    """The causal backward of one rank, pipelined over the forward's head groups: every
    group's initial-state gradient from the query side (zeros on the first rank, whose initial
    state is no sum of states) is posted to its own all_gather first; then per group the local
    causal backward with the sum of the later ranks' gradients as its final-state gradient."""
    pending = []
    for (qh, _), start in zip(groups, initial):
        if start is None:
            shape = (qn.shape[0], qh.stop - qh.start, kn.shape[3], vn.shape[3])
            dinitial = (_np.zeros(shape, qn.dtype), _np.zeros(shape[:3], qn.dtype))
        else:
            dinitial = _query_state_gradient(qn[:, qh], out[:, qh], den[:, qh], dn[:, qh], eps,
                                             options["feature_map"])
        pending.append(g.start_gather_payloads(dinitial))
    # Results of the output cache (large ones: memory a dead result left, already mapped).
    dq, dk, dv = (_common._empty(x.shape, x.dtype) for x in (qn, kn, vn))
    for (qh, kh), start, gathered in zip(groups, initial, pending):
        parts = gathered()
        dfinal = _sum_states(parts, list(range(g.rank + 1, g.size)), qn.dtype)
        _performer.linear_attention_backward(qn[:, qh], kn[:, kh], vn[:, kh], dn[:, qh], causal=True, eps=eps,
                                             initial_state=start, dstate=dfinal, dq=dq[:, qh], dk=dk[:, kh],
                                             dv=dv[:, kh], **options)
    return dq, dk, dv


def linear_attention(q, k, v, *, causal=False, feature_map="elu+1", eps=1e-6, kv_lengths=None, kv_starts=None,
                     group=None):
    """Linear attention ("Transformers are RNNs") over a sequence split across the ranks of
    `group` (None: the default group). q: B x H x n_r x D, k: B x Hk x n_r' x D, v: B x Hk x
    n_r' x M, this rank's consecutive slice of positions (ranks in order; causal needs n_r' =
    n_r); returns this rank's B x H x n_r x M slice of :func:`performer.linear_attention` over
    the whole sequence, differentiable w.r.t. q, k, v. kv_lengths / kv_starts: B global
    positions. One all_gather of B x H x C x (M + 1) states in the forward, one in the backward
    (causal: one per head group, up to 8, with the same bytes in all, plus one of 8 bytes).
    """
    half, q, k, v = _widen(q, k, v)
    return _narrow(_LinearFunction.apply(q, k, v, bool(causal), feature_map, eps, kv_lengths, kv_starts, group), half)


# ---------------------------------------------------------------------------------------------
# FAVOR+: scaled triples (S~, z~, c) combined with their max-shifts (docs/FAVOR.md section 4)
# ---------------------------------------------------------------------------------------------

def _shift_weights(cs, ranks):
    """For the state combining `ranks`: its shift c' (per feature, the max of theirs) and each
    rank's factor exp(c_j - c'), 0 where c_j = -inf (no keys). None when `ranks` is empty."""
    if not ranks:
        return None
    shift = _np.maximum.reduce([cs[j] for j in ranks])
    weights = {}
    for j in ranks:
        with _np.errstate(invalid="ignore"):
            w = _np.exp(cs[j] - shift)
        weights[j] = _np.where(cs[j] == -_np.inf, 0.0, w)
    return shift, weights


def _combine_favor(parts, ranks, dtype):
    """The triple of the keys of `ranks`, from their scaled triples; None when there are none."""
    combined = _shift_weights([p[2].astype(_np.float64) for p in parts], ranks)
    if combined is None:
        return None
    shift, weights = combined
    s = sum(weights[j][..., None] * parts[j][0] for j in ranks)
    z = sum(weights[j] * parts[j][1] for j in ranks)
    return s.astype(dtype), z.astype(dtype), shift.astype(dtype)


def _favor_query_state_gradient(q, projection, features, scale, relu_offset, c0, units, dens, out, dout):
    """The gradient of this rank's loss w.r.t. its scaled initial triple (S~0, z~0), c0 held
    fixed, from the query side alone (docs/DISTRIBUTED.md): with the forward's row units U_i and
    scaled denominators den_i (``return_row_scales``), the query features scaled to c0 and U_i,
    Q_if = phi_f(q_i) e^{c0_f - U_i} (nu e^{a_f(q_i) + c0_f - U_i} for the exponential kinds: at
    most nu, so finite at any norm), and g_i = dout_i / den_i: dS~0 = sum_i Q_i g_i^T and
    dz~0 = -sum_i Q_i (g_i . out_i). One library pass over the queries
    (performer.favor_initial_state_gradient: the features of a chunk of rows at a time, no
    n x C array). A row with den_i = 0 output zeros and gets zero gradients, as in the library."""
    return _performer.favor_initial_state_gradient(q, projection, c0, (units, dens), out, dout, features=features,
                                                   scale=scale, relu_offset=relu_offset)


class _FavorFunction(_torch.autograd.Function):
    """Causal: folded and pipelined over head groups as linear attention is
    (docs/DISTRIBUTED.md). Forward: the slice's scaled
    triple (favor_state; the last rank sends an empty one), all_gather, the local causal
    forward from the combination of the earlier ranks' triples (shift c'_r), which also returns
    its final shift c_F and per row its unit U_i and scaled denominator den_i. Backward: each
    rank but the first forms its initial triple's gradient from the query side
    (:func:`_favor_query_state_gradient`); all_gather; the gradient of this rank's final
    triple is sum_{t > r} e^{c_F - c'_t} dS~'_t (factors <= 1), which the local causal backward
    takes as its dstate: no state backward runs.

    Non-causal: each rank's queries read the combination of all ranks' triples as a memory; the
    backward of that call gives dq and the memory's gradient, one all_gather, and one key pass
    (favor_state_backward) gives dk, dv."""

    @staticmethod
    def forward(ctx, q, k, v, projection, causal, features, scale, eps, kv_lengths, relu_offset, kv_starts, group):
        g = _Group(group)
        qn, kn, vn = _to_numpy("q", q), _to_numpy("k", k), _to_numpy("v", v)
        _check_slices(qn, kn, causal)
        pinned = _performer.FavorProjection.from_matrix(projection.matrix)
        masks = _Masks(kv_lengths, kv_starts, qn.shape[0])
        local = masks.local(_slice_offset(g, kn.shape[2], masks), kn.shape[2])
        feature_options = dict(features=features, scale=scale, relu_offset=relu_offset)
        ctx.save_for_backward(q, k, v)
        if causal:
            out, folded = _favor_causal_forward(g, qn, kn, vn, pinned, eps, feature_options, local)
            ctx.setup = (g, causal, eps, pinned, feature_options, local, folded)
            return _to_tensor(out)
        state = _performer.favor_state(kn, vn, pinned, heads=qn.shape[1], **feature_options, **local)
        parts = g.gather_payloads(state)
        # The queries against every rank's keys as one memory, no keys of their own: the own
        # keys are not folded a second time.
        initial = _combine_favor(parts, list(range(g.size)), qn.dtype)
        out = _performer.favor_attention(qn, kn[:, :, :0], vn[:, :, :0], pinned, eps=eps, initial_state=initial,
                                         **feature_options)
        ctx.setup = (g, causal, eps, pinned, feature_options, local, (initial, [p[2] for p in parts]))
        return _to_tensor(out)

    @staticmethod
    @_once_differentiable
    def backward(ctx, dout):
        g, causal, eps, pinned, feature_options, local, folded = ctx.setup
        q, k, v = ctx.saved_tensors
        qn, kn, vn = _to_numpy("q", q), _to_numpy("k", k), _to_numpy("v", v)
        dn = _to_numpy("dout", dout)
        if causal:
            grads = _favor_causal_backward(g, qn, kn, vn, dn, pinned, eps, feature_options, local, folded)
            return _input_grads(ctx, grads) + (None,) * 9
        initial, cs = folded
        dq, _, _, dmemory = _performer.favor_attention_backward(qn, kn[:, :, :0], vn[:, :, :0], dn, pinned, eps=eps,
                                                                initial_state=initial, **feature_options)
        parts = g.gather_payloads(dmemory)
        # Every rank's memory combined all triples with one shift c': this rank's triple
        # entered each with the factor exp(c_r - c').
        weight = _shift_weights([c.astype(_np.float64) for c in cs], list(range(g.size)))[1][g.rank]
        ds, dz = (sum(p[i].astype(_np.float64) for p in parts) for i in range(2))
        dk, dv = _performer.favor_state_backward(kn, vn, pinned, (weight[..., None] * ds).astype(qn.dtype),
                                                 (weight * dz).astype(qn.dtype), heads=qn.shape[1],
                                                 **feature_options, **local)
        return _input_grads(ctx, (dq, dk, dv)) + (None,) * 9


def _favor_causal_forward(g, qn, kn, vn, pinned, eps, feature_options, local):
    """The causal FAVOR+ forward of one rank, pipelined over head groups as
    :func:`_linear_causal_forward`: every group's scaled triple (favor_state; the last rank
    sends an empty one) is posted to its own all_gather first; then per group the local causal
    forward from the combination of the earlier ranks' triples, which also returns its final
    shift c_F and, from a combination (not the first rank), per row the unit U_i and scaled
    denominator den_i. Returns out and, per group, what the backward needs."""
    b, h, n, _ = qn.shape
    m = vn.shape[3]
    groups = _head_groups(g, b, h, kn.shape[1])
    count = _favor._favor_count(_common._choice("features", feature_options["features"], _favor._FAVOR_FEATURES),
                                pinned.num_features)
    pending = []
    for qh, kh in groups:
        heads = qh.stop - qh.start
        if g.rank == g.size - 1 and g.size > 1:
            # No rank reads the last rank's causal state: send an empty triple of its shape.
            shape = (b, heads, count, m)
            state = (_np.zeros(shape, qn.dtype), _np.zeros(shape[:3], qn.dtype), _np.full(shape[:3], -_np.inf, qn.dtype))
        else:
            state = _performer.favor_state(kn[:, kh], vn[:, kh], pinned, heads=heads, **feature_options, **local)
        pending.append(g.start_gather_payloads(state))
    out = _common._empty((b, h, n, m), qn.dtype)
    scales = (_common._empty((b, h, n), qn.dtype), _common._empty((b, h, n), qn.dtype)) if g.rank > 0 else None
    folded = []
    for (qh, kh), gathered in zip(groups, pending):
        parts = gathered()
        initial = _combine_favor(parts, list(range(g.rank)), qn.dtype)
        row_scales = None if initial is None else tuple(x[:, qh] for x in scales)
        final = _performer.favor_attention(qn[:, qh], kn[:, kh], vn[:, kh], pinned, causal=True, eps=eps,
                                           initial_state=initial, return_state=True, out=out[:, qh],
                                           row_scales=row_scales, **feature_options, **local)[1]
        # What the backward needs: every rank's shifts c_j, this group's final shift c_F and, to
        # form the initial triple's gradient from the queries, out, U and den.
        folded.append((qh, kh, initial, [p[2] for p in parts], final[2], out[:, qh], row_scales))
    return out, folded


def _favor_causal_backward(g, qn, kn, vn, dn, pinned, eps, feature_options, local, folded):
    """The causal FAVOR+ backward of one rank, pipelined over the forward's head groups: every
    group's initial-triple gradient from the query side (zeros on the first rank) is posted to
    its own all_gather first; then per group the local causal backward with the gradient of
    its final triple, sum_{t > r} e^{c_F - c'_t} dS~'_t, as its dstate."""
    f = feature_options
    pending = []
    for qh, kh, initial, cs, final_c, out, row_scales in folded:
        if initial is None:
            # The first rank's initial triple is empty, not a combination: nobody needs its gradient.
            shape = (qn.shape[0], qh.stop - qh.start, cs[0].shape[2], vn.shape[3])
            dinitial = (_np.zeros(shape, qn.dtype), _np.zeros(shape[:3], qn.dtype))
        else:
            dinitial = _favor_query_state_gradient(qn[:, qh], pinned, f["features"], f["scale"],
                                                   f["relu_offset"], initial[2], *row_scales, out, dn[:, qh])
        pending.append(g.start_gather_payloads(dinitial))
    # Results of the output cache (large ones: memory a dead result left, already mapped).
    dq, dk, dv = (_common._empty(x.shape, x.dtype) for x in (qn, kn, vn))
    for (qh, kh, initial, cs, final_c, out, row_scales), gathered in zip(folded, pending):
        parts = gathered()
        # Rank t's initial triple holds this rank's final one with the factor e^{c_F - c'_t}
        # (c'_t = max_{j<t} c_j >= c_F: factors <= 1; 0 where c_F = -inf, no key yet).
        cs = [c.astype(_np.float64) for c in cs]
        final_c = final_c.astype(_np.float64)
        dfinal = None
        for t in range(g.rank + 1, g.size):
            with _np.errstate(invalid="ignore"):
                weight = _np.exp(final_c - _np.maximum.reduce(cs[:t]))
            weight = _np.where(final_c == -_np.inf, 0.0, weight)
            if dfinal is None:
                dfinal = (_np.zeros(parts[t][0].shape), _np.zeros(parts[t][1].shape))
            dfinal[0][...] += weight[..., None] * parts[t][0]
            dfinal[1][...] += weight * parts[t][1]
        if dfinal is not None:
            dfinal = tuple(x.astype(qn.dtype) for x in dfinal)
        _performer.favor_attention_backward(qn[:, qh], kn[:, kh], vn[:, kh], dn[:, qh], pinned, causal=True, eps=eps,
                                            initial_state=initial, dstate=dfinal, dq=dq[:, qh], dk=dk[:, kh],
                                            dv=dv[:, kh], **feature_options, **local)
    return dq, dk, dv


def favor_attention(q, k, v, projection, *, causal=False, features="positive", scale=None, eps=0.0, kv_lengths=None,
                    relu_offset=1e-3, kv_starts=None, group=None):
    """FAVOR+ attention over a sequence split across the ranks of `group` (None: the default
    group): the arguments of :func:`performer.torch.favor_attention` plus `group`, with q, k, v
    this rank's consecutive slice of positions (causal: q and k slices of the same positions);
    returns this rank's slice of the single-process result, differentiable w.r.t. q, k, v.
    Every rank must pass the same projection W. kv_lengths / kv_starts: B global positions.
    One all_gather of the scaled states (S~, z~, c) in the forward, one of (dS~, dz~) in the
    backward (causal: one per head group, up to 8, with the same bytes in all, plus one of 8
    bytes). Non-causal: each rank's queries read the combined triple of all ranks as a
    memory (no keys of their own), and one key pass gives dk, dv.
    """
    half, q, k, v = _widen(q, k, v)
    return _narrow(_FavorFunction.apply(q, k, v, projection, bool(causal), features, scale, eps, kv_lengths,
                                        relu_offset, kv_starts, group), half)


# ---------------------------------------------------------------------------------------------
# Exact softmax: ring attention with log-sum-exp merges (ALGORITHMS.md section 1)
# ---------------------------------------------------------------------------------------------

class _Ring:
    """One rank's view of the ring: its segments, every rank's segments, and a buffer that
    holds one rank's k and v (padded to the longest slice) plus, in the backward, their
    dk and dv accumulators."""

    def __init__(self, g, layout, lengths, k, v, causal, masks, with_grads):
        self.g, self.causal, self.masks = g, causal, masks
        self.segments = [_segments(layout, lengths, j) for j in range(g.size)]
        b, hk, _, d = k.shape
        m = v.shape[3]
        longest = max(lengths)
        self.shapes = [(b, hk, longest, d), (b, hk, longest, m)]
        self.kv_size = b * hk * longest * (d + m)
        size = self.kv_size * (2 if with_grads else 1)
        dtype = _torch.float32 if k.dtype == _np.float32 else _torch.float64
        self.buffers = [_torch.zeros(size, dtype=dtype) for _ in range(2)]
        kb, vb = self.views(0)[:2]
        kb[:, :, :k.shape[2]] = k
        vb[:, :, :k.shape[2]] = v

    def views(self, which):
        flat = self.buffers[which].numpy()
        k, v = self.shapes
        at = [0, _np.prod(k), self.kv_size, self.kv_size + _np.prod(k), 2 * self.kv_size]
        out = [flat[at[0]:at[1]].reshape(k), flat[at[1]:at[2]].reshape(v)]
        if flat.size > self.kv_size:
            out += [flat[at[2]:at[3]].reshape(k), flat[at[3]:at[4]].reshape(v)]
        return out

    def pairs(self, owner):
        """(query run, key run, causal, local masks) for this rank's queries against rank
        `owner`'s keys, skipping key runs wholly in the future of a query run.

        Key runs next to each other in the owner's buffer go to one call when one call computes
        the same thing: runs wholly in the past, followed at most by the query run's own
        (diagonal) run -- the causal mask is bottom-right aligned, so with L = the joined
        length query i sees the past runs and its own keys j <= i. With key masks the runs must
        also be consecutive positions (a mask is one range of positions). Fewer, larger calls
        and fewer merges (zigzag: 3 calls and 3 merges per rank per step become 2)."""
        for qrow, qn, qstart in self.segments[self.g.rank]:
            if qn == 0:
                continue
            joined = None  # [first row, rows, first position, last position + 1]
            for krow, kn, kstart in self.segments[owner]:
                if kn == 0 or (self.causal and kstart >= qstart + qn):
                    continue
                diagonal = self.causal and kstart == qstart
                if joined is not None and krow == joined[0] + joined[1] and (not self.masks or kstart == joined[3]):
                    joined[1] += kn
                    joined[3] = kstart + kn
                else:
                    if joined is not None:
                        yield (qrow, qn), (joined[0], joined[1]), False, self.masks.local(joined[2], joined[1])
                    joined = [krow, kn, kstart, kstart + kn]
                if diagonal:  # the diagonal ends a joined run (later runs are in the future)
                    yield (qrow, qn), (joined[0], joined[1]), True, self.masks.local(joined[2], joined[1])
                    joined = None
            if joined is not None:
                yield (qrow, qn), (joined[0], joined[1]), False, self.masks.local(joined[2], joined[1])

    def exchange(self, src, dst, part, tag=0):
        """Posts the send of buffer `src`'s `part` (slice of elements) to the next rank and
        the receive of the previous rank's into buffer `dst`; returns the requests. Distinct
        tags keep the key/value and gradient messages of the backward apart."""
        return self.send(src, part, tag), self.receive(dst, part, tag)

    def send(self, src, part, tag=0):
        g = self.g
        payload = self.buffers[src][part]
        _count(payload.numel() * payload.element_size())
        return _dist.isend(payload, g.global_rank(g.rank + 1), group=g.group, tag=tag)

    def receive(self, dst, part, tag=0):
        g = self.g
        return _dist.irecv(self.buffers[dst][part], g.global_rank(g.rank - 1), group=g.group, tag=tag)


def _rows(array, run):
    return array[:, :, run[0]:run[0] + run[1]]


class _SoftmaxFunction(_torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, causal, scale, kv_lengths, kv_starts, group, layout):
        g = _Group(group)
        qn, kn, vn = _to_numpy("q", q), _to_numpy("k", k), _to_numpy("v", v)
        if qn.shape[2] != kn.shape[2]:
            raise ValueError("q.shape[2] = %d but k.shape[2] = %d; each rank's q and k slices must cover the same "
                             "positions" % (qn.shape[2], kn.shape[2]))
        masks = _Masks(kv_lengths, kv_starts, qn.shape[0])
        lengths = g.lengths(kn.shape[2])
        _check_layout(layout, lengths, g.rank)
        ring = _Ring(g, layout, lengths, kn, vn, causal, masks, with_grads=False)
        b, h, n, _ = qn.shape
        out = _np.zeros((b, h, n, vn.shape[3]), dtype=qn.dtype)
        lse = _np.full((b, h, n), -_np.inf, dtype=qn.dtype)
        whole = slice(0, ring.kv_size)
        for step in range(g.size):
            owner = (g.rank - step) % g.size
            requests = ring.exchange(step % 2, (step + 1) % 2, whole) if step < g.size - 1 else ()
            kb, vb = ring.views(step % 2)
            for qrun, krun, diagonal, local in ring.pairs(owner):
                part, part_lse = _performer.softmax_attention(
                    _rows(qn, qrun), _rows(kb, krun), _rows(vb, krun), causal=diagonal, scale=scale,
                    return_lse=True, **local)
                o, s = _rows(out, qrun), lse[:, :, qrun[0]:qrun[0] + qrun[1]]
                _performer.softmax_merge(o, s, part, part_lse, out=o, lse=s)
            for request in requests:
                request.wait()
        out = _to_tensor(out)
        ctx.save_for_backward(q, k, v, out, _to_tensor(lse))
        ctx.setup = (g, layout, lengths, causal, scale, masks)
        return out

    @staticmethod
    @_once_differentiable
    def backward(ctx, dout):
        g, layout, lengths, causal, scale, masks = ctx.setup
        q, k, v, out, lse = ctx.saved_tensors
        qn, kn, vn = _to_numpy("q", q), _to_numpy("k", k), _to_numpy("v", v)
        on, ln, dn = _to_numpy("out", out), _to_numpy("lse", lse), _to_numpy("dout", dout)
        ring = _Ring(g, layout, lengths, kn, vn, causal, masks, with_grads=True)
        dq = _np.zeros(qn.shape, dtype=qn.dtype)
        keys, grads = slice(0, ring.kv_size), slice(ring.kv_size, 2 * ring.kv_size)
        # This step's dk, dv of the block, added to the block's accumulator once it arrives:
        # the accumulator's transfer overlaps the computation.
        part_k, part_v = (_np.zeros_like(x) for x in ring.views(0)[2:])
        arriving = leaving = None
        for step in range(g.size):
            owner, here = (g.rank - step) % g.size, step % 2
            requests = ring.exchange(here, 1 - here, keys, tag=1) if step < g.size - 1 else ()
            kb, vb, dkb, dvb = ring.views(here)
            part_k.fill(0)
            part_v.fill(0)
            for qrun, krun, diagonal, local in ring.pairs(owner):
                gq, gk, gv = _performer.softmax_attention_backward(
                    _rows(qn, qrun), _rows(kb, krun), _rows(vb, krun), _rows(on, qrun),
                    ln[:, :, qrun[0]:qrun[0] + qrun[1]], _rows(dn, qrun), causal=diagonal, scale=scale, **local)
                _rows(dq, qrun)[...] += gq
                _rows(part_k, krun)[...] += gk
                _rows(part_v, krun)[...] += gv
            if arriving is not None:
                arriving.wait()  # the block's accumulator from the ranks before, into dkb, dvb
            dkb += part_k
            dvb += part_v
            if g.size > 1:
                # The accumulator follows its block; after the last step it reaches its owner.
                if leaving is not None:
                    leaving.wait()  # the previous send read buffer 1 - here, which receives next
                leaving = ring.send(here, grads, tag=2)
                arriving = ring.receive(1 - here, grads, tag=2)
            for request in requests:
                request.wait()
        if g.size > 1:
            arriving.wait()
            leaving.wait()
        dk, dv = ring.views(g.size % 2 if g.size > 1 else 0)[2:]
        n = kn.shape[2]
        return _input_grads(ctx, (dq, _np.array(dk[:, :, :n]), _np.array(dv[:, :, :n]))) + (None,) * 6


def softmax_attention(q, k, v, *, causal=False, scale=None, kv_lengths=None, kv_starts=None, group=None,
                      layout="contiguous"):
    """Exact softmax attention over a sequence split across the ranks of `group` (None: the
    default group), by ring attention: the arguments of :func:`performer.torch.softmax_attention`
    plus `group` and `layout`. q: B x H x n_r x D, k: B x Hk x n_r x D, v: B x Hk x n_r x M,
    this rank's positions (q and k of the same positions); returns this rank's B x H x n_r x M
    slice of the single-process result, differentiable w.r.t. q, k, v.

    layout: "contiguous" (rank r holds consecutive positions, ranks in order; slices may be
    unequal) or "zigzag" (rank r holds chunks r and 2P-1-r of 2P near-equal chunks, in that
    order: balanced causal work; :func:`layout_positions` gives the positions). kv_lengths /
    kv_starts: B global positions. A row that sees no key is zero with zero gradients.
    """
    half, q, k, v = _widen(q, k, v)
    return _narrow(_SoftmaxFunction.apply(q, k, v, bool(causal), scale, kv_lengths, kv_starts, group, layout), half)

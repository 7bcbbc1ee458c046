"""Outputs into caller buffers (out=, lse=, dq=, dk=, dv=, final_state=, denominators=): any
strides, written in place with the bits of a call that allocates, and refused before anything is
written when they overlap an input or each other, are read-only, or have the wrong shape or dtype."""

import numpy as np
import pytest

import performer

B, H, HK, N, D, M = 2, 4, 2, 9, 8, 6


def inputs(dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, H, N, D)).astype(dtype)
    k = rng.standard_normal((B, HK, N, D)).astype(dtype)
    v = rng.standard_normal((B, HK, N, M)).astype(dtype)
    dout = rng.standard_normal((B, H, N, M)).astype(dtype)
    return q, k, v, dout


def bnhm(shape, dtype=np.float32):
    """A B x N x H x X buffer seen as B x H x N x X (fast-transformers' and transformers' layout)."""
    b, h, n, x = shape
    return np.full((b, n, h, x), np.nan, dtype).transpose(0, 2, 1, 3)


def gapped(shape, dtype=np.float32):
    """Every other element of a buffer twice as long in the last axis."""
    return np.full(shape[:-1] + (2 * shape[-1],), np.nan, dtype)[..., ::2]


def test_softmax_outputs_in_caller_buffers():
    q, k, v, dout = inputs()
    out, lse = performer.softmax_attention(q, k, v, causal=True, return_lse=True)
    my_out, my_lse = bnhm(out.shape), gapped(lse.shape)
    result = performer.softmax_attention(q, k, v, causal=True, out=my_out, lse=my_lse)
    assert result[0] is my_out and result[1] is my_lse  # lse= implies return_lse
    assert np.array_equal(my_out, out) and np.array_equal(my_lse, lse)
    grads = performer.softmax_attention_backward(q, k, v, out, lse, dout, causal=True)
    mine = bnhm(q.shape), gapped(k.shape), bnhm(v.shape)
    returned = performer.softmax_attention_backward(q, k, v, out, lse, dout, causal=True,
                                                    dq=mine[0], dk=mine[1], dv=mine[2])
    for a, b, r in zip(grads, mine, returned):
        assert r is b and np.array_equal(a, b)


@pytest.mark.parametrize("causal", [False, True])
def test_linear_outputs_in_caller_buffers(causal):
    q, k, v, dout = inputs(np.float64, seed=1)
    kwargs = dict(causal=causal)
    out, (S, z), den = performer.linear_attention(q, k, v, return_state=True, return_denominators=True, **kwargs)
    my = bnhm(out.shape, np.float64), (gapped(S.shape, np.float64), gapped(z.shape, np.float64)), \
        gapped(den.shape, np.float64)
    result = performer.linear_attention(q, k, v, out=my[0], final_state=my[1], denominators=my[2], **kwargs)
    assert result[0] is my[0] and result[1][0] is my[1][0] and result[2] is my[2]
    assert np.array_equal(my[0], out) and np.array_equal(my[1][0], S) and np.array_equal(my[1][1], z)
    assert np.array_equal(my[2], den)
    grads = performer.linear_attention_backward(q, k, v, dout, **kwargs)
    mine = tuple(bnhm(x.shape, np.float64) for x in (q, k, v))
    performer.linear_attention_backward(q, k, v, dout, dq=mine[0], dk=mine[1], dv=mine[2], **kwargs)
    for a, b in zip(grads, mine):
        assert np.array_equal(a, b)


def test_favor_outputs_in_caller_buffers():
    q, k, v, dout = inputs(seed=2)
    projection = performer.FavorProjection(D, 16, seed=3)
    out, state = performer.favor_attention(q, k, v, projection, causal=True, return_state=True)
    my_out = bnhm(out.shape)
    my_state = (gapped(state[0].shape), gapped(state[1].shape), gapped(state[2].shape))
    result = performer.favor_attention(q, k, v, projection, causal=True, out=my_out, final_state=my_state)
    assert result[0] is my_out and all(np.array_equal(a, b) for a, b in zip(result[1], state))
    assert np.array_equal(my_out, out)
    grads = performer.favor_attention_backward(q, k, v, dout, projection, causal=True)
    mine = tuple(bnhm(x.shape) for x in (q, k, v))
    performer.favor_attention_backward(q, k, v, dout, projection, causal=True, dq=mine[0], dk=mine[1], dv=mine[2])
    for a, b in zip(grads, mine):
        assert np.array_equal(a, b)
    features = performer.favor_features(q, projection)
    my_features = bnhm(features.shape)
    assert performer.favor_features(q, projection, out=my_features) is my_features
    assert np.array_equal(my_features, features)


def test_bad_output_buffers_are_refused_before_any_write():
    q, k, v, dout = inputs()
    square = np.random.default_rng(4).standard_normal((B, HK, N, D)).astype(np.float32)  # v with M = D
    sentinel = np.full((B, H, N, M), 7.0, np.float32)

    def untouched(array):
        return np.all(array == 7.0)

    cases = [
        # (call, exception, words the message must contain)
        (lambda: performer.softmax_attention(q, k, square, out=q), ValueError, ["out", "q"]),
        (lambda: performer.softmax_attention(q, k, v, out=sentinel[:, :, :N - 1]), ValueError, ["out.shape[2]"]),
        (lambda: performer.softmax_attention(q, k, v, out=sentinel.astype(np.float64)), TypeError, ["out", "float64"]),
        (lambda: performer.linear_attention(q, k, v, out=np.lib.stride_tricks.as_strided(
            sentinel, strides=(0, 0, 0, 4))), ValueError, ["out", "overlap"]),
        (lambda: performer.softmax_attention(q, k, v, out=sentinel, lse=sentinel[:, :, :, 0]), ValueError,
         ["overlaps"]),
    ]
    for call, exception, words in cases:
        with pytest.raises(exception) as info:
            call()
        message = str(info.value)
        assert all(w in message for w in words), message
        assert untouched(sentinel)
    frozen = sentinel.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        performer.softmax_attention(q, k, v, out=frozen)
    with pytest.raises(TypeError, match="final_state must be a pair"):
        performer.linear_attention(q, k, v, final_state=sentinel)

"""kv_starts (left padding) for softmax, linear and FAVOR+ attention: each batch row equals
NumPy (and the library) on its unpadded rows alone; padded keys get zero dk, dv; bad starts
raise errors naming kv_starts."""

import math

import numpy as np
import pytest

import performer
import reference
from test_favor import causal_reference as favor_causal_reference, phi as favor_phi
from test_linear import reference as linear_reference

B, H, HK, L, D, M = 3, 4, 2, 11, 5, 3
STARTS = [3, 0, 11]      # left padding, none, every key padded
LENGTHS = [11, 8, 11]    # right padding on row 1


def inputs(n, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, H, n, D)).astype(dtype)
    k = rng.standard_normal((B, HK, L, D)).astype(dtype)
    v = rng.standard_normal((B, HK, L, M)).astype(dtype)
    dout = rng.standard_normal((B, H, n, M)).astype(dtype)
    return q, k, v, dout


def rows(causal, n, b):
    """(query rows, key rows) of batch row b that the unpadded call sees. Causal (N = L) is
    checked with left padding only: query i >= start sees keys start..i, as the sliced call's
    query i - start does."""
    start, end = STARTS[b], LENGTHS[b] if not causal else L
    return (slice(start, n) if causal else slice(0, n)), slice(start, end)


def lengths(causal):
    return None if causal else LENGTHS


def check_padded_gradients(dk, dv, causal):
    for b in range(B):
        window = np.zeros(L, bool)
        window[STARTS[b]:(L if causal else LENGTHS[b])] = True
        assert not dk[b][:, ~window].any() and not dv[b][:, ~window].any()


@pytest.mark.parametrize("causal", [False, True])
def test_softmax_matches_numpy_on_unpadded_rows(causal):
    n = L if causal else 7
    q, k, v, dout = inputs(n, 1)
    out, lse = performer.softmax_attention(q, k, v, causal=causal, kv_lengths=lengths(causal), kv_starts=STARTS,
                                           return_lse=True)
    dq, dk, dv = performer.softmax_attention_backward(q, k, v, out, lse, dout, causal=causal,
                                                      kv_lengths=lengths(causal), kv_starts=STARTS)
    for b in range(B):
        qi, kj = rows(causal, n, b)
        one = [x[b:b + 1] for x in (q[:, :, qi], k[:, :, kj], v[:, :, kj], dout[:, :, qi])]
        want_out, want_lse, _ = reference.forward(*one[:3], causal=causal)
        want_dq, want_dk, want_dv = reference.backward(*one, causal=causal)
        np.testing.assert_allclose(out[b, :, qi], want_out[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(lse[b, :, qi], want_lse[0], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dq[b, :, qi], want_dq[0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(dk[b, :, kj], want_dk[0], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(dv[b, :, kj], want_dv[0], rtol=1e-9, atol=1e-12)
        # Causal queries before the start see no key: zero row, lse -inf, zero dq.
        if causal:
            assert not out[b, :, :STARTS[b]].any() and not dq[b, :, :STARTS[b]].any()
            assert np.all(lse[b, :, :STARTS[b]] == -np.inf)
    check_padded_gradients(dk, dv, causal)


@pytest.mark.parametrize("causal", [False, True])
def test_linear_matches_numpy_on_unpadded_rows(causal):
    n = L if causal else 7
    q, k, v, dout = inputs(n, 2)
    options = dict(causal=causal, kv_lengths=lengths(causal), kv_starts=STARTS)
    out = performer.linear_attention(q, k, v, **options)
    dq, dk, dv = performer.linear_attention_backward(q, k, v, dout, **options)
    for b in range(B):
        qi, kj = rows(causal, n, b)
        one = [np.ascontiguousarray(x[b:b + 1]) for x in (q[:, :, qi], k[:, :, kj], v[:, :, kj], dout[:, :, qi])]
        if one[1].shape[2] == 0:
            assert not out[b, :, qi].any()
            continue
        want_out, _ = linear_reference(*one[:3], causal=causal)
        np.testing.assert_allclose(out[b, :, qi], want_out[0], rtol=1e-10, atol=1e-12)
        grads = performer.linear_attention_backward(*one, causal=causal)
        for got, want in zip((dq[b, :, qi], dk[b, :, kj], dv[b, :, kj]), grads):
            np.testing.assert_allclose(got, want[0], rtol=1e-10, atol=1e-12)
    check_padded_gradients(dk, dv, causal)


@pytest.mark.parametrize("causal", [False, True])
def test_favor_matches_numpy_on_unpadded_rows(causal):
    n = L if causal else 7
    q, k, v, dout = inputs(n, 3)
    projection = performer.FavorProjection(D, 16, seed=4)
    W = projection.matrix
    options = dict(causal=causal, kv_lengths=lengths(causal), kv_starts=STARTS, eps=1e-6)
    out = performer.favor_attention(q, k, v, projection, **options)
    dq, dk, dv = performer.favor_attention_backward(q, k, v, dout, projection, **options)
    group = H // HK
    for b in range(B):
        qi, kj = rows(causal, n, b)
        one = [np.ascontiguousarray(x[b:b + 1]) for x in (q[:, :, qi], k[:, :, kj], v[:, :, kj], dout[:, :, qi])]
        kk, vv = np.repeat(one[1], group, axis=1), np.repeat(one[2], group, axis=1)
        if causal:
            want = favor_causal_reference(one[0], kk, vv, W, "positive", eps=1e-6)
        else:
            a = np.einsum("bhnc,bhlc->bhnl", favor_phi(one[0], W, "positive"), favor_phi(kk, W, "positive"))
            want = (a @ vv) / (a.sum(-1, keepdims=True) + 1e-6)
        np.testing.assert_allclose(out[b, :, qi], want[0], rtol=1e-9, atol=1e-12)
        if one[1].shape[2] == 0:
            continue
        grads = performer.favor_attention_backward(*one, projection, causal=causal, eps=1e-6)
        for got, want in zip((dq[b, :, qi], dk[b, :, kj], dv[b, :, kj]), grads):
            np.testing.assert_allclose(got, want[0], rtol=1e-9, atol=1e-12)
    check_padded_gradients(dk, dv, causal)


def test_float32_and_numpy_int_arrays():
    q, k, v, _ = inputs(7, 5, np.float32)
    starts = np.array(STARTS, dtype=np.int32)
    a = performer.softmax_attention(q, k, v, kv_lengths=LENGTHS, kv_starts=starts)
    b = performer.softmax_attention(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64),
                                    kv_lengths=LENGTHS, kv_starts=STARTS)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_errors_name_kv_starts():
    q, k, v, dout = inputs(7, 6)
    projection = performer.FavorProjection(D, 8)
    calls = [
        lambda **o: performer.softmax_attention(q, k, v, **o),
        lambda **o: performer.softmax_attention_backward(q, k, v, dout, np.zeros((B, H, 7)), dout, **o),
        lambda **o: performer.linear_attention(q, k, v, **o),
        lambda **o: performer.linear_attention_backward(q, k, v, dout, **o),
        lambda **o: performer.favor_attention(q, k, v, projection, **o),
        lambda **o: performer.favor_attention_backward(q, k, v, dout, projection, **o),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"kv_starts has 2 entries but batch = 3"):
            call(kv_starts=[0, 1])
        with pytest.raises(TypeError, match="kv_starts must hold ints"):
            call(kv_starts=[0.5, 1, 2])
        with pytest.raises(ValueError, match=r"kv_starts\[1\] = -1 is not in 0\.\.\.11"):
            call(kv_starts=[0, -1, 2])
        with pytest.raises(ValueError, match=r"kv_starts\[2\] = 12 is not in 0\.\.\.11"):
            call(kv_starts=[0, 1, 12])
        with pytest.raises(ValueError, match=r"kv_starts\[1\] = 9 is past kv_lengths\[1\] = 8"):
            call(kv_starts=[0, 9, 2], kv_lengths=LENGTHS)

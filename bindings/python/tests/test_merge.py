"""performer.softmax_merge: partial softmax results over disjoint key sets, merged by their
log-sum-exp, equal the forward over all the keys; associative; empty rows; in place; errors."""

import numpy as np
import pytest

import performer


def _parts(dtype, cuts, lengths=None):
    g = np.random.default_rng(3)
    q = g.standard_normal((2, 4, 6, 8)).astype(dtype)
    k = g.standard_normal((2, 2, 20, 8)).astype(dtype)
    v = g.standard_normal((2, 2, 20, 5)).astype(dtype)
    whole = performer.softmax_attention(q, k, v, return_lse=True, kv_lengths=lengths)
    bounds = [0] + list(cuts) + [20]
    parts = []
    for a, b in zip(bounds, bounds[1:]):
        local = None if lengths is None else np.clip(np.asarray(lengths) - a, 0, b - a)
        parts.append(performer.softmax_attention(q, k[:, :, a:b], v[:, :, a:b], return_lse=True, kv_lengths=local))
    return whole, parts


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_merged_parts_equal_the_whole_in_any_grouping(dtype):
    tol = 2e-6 if dtype == np.float32 else 1e-13
    (out, lse), (a, b, c) = _parts(dtype, (4, 11))
    left = performer.softmax_merge(*performer.softmax_merge(*a, *b), *c)
    right = performer.softmax_merge(*a, *performer.softmax_merge(*b, *c))
    for got in (left, right):
        np.testing.assert_allclose(got[0], out, rtol=tol, atol=tol)
        np.testing.assert_allclose(got[1], lse, rtol=tol, atol=tol)
        assert got[0].dtype == dtype and got[1].shape == lse.shape


def test_empty_rows_add_nothing_and_stay_zero():
    # Batch 0 sees keys only before position 3: the part 3..20 is empty there.
    (out, lse), (a, b) = _parts(np.float64, (3,), lengths=[3, 20])
    assert np.all(b[1][0] == -np.inf) and np.all(b[0][0] == 0)
    b[0][0] = np.nan  # an empty side's rows are never read
    merged = performer.softmax_merge(*a, *b)
    np.testing.assert_array_equal(merged[0][0], a[0][0])
    np.testing.assert_allclose(merged[0], out, rtol=1e-13, atol=1e-13)
    empty = (np.zeros_like(out), np.full_like(lse, -np.inf))
    both = performer.softmax_merge(*empty, *empty)
    assert np.all(both[0] == 0) and np.all(both[1] == -np.inf)


def test_in_place_and_strided_out():
    (out, lse), (a, b) = _parts(np.float32, (9,))
    expected = performer.softmax_merge(*a, *b)
    target = np.empty((2, 6, 4, 5), np.float32).transpose(0, 2, 1, 3)  # B x N x H x M seen as B x H x N x M
    performer.softmax_merge(*a, *b, out=target, lse=np.empty_like(lse))
    np.testing.assert_array_equal(target, expected[0])
    result = performer.softmax_merge(a[0], a[1], b[0], b[1], out=a[0], lse=a[1])
    assert result[0] is a[0]
    np.testing.assert_array_equal(a[0], expected[0])


def test_errors_name_the_argument_and_write_nothing():
    (out, lse), (a, b) = _parts(np.float64, (9,))
    dest, dest_lse = np.full_like(out, 7.0), np.full_like(lse, 7.0)
    bad = b[1].copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"lse_b\[1, 2, 3\]"):
        performer.softmax_merge(*a, b[0], bad, out=dest, lse=dest_lse)
    bad[1, 2, 3] = np.inf
    with pytest.raises(ValueError, match=r"lse_b\[1, 2, 3\]"):
        performer.softmax_merge(*a, b[0], bad, out=dest, lse=dest_lse)
    with pytest.raises(ValueError, match="out_b"):
        performer.softmax_merge(*a, b[0][:, :, :5], b[1])
    with pytest.raises(TypeError, match="lse_a"):
        performer.softmax_merge(a[0], a[1].astype(np.float32), *b)
    with pytest.raises(ValueError, match="overlaps"):
        performer.softmax_merge(*a, *b, out=dest, lse=dest[..., 0])
    assert np.all(dest == 7.0) and np.all(dest_lse == 7.0)

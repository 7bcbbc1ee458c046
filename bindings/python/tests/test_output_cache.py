"""Large results (>= 4 MiB) live in memory that a dead result leaves for the next one
(performer/_output_pool.c, performer.set_output_cache_limit): they are ordinary C-contiguous
arrays with the values of a call into a caller's buffer; a block is reused only once nothing
refers to it; the cache never holds more than its limit."""

import pickle

import numpy as np
import pytest

import performer
from helpers import MIB, empty_output_cache  # noqa: F401  (the fixture, used by pytestmark)

BLOCK = 4 * MIB  # 1 x 2 x 8192 x 64 float32
contents = performer._ext._output_cache_contents
pytestmark = pytest.mark.usefixtures("empty_output_cache")  # each test starts and ends with it empty


def inputs(n=8192, l=16, dtype=np.float32, seed=0):
    """q of 4 MiB (float32) against a few keys: large outputs at small cost."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((1, 2, n, 64)).astype(dtype)
    k = rng.standard_normal((1, 2, l, 64)).astype(dtype)
    v = rng.standard_normal((1, 2, l, 64)).astype(dtype)
    return q, k, v


def address(array):
    return array.__array_interface__["data"][0]


def is_recycled(array):
    return type(array.base).__name__ == "OutputBlock"


def test_large_results_of_every_function_are_recycled_arrays_with_the_values_of_caller_buffers():
    q, k, v = inputs()
    dout = q.copy()
    calls = {
        "softmax_attention": lambda **o: performer.softmax_attention(q, k, v, **o),
        "linear_attention": lambda **o: performer.linear_attention(q, k, v, **o),
        "favor_attention": lambda **o: performer.favor_attention(
            q, k, v, performer.FavorProjection(64, 64, seed=3), **o),
    }
    for name, call in calls.items():
        out = call()
        assert is_recycled(out), name
        assert out.flags.c_contiguous and out.flags.writeable and out.dtype == np.float32, name
        assert out.shape == (1, 2, 8192, 64), name
        given = np.full(out.shape, np.nan, np.float32)
        call(out=given)
        np.testing.assert_array_equal(out, given, err_msg=name)
    out, lse = performer.softmax_attention(q, k, v, return_lse=True)
    grads = performer.softmax_attention_backward(q, k, v, out, lse, dout)
    assert is_recycled(grads[0]) and not is_recycled(grads[1])  # dk, dv: 16 keys, 8 KiB
    given = tuple(np.empty_like(x) for x in (q, k, v))
    performer.softmax_attention_backward(q, k, v, out, lse, dout, dq=given[0], dk=given[1], dv=given[2])
    for got, want in zip(grads, given):
        np.testing.assert_array_equal(got, want)
    dk, dv = performer.linear_state_backward(q, q, np.ones((1, 2, 64, 64), np.float32),
                                             np.ones((1, 2, 64), np.float32))
    assert is_recycled(dk) and is_recycled(dv)


def test_small_results_are_plain_numpy_arrays():
    q, k, v = inputs(n=64)
    out = performer.softmax_attention(q, k, v)
    assert out.base is None and out.flags.owndata
    assert contents() == (0, 0)


def test_a_dead_result_leaves_its_memory_to_the_next_one_of_its_size():
    q, k, v = inputs()
    out = performer.softmax_attention(q, k, v)
    first = address(out)
    assert first % (2 * MIB) == 0  # huge-page aligned
    del out
    assert contents() == (BLOCK, 1)
    again = performer.softmax_attention(q, k, v)
    assert address(again) == first
    assert contents() == (0, 0)
    np.testing.assert_array_equal(again, performer.softmax_attention(q, k, v, out=np.empty_like(again)))


def test_memory_is_reused_only_once_no_view_refers_to_it():
    q, k, v = inputs()
    out = performer.softmax_attention(q, k, v)
    first = address(out)
    view = out[0, 1, ::3]
    kept = view.copy()
    del out
    assert contents() == (0, 0)
    other = performer.softmax_attention(2 * q, k, v)
    assert address(other) != first
    np.testing.assert_array_equal(view, kept)
    del view
    assert contents() == (BLOCK, 1)
    del other
    assert contents() == (2 * BLOCK, 2)


def test_a_much_larger_cached_block_does_not_serve_a_small_result():
    q, k, v = inputs(n=65536)  # 32 MiB out
    big = performer.softmax_attention(q, k, v)
    del big
    assert contents() == (32 * MIB, 1)
    small = performer.softmax_attention(*inputs())
    assert contents() == (32 * MIB, 1)
    del small
    assert contents() == (36 * MIB, 2)


def test_the_limit_bounds_what_is_kept_oldest_freed_first():
    q, k, v = inputs()
    assert performer.get_output_cache_limit() == 256 * MIB
    performer.set_output_cache_limit(9 * MIB)
    first, second, third = (performer.softmax_attention(q, k, v) for _ in range(3))
    kept = address(second)
    del first, second, third  # in that order: the first one's memory is freed
    assert contents() == (8 * MIB, 2)
    again = performer.softmax_attention(q, k, v)  # the oldest of equal fits
    assert address(again) == kept
    performer.set_output_cache_limit(0)
    assert contents() == (0, 0)
    del again
    assert contents() == (0, 0)
    performer.set_output_cache_limit(3 * MIB)  # below a block's size: nothing is kept
    performer.softmax_attention(q, k, v)
    assert contents() == (0, 0)


def test_the_cache_holds_at_most_sixteen_blocks():
    q, k, v = inputs()
    outs = [performer.softmax_attention(q, k, v) for _ in range(20)]
    del outs[:]
    assert contents() == (16 * BLOCK, 16)


def test_a_live_result_survives_a_limit_of_zero_and_is_freed_when_it_dies():
    q, k, v = inputs()
    out = performer.linear_attention(q, k, v)
    kept = out.copy()
    performer.set_output_cache_limit(0)
    np.testing.assert_array_equal(out, kept)
    out += 1
    del out
    assert contents() == (0, 0)


def test_recycled_results_pickle_and_copy_like_arrays():
    q, k, v = inputs(dtype=np.float64, n=4096)  # 4 MiB of float64
    out = performer.softmax_attention(q, k, v)
    assert is_recycled(out) and out.dtype == np.float64
    back = pickle.loads(pickle.dumps(out))
    assert back.base is None or not is_recycled(back)
    np.testing.assert_array_equal(back, out)
    np.testing.assert_array_equal(out.copy(), out)


def test_a_result_too_large_for_memory_raises_memory_error_naming_its_size():
    q = np.broadcast_to(np.zeros((1, 1, 1, 64), np.float32), (8192, 8192, 8192, 64))  # 2**47-byte output
    with pytest.raises(MemoryError, match=r"cannot allocate 140737488355328 bytes for a result of shape "
                                          r"\(8192, 8192, 8192, 64\)"):
        performer.linear_attention(q, q, q)
    assert contents() == (0, 0)


@pytest.mark.parametrize("bad, error, message", [
    ("1", TypeError, "nbytes must be an int, not str"),
    (1.5, TypeError, "nbytes must be an int, not float"),
    (True, TypeError, "nbytes must be an int, not bool"),
    (None, TypeError, "nbytes must be an int, not NoneType"),
    (-1, ValueError, "nbytes must be in 0 .. 2**62, not -1"),
    (2 ** 70, ValueError, "nbytes must be in 0 .. 2**62, not"),
])
def test_bad_limits_are_refused_and_leave_the_limit(bad, error, message):
    with pytest.raises(error, match=message.replace("*", r"\*").replace(".", r"\.")):
        performer.set_output_cache_limit(bad)
    assert performer.get_output_cache_limit() == 256 * MIB

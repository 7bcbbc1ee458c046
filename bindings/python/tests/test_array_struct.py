"""The extension's way in for arrays on CPython 3.9 and 3.10, where the buffer protocol is not in the
stable ABI: NumPy's __array_struct__ (performer/_performer.c, get_struct_array). These tests force
that path on any interpreter and compare it with the buffer protocol (CPython >= 3.11), which the
rest of the suite uses there; on 3.9/3.10 it is the only path and the whole suite runs through it."""

import gc
import sys

import numpy as np
import pytest

import performer
from performer import _performer

HAS_BUFFER_PATH = sys.version_info >= (3, 11)


@pytest.fixture
def struct_path():
    previous = _performer._set_array_struct(True)
    assert _performer._array_reader() == "__array_struct__"
    yield
    if not previous:
        _performer._set_array_struct(False)


def test_reader_matches_the_interpreter():
    assert _performer._array_reader() == ("buffer" if HAS_BUFFER_PATH else "__array_struct__")
    if not HAS_BUFFER_PATH:
        with pytest.raises(RuntimeError, match="stable ABI"):
            _performer._set_array_struct(False)


def _arrays(dtype, rng):
    q = rng.standard_normal((2, 3, 5, 4)).astype(dtype)
    k = rng.standard_normal((2, 3, 7, 4)).astype(dtype)
    v = rng.standard_normal((2, 3, 7, 6)).astype(dtype)
    return q, k, v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_results_as_the_buffer_protocol(dtype):
    rng = np.random.default_rng(1)
    q, k, v = _arrays(dtype, rng)
    # strided and negatively strided views, and a transposed (non-C-order) one
    k_view = np.ascontiguousarray(k[:, :, ::-1])[:, :, ::-1]
    v_view = np.asfortranarray(v)
    expected = performer.softmax_attention(q, k_view, v_view, causal=True)
    previous = _performer._set_array_struct(True)
    try:
        found = performer.softmax_attention(q, k_view, v_view, causal=True)
        linear = performer.linear_attention(q, k_view, v[..., :4])
    finally:
        _performer._set_array_struct(previous)
    np.testing.assert_array_equal(found, expected)
    np.testing.assert_array_equal(linear, performer.linear_attention(q, k_view, v[..., :4]))


def test_memoryviews_and_outputs(struct_path):
    rng = np.random.default_rng(2)
    q, k, v = _arrays(np.float32, rng)
    views = [memoryview(bytearray(x.tobytes())).cast("f", shape=list(x.shape)) for x in (q, k, v)]
    out = memoryview(bytearray(2 * 3 * 5 * 6 * 4)).cast("f", shape=[2, 3, 5, 6])
    _performer.softmax_forward(*views, out, None, False, None, None)
    np.testing.assert_array_equal(np.asarray(out), performer.softmax_attention(q, k, v))
    for view in views + [out]:
        view.release()  # raises BufferError if the extension kept an export


def test_errors_name_the_argument(struct_path):
    rng = np.random.default_rng(3)
    q, k, v = _arrays(np.float32, rng)
    out = np.full((2, 3, 5, 6), 7.0, np.float32)
    f = _performer.softmax_forward
    with pytest.raises(TypeError, match="^k must be a float32 or float64 array with the buffer protocol"):
        f(q, [1.0], v, out, None, False, None, None)
    with pytest.raises(TypeError, match="^k must be .* not int"):
        f(q, 3, v, out, None, False, None, None)
    with pytest.raises(TypeError, match="^v has dtype float64 but q has float32"):
        f(q, k, v.astype(np.float64), out, None, False, None, None)
    with pytest.raises(TypeError, match="^q has unsupported element format 'i4'"):
        f(q.astype(np.int32), k, v, out, None, False, None, None)
    with pytest.raises(TypeError, match="^q has unsupported element format 'f4' \\(byte-swapped\\)"):
        f(q.astype(q.dtype.newbyteorder()), k, v, out, None, False, None, None)
    with pytest.raises(ValueError, match="^q must have 4 dimensions"):
        f(q[0], k, v, out, None, False, None, None)
    read_only = out.copy()
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="^out: cannot write into a read-only array"):
        f(q, k, v, read_only, None, False, None, None)
    with pytest.raises(ValueError, match="^out"):
        f(q, k, v, memoryview(bytes(2 * 3 * 5 * 6 * 4)).cast("f", shape=[2, 3, 5, 6]), None, False, None, None)
    base = np.zeros(4096, dtype=np.uint8)
    odd = np.lib.stride_tricks.as_strided(base.view(np.float32), shape=q.shape, strides=(600, 120, 24, 6))
    with pytest.raises(ValueError, match="^q.strides\\[3\\] = 6 bytes is not a multiple"):
        f(odd, k, v, out, None, False, None, None)
    raw = np.zeros(q.nbytes + 1, dtype=np.uint8)
    misaligned = np.frombuffer(raw, dtype=np.float32, count=q.size, offset=1).reshape(q.shape)
    with pytest.raises(ValueError, match="^q's data is not aligned"):
        f(misaligned, k, v, out, None, False, None, None)
    assert np.all(out == 7.0)  # nothing written by any failed call


class _FakeStruct:
    """An object whose __array_struct__ is not NumPy's capsule."""

    __array_struct__ = 42


def test_odd_objects(struct_path):
    rng = np.random.default_rng(4)
    q, k, v = _arrays(np.float32, rng)
    out = np.empty((2, 3, 5, 6), np.float32)
    with pytest.raises(TypeError, match="^q: its __array_struct__ is not a NumPy array interface capsule"):
        _performer.softmax_forward(_FakeStruct(), k, v, out, None, False, None, None)
    with pytest.raises(TypeError, match="^q has unsupported element format 'S1'"):
        _performer.softmax_forward(memoryview(b"abc").cast("c"), k, v, out, None, False, None, None)
    # a buffer NumPy cannot view (a pointer format)
    pointers = memoryview(bytearray(16)).cast("P")
    with pytest.raises(TypeError, match="^q"):
        _performer.softmax_forward(pointers, k, v, out, None, False, None, None)


def test_no_reference_leaks(struct_path):
    rng = np.random.default_rng(5)
    q, k, v = _arrays(np.float32, rng)
    out = np.empty((2, 3, 5, 6), np.float32)
    read_only = out.copy()
    read_only.flags.writeable = False
    calls = [
        lambda: _performer.softmax_forward(q, k, v, read_only, None, False, None, None),
        lambda: _performer.softmax_forward(q, k, v.astype(np.float64), out, None, False, None, None),
        lambda: _performer.softmax_forward(q, k, v, out[..., :2], None, False, None, None),
        lambda: _performer.softmax_forward(q, k, v, out, None, False, None, [1, 2, 3]),
    ]
    tracked = [q, k, v, out, read_only]
    for call in calls:
        with pytest.raises((TypeError, ValueError)):
            call()
    gc.collect()
    before = [sys.getrefcount(x) for x in tracked]
    for _ in range(100):
        for call in calls:
            try:
                call()
            except (TypeError, ValueError):
                pass
        _performer.softmax_forward(q, k, v, out, None, False, None, None)
    gc.collect()
    assert [sys.getrefcount(x) for x in tracked] == before

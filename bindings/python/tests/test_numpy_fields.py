"""Plain NumPy arrays read from their object fields (performer/_numpy_fields.c) instead of the buffer
protocol: checked against the buffer protocol when the extension loads, used only for exact
ndarrays of a supported dtype in native order, rank as expected, writable when written; everything
else goes through the buffer protocol, which words the errors."""

import sys

import numpy as np
import pytest

import performer
from performer import _performer

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11), reason="the fields reader runs in the buffer mode only")


class Plain(np.ndarray):
    """An ndarray subclass: not an exact ndarray, so read through the buffer protocol."""


def test_reader_is_on_for_this_numpy():
    assert _performer._numpy_fields_reader()
    previous = _performer._set_array_struct(True)
    try:
        assert not _performer._numpy_fields_reader()
    finally:
        _performer._set_array_struct(previous)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_same_bits_as_the_buffer_protocol(dtype):
    rng = np.random.default_rng(5)
    B, H, D, M = 2, 3, 8, 5
    tokens = [rng.standard_normal((4, B, H, n)).astype(dtype) for n in (D, D, M)]
    # strided views: every other head of a wider array, a reversed feature axis
    wide_q = np.repeat(tokens[0], 2, axis=2)
    fields, buffered = performer.LinearDecoder(B, H, D, M, dtype=dtype), performer.LinearDecoder(B, H, D, M, dtype=dtype)
    S, z = np.zeros((B, H, D, M), fields.state_dtype), np.zeros((B, H, D), fields.state_dtype)
    S_buffered, z_buffered = np.zeros_like(S).view(Plain), np.zeros_like(z).view(Plain)
    for t in range(4):
        q = wide_q[t][:, ::2]
        k, v = tokens[1][t][:, :, ::-1], tokens[2][t]
        out = fields.step(q, k, v)
        expected = buffered.step(q.view(Plain), k.view(Plain), v.view(Plain), np.empty_like(out).view(Plain))
        np.testing.assert_array_equal(out, np.asarray(expected))
        fields.step(q, k, v, np.empty_like(out), state=(S, z))
        buffered.step(q.view(Plain), k.view(Plain), v.view(Plain), np.empty_like(out).view(Plain),
                      state=(S_buffered, z_buffered))
    np.testing.assert_array_equal(S, np.asarray(S_buffered))
    np.testing.assert_array_equal(z, np.asarray(z_buffered))
    np.testing.assert_array_equal(S, fields.state[0])


def test_the_rest_goes_through_the_buffer_protocol():
    decoder = performer.LinearDecoder(1, 2, 4, 4)
    q = np.ones((1, 2, 4), np.float32)
    read_only = np.empty((1, 2, 4), np.float32)
    read_only.setflags(write=False)
    with pytest.raises(ValueError, match="^out: .*read-only"):
        decoder.step(q, q, q, read_only)
    swapped = q.astype(q.dtype.newbyteorder())
    with pytest.raises(TypeError, match="^k has unsupported element format"):
        decoder.step(q, swapped, q)
    with pytest.raises(ValueError, match="^v must have 3 dimensions"):
        decoder.step(q, q, q[None])
    with pytest.raises(TypeError, match="^q has unsupported element format 'i'"):
        decoder.step(q.astype(np.int32), q, q)
    assert np.asarray(read_only).flags.writeable is False  # nothing written, nothing changed


def test_arrays_are_held_for_the_call():
    decoder = performer.LinearDecoder(1, 2, 4, 4)
    q = np.ones((1, 2, 4), np.float32)
    before = sys.getrefcount(q)
    for _ in range(10):
        decoder.step(q, q, q)
    assert sys.getrefcount(q) == before  # every reference taken for a call is given back

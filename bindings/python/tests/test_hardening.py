"""The issue-13 probes that Python reaches (docs/RELIABILITY.md has the table): each once
crashed, aborted or hung the interpreter; now each raises or works. The C side of every probe
is Tests/c/test_hardening.c."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import performer
from helpers import run_in_forked_child


def _broadcast(shape):
    return np.broadcast_to(np.float32(0.5), shape)


@pytest.mark.parametrize("log2_dim", [58, 60])
def test_broadcast_huge_head_dim_is_refused(log2_dim):
    # Scratch sizes once wrapped around 2^64: a 64-byte buffer received D elements.
    q = k = _broadcast((1, 1, 1, 2 ** log2_dim))
    v = np.ones((1, 1, 1, 1), np.float32)
    with pytest.raises((MemoryError, ValueError), match="allocate|overflow|64 bits"):
        performer.softmax_attention(q, k, v)
    for causal in (False, True):
        with pytest.raises((MemoryError, ValueError), match="allocate|overflow|64 bits"):
            performer.linear_attention(q, k, v, causal=causal)


@pytest.mark.parametrize("kind", ["iid", "orthogonal"])
def test_projection_too_large_is_memory_error(kind):
    # Once "Fatal error: failed to allocate" (SIGABRT) inside the library.
    with pytest.raises(MemoryError, match="projection W"):
        performer.FavorProjection(2 ** 20, 2 ** 20, kind=kind)


def test_broadcast_projection_matrix_too_large_is_memory_error():
    with pytest.raises(MemoryError, match="projection W"):
        performer.FavorProjection.from_matrix(np.broadcast_to(np.float64(0.25), (2 ** 20, 2 ** 20)))


def test_favor_decoder_too_large_is_memory_error():
    projection = performer.FavorProjection(8, 8, kind="iid")
    with pytest.raises(MemoryError, match="decoder state"):
        performer.FavorDecoder(projection, 2 ** 40, 1, 1)


def test_batch_mismatch_with_kv_lengths():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((5, 1, 2, 4), dtype=np.float32)
    k = rng.standard_normal((1, 1, 2, 4), dtype=np.float32)
    v = rng.standard_normal((1, 1, 2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"k.shape\[0\] = 1"):
        performer.softmax_attention(q, k, v, kv_lengths=[2] * 5)


def test_empty_inputs_with_huge_strides():
    # An empty view has no elements whatever its strides; b * strides[0] once trapped (SIGILL).
    rng = np.random.default_rng(1)
    q = rng.standard_normal((3, 2, 5, 4), dtype=np.float32)
    v = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), (3, 2, 5, 0), (2 ** 61, 2 ** 60, 2 ** 59, 4))
    out, lse = performer.softmax_attention(q, q, v, return_lse=True)
    assert out.shape == (3, 2, 5, 0) and np.isfinite(lse).all()
    assert performer.linear_attention(q, q, v, causal=True).shape == (3, 2, 5, 0)


def _threaded_checksum():
    performer.set_num_threads(4)
    x = np.random.default_rng(2).standard_normal((1, 8, 128, 16), dtype=np.float32)
    return float(performer.softmax_attention(x, x, x).astype(np.float64).sum())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Python 3.12+: fork of a threaded process
def test_fork_child_runs_threaded_calls():
    # The child of a parent that ran a multi-threaded call once hung in its first such call.
    parent = _threaded_checksum()
    child = run_in_forked_child(_threaded_checksum, "the forked child hung in a multi-threaded call", 60)
    assert child == parent
    assert _threaded_checksum() == parent
    performer.set_num_threads(0)


def test_idle_workers_do_not_slow_small_calls():
    # After one call at 64 threads every later call once woke all 63 workers, which polled:
    # 100 small calls at 2 threads went from 0.06 s to 5.7 s. Fresh process: its own pool.
    script = """
import time, numpy as np, performer
x = np.random.default_rng(0).standard_normal((1, 2, 128, 16), dtype=np.float32)
def small_calls():
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(100):
            performer.softmax_attention(x, x, x)
        best = min(best, time.perf_counter() - start)
    return best
performer.set_num_threads(2)
before = small_calls()
performer.set_num_threads(64)
y = np.ones((1, 64, 64, 16), np.float32)
performer.softmax_attention(y, y, y)
performer.set_num_threads(2)
print(before, small_calls())
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    before, after = map(float, result.stdout.split())
    assert after <= 3 * before + 0.03, (before, after)


def test_handles_are_released_after_create_destroy_cycles():
    # Probe 8: the extension owns every handle, so Python cannot pass a destroyed or foreign
    # one; what it can do is create and drop many. The library's table of live handles must
    # come back to its size (no leak), and a decoder made after the cycles still computes.
    import gc

    gc.collect()
    before = performer.live_handle_count()
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((1, 2, 4)).astype(np.float32) for _ in range(3))
    reference = performer.LinearDecoder(1, 2, 4, 4).step(q, k, v)
    projection = performer.FavorProjection(4, 8, seed=5)
    favor_reference = performer.FavorDecoder(projection, 1, 2, 4).step(q, k, v)
    assert performer.live_handle_count() == before + 1  # the projection; the decoders are gone
    for _ in range(2000):
        dec = performer.LinearDecoder(1, 2, 4, 4)
        performer.FavorDecoder(projection, 1, 2, 4)
        performer.FavorProjection(4, 8, seed=5)
        del dec
    gc.collect()
    assert performer.live_handle_count() == before + 1
    decoders = [performer.LinearDecoder(1, 2, 4, 4) for _ in range(50)]
    assert performer.live_handle_count() == before + 51
    assert np.array_equal(decoders[-1].step(q, k, v), reference)
    assert np.array_equal(performer.FavorDecoder(projection, 1, 2, 4).step(q, k, v), favor_reference)
    del decoders, projection
    gc.collect()
    assert performer.live_handle_count() == before

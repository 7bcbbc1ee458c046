"""The installed package's API: errors, buffers, reference counts, the GIL, threads, versions."""

import ctypes
import gc
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import performer
from helpers import REPO, assert_gil_released, run_example
from performer import _performer


def qkv(dtype=np.float32, B=2, H=4, Hk=2, N=5, L=7, D=4, M=3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((B, H, N, D)).astype(dtype),
            rng.standard_normal((B, Hk, L, D)).astype(dtype),
            rng.standard_normal((B, Hk, L, M)).astype(dtype))


def backward_args(dtype=np.float32):
    q, k, v = qkv(dtype)
    out, lse = performer.softmax_attention(q, k, v, return_lse=True)
    return [q, k, v, out, lse, np.ones_like(out)]


# ---------------------------------------------------------------------------------------------
# The package is the installed one, with its own libperformer.so
# ---------------------------------------------------------------------------------------------

def test_installed_package_is_tested():
    source = os.path.join(REPO, "bindings", "python", "performer")
    package = os.path.dirname(os.path.abspath(performer.__file__))
    assert os.path.realpath(package) != os.path.realpath(source)
    assert os.path.isfile(os.path.join(package, "libperformer.so"))


def test_extension_loads_the_shipped_library():
    package = os.path.dirname(os.path.abspath(performer.__file__))
    shipped = os.path.realpath(os.path.join(package, "libperformer.so"))
    with open("/proc/self/maps") as maps:
        loaded = {line.split()[-1] for line in maps if "libperformer.so" in line}
    assert {os.path.realpath(p) for p in loaded} == {shipped}


def test_version_matches_c_and_header():
    package = os.path.dirname(os.path.abspath(performer.__file__))
    lib = ctypes.CDLL(os.path.join(package, "libperformer.so"))
    lib.performer_version_string.restype = ctypes.c_char_p
    assert performer.__version__ == lib.performer_version_string().decode()
    with open(os.path.join(REPO, "include", "performer.h")) as f:
        header = f.read()
    parts = [re.search(r"#define PERFORMER_VERSION_%s (\d+)" % p, header).group(1)
             for p in ("MAJOR", "MINOR", "PATCH")]
    assert performer.__version__ == ".".join(parts)
    assert _performer.abi_version() == _performer.ABI_VERSION
    from importlib.metadata import version
    assert version("libperformer") == performer.__version__


def test_public_api():
    expected = {"softmax_attention", "softmax_attention_backward", "set_num_threads", "get_num_threads",
                "__version__"}
    assert expected <= set(performer.__all__)
    for name in performer.__all__:
        if name != "__version__":
            assert getattr(performer, name).__doc__
    assert "bottom-right" in performer.softmax_attention.__doc__
    assert "is_causal" in performer.softmax_attention.__doc__
    package = os.path.dirname(os.path.abspath(performer.__file__))
    assert os.path.isfile(os.path.join(package, "__init__.pyi"))
    assert os.path.isfile(os.path.join(package, "py.typed"))


def test_kernel_isa():
    if not hasattr(_performer, "kernel_isa"):
        assert not hasattr(performer, "kernel_isa")
        pytest.skip("this libperformer.so has no performer_kernel_isa")
    isa = performer.kernel_isa()
    assert isinstance(isa, str) and isa


def test_threads():
    try:
        performer.set_num_threads(0)
        default = performer.get_num_threads()
        assert default >= 1
        performer.set_num_threads(1)
        assert performer.get_num_threads() == 1
        performer.set_num_threads(3)
        assert performer.get_num_threads() == 3
        for bad in (-1, 1025, 2**40, 2**70):
            with pytest.raises(ValueError):
                performer.set_num_threads(bad)
        assert performer.get_num_threads() == 3
        for bad in (1.5, "2", None, True):
            with pytest.raises(TypeError):
                performer.set_num_threads(bad)
        performer.set_num_threads(np.int64(2))
        assert performer.get_num_threads() == 2
        performer.set_num_threads(0)
        assert performer.get_num_threads() == default
    finally:
        performer.set_num_threads(0)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

def test_mixed_dtypes():
    q, k, v = qkv(np.float32)
    with pytest.raises(TypeError, match="k has dtype float64 but q has float32"):
        performer.softmax_attention(q, k.astype(np.float64), v)
    with pytest.raises(TypeError, match="v has dtype float64 but q has float32"):
        performer.softmax_attention(q, k, v.astype(np.float64))
    with pytest.raises(TypeError, match="k has dtype float32 but q has float64"):
        performer.softmax_attention(q.astype(np.float64), k, v.astype(np.float64))
    args = backward_args(np.float32)
    for i, name in enumerate(["k", "v", "out", "lse", "dout"], start=1):
        bad = list(args)
        bad[i] = bad[i].astype(np.float64)
        with pytest.raises(TypeError, match="%s has dtype float64 but q has float32" % name):
            performer.softmax_attention_backward(*bad)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.complex64, np.uint8, bool])  # float16: test_half.py
def test_unsupported_dtypes(dtype):
    q, k, v = qkv(np.float32)
    with pytest.raises(TypeError, match="^q has dtype"):
        performer.softmax_attention(q.astype(dtype), k, v)
    with pytest.raises(TypeError, match="^k has dtype"):
        performer.softmax_attention(q, k.astype(dtype), v)


def test_big_endian_rejected():
    q, k, v = qkv(np.float64)
    with pytest.raises(TypeError, match="^q has dtype"):
        performer.softmax_attention(q.astype(">f8"), k, v)


def test_non_buffers():
    q, k, v = qkv()
    with pytest.raises(TypeError, match="^q must be a float32 or float64 array"):
        performer.softmax_attention(q.tolist(), k, v)
    with pytest.raises(TypeError, match="^v must be"):
        performer.softmax_attention(q, k, None)
    with pytest.raises(TypeError, match="^k must be"):
        _performer.softmax_forward(q, 3, v, np.empty((2, 4, 5, 3), np.float32), None, False, None, None)


def test_wrong_ndim():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="^q must have 4 dimensions"):
        performer.softmax_attention(q[0], k, v)
    with pytest.raises(ValueError, match="^k must have 4 dimensions"):
        performer.softmax_attention(q, k[None], v)
    with pytest.raises(ValueError, match="^v must have 4 dimensions"):
        performer.softmax_attention(q, k, v.reshape(-1))
    args = backward_args()
    bad = list(args)
    bad[4] = bad[4][..., None]
    with pytest.raises(ValueError, match="^lse must have 3 dimensions"):
        performer.softmax_attention_backward(*bad)


@pytest.mark.parametrize("change, name", [
    (lambda q, k, v: (q, k[:1], v), "k.shape\\[0\\]"),
    (lambda q, k, v: (q, k[..., :3], v), "k.shape\\[3\\]"),
    (lambda q, k, v: (q, k, v[:1]), "v.shape\\[0\\]"),
    (lambda q, k, v: (q, k, v[:, :1]), "v.shape\\[1\\]"),
    (lambda q, k, v: (q, k, v[:, :, :3]), "v.shape\\[2\\]"),
    (lambda q, k, v: (q[:, :3], k, v), "q.shape\\[1\\]"),
])
def test_mismatched_shapes(change, name):
    with pytest.raises(ValueError, match=name):
        performer.softmax_attention(*change(*qkv()))


def test_zero_key_heads():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="k.shape\\[1\\] = 0"):
        performer.softmax_attention(q, k[:, :0], v[:, :0])


@pytest.mark.parametrize("change", [
    lambda q, k, v: (q, k[:1], v),
    lambda q, k, v: (q, k[..., :3], v),
    lambda q, k, v: (q, k, v[:, :1]),
    lambda q, k, v: (q, k, v[:, :, :3]),
    lambda q, k, v: (q[:, :3], k, v),
])
def test_shape_messages_match_the_c_library(change):
    """The Python layer checks shapes before allocating results, with the C library's words."""
    q, k, v = change(*qkv(np.float64))
    with pytest.raises(ValueError) as python_error:
        performer.softmax_attention(q, k, v)
    out = np.empty(q.shape[:3] + v.shape[3:])
    with pytest.raises(ValueError) as c_error:
        _performer.softmax_forward(q, k, v, out, None, False, None, None)
    assert str(python_error.value) == str(c_error.value)


def test_backward_mismatched_shapes():
    args = backward_args()
    for i, name in [(3, "out"), (4, "lse"), (5, "dout")]:
        bad = list(args)
        bad[i] = bad[i][:, :, 1:]
        with pytest.raises(ValueError, match="^%s has shape" % name):
            performer.softmax_attention_backward(*bad)


def test_odd_buffers():
    q, k, v = qkv(np.float32)
    raw = bytearray(q.tobytes())
    # flat and byte-typed memoryviews of the right size
    with pytest.raises(ValueError, match="^q must have 4 dimensions"):
        performer.softmax_attention(memoryview(raw).cast("f"), k, v)
    with pytest.raises(TypeError, match="^q has dtype uint8"):
        performer.softmax_attention(memoryview(raw).cast("B", shape=[2, 4, 5, 16]), k, v)
    # a 4-D float view whose shape disagrees with k
    with pytest.raises(ValueError, match="k.shape\\[3\\]"):
        performer.softmax_attention(memoryview(raw).cast("f", shape=[2, 4, 4, 5]), k, v)
    # too short a buffer for the shape the other arguments imply
    short = memoryview(bytearray(4 * 2 * 4 * 5 * 3)).cast("f", shape=[2, 4, 5, 3])
    with pytest.raises(ValueError, match="k.shape\\[3\\]"):
        performer.softmax_attention(short, k, v)


def test_strides_not_multiple_of_item_size():
    q, k, v = qkv(np.float32)
    base = np.zeros(4096, dtype=np.uint8)
    odd = np.lib.stride_tricks.as_strided(base.view(np.float32), shape=q.shape, strides=(600, 120, 24, 6))
    with pytest.raises(ValueError, match="^q.strides\\[3\\] = 6 bytes is not a multiple"):
        _performer.softmax_forward(odd, k, v, np.empty((2, 4, 5, 3), np.float32), None, False, None, None)
    with pytest.raises(ValueError, match="strides"):
        performer.softmax_attention(odd, k, v)


def test_misaligned_data():
    q, k, v = qkv(np.float32)
    raw = np.zeros(q.nbytes + 1, dtype=np.uint8)
    misaligned = np.frombuffer(raw, dtype=np.float32, count=q.size, offset=1).reshape(q.shape)
    with pytest.raises(ValueError, match="^q's data is not aligned"):
        performer.softmax_attention(misaligned, k, v)


def test_read_only_output():
    q, k, v = qkv()
    out = np.empty((2, 4, 5, 3), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="^out"):
        _performer.softmax_forward(q, k, v, out, None, False, None, None)


def test_c_level_errors_are_mapped():
    q, k, v = qkv(np.float64)
    # An output of the wrong shape reaches the C library, which names it.
    with pytest.raises(ValueError, match="out"):
        _performer.softmax_forward(q, k, v, np.empty((2, 4, 5, 4)), None, False, None, None)


def test_aliasing_output_rejected():
    rng = np.random.default_rng(0)
    qv = rng.standard_normal((1, 2, 6, 4))      # used as q and as out (D = M = 4)
    k = rng.standard_normal((1, 2, 6, 4))
    v = rng.standard_normal((1, 2, 6, 4))
    before = qv.copy()
    with pytest.raises(ValueError):
        _performer.softmax_forward(qv, k, v, qv, None, False, None, None)
    np.testing.assert_array_equal(qv, before)


def test_options_errors():
    q, k, v = qkv()
    with pytest.raises(ValueError, match="kv_lengths has 3 entries"):
        performer.softmax_attention(q, k, v, kv_lengths=[1, 2, 3])
    with pytest.raises(ValueError, match="kv_lengths has 1 entries"):
        performer.softmax_attention(q, k, v, kv_lengths=[1])
    with pytest.raises(ValueError, match="kv_lengths"):
        performer.softmax_attention(q, k, v, kv_lengths=[[1, 2]])
    with pytest.raises(TypeError, match="kv_lengths"):
        performer.softmax_attention(q, k, v, kv_lengths=[1.5, 2.0])
    for bad in ([8, 1], [-1, 3]):   # outside 0..L (L = 7): rejected by the C library
        with pytest.raises(ValueError):
            performer.softmax_attention(q, k, v, kv_lengths=bad)
    with pytest.raises(ValueError):
        performer.softmax_attention(q, k, v, scale=float("nan"))
    with pytest.raises(ValueError):
        performer.softmax_attention(q, k, v, scale=float("inf"))
    with pytest.raises(TypeError, match="scale"):
        performer.softmax_attention(q, k, v, scale="big")
    # The extension checks kv_lengths itself too.
    out = np.empty((2, 4, 5, 3), np.float32)
    with pytest.raises(ValueError, match="kv_lengths has 1 entries"):
        _performer.softmax_forward(q, k, v, out, None, False, None, [3])
    with pytest.raises(TypeError, match="kv_lengths\\[1\\] must be an int"):
        _performer.softmax_forward(q, k, v, out, None, False, None, [3, "x"])
    with pytest.raises(ValueError, match="kv_lengths\\[0\\] does not fit"):
        _performer.softmax_forward(q, k, v, out, None, False, None, [2**64, 1])


# ---------------------------------------------------------------------------------------------
# No reference or buffer leaks on error paths
# ---------------------------------------------------------------------------------------------

def _failing_calls():
    q, k, v = qkv(np.float32)
    out = np.empty((2, 4, 5, 3), np.float32)
    lse = np.empty((2, 4, 5), np.float32)
    ro = out.copy()
    ro.flags.writeable = False
    bargs = backward_args()
    grads = [np.empty_like(x) for x in bargs[:3]]
    f = _performer.softmax_forward
    b = _performer.softmax_backward
    calls = [
        # extension-level failures at each argument
        (TypeError, lambda: f(q, k.astype(np.float64), v, out, lse, False, None, None)),
        (TypeError, lambda: f(q, k, v, out, lse.astype(np.float64), False, None, None)),
        (ValueError, lambda: f(q, k, v, ro, lse, False, None, None)),
        (ValueError, lambda: f(q, k, v, out, lse[..., None], False, None, None)),
        (TypeError, lambda: f(q, k, v, out, lse, False, "x", None)),
        (ValueError, lambda: f(q, k, v, out, lse, False, None, [1, 2, 3])),
        (TypeError, lambda: f(q, k, v, out, lse, False, None, [1, None])),
        (TypeError, lambda: f(q, k, v, out, lse, False, None, 5)),
        (TypeError, lambda: b(*bargs[:5], bargs[5].astype(np.float64), *grads, False, None, None)),
        (ValueError, lambda: b(*bargs, grads[0], grads[1], ro, False, None, None)),
        # C-level failures (after every buffer was taken)
        (ValueError, lambda: f(q, k, v, out[..., :2], lse, False, None, None)),
        (ValueError, lambda: f(q, k, v, out, lse, False, float("nan"), None)),
        (ValueError, lambda: f(q, k, v, out, lse, False, None, [100, 1])),
        (ValueError, lambda: b(*bargs, grads[0], grads[1], grads[1], False, None, None)),
        # Python-level failures
        (TypeError, lambda: performer.softmax_attention(q, k.astype(np.float64), v)),
        (ValueError, lambda: performer.softmax_attention(q, k, v[:, :, :2])),
        (ValueError, lambda: performer.softmax_attention_backward(*bargs[:4], bargs[4][:, :1], bargs[5])),
    ]
    tracked = [q, k, v, out, lse, ro] + bargs + grads
    return calls, tracked


def test_no_reference_leaks_on_errors():
    calls, tracked = _failing_calls()
    for expected, call in calls:       # each call fails as expected
        with pytest.raises(expected):
            call()
    gc.collect()
    before = [sys.getrefcount(x) for x in tracked]
    for _ in range(200):
        for expected, call in calls:
            try:
                call()
            except expected:
                pass
    gc.collect()
    after = [sys.getrefcount(x) for x in tracked]
    assert after == before


def test_no_buffer_exports_left_on_errors():
    q, k, v = qkv(np.float32)
    views = [memoryview(bytearray(x.tobytes())).cast("f", shape=list(x.shape)) for x in (q, k, v)]
    out = memoryview(bytearray(2 * 4 * 5 * 3 * 4)).cast("f", shape=[2, 4, 5, 3])
    bad_lse = memoryview(bytearray(2 * 4 * 5 * 8)).cast("d", shape=[2, 4, 5])
    for call in (lambda: _performer.softmax_forward(*views, out, bad_lse, False, None, None),
                 lambda: _performer.softmax_forward(*views, out, None, False, None, [1]),
                 lambda: _performer.softmax_forward(*views, out, None, False, float("inf"), None)):
        with pytest.raises((TypeError, ValueError)):
            call()
    _performer.softmax_forward(*views, out, None, False, None, None)   # and a success
    for view in views + [out, bad_lse]:
        view.release()     # raises BufferError if an export was never released


def test_no_memory_growth_on_errors():
    import tracemalloc

    calls, _ = _failing_calls()

    def run(times):
        for _ in range(times):
            for expected, call in calls:
                try:
                    call()
                except expected:
                    pass

    run(20)
    gc.collect()
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    run(200)
    gc.collect()
    end, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert end - start < 64 * 1024


# ---------------------------------------------------------------------------------------------
# The GIL is released during the computation
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spin", [None, "0"])
def test_idle_workers_use_no_cpu(spin):
    # The pool's workers poll for up to PERFORMER_SPIN_US (100 µs by default) after a call, then
    # sleep: an idle process must not keep a core busy. Fresh process: its own pool and env.
    script = """
import time, numpy as np, performer
performer.set_num_threads(2)
q = np.random.default_rng(0).standard_normal((1, 4, 64, 32), dtype=np.float32)
reference = performer.softmax_attention(q, q, q)
for _ in range(300):
    assert np.array_equal(performer.softmax_attention(q, q, q), reference)
time.sleep(0.05)
start = time.process_time()
time.sleep(0.5)
print(time.process_time() - start)
"""
    env = dict(os.environ)
    if spin is not None:
        env["PERFORMER_SPIN_US"] = spin
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip()) < 0.05


def test_gil_released():
    rng = np.random.default_rng(0)

    def softmax_call(n):
        q = rng.standard_normal((1, 4, n, 64)).astype(np.float32)
        return lambda: performer.softmax_attention(q, q, q)

    assert_gil_released(softmax_call, [256 << i for i in range(7)])


# ---------------------------------------------------------------------------------------------
# The example runs and checks itself
# ---------------------------------------------------------------------------------------------

def test_example_runs():
    result = run_example("softmax_attention.py")
    assert result.returncode == 0, result.stdout.decode()
    assert b"max |out - reference|" in result.stdout


def test_readme_python_examples_run():
    """Every ```python block of the top-level README runs as written (its asserts included)."""
    with open(os.path.join(REPO, "README.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    assert blocks, "the README has no Python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})

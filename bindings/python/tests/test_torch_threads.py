"""performer.torch runs libperformer's parallel work on PyTorch's OpenMP threads (the executor hook,
performer._openmp): same results bit for bit as the library's own pool, the thread count follows
torch.set_num_threads unless performer.set_num_threads chose one, and it can be switched off.
(The speed is measured by benchmarks/hf_llama.py, not here.)"""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

try:
    import torch
except ImportError:
    if os.environ.get("PERFORMER_REQUIRE_TORCH") == "1":
        raise
    pytest.skip("PyTorch is not installed", allow_module_level=True)

import performer
import performer.torch as pt
from helpers import run_in_forked_child

openmp = "ATen parallel backend: OpenMP" in torch.__config__.parallel_info()
needs_openmp = pytest.mark.skipif(not openmp, reason="this PyTorch does not run on OpenMP")


@pytest.fixture(autouse=True)
def restore_threads():
    torch_threads = torch.get_num_threads()
    yield
    torch.set_num_threads(torch_threads)
    performer.set_num_threads(0)
    pt.use_torch_threads(True)


def attention_and_grads(causal=True):
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 8, 300, 32, generator=g, requires_grad=True)
    k = torch.randn(2, 2, 300, 32, generator=g, requires_grad=True)
    v = torch.randn(2, 2, 300, 16, generator=g, requires_grad=True)
    out = pt.softmax_attention(q, k, v, causal=causal, kv_starts=[0, 7])
    out.backward(torch.ones_like(out))
    return out.detach(), q.grad, k.grad, v.grad


@needs_openmp
def test_installed_on_import_and_results_equal_the_own_pool():
    assert pt.torch_threads_in_use()
    torch.set_num_threads(2)
    on_torch = attention_and_grads()
    assert not pt.use_torch_threads(False) and not pt.torch_threads_in_use()
    performer.set_num_threads(2)
    on_own = attention_and_grads()
    for a, b in zip(on_torch, on_own):
        assert torch.equal(a, b)


@needs_openmp
def test_thread_count_follows_torch_unless_chosen():
    torch.set_num_threads(1)
    assert performer.get_num_threads() == 1
    torch.set_num_threads(3)
    assert performer.get_num_threads() == 3
    performer.set_num_threads(2)  # the user's choice wins
    torch.set_num_threads(1)
    assert performer.get_num_threads() == 2
    performer.set_num_threads(0)  # and 0 hands it back to torch
    assert performer.get_num_threads() == 1


@needs_openmp
def test_calls_from_other_python_threads():
    torch.set_num_threads(2)
    expected = attention_and_grads(causal=False)
    results = []
    workers = [threading.Thread(target=lambda: results.append(attention_and_grads(causal=False))) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(results) == 3
    for result in results:
        for a, b in zip(result, expected):
            assert torch.equal(a, b)


def test_environment_keeps_the_own_pool():
    code = "import performer.torch as pt; print(pt.torch_threads_in_use())"
    env = dict(os.environ, PERFORMER_TORCH_THREADS="own")
    result = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def _numpy_checksum():
    # NumPy, not torch: the child must not run PyTorch's own OpenMP regions either.
    x = np.random.default_rng(2).standard_normal((1, 8, 256, 16), dtype=np.float32)
    return float(performer.softmax_attention(x, x, x, causal=True).astype(np.float64).sum())


def _child_attention():
    return pt.torch_threads_in_use(), _numpy_checksum(), _numpy_checksum(), pt.use_torch_threads(True)


@needs_openmp
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Python 3.12+: fork of a threaded process
def test_forked_child_goes_back_to_the_own_pool():
    # OpenMP's pool does not survive fork(): a child on it would hang in its first parallel region.
    torch.set_num_threads(2)
    performer.set_num_threads(2)
    expected = _numpy_checksum()
    in_use, first, second, reinstalled = run_in_forked_child(_child_attention, "the forked child hung", 120)
    assert not in_use and not reinstalled and first == second == expected
    assert pt.torch_threads_in_use()


@needs_openmp
def test_results_bit_identical_on_every_executor_and_thread_count():
    torch.set_num_threads(1)
    expected = attention_and_grads()
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        for executor in ("torch", "own"):
            if executor == "own":
                pt.use_torch_threads(False)
                performer.set_num_threads(threads)
            else:
                assert pt.use_torch_threads(True)
                performer.set_num_threads(0)
            assert performer.get_num_threads() == threads
            for a, b in zip(attention_and_grads(), expected):
                assert torch.equal(a, b), (threads, executor)


@needs_openmp
def test_calls_from_inside_an_openmp_region():
    # A call made by a thread of an OpenMP team (a host calling the library from its own parallel
    # region): its region nests, OpenMP gives it a team of one, and it runs on that thread alone.
    import ctypes
    from performer.torch import _threads

    torch.set_num_threads(2)
    expected = _numpy_checksum()
    gomp_parallel = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint)(
        _threads._openmp_entry_points()[0])
    results = []
    body = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda data: results.append(_numpy_checksum()))
    gomp_parallel(body, None, 2, 0)
    assert results == [expected, expected]

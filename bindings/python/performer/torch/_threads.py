"""Threads inside a PyTorch process: libperformer's parallel work runs on PyTorch's intra-op pool.

PyTorch (built with OpenMP, its default on Linux) keeps its OpenMP workers spinning for a while after
each parallel region, waiting for the next one (libgomp's wait policy). With the library's own pool at
2 threads on 2 cores, our workers and those spinning workers time-share the cores, and a model ran
slower at 2 threads than at 1. Here the library's executor hook (performer_set_executor) hands our
tasks to GOMP_parallel of the libgomp PyTorch loaded: the threads already spinning for work run them.
The thread count then follows ``torch.set_num_threads`` (omp_get_max_threads of the calling thread),
unless ``performer.set_num_threads(n)`` (n > 0) or PERFORMER_NUM_THREADS chose one.

fork(): GNU OpenMP's pool does not survive it (a child's first parallel region hangs), so a forked
child's first multi-threaded call goes back to the library's own workers, which do.

Installed when ``performer.torch`` is imported, if PyTorch's parallel backend is OpenMP and its libgomp
is found among the loaded libraries; otherwise (or with PERFORMER_TORCH_THREADS=own) the library keeps
its own workers. :func:`use_torch_threads` switches at run time (benchmarks compare the two).
"""

import ctypes
import os

import torch

__all__ = ["use_torch_threads", "torch_threads_in_use"]

_in_use = False


def _loaded_openmp():
    """The path of the GNU OpenMP runtime loaded in this process (PyTorch's), or None."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "libgomp" in line and "/" in line}
    except OSError:
        return None
    torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
    # PyTorch's own copy first; any other libgomp only when it is the only one.
    ours = sorted(p for p in paths if p.startswith(torch_dir))
    if ours:
        return ours[0]
    return paths.pop() if len(paths) == 1 else None


def _openmp_entry_points():
    """Addresses of GOMP_parallel, omp_get_thread_num, omp_get_num_threads and omp_get_max_threads of
    the libgomp PyTorch's ATen runs on; None when PyTorch does not use OpenMP or it is not found."""
    if "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    path = _loaded_openmp()
    if path is None:
        return None
    try:
        # dlopen of a loaded library's path returns that library: the same runtime, the same threads.
        library = ctypes.CDLL(path)
        names = ("GOMP_parallel", "omp_get_thread_num", "omp_get_num_threads", "omp_get_max_threads")
        return tuple(ctypes.cast(getattr(library, name), ctypes.c_void_p).value for name in names)
    except (OSError, AttributeError):
        return None


def use_torch_threads(enabled=True):
    """Runs libperformer's parallel work on PyTorch's OpenMP threads (``enabled``), or on the library's
    own workers. Returns whether PyTorch's threads are in use afterwards (False when they cannot be:
    PyTorch not built with OpenMP, or its libgomp not found)."""
    global _in_use
    from .. import _openmp

    if not enabled:
        _openmp.uninstall()
        _in_use = False
        return False
    entry_points = _openmp_entry_points()
    if entry_points is None or not all(entry_points):
        return _in_use
    _in_use = bool(_openmp.install(*entry_points))  # False in a forked child: see _openmp.c
    return _in_use


def torch_threads_in_use():
    """Whether libperformer's parallel work runs on PyTorch's OpenMP threads now."""
    return _in_use


def _forget_in_child():
    global _in_use
    _in_use = False


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _install_default():
    if os.environ.get("PERFORMER_TORCH_THREADS", "torch") != "own":
        use_torch_threads(True)

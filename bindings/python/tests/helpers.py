"""Helpers more than one test file uses: the repository's path, running an example,
central-difference gradients, the check that a call releases the GIL, a call in a forked
child, and an empty output cache around a test.
(The softmax reference is reference.py.)"""

import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest

import performer

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, os.pardir))


def run_example(name):
    """Runs examples/python/<name> with this interpreter, away from the source tree (so it
    imports the installed package); returns the CompletedProcess, stderr merged into stdout."""
    example = os.path.join(REPO, "examples", "python", name)
    return subprocess.run([sys.executable, example], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          cwd=tempfile.gettempdir(), timeout=120)


def numeric_grad(f, x, step=1e-6):
    """d f() / d x by central differences, one entry of x at a time (x is changed in place
    and restored)."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        saved = x[idx]
        x[idx] = saved + step
        up = f()
        x[idx] = saved - step
        down = f()
        x[idx] = saved
        g[idx] = (up - down) / (2 * step)
    return g


def assert_gil_released(make_call, sizes):
    """make_call(n) returns a call of problem size n. Runs the calls of ``sizes`` in turn, on one
    library thread, while a Python thread counts, until one lasts at least 0.2 s (on a loaded host a
    size's time varies from run to run, so the size is not chosen by an earlier run), and asserts that
    the counter ran during that call."""
    performer.set_num_threads(1)
    try:
        for n in sizes:
            call = make_call(n)
            samples = []
            stop = threading.Event()

            def counter():
                count = 0
                while not stop.is_set():
                    count += 1
                    if count % 200 == 0:
                        samples.append(time.perf_counter())

            worker = threading.Thread(target=counter)
            worker.start()
            try:
                time.sleep(0.05)
                start = time.perf_counter()
                call()
                end = time.perf_counter()
            finally:
                stop.set()
                worker.join()
            if end - start >= 0.2:
                break
    finally:
        performer.set_num_threads(0)
    assert end - start >= 0.2, "no size of %s lasted 0.2 s" % (sizes,)
    # Samples strictly inside the call (away from the switch interval at its edges) exist
    # only if the call ran without the GIL.
    margin = 0.05
    inside = [t for t in samples if start + margin < t < end - margin]
    assert len(inside) >= 10, "the counter thread did not run during the call"


def _put_result(queue, function):
    queue.put(function())


def run_in_forked_child(function, hung, timeout):
    """function() run in a fork()ed child of this (threaded) process, returning its result; fails
    the test with the message `hung` when the child is still running after `timeout` seconds, and
    skips it where fork is not available."""
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork start method")
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_put_result, args=(queue, function))
    process.start()
    process.join(timeout=timeout)
    if process.is_alive():
        process.kill()
        process.join()
        pytest.fail(hung)
    assert process.exitcode == 0
    return queue.get(timeout=10)


MIB = 1 << 20


@pytest.fixture
def empty_output_cache():
    """The test starts and ends with an empty output cache (performer.set_output_cache_limit) and
    the limit it found. Output-cache test modules use it autouse."""
    previous = performer.set_output_cache_limit(0)
    performer.set_output_cache_limit(previous)
    yield
    performer.set_output_cache_limit(0)
    performer.set_output_cache_limit(previous)

/* performer._openmp: runs libperformer's parallel work on an OpenMP runtime that is already
 * loaded in the process (PyTorch's libgomp), through the library's executor hook
 * (performer.h: performer_set_executor).
 *
 * Why: PyTorch's OpenMP workers spin for a while after each parallel region, waiting for the
 * next one. libperformer's own workers, woken meanwhile, fight them for the same cores, and at
 * 2 threads on 2 cores a model ran slower than at 1 (performer.torch, docs/PYTORCH.md). Handed
 * to GOMP_parallel instead, our tasks land on the very threads that are spinning for work.
 *
 * The entry points come from Python as addresses (ctypes on the loaded libgomp), so this module
 * needs neither torch nor an OpenMP library at build time. Tasks run without the GIL. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#include "performer.h"

typedef void (*gomp_parallel_fn)(void (*body)(void *), void *data, unsigned num_threads, unsigned flags);
typedef int (*omp_query_fn)(void);

/* Set in a forked child: GNU OpenMP's thread pool does not survive fork() (the child's team
 * threads do not exist, and its first parallel region hangs), so the child goes back to the
 * library's own pool, which does (performer.h, fork()). */
static volatile sig_atomic_t in_forked_child;

static void
mark_forked_child(void)
{
    in_forked_child = 1;
}

/* In a forked child: drop this executor (outside any lock of the library: these callbacks run
 * after it has read its executor). */
static void
leave_openmp(void)
{
    performer_set_executor(NULL);
}

static gomp_parallel_fn gomp_parallel;
/* Whether regions end in wait_for_team (install's own_wait; only benchmarks turn it off). */
static int own_wait = 1;
static omp_query_fn omp_get_thread_num_ptr;
static omp_query_fn omp_get_num_threads_ptr;
static omp_query_fn omp_get_max_threads_ptr;

typedef struct {
    int n;
    performer_task_fn task;
    void *task_context;
    int own_wait;  /* 1: the caller waits for the team in wait_for_team, not in GOMP's barrier */
    int done;      /* threads of the team done with their tasks */
    int sleepers;  /* 1 when the caller sleeps on `done` (futex) */
} region_t;

/* How long a thread that finished its tasks polls for the rest of the team before it sleeps:
 * PERFORMER_SPIN_US microseconds when set to an integer 0 ... 1000000, else 100 (the library's
 * own pool waits the same way; ThreadPool.swift). */
static int64_t spin_ns = 100000;

static int64_t
monotonic_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

static void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* Sleeps while *word == value (returns at once when it no longer is: no lost wake-up), or
 * gives up the CPU once where there is no futex. */
static void
sleep_while(int *word, int value)
{
#ifdef __linux__
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
#else
    (void)word, (void)value;
    sched_yield();
#endif
}

static void
wake_caller(int *word)
{
#ifdef __linux__
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
#else
    (void)word;
#endif
}

/* Why the calling thread does not just return to GOMP_parallel: GOMP's closing barrier makes
 * it spin for the late threads for GOMP_SPINCOUNT rounds (300 000 by default: milliseconds),
 * and on a host with more runnable threads than cores that spinning takes the very core time a
 * late thread (descheduled, or still computing) needs: 2 threads then ran slower than 1.
 * Here the caller (thread 0), once done with its tasks, polls for 100 us (as the library's own
 * pool waits), then sleeps until the last thread is done; so it reaches GOMP's barrier last and
 * does not spin there. The other threads go straight to the barrier: the caller is either
 * about to arrive or asleep and woken by the last of them. */
static void
wait_for_team(region_t *region, int team, int thread)
{
    int done = __atomic_add_fetch(&region->done, 1, __ATOMIC_SEQ_CST);
    if (thread != 0 || done == team) {
        /* Sequentially consistent: either the caller sees done == team before it sleeps, or the
         * last thread sees it counted in `sleepers`. */
        if (done == team && __atomic_load_n(&region->sleepers, __ATOMIC_SEQ_CST) > 0) {
            wake_caller(&region->done);
        }
        return;
    }
    int64_t deadline = monotonic_ns() + spin_ns;
    while (__atomic_load_n(&region->done, __ATOMIC_ACQUIRE) != team) {
        for (int i = 0; i < 64; i++) cpu_relax();
        if (monotonic_ns() > deadline) break;
    }
    __atomic_add_fetch(&region->sleepers, 1, __ATOMIC_SEQ_CST);
    while ((done = __atomic_load_n(&region->done, __ATOMIC_SEQ_CST)) != team) {
        sleep_while(&region->done, done);
    }
}

/* Every thread of the team runs the tasks i = its number, + team size, ...: all n run even when
 * OpenMP gives a smaller team than asked for. (Each task drains the call's shared item counter,
 * so a thread that starts late finds the items already taken, not a share waiting for it.) */
static void
region_body(void *data)
{
    region_t *region = data;
    int team = omp_get_num_threads_ptr(), thread = omp_get_thread_num_ptr();
    if (team < 1) team = 1;
    for (int i = thread; i < region->n; i += team) {
        region->task(region->task_context, i);
    }
    if (region->own_wait && team > 1) wait_for_team(region, team, thread);
}

static void
openmp_parallel_for(void *context, int n, performer_task_fn task, void *task_context)
{
    if (in_forked_child) {
        leave_openmp();
        for (int i = 0; i < n; i++) task(task_context, i);
        return;
    }
    region_t region = {n, task, task_context, own_wait, 0, 0};
    gomp_parallel(region_body, &region, (unsigned)n, 0);
}

/* The calling thread's OpenMP thread count: what torch.set_num_threads set. */
static int
openmp_num_threads(void *context)
{
    if (in_forked_child) {
        leave_openmp();
        return 1;
    }
    return omp_get_max_threads_ptr();
}

static PyObject *
raise_status(performer_status status)
{
    const char *message = performer_last_error();
    PyErr_Format(PyExc_RuntimeError, "performer_set_executor failed: %s",
                 message && message[0] ? message : performer_status_string(status));
    return NULL;
}

PyDoc_STRVAR(install_doc,
"install(gomp_parallel, omp_get_thread_num, omp_get_num_threads, omp_get_max_threads[, own_wait])\n"
"    -> bool\n\n"
"Makes libperformer run its parallel work with GOMP_parallel of the OpenMP runtime whose entry\n"
"points are given as addresses (ints, non-zero), and its thread count follow omp_get_max_threads()\n"
"unless performer.set_num_threads chose one. False (nothing installed) in a forked child of a\n"
"process that loaded this module: OpenMP's pool does not survive fork().\n"
"own_wait (default True): the calling thread, done with its share of a region, waits for the others by\n"
"polling for 100 us (PERFORMER_SPIN_US), then sleeping, instead of spinning in GOMP's closing barrier.\n"
"False: the behaviour before (benchmarks/threads_profile.py compares the two).");

static PyObject *
install(PyObject *module, PyObject *args)
{
    unsigned long long parallel, thread_num, num_threads, max_threads;
    int wait = 1;
    if (!PyArg_ParseTuple(args, "KKKK|p", &parallel, &thread_num, &num_threads, &max_threads, &wait)) {
        return NULL;
    }
    if (!parallel || !thread_num || !num_threads || !max_threads) {
        PyErr_SetString(PyExc_ValueError, "install: every OpenMP entry point must be a non-zero address");
        return NULL;
    }
    if (in_forked_child) {
        Py_RETURN_FALSE;
    }
    /* Back to the library's own pool first: no call may see a half-updated set of pointers. */
    performer_status status = performer_set_executor(NULL);
    if (status != PERFORMER_OK) {
        return raise_status(status);
    }
    gomp_parallel = (gomp_parallel_fn)(uintptr_t)parallel;
    omp_get_thread_num_ptr = (omp_query_fn)(uintptr_t)thread_num;
    omp_get_num_threads_ptr = (omp_query_fn)(uintptr_t)num_threads;
    omp_get_max_threads_ptr = (omp_query_fn)(uintptr_t)max_threads;
    own_wait = wait;
    const char *spin = getenv("PERFORMER_SPIN_US");
    char *end;
    long us = spin ? strtol(spin, &end, 10) : -1;
    spin_ns = spin && *spin && !*end && us >= 0 && us <= 1000000 ? (int64_t)us * 1000 : 100000;
    performer_executor_t executor = {sizeof(performer_executor_t), NULL, openmp_num_threads, openmp_parallel_for};
    status = performer_set_executor(&executor);
    if (status != PERFORMER_OK) {
        return raise_status(status);
    }
    Py_RETURN_TRUE;
}

PyDoc_STRVAR(uninstall_doc, "uninstall() -> None\n\nlibperformer runs on its own worker threads again.");

static PyObject *
uninstall(PyObject *module, PyObject *unused)
{
    performer_status status = performer_set_executor(NULL);
    if (status != PERFORMER_OK) {
        return raise_status(status);
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"install", install, METH_VARARGS, install_doc},
    {"uninstall", uninstall, METH_NOARGS, uninstall_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "performer._openmp",
    "libperformer's parallel work on an OpenMP runtime loaded in the process (used by performer.torch).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__openmp(void)
{
    PyObject *module = PyModule_Create(&module_def);
    if (module != NULL && pthread_atfork(NULL, NULL, mark_forked_child) != 0) {
        Py_DECREF(module);
        PyErr_SetString(PyExc_RuntimeError, "performer._openmp: pthread_atfork failed");
        return NULL;
    }
    return module;
}

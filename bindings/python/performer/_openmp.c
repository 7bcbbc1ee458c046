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

#include <pthread.h>
#include <signal.h>
#include <stdint.h>

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
static omp_query_fn omp_get_thread_num_ptr;
static omp_query_fn omp_get_num_threads_ptr;
static omp_query_fn omp_get_max_threads_ptr;

typedef struct {
    int n;
    performer_task_fn task;
    void *task_context;
} region_t;

/* Every thread of the team runs the tasks i = its number, + team size, ...: all n run even when
 * OpenMP gives a smaller team than asked for. */
static void
region_body(void *data)
{
    const region_t *region = data;
    int step = omp_get_num_threads_ptr();
    for (int i = omp_get_thread_num_ptr(); i < region->n; i += step > 0 ? step : 1) {
        region->task(region->task_context, i);
    }
}

static void
openmp_parallel_for(void *context, int n, performer_task_fn task, void *task_context)
{
    if (in_forked_child) {
        leave_openmp();
        for (int i = 0; i < n; i++) task(task_context, i);
        return;
    }
    region_t region = {n, task, task_context};
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
"install(gomp_parallel, omp_get_thread_num, omp_get_num_threads, omp_get_max_threads) -> bool\n\n"
"Makes libperformer run its parallel work with GOMP_parallel of the OpenMP runtime whose entry\n"
"points are given as addresses (ints, non-zero), and its thread count follow omp_get_max_threads()\n"
"unless performer.set_num_threads chose one. False (nothing installed) in a forked child of a\n"
"process that loaded this module: OpenMP's pool does not survive fork().");

static PyObject *
install(PyObject *module, PyObject *args)
{
    unsigned long long parallel, thread_num, num_threads, max_threads;
    if (!PyArg_ParseTuple(args, "KKKK", &parallel, &thread_num, &num_threads, &max_threads)) {
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

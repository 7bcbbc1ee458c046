/*
 * Recycled memory for the large arrays the package returns.
 *
 * A new NumPy array of 4 MiB or more gets memory the C library maps for it afresh, so the
 * kernel's first write into it waits for the operating system to zero every page: 2-3 ms of a
 * 15 ms linear-attention call at N = 16384 (B = 1, H = 8, M = 64). A program calls such a function
 * in a loop and drops each result before the next, so the memory of a dropped output can serve
 * the next one, already mapped. Each large output lives in an OutputBlock whose memory, when the
 * last array over it dies, goes to a small cache instead of back to the system; the cache keeps
 * at most `cache_limit` bytes (performer.set_output_cache_limit), dropping its oldest blocks.
 *
 * NumPy sees a block through __array_interface__: numpy.asarray(block) is a C-contiguous array
 * whose base is the block. Every function here runs with the GIL held (module functions and
 * tp_dealloc), which is what keeps the cache consistent.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "_output_pool.h"

/* Blocks are 2 MiB aligned and sized in 2 MiB steps: the transparent huge page size on x86-64
 * and arm64 Linux, whose pages cost a sixteenth of the zeroing time of 4 KiB ones to fault in. */
#define BLOCK_GRANULE ((size_t)2 << 20)
#define CACHE_SLOTS 16

typedef struct {
    void *data;
    size_t capacity;
} cached_block;

/* Oldest first. */
static cached_block cache[CACHE_SLOTS];
static int cache_count;
static size_t cache_bytes;
static size_t cache_limit = OUTPUT_CACHE_DEFAULT_LIMIT;

static void
drop_oldest(void)
{
    free(cache[0].data);
    cache_bytes -= cache[0].capacity;
    cache_count--;
    memmove(&cache[0], &cache[1], (size_t)cache_count * sizeof cache[0]);
}

/* Frees cached blocks, oldest first, until the cache holds at most `bytes` bytes in at most
 * `slots` blocks. */
static void
shrink_cache(size_t bytes, int slots)
{
    while (cache_count > 0 && (cache_bytes > bytes || cache_count > slots)) {
        drop_oldest();
    }
}

/* A cached block of at least `capacity` bytes that wastes at most a quarter of it (the smallest
 * such), taken out of the cache; else fresh memory. NULL when there is none. */
static void *
take_memory(size_t capacity, size_t *taken_capacity)
{
    int best = -1;
    for (int i = 0; i < cache_count; i++) {
        size_t c = cache[i].capacity;
        if (c >= capacity && c - capacity <= capacity / 4 && (best < 0 || c < cache[best].capacity)) {
            best = i;
        }
    }
    if (best >= 0) {
        void *data = cache[best].data;
        *taken_capacity = cache[best].capacity;
        cache_bytes -= cache[best].capacity;
        cache_count--;
        memmove(&cache[best], &cache[best + 1], (size_t)(cache_count - best) * sizeof cache[0]);
        return data;
    }
    void *data = NULL;
    if (posix_memalign(&data, BLOCK_GRANULE, capacity) != 0) {
        return NULL;
    }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    (void)madvise(data, capacity, MADV_HUGEPAGE);  /* advice only: 4 KiB pages still work */
#endif
    *taken_capacity = capacity;
    return data;
}

/* Keeps a dead block's memory for a later output when the limit allows, else frees it. */
static void
give_back_memory(void *data, size_t capacity)
{
    if (capacity > cache_limit) {
        free(data);
        return;
    }
    shrink_cache(cache_limit - capacity, CACHE_SLOTS - 1);
    cache[cache_count].data = data;
    cache[cache_count].capacity = capacity;
    cache_count++;
    cache_bytes += capacity;
}

typedef struct {
    PyObject_HEAD
    void *data;
    size_t capacity;
    PyObject *interface;  /* the __array_interface__ dict */
} OutputBlockObject;

static PyTypeObject *OutputBlockType;

static void
output_block_dealloc(OutputBlockObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    Py_XDECREF(self->interface);
    if (self->data != NULL) {
        give_back_memory(self->data, self->capacity);
    }
    freefunc tp_free = (freefunc)PyType_GetSlot(type, Py_tp_free);
    tp_free(self);
    Py_DECREF(type);
}

static PyObject *
output_block_interface(OutputBlockObject *self, void *closure)
{
    Py_INCREF(self->interface);
    return self->interface;
}

static PyGetSetDef output_block_getset[] = {
    {"__array_interface__", (getter)output_block_interface, NULL, "NumPy's view of the block", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot output_block_slots[] = {
    {Py_tp_doc, "Memory of one large array returned by performer; recycled when the array dies."},
    {Py_tp_dealloc, output_block_dealloc},
    {Py_tp_getset, output_block_getset},
    {0, NULL},
};

static PyType_Spec output_block_spec = {
    .name = "performer._performer.OutputBlock",
    .basicsize = sizeof(OutputBlockObject),
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = output_block_slots,
};

PyObject *
output_block(PyObject *module, PyObject *args)
{
    PyObject *shape;
    const char *typestr;
    Py_ssize_t nbytes;
    if (!PyArg_ParseTuple(args, "O!sn:_output_block", &PyTuple_Type, &shape, &typestr, &nbytes)) {
        return NULL;
    }
    if (nbytes <= 0) {
        PyErr_Format(PyExc_ValueError, "_output_block: nbytes must be positive, not %zd", nbytes);
        return NULL;
    }
    size_t capacity = ((size_t)nbytes + BLOCK_GRANULE - 1) / BLOCK_GRANULE * BLOCK_GRANULE;
    OutputBlockObject *self = PyObject_New(OutputBlockObject, OutputBlockType);
    if (self == NULL) {
        return NULL;
    }
    self->interface = NULL;
    self->data = take_memory(capacity, &self->capacity);
    if (self->data == NULL) {
        Py_DECREF(self);
        return PyErr_Format(PyExc_MemoryError, "cannot allocate %zd bytes for a result of shape %R", nbytes, shape);
    }
    PyObject *address = PyLong_FromVoidPtr(self->data);
    PyObject *data = address != NULL ? Py_BuildValue("(NO)", address, Py_False) : NULL;
    self->interface = data != NULL ? Py_BuildValue("{sisOsssN}", "version", 3, "shape", shape, "typestr", typestr,
                                                   "data", data)
                                   : NULL;
    if (self->interface == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

PyObject *
output_cache_limit(PyObject *module, PyObject *args)
{
    Py_ssize_t limit = -1;
    if (!PyArg_ParseTuple(args, "|n:_output_cache_limit", &limit)) {
        return NULL;
    }
    if (limit < -1) {
        PyErr_Format(PyExc_ValueError, "nbytes must be >= 0, not %zd", limit);
        return NULL;
    }
    size_t previous = cache_limit;
    if (limit >= 0) {
        cache_limit = (size_t)limit;
        shrink_cache(cache_limit, CACHE_SLOTS);
    }
    return PyLong_FromSize_t(previous);
}

PyObject *
output_cache_contents(PyObject *module, PyObject *unused)
{
    return Py_BuildValue("(ni)", (Py_ssize_t)cache_bytes, cache_count);
}

static void
free_cache_at_exit(void)
{
    shrink_cache(0, 0);
}

int
output_pool_init(PyObject *module)
{
    PyObject *type = PyType_FromSpec(&output_block_spec);
    if (type == NULL) {
        return -1;
    }
    Py_XDECREF(OutputBlockType);  /* the module is initialized again (a subinterpreter) */
    OutputBlockType = (PyTypeObject *)type;
    static int exit_hook_added;
    if (!exit_hook_added) {
        exit_hook_added = Py_AtExit(free_cache_at_exit) == 0;
    }
    Py_INCREF(type);
    if (PyModule_AddObject(module, "OutputBlock", type) < 0) {
        Py_DECREF(type);
        return -1;
    }
    return 0;
}

/*
 * A plain numpy.ndarray read from its object fields, without the buffer protocol: NumPy's
 * getbuffer fills a Py_buffer and checks its cached format string for every array (~650
 * instructions, a quarter of a microsecond for the four arrays of a decoder step). The fields
 * read here (data, nd, dimensions, strides, descr, flags; descr's byteorder and type_num) sit at
 * the offsets of NumPy's public C structs, the same in NumPy 1.x and 2.x; numpy_fields_init
 * checks them against the buffer protocol on probe arrays before the first use, and the reader
 * stays off when anything disagrees.
 *
 * Only the common case is read here: an exact ndarray of float32, float64 or float16 in native
 * byte order, of the expected rank, writable when written. Everything else (and every error) goes
 * to the buffer protocol, whose messages are the extension's. The caller holds a reference to
 * the array for the call, as a held buffer would (NumPy refuses to resize an array others
 * reference).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "performer.h"
#include "_arrays.h"

/* PyArrayObject_fields and PyArray_Descr up to the fields read (numpy/ndarraytypes.h). Both
 * begin with PyObject_HEAD, as NumPy's do, so the offsets follow this interpreter's object header
 * (larger in debug and free-threaded builds). */
typedef struct {
    PyObject_HEAD
    char *data;
    int nd;
    Py_ssize_t *dimensions;
    Py_ssize_t *strides;
    PyObject *base;
    PyObject *descr;
    int flags;
} ndarray_fields;

typedef struct {
    PyObject_HEAD
    PyObject *typeobj;
    char kind;
    char type;
    char byteorder;
    char former_flags;
    int type_num;
} descr_fields;

#if PY_LITTLE_ENDIAN
#define NATIVE_ORDER '<'
#else
#define NATIVE_ORDER '>'
#endif

/* NumPy's type numbers and flags; an output must be writeable without a pending write-back copy
 * or a warn-on-write mark (those go through the buffer protocol, which acts on them). */
enum { NPY_FLOAT16 = 23, NPY_FLOAT32 = 11, NPY_FLOAT64 = 12 };
#define NPY_WRITEABLE 0x0400u
#define NPY_WRITEBACKIFCOPY 0x2000u
#define NPY_WARN_ON_WRITE 0x80000000u

static PyObject *ndarray_type;  /* numpy.ndarray once the fields are verified, else NULL */

int
numpy_fields_read(PyObject *obj, int ndim, int writable, foreign_array *array)
{
    if (ndarray_type == NULL || (PyObject *)Py_TYPE(obj) != ndarray_type) {
        return 0;
    }
    const ndarray_fields *a = (const ndarray_fields *)obj;
    const descr_fields *d = (const descr_fields *)a->descr;
    int dtype = d->type_num == NPY_FLOAT32 ? PERFORMER_FLOAT32
              : d->type_num == NPY_FLOAT64 ? PERFORMER_FLOAT64
              : d->type_num == NPY_FLOAT16 ? PERFORMER_FLOAT16 : -1;
    if (a->nd != ndim || ndim > FOREIGN_MAX_NDIM || dtype < 0 || (d->byteorder != '=' && d->byteorder != NATIVE_ORDER) ||
        (writable && ((unsigned)a->flags & (NPY_WRITEABLE | NPY_WRITEBACKIFCOPY | NPY_WARN_ON_WRITE)) != NPY_WRITEABLE)) {
        return 0;
    }
    array->data = a->data;
    array->ndim = a->nd;
    array->itemsize = dtype == PERFORMER_FLOAT64 ? 8 : dtype == PERFORMER_FLOAT32 ? 4 : 2;
    array->dtype = dtype;
    for (int i = 0; i < ndim; i++) {
        array->shape[i] = (int64_t)a->dimensions[i];
        array->strides[i] = (int64_t)a->strides[i];
    }
    return 1;
}

/* 1 when the fields of numpy.ndarray obj read as the buffer protocol describes it. */
static int
agrees_with_buffer(PyObject *obj, int writable)
{
    buffer_storage storage;
    foreign_array expected, found;
    memset(&found, 0, sizeof found);
    if (buffer_get(obj, "probe", 0, &storage, &expected) != 1) {
        PyErr_Clear();
        return 0;
    }
    buffer_release(&storage);
    const ndarray_fields *a = (const ndarray_fields *)obj;
    if (a->nd != expected.ndim || a->nd > FOREIGN_MAX_NDIM || numpy_fields_read(obj, a->nd, 0, &found) != 1 ||
        found.data != expected.data || found.dtype != expected.dtype || found.itemsize != expected.itemsize ||
        (writable != 0) != (((unsigned)a->flags & NPY_WRITEABLE) != 0)) {
        return 0;
    }
    for (int i = 0; i < a->nd; i++) {
        if (found.shape[i] != expected.shape[i] || found.strides[i] != expected.strides[i]) {
            return 0;
        }
    }
    return 1;
}

/* The probes: numpy.ndarray's fields must describe each as its buffer does, and a byte-swapped
 * array must be refused. */
static const char probe_code[] =
    "import numpy\n"
    "a = numpy.arange(120, dtype=numpy.float32).reshape(2, 3, 4, 5)\n"
    "r = numpy.zeros((3, 4, 2), numpy.float64)[:, ::2, 1:]\n"
    "r.setflags(write=False)\n"
    "probes = [(a, 1), (a.transpose(3, 1, 0, 2)[1:, ::-1], 1), (numpy.ones((4, 6), numpy.float16)[:, 1::2], 1), (r, 0)]\n"
    "swapped = numpy.zeros((2, 3), numpy.dtype(numpy.float32).newbyteorder('>' if numpy.little_endian else '<'))\n";

void
numpy_fields_init(void)
{
    if (ndarray_type != NULL || !buffer_protocol_compiled) {
        return;
    }
    PyObject *globals = PyDict_New();
    PyObject *builtins = globals != NULL ? PyEval_GetBuiltins() : NULL;  /* borrowed */
    int ok = builtins != NULL && PyDict_SetItemString(globals, "__builtins__", builtins) == 0;
    PyObject *code = ok ? Py_CompileString(probe_code, "<performer numpy probe>", Py_file_input) : NULL;
    PyObject *done = code != NULL ? PyEval_EvalCode(code, globals, globals) : NULL;
    Py_XDECREF(code);
    PyObject *numpy = done != NULL ? PyDict_GetItemString(globals, "numpy") : NULL;  /* borrowed */
    PyObject *type = numpy != NULL ? PyObject_GetAttrString(numpy, "ndarray") : NULL;
    PyObject *probes = type != NULL ? PyDict_GetItemString(globals, "probes") : NULL;
    PyObject *swapped = probes != NULL ? PyDict_GetItemString(globals, "swapped") : NULL;
    ok = swapped != NULL && PyList_Check(probes);
    if (ok) {
        ndarray_type = type;  /* for numpy_fields_read while probing */
        for (Py_ssize_t i = 0; ok && i < PyList_Size(probes); i++) {
            PyObject *probe = PyList_GetItem(probes, i);
            ok = PyTuple_Check(probe) && (PyObject *)Py_TYPE(PyTuple_GetItem(probe, 0)) == type &&
                 agrees_with_buffer(PyTuple_GetItem(probe, 0), PyLong_AsLong(PyTuple_GetItem(probe, 1)) != 0);
        }
        foreign_array unused;
        ok = ok && numpy_fields_read(swapped, 2, 0, &unused) == 0;
        ndarray_type = NULL;
    }
    if (ok) {
        ndarray_type = type;  /* keeps the reference */
    } else {
        Py_XDECREF(type);
    }
    PyErr_Clear();  /* no NumPy, or a layout this file does not know: the buffer protocol reads everything */
    Py_XDECREF(done);
    Py_XDECREF(globals);
}

int
numpy_fields_active(void)
{
    return ndarray_type != NULL;
}

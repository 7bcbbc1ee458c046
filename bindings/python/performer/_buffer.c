/*
 * The buffer protocol for performer._performer, compiled for the 3.11 limited API, the first one
 * that has PyObject_GetBuffer and Py_buffer (see _arrays.h). The rest of the extension is built
 * for 3.9 and calls into this file only after checking that the interpreter is 3.11 or later.
 * Built with the headers of an older CPython (an sdist installed on 3.9), it has no buffer
 * protocol (buffer_protocol_compiled = 0) and the extension reads __array_interface__ everywhere.
 */
#undef Py_LIMITED_API
#define Py_LIMITED_API 0x030b0000
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "performer.h"
#include "_arrays.h"

#if PY_VERSION_HEX >= 0x030b0000
const int buffer_protocol_compiled = 1;

_Static_assert(sizeof(Py_buffer) <= sizeof(buffer_storage), "buffer_storage cannot hold a Py_buffer");
_Static_assert(_Alignof(Py_buffer) <= _Alignof(buffer_storage), "buffer_storage is not aligned for a Py_buffer");

/* Maps a struct-module element format to a performer dtype (-1 when unsupported): native or
 * explicitly native-order 'f', 'd', 'e' only (data in the other byte order would be misread). */
static int
dtype_of_format(const char *format, int64_t itemsize)
{
    if (format[0] == '@' || format[0] == '=' ||
#if PY_LITTLE_ENDIAN
        format[0] == '<'
#else
        format[0] == '>' || format[0] == '!'
#endif
    ) {
        format++;
    }
    if (strcmp(format, "f") == 0 && itemsize == 4) {
        return PERFORMER_FLOAT32;
    }
    if (strcmp(format, "d") == 0 && itemsize == 8) {
        return PERFORMER_FLOAT64;
    }
    if (strcmp(format, "e") == 0 && itemsize == 2) {
        return PERFORMER_FLOAT16;  /* NumPy float16; the library computes it in float32 */
    }
    return -1;
}

/* Replaces the pending exception (from PyObject_GetBuffer) by one of the same type whose
 * message starts with the argument's name; a BufferError (e.g. a read-only array passed as an
 * output) becomes a ValueError. */
static void
prefix_pending_error(const char *name)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (type == NULL) {
        PyErr_Format(PyExc_TypeError, "%s: cannot get its buffer", name);
        return;
    }
    PyObject *raised = PyErr_GivenExceptionMatches(type, PyExc_BufferError) ? PyExc_ValueError : type;
    if (value != NULL) {
        PyErr_Format(raised, "%s: %S", name, value);
    } else {
        PyErr_Format(raised, "%s: cannot get its buffer", name);
    }
    Py_DECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
}

int
buffer_get(PyObject *obj, const char *name, int writable, buffer_storage *storage, foreign_array *array)
{
    if (!PyObject_CheckBuffer(obj)) {
        return 0;
    }
    Py_buffer *view = (Py_buffer *)storage->bytes;
    int flags = PyBUF_STRIDES | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) != 0) {
        prefix_pending_error(name);
        return -1;
    }
    const char *format = view->format != NULL ? view->format : "B";  /* the protocol's default */
    memset(array, 0, sizeof *array);
    array->data = view->buf;
    array->ndim = view->ndim;
    array->itemsize = view->itemsize;
    array->dtype = dtype_of_format(format, view->itemsize);
    if (array->dtype < 0) {  /* text for the message only: snprintf costs a tiny call's time */
        snprintf(array->format, sizeof array->format, "'%s' (item size %zd)", format, view->itemsize);
    }
    Py_ssize_t contiguous = view->itemsize;
    for (int i = view->ndim - 1; i >= 0; i--) {
        Py_ssize_t extent = view->shape[i];
        /* Exporters must give strides when PyBUF_STRIDES is requested; C order if not. */
        Py_ssize_t stride = view->strides != NULL ? view->strides[i] : contiguous;
        contiguous *= extent;
        if (i < FOREIGN_MAX_NDIM) {
            array->shape[i] = (int64_t)extent;
            array->strides[i] = (int64_t)stride;
        }
    }
    return 1;
}

void
buffer_release(buffer_storage *storage)
{
    PyBuffer_Release((Py_buffer *)storage->bytes);
}

#else
const int buffer_protocol_compiled = 0;

int
buffer_get(PyObject *obj, const char *name, int writable, buffer_storage *storage, foreign_array *array)
{
    PyErr_SetString(PyExc_SystemError, "performer._performer was built without the buffer protocol");
    return -1;
}

void
buffer_release(buffer_storage *storage)
{
}
#endif

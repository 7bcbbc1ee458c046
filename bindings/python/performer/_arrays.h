/*
 * What the extension's array readers share (_performer.c, _buffer.c): a strided array as its
 * exporter describes it, before _performer.c checks it and turns it into a performer_tensor_t.
 *
 * The extension is built for the stable ABI of CPython 3.9 (abi3). The buffer protocol joined the
 * stable ABI in 3.11 only, so it lives in _buffer.c (compiled for the 3.11 limited API) and is
 * called only when the running interpreter is 3.11 or later; on 3.9 and 3.10 arrays are read
 * through NumPy's C-level array interface, __array_struct__, instead (_performer.c,
 * get_struct_array). (CPython 3.9 and 3.10 export PyObject_GetBuffer, PyObject_CheckBuffer and
 * PyBuffer_Release too, so the extension also loads there when symbols are bound at load time.)
 */
#ifndef PERFORMER_ARRAYS_H
#define PERFORMER_ARRAYS_H

#include <stddef.h>
#include <stdint.h>

/* Ranks the extension takes (4; 3 for lse, states and decoder tokens): larger arrays are only
 * described by their rank, for the message that rejects them. */
#define FOREIGN_MAX_NDIM 4

typedef struct {
    void *data;
    int ndim;
    int64_t shape[FOREIGN_MAX_NDIM];    /* the first min(ndim, FOREIGN_MAX_NDIM) extents */
    int64_t strides[FOREIGN_MAX_NDIM];  /* in bytes */
    int64_t itemsize;
    int dtype;                          /* a performer_dtype, or -1 when unsupported */
    char format[32];                    /* the exporter's element format, for the message of an
                                           unsupported dtype (set only then) */
} foreign_array;

/* Room for one held Py_buffer (80 bytes on 64-bit CPython), opaque to code compiled for the 3.9
 * limited API, where Py_buffer is not declared. _buffer.c checks that it fits. */
typedef struct {
    _Alignas(max_align_t) unsigned char bytes[128];
} buffer_storage;

/* 1 when _buffer.c was compiled with the headers of CPython >= 3.11 (which declare the buffer
 * protocol for the limited API), else 0: the extension then never calls buffer_get. */
extern const int buffer_protocol_compiled;

/* Fills *array from obj's buffer (requested writable when writable != 0), held in *storage.
 * Returns 1 (held: release with buffer_release), 0 when obj has no buffer protocol (no exception
 * set, nothing held), or -1 with an exception set whose message starts with name (nothing held).
 * Only for CPython >= 3.11. */
int buffer_get(PyObject *obj, const char *name, int writable, buffer_storage *storage, foreign_array *array);
void buffer_release(buffer_storage *storage);

/* _numpy_fields.c: a plain numpy.ndarray read from its fields. numpy_fields_init checks the
 * fields against the buffer protocol on probe arrays (once; the reader stays off when they
 * disagree or NumPy is missing). numpy_fields_read returns 1 with *array filled when obj is an
 * exact ndarray of rank ndim, float32/float64/float16 in native order and writable if asked;
 * else 0 (nothing read: use the buffer protocol, which also words every error). */
void numpy_fields_init(void);
int numpy_fields_read(PyObject *obj, int ndim, int writable, foreign_array *array);
int numpy_fields_active(void);

#endif

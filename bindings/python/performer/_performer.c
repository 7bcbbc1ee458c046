/*
 * performer._performer: the CPython extension over libperformer's C ABI (include/performer.h).
 *
 * Built for the stable ABI (Py_LIMITED_API = 3.9, setup.py): one binary serves every CPython from
 * 3.9 on. Inputs and outputs are
 *   - arrays: objects with the buffer protocol (NumPy arrays, memoryviews), read through it on
 *     CPython >= 3.11 (_buffer.c) and through NumPy's __array_struct__ on 3.9 and 3.10, where
 *     the buffer protocol is not in the stable ABI (see _arrays.h);
 *   - raw views (data_address, shape, strides_in_elements, dtype_code, writable): the NumPy-free
 *     path of performer.torch, see get_raw_view;
 *   - torch tensors themselves, once performer.torch registered their type (register_tensor_type).
 * float32 ('f') or float64 ('d') (float16 where the library takes it), rank 4 (rank 3 for lse,
 * seen by the C library as B x H x N x 1), any strides that are whole multiples of the item size,
 * negative included. The extension does not allocate results -- the Python layer
 * (performer/softmax.py, linear.py, favor.py, decoders.py) passes output buffers it allocated,
 * which are requested writable -- but for one: a performer.torch decoder step without out=
 * (new_torch_tensor).
 *
 * The C call runs without the GIL. Every buffer or reference taken is released on every path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "performer.h"
#include "_arrays.h"
#include "_output_pool.h"

/* METH_FASTCALL is declared for the limited API from 3.10 on, but CPython has called such
 * methods with this flag value the same way since 3.7: the decoders' per-token methods keep it
 * on 3.9 too. */
/* Py_XSETREF is not in the limited API. */
#define Py_XSETREF_COMPAT(target, value) \
    do {                                  \
        void *old_ = (void *)(target);    \
        (target) = (value);               \
        Py_XDECREF((PyObject *)old_);     \
    } while (0)

#ifndef METH_FASTCALL
#define METH_FASTCALL 0x0080
#endif

/* Added to the C ABI after its first release: referenced weakly, so this extension still
 * loads with a libperformer.so that lacks it (the function is then absent from the module). */
const char *performer_kernel_isa(void);
#pragma weak performer_kernel_isa
int64_t performer_live_handle_count(void);
#pragma weak performer_live_handle_count

/* ------------------------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------------------------ */

/* Raises the Python exception for a failed libperformer call; returns NULL. Must run on the
 * thread that made the call (performer_last_error is thread-local). */
static PyObject *
raise_status(performer_status status)
{
    PyObject *type;
    switch (status) {
    case PERFORMER_ERROR_INVALID_ARGUMENT:
    case PERFORMER_ERROR_SHAPE_MISMATCH:
    case PERFORMER_ERROR_SIZE_OVERFLOW:
    case PERFORMER_ERROR_ALIASING:
        type = PyExc_ValueError;
        break;
    case PERFORMER_ERROR_DTYPE_MISMATCH:
        type = PyExc_TypeError;
        break;
    case PERFORMER_ERROR_OUT_OF_MEMORY:
        type = PyExc_MemoryError;
        break;
    default:
        type = PyExc_RuntimeError;
        break;
    }
    const char *message = performer_last_error();
    const char *kind = performer_status_string(status);
    if (message == NULL || message[0] == '\0') {
        PyErr_Format(type, "libperformer: %s (status %d)", kind ? kind : "error", (int)status);
    } else {
        PyErr_SetString(type, message);
    }
    return NULL;
}

/* None when status is PERFORMER_OK; otherwise raises as raise_status and returns NULL. */
static PyObject *
none_or_raise(performer_status status)
{
    if (status != PERFORMER_OK) {
        return raise_status(status);
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------------------
 * Tensor arguments
 * ------------------------------------------------------------------------------------------ */

typedef struct {
    const char *name;    /* the argument's name in messages */
    buffer_storage buffer;
    int held;            /* buffer must be released (buffer_release) */
    PyObject *owner;     /* a reference held for the call (an array made for a memoryview, a
                            resolved negated tensor), or NULL */
    int present;         /* tensor is filled in (an array, tensor or raw view was given) */
    performer_tensor_t tensor;
} tensor_arg;

/* The dtypes the extension knows: element size and name (the library checks which dtypes each
 * entry point takes). */
typedef struct {
    int32_t code;
    int64_t itemsize;
    const char *name;
} dtype_info;

static const dtype_info dtype_table[] = {
    {PERFORMER_FLOAT32, 4, "float32"},
    {PERFORMER_FLOAT64, 8, "float64"},
    {PERFORMER_FLOAT16, 2, "float16"},
    {PERFORMER_BFLOAT16, 2, "bfloat16"},
};

static const dtype_info *
find_dtype(long code)
{
    for (size_t i = 0; i < sizeof dtype_table / sizeof dtype_table[0]; i++) {
        if (dtype_table[i].code == code) {
            return &dtype_table[i];
        }
    }
    return NULL;
}

static const char *
dtype_name(int32_t dtype)
{
    const dtype_info *info = find_dtype(dtype);
    return info != NULL ? info->name : "unknown";
}

/* What the running interpreter offers (set once by the module's init). */
static long running_hexversion;         /* sys.hexversion */
static int has_stable_buffer_protocol;  /* CPython >= 3.11: PyObject_GetBuffer is in the stable ABI */

/* The name of obj's type as tp_name spells it ("numpy.ndarray", "list"): PyTypeObject is opaque in
 * the limited API. A new reference, or NULL with no exception set (then "?" is printed). */
static PyObject *
type_name(PyObject *obj)
{
    PyObject *type = (PyObject *)Py_TYPE(obj);
    PyObject *name = PyObject_GetAttrString(type, "__name__");
    if (name != NULL && !(PyType_GetFlags(Py_TYPE(obj)) & Py_TPFLAGS_HEAPTYPE)) {
        PyObject *module = PyObject_GetAttrString(type, "__module__");
        if (module != NULL && PyUnicode_Check(module) &&
            PyUnicode_CompareWithASCIIString(module, "builtins") != 0) {
            PyObject *qualified = PyUnicode_FromFormat("%U.%U", module, name);
            Py_DECREF(name);
            name = qualified;
        }
        Py_XDECREF(module);
    }
    if (name == NULL) {
        PyErr_Clear();
    }
    return name;
}

/* Raises type with format, whose one %S is the type name of obj (see type_name). Returns -1. */
static int
raise_with_type_name(PyObject *type, const char *format, const char *name, PyObject *obj)
{
    PyObject *found = type_name(obj);
    PyErr_Format(type, format, name, found != NULL ? found : Py_None);
    Py_XDECREF(found);
    return -1;
}

/*
 * Takes obj's buffer into arg and fills arg->tensor. ndim is 4, or 3 for lse (extended to
 * B x H x N x 1). When reference is not NULL, the dtype must equal reference->tensor.dtype.
 * Returns 0, or -1 with an exception set (the buffer, if taken, stays held: the caller
 * releases all arguments together).
 */
static int get_tensor_mode(PyObject *obj, tensor_arg *arg, int ndim, int writable, const tensor_arg *reference,
                           int token);

static int
get_tensor(PyObject *obj, tensor_arg *arg, int ndim, int writable, const tensor_arg *reference)
{
    return get_tensor_mode(obj, arg, ndim, writable, reference, 0);
}

/* As get_tensor; with token != 0, obj is a rank-3 B x H x features array (one position of
 * the decoder) and is passed as B x H x 1 x features. */
/* Rank-3 arguments seen by the library as rank 4: a decoder token (B x H x features) as
 * B x H x 1 x features, else lse (B x H x N) as B x H x N x 1. */
static void
extend_rank3(performer_tensor_t *t, int ndim, int token)
{
    if (ndim == 3 && token) {
        t->shape[3] = t->shape[2];
        t->strides[3] = t->strides[2];
        t->shape[2] = 1;
        t->strides[2] = t->shape[3] * t->strides[3];
    } else if (ndim == 3) {
        t->shape[3] = 1;
        t->strides[3] = 1;
    }
}

/* The ndim ints of a shape or strides tuple (of a raw view or a tensor) into values; -1 with an
 * exception set on error. */
static int
tuple_ints(PyObject *tuple, const char *name, const char *what, const char *source, int ndim, int64_t *values)
{
    if (!PyTuple_Check(tuple) || PyTuple_Size(tuple) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must have %d dimensions (%s of the %s: %R)", name, ndim, what, source,
                     tuple);
        return -1;
    }
    for (int i = 0; i < ndim; i++) {
        long long value = PyLong_AsLongLong(PyTuple_GetItem(tuple, i));
        if (value == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s: %s[%d] of the %s is not a 64-bit int", name, what, i, source);
            return -1;
        }
        values[i] = (int64_t)value;
    }
    return 0;
}

/* The checks every kind of argument ends with, once arg->tensor has its shape and strides (in
 * elements): the dtype against the reference's and the data's alignment. Then sets data and dtype,
 * extends rank 3 and marks arg present. Returns 0, or -1 with an exception set. */
static int
finish_tensor(tensor_arg *arg, void *data, const dtype_info *dtype, int ndim, int token, const tensor_arg *reference)
{
    if (reference != NULL && dtype->code != reference->tensor.dtype) {
        PyErr_Format(PyExc_TypeError, "%s has dtype %s but %s has %s", arg->name, dtype->name, reference->name,
                     dtype_name(reference->tensor.dtype));
        return -1;
    }
    if (((uintptr_t)data) % (uintptr_t)dtype->itemsize != 0) {
        PyErr_Format(PyExc_ValueError, "%s's data is not aligned to its %zd-byte elements (copy it first)",
                     arg->name, (Py_ssize_t)dtype->itemsize);
        return -1;
    }
    arg->tensor.data = data;
    arg->tensor.dtype = dtype->code;
    arg->tensor.reserved = 0;
    extend_rank3(&arg->tensor, ndim, token);
    arg->present = 1;
    return 0;
}

/* The dtype of a raw view or tensor from its code object; NULL with a TypeError naming the
 * argument when the code is not one they may carry. */
static const dtype_info *
raw_dtype(PyObject *code_obj, const char *name, const char *source)
{
    long code = code_obj != NULL ? PyLong_AsLong(code_obj) : -1;
    if (code == -1 && PyErr_Occurred()) {
        PyErr_Clear();
    }
    const dtype_info *dtype = find_dtype(code);
    if (dtype == NULL) {
        PyErr_Format(PyExc_TypeError, "%s: the %s's dtype code %R is not one of the extension's "
                     "(0 float32, 1 float64, 2 float16, 3 bfloat16)", name, source, code_obj != NULL ? code_obj : Py_None);
        return NULL;
    }
    return dtype;
}

/*
 * The NumPy-free way in (performer.torch): obj is a raw view, the tuple
 * (data_address, shape, strides_in_elements, dtype_code, writable) describing memory its
 * caller keeps alive for the call. Nothing is held: arg->held stays 0 (arg->present says it
 * was given). Same checks and messages as the array path.
 */
static int
get_raw_view(PyObject *obj, tensor_arg *arg, int ndim, int writable, const tensor_arg *reference, int token)
{
    /* An optional sixth item is the object owning the memory (a resolved copy the view was made
     * from): the tuple, an argument of the call, keeps it alive until the call returns. */
    if (PyTuple_Size(obj) != 5 && PyTuple_Size(obj) != 6) {
        PyErr_Format(PyExc_TypeError, "%s: a raw tensor view is (data_address, shape, strides, dtype_code, "
                     "writable[, owner]), not a tuple of %zd items", arg->name, PyTuple_Size(obj));
        return -1;
    }
    performer_tensor_t *t = &arg->tensor;
    memset(t, 0, sizeof *t);
    void *data = PyLong_AsVoidPtr(PyTuple_GetItem(obj, 0));
    if (data == NULL && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s: the raw view's data address is not an int", arg->name);
        return -1;
    }
    const dtype_info *dtype = raw_dtype(PyTuple_GetItem(obj, 3), arg->name, "raw view");
    if (dtype == NULL) {
        return -1;
    }
    int can_write = PyObject_IsTrue(PyTuple_GetItem(obj, 4));
    if (can_write < 0) {
        return -1;
    }
    if (writable && !can_write) {
        PyErr_Format(PyExc_ValueError, "%s: cannot write into a read-only tensor", arg->name);
        return -1;
    }
    if (tuple_ints(PyTuple_GetItem(obj, 1), arg->name, "shape", "raw view", ndim, t->shape) < 0 ||
        tuple_ints(PyTuple_GetItem(obj, 2), arg->name, "strides", "raw view", ndim, t->strides) < 0) {
        return -1;
    }
    return finish_tensor(arg, data, dtype, ndim, token, reference);
}

/* ------------------------------------------------------------------------------------------
 * Arrays through NumPy's C-level array interface, __array_struct__ (CPython 3.9 and 3.10)
 *
 * The attribute is a capsule holding a PyArrayInterface, whose layout and flag values NumPy's
 * documentation fixes ("The array interface protocol"); the capsule keeps the array alive until
 * it is released. Cheaper than the __array_interface__ dict (no Python objects but the capsule).
 * ------------------------------------------------------------------------------------------ */

typedef struct {
    int two;             /* 2: the sanity check of the protocol */
    int nd;
    char typekind;       /* 'f' for floating point */
    int itemsize;
    int flags;
    Py_intptr_t *shape;
    Py_intptr_t *strides;  /* in bytes; NULL for C order */
    void *data;
    PyObject *descr;
} array_interface_struct;

#define ARRAY_STRUCT_NOTSWAPPED 0x0200
#define ARRAY_STRUCT_WRITEABLE 0x0400

static PyObject *struct_attribute;  /* "__array_struct__", interned */
static PyObject *numpy_asarray;     /* numpy.asarray, imported on first need */

/* numpy.asarray, imported once; NULL with an exception set when NumPy is missing. */
static PyObject *
get_numpy_asarray(void)
{
    if (numpy_asarray == NULL) {
        PyObject *numpy = PyImport_ImportModule("numpy");
        if (numpy == NULL) {
            return NULL;
        }
        numpy_asarray = PyObject_GetAttrString(numpy, "asarray");
        Py_DECREF(numpy);
    }
    return numpy_asarray;
}

/* obj's __array_struct__ capsule (new reference). An exporter of the buffer protocol without one
 * (memoryview, bytearray) is viewed as a NumPy array first, whose capsule keeps it alive. NULL
 * with no exception set when obj is no array; NULL with an exception naming the argument on error. */
static PyObject *
array_struct_capsule(PyObject *obj, const char *name)
{
    PyObject *capsule = PyObject_GetAttr(obj, struct_attribute);
    if (capsule != NULL || !PyErr_ExceptionMatches(PyExc_AttributeError)) {
        return capsule;
    }
    PyErr_Clear();
    PyObject *view = PyMemoryView_FromObject(obj);
    if (view == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *asarray = get_numpy_asarray();
    PyObject *viewed = asarray != NULL ? PyObject_CallFunctionObjArgs(asarray, view, NULL) : NULL;
    Py_DECREF(view);
    if (viewed == NULL) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_Format(PyExc_TypeError, "%s: NumPy cannot view its buffer (%S)", name, value != NULL ? value : Py_None);
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        return NULL;
    }
    capsule = PyObject_GetAttr(viewed, struct_attribute);
    Py_DECREF(viewed);
    return capsule;
}

/* Fills *array from obj's __array_struct__, the capsule held in arg->owner. Returns 1, 0 when obj
 * is no array (no exception set), or -1 with an exception naming the argument. */
static int
get_struct_array(PyObject *obj, tensor_arg *arg, int writable, foreign_array *array)
{
    PyObject *capsule = array_struct_capsule(obj, arg->name);
    if (capsule == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    arg->owner = capsule;
    const array_interface_struct *inter =
        PyCapsule_CheckExact(capsule) ? PyCapsule_GetPointer(capsule, NULL) : NULL;
    if (inter == NULL || inter->two != 2 || inter->nd < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s: its __array_struct__ is not a NumPy array interface capsule",
                     arg->name);
        return -1;
    }
    if (writable && !(inter->flags & ARRAY_STRUCT_WRITEABLE)) {
        PyErr_Format(PyExc_ValueError, "%s: cannot write into a read-only array", arg->name);
        return -1;
    }
    memset(array, 0, sizeof *array);
    array->data = inter->data;
    array->ndim = inter->nd;
    array->itemsize = inter->itemsize;
    array->dtype = -1;
    if (inter->typekind == 'f' && (inter->flags & ARRAY_STRUCT_NOTSWAPPED)) {
        array->dtype = inter->itemsize == 4 ? PERFORMER_FLOAT32
                     : inter->itemsize == 8 ? PERFORMER_FLOAT64
                     : inter->itemsize == 2 ? PERFORMER_FLOAT16 : -1;
    }
    if (array->dtype < 0) {
        snprintf(array->format, sizeof array->format, "'%c%d'%s", inter->typekind, inter->itemsize,
                 inter->flags & ARRAY_STRUCT_NOTSWAPPED ? "" : " (byte-swapped)");
    }
    int64_t contiguous = inter->itemsize;
    for (int i = inter->nd - 1; i >= 0; i--) {
        int64_t extent = (int64_t)inter->shape[i];
        int64_t stride = inter->strides != NULL ? (int64_t)inter->strides[i] : contiguous;
        if (extent < 0 || __builtin_mul_overflow(contiguous, extent > 0 ? extent : 1, &contiguous)) {
            PyErr_Format(PyExc_ValueError, "%s.shape[%d] = %lld is out of range", arg->name, i, (long long)extent);
            return -1;
        }
        if (i < FOREIGN_MAX_NDIM) {
            array->shape[i] = extent;
            array->strides[i] = stride;
        }
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------
 * Arrays (buffer protocol or __array_struct__) into tensor arguments
 * ------------------------------------------------------------------------------------------ */

static int
get_array(PyObject *obj, tensor_arg *arg, int ndim, int writable, const tensor_arg *reference, int token)
{
    foreign_array array;
    if (has_stable_buffer_protocol && numpy_fields_read(obj, ndim, writable, &array)) {
        Py_INCREF(obj);  /* held for the call, as a buffer would hold it */
        arg->owner = obj;
    } else {
        int found = has_stable_buffer_protocol ? buffer_get(obj, arg->name, writable, &arg->buffer, &array)
                                               : get_struct_array(obj, arg, writable, &array);
        if (found < 0) {
            return -1;
        }
        if (found == 0) {
            return raise_with_type_name(PyExc_TypeError,
                                        "%s must be a float32 or float64 array with the buffer protocol "
                                        "(a NumPy array or memoryview), not %S", arg->name, obj);
        }
        arg->held = has_stable_buffer_protocol;
    }
    const dtype_info *dtype = find_dtype(array.dtype);
    if (dtype == NULL) {
        PyErr_Format(PyExc_TypeError,
                     "%s has unsupported element format %s: expected float32, float64 or float16 in "
                     "native byte order", arg->name, array.format);
        return -1;
    }
    if (array.ndim != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must have %d dimensions (%s), not %d", arg->name, ndim,
                     ndim == 4 ? "batch x heads x positions x features"
                               : token ? "batch x heads x features" : "batch x heads x positions",
                     array.ndim);
        return -1;
    }
    performer_tensor_t *t = &arg->tensor;
    memset(t, 0, sizeof *t);
    for (int i = ndim - 1; i >= 0; i--) {
        if (array.strides[i] % dtype->itemsize != 0) {
            PyErr_Format(PyExc_ValueError, "%s.strides[%d] = %lld bytes is not a multiple of its item size %lld",
                         arg->name, i, (long long)array.strides[i], (long long)dtype->itemsize);
            return -1;
        }
        t->shape[i] = array.shape[i];
        t->strides[i] = array.strides[i] / dtype->itemsize;
    }
    return finish_tensor(arg, array.data, dtype, ndim, token, reference);
}

/* ------------------------------------------------------------------------------------------
 * torch tensors, read by the extension itself (performer.torch registers their type)
 *
 * The common case of performer.torch -- a plain CPU torch.Tensor of a dtype in the registered
 * table -- is read here with a few attribute calls (dtype, is_cpu, is_neg(), data_ptr(), shape,
 * stride()), saving the Python function and the raw-view tuple per tensor; or, when performer.torch
 * registered PyTorch's to_dlpack, with two (is_neg() and to_dlpack: ~0.6 us less per tensor, a
 * few microseconds per decoder step). Anything else that is
 * a torch.Tensor (a subclass, another device or dtype, a tensor without strides) goes to the
 * registered Python function view(name, tensor), which returns a raw view or raises the precise
 * error naming the argument.
 * ------------------------------------------------------------------------------------------ */

static PyTypeObject *tensor_type;  /* torch.Tensor, or NULL until registered */
static PyObject *tensor_dtypes;    /* {torch dtype: performer dtype code} */
static PyObject *tensor_view;      /* performer.torch._tensors.view */
static PyObject *tensor_to_dlpack; /* torch._C._to_dlpack, or NULL (private to PyTorch: optional) */
static PyObject *tensor_from_dlpack; /* torch._C._from_dlpack, or NULL: new_torch_tensor's way */
static PyObject *name_dtype, *name_is_cpu, *name_is_neg, *name_resolve_neg, *name_data_ptr, *name_shape,
    *name_stride;

/* The raw view the Python function gives for obj, read as get_raw_view (kept in arg->owner). */
static int
get_tensor_through_python(PyObject *obj, tensor_arg *arg, int ndim, int writable, const tensor_arg *reference,
                          int token)
{
    PyObject *name = PyUnicode_FromString(arg->name);
    PyObject *raw = name != NULL ? PyObject_CallFunctionObjArgs(tensor_view, name, obj, NULL) : NULL;
    Py_XDECREF(name);
    if (raw == NULL) {
        return -1;
    }
    arg->owner = raw;
    if (!PyTuple_Check(raw)) {
        PyErr_Format(PyExc_TypeError, "%s: performer.torch gave no raw view of the tensor", arg->name);
        return -1;
    }
    return get_raw_view(raw, arg, ndim, writable, reference, token);
}

/* A registered tensor type: its instances (subclasses included) are tensors. */
static int
is_tensor(PyObject *obj)
{
    return tensor_type != NULL && PyObject_TypeCheck(obj, tensor_type);
}

/* DLPack's structs (dlpack.h; this layout is its stable ABI, unversioned capsules "dltensor"). */
typedef struct { int32_t device_type; int32_t device_id; } dl_device;
typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } dl_dtype;
typedef struct {
    void *data;
    dl_device device;
    int32_t ndim;
    dl_dtype dtype;
    int64_t *shape;
    int64_t *strides;  /* in elements; NULL means row-major (not taken here) */
    uint64_t byte_offset;
} dl_tensor;
typedef struct dl_managed {
    dl_tensor tensor;
    void *manager_ctx;
    void (*deleter)(struct dl_managed *);
} dl_managed;

enum { DL_CPU = 1, DL_FLOAT = 2, DL_BFLOAT = 4 };

static const dtype_info *
dlpack_dtype(dl_dtype dtype)
{
    if (dtype.lanes != 1) {
        return NULL;
    }
    if (dtype.code == DL_FLOAT) {
        return find_dtype(dtype.bits == 32 ? PERFORMER_FLOAT32 : dtype.bits == 64 ? PERFORMER_FLOAT64
                          : dtype.bits == 16 ? PERFORMER_FLOAT16 : -1);
    }
    return dtype.code == DL_BFLOAT && dtype.bits == 16 ? find_dtype(PERFORMER_BFLOAT16) : NULL;
}

/* A plain tensor through to_dlpack: 1 when read into arg, -1 with an exception (finish_tensor's
 * checks), 0 when it is not this path's case -- a negated view (to_dlpack would export the values
 * without the negation), another device, dtype or rank, no strides, an unexpected capsule -- and
 * the attribute path decides, with its messages. The capsule, released here, holds a reference
 * to the storage; obj, alive for the call, holds another. */
static int
get_torch_tensor_dlpack(PyObject *obj, tensor_arg *arg, int ndim, const tensor_arg *reference, int token)
{
    PyObject *is_neg = PyObject_CallMethodObjArgs(obj, name_is_neg, NULL);
    if (is_neg == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(is_neg);
    if (is_neg != Py_False) {
        return 0;
    }
    PyObject *capsule = PyObject_CallFunctionObjArgs(tensor_to_dlpack, obj, NULL);
    if (capsule == NULL) {
        PyErr_Clear();
        return 0;
    }
    int result = 0;
    dl_managed *managed = (dl_managed *)PyCapsule_GetPointer(capsule, "dltensor");
    if (managed == NULL) {
        PyErr_Clear();
    } else {
        const dl_tensor *t = &managed->tensor;
        const dtype_info *dtype = dlpack_dtype(t->dtype);
        if (t->device.device_type == DL_CPU && dtype != NULL && t->ndim == ndim && t->strides != NULL &&
            t->shape != NULL) {
            performer_tensor_t *tensor = &arg->tensor;
            memset(tensor, 0, sizeof *tensor);
            for (int i = 0; i < ndim; i++) {
                tensor->shape[i] = t->shape[i];
                tensor->strides[i] = t->strides[i];
            }
            result = finish_tensor(arg, (char *)t->data + t->byte_offset, dtype, ndim, token, reference) < 0 ? -1 : 1;
        }
    }
    Py_DECREF(capsule);
    return result;
}

/* A tensor the extension made: one DLPack header and the data (64-byte aligned, as PyTorch's CPU
 * allocator), both freed by the deleter PyTorch calls when the tensor's storage dies (any thread,
 * so plain free(), not the Python allocator). */
typedef struct {
    dl_managed managed;
    int64_t shape[4];
    int64_t strides[4];
} made_tensor;

static void
made_tensor_delete(dl_managed *managed)
{
    free(managed->tensor.data);
    free(managed);
}

/* The capsule's destructor: PyTorch renames a capsule it consumed ("used_dltensor") and owns the
 * tensor from then on; one it did not consume still holds it. */
static void
made_capsule_destructor(PyObject *capsule)
{
    if (PyCapsule_IsValid(capsule, "dltensor")) {
        dl_managed *managed = (dl_managed *)PyCapsule_GetPointer(capsule, "dltensor");
        managed->deleter(managed);
    }
}

/*
 * A new contiguous CPU tensor of the given performer dtype and shape (uninitialized), made here
 * and imported through PyTorch's from_dlpack: about half of what torch.empty costs from Python
 * (the decoders' steps without out=). NULL with an exception.
 */
static PyObject *
new_torch_tensor(int32_t dtype_code, int ndim, const int64_t *shape)
{
    if (tensor_from_dlpack == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "performer.torch registered no from_dlpack: pass out=");
        return NULL;
    }
    const dtype_info *dtype = find_dtype(dtype_code);
    dl_dtype dl = {dtype_code == PERFORMER_BFLOAT16 ? DL_BFLOAT : DL_FLOAT, 0, 1};
    int64_t elements = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && elements > INT64_MAX / 64 / shape[i])) {
            PyErr_SetString(PyExc_OverflowError, "output too large");
            return NULL;
        }
        elements *= shape[i];
    }
    if (dtype == NULL || ndim > 4) {
        PyErr_SetString(PyExc_SystemError, "new_torch_tensor: bad dtype or rank");
        return NULL;
    }
    dl.bits = (uint8_t)(dtype->itemsize * 8);
    size_t bytes = (size_t)((elements * dtype->itemsize + 63) / 64 * 64);
    made_tensor *made = (made_tensor *)calloc(1, sizeof *made);
    void *data = aligned_alloc(64, bytes > 0 ? bytes : 64);
    if (made == NULL || data == NULL) {
        free(made);
        free(data);
        return PyErr_NoMemory();
    }
    int64_t stride = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        made->shape[i] = shape[i];
        made->strides[i] = stride;
        stride *= shape[i];
    }
    dl_tensor *t = &made->managed.tensor;
    t->data = data;
    t->device.device_type = DL_CPU;
    t->ndim = ndim;
    t->dtype = dl;
    t->shape = made->shape;
    t->strides = made->strides;
    made->managed.deleter = made_tensor_delete;
    PyObject *capsule = PyCapsule_New(&made->managed, "dltensor", made_capsule_destructor);
    if (capsule == NULL) {
        made_tensor_delete(&made->managed);
        return NULL;
    }
    PyObject *tensor = PyObject_CallFunctionObjArgs(tensor_from_dlpack, capsule, NULL);
    Py_DECREF(capsule);
    return tensor;
}

static int
get_torch_tensor(PyObject *obj, tensor_arg *arg, int ndim, int writable, const tensor_arg *reference, int token)
{
    if (Py_TYPE(obj) != tensor_type) {
        return get_tensor_through_python(obj, arg, ndim, writable, reference, token);
    }
    if (tensor_to_dlpack != NULL) {
        int read = get_torch_tensor_dlpack(obj, arg, ndim, reference, token);
        if (read != 0) {
            return read < 0 ? -1 : 0;
        }
    }
    PyObject *dtype_obj = PyObject_GetAttr(obj, name_dtype);
    if (dtype_obj == NULL) {
        return -1;
    }
    PyObject *code = PyDict_GetItemWithError(tensor_dtypes, dtype_obj);  /* borrowed */
    Py_DECREF(dtype_obj);
    if (code == NULL) {
        return PyErr_Occurred() ? -1 : get_tensor_through_python(obj, arg, ndim, writable, reference, token);
    }
    PyObject *is_cpu = PyObject_GetAttr(obj, name_is_cpu);
    Py_XDECREF(is_cpu);
    if (is_cpu != Py_True) {
        PyErr_Clear();
        return get_tensor_through_python(obj, arg, ndim, writable, reference, token);
    }
    PyObject *is_neg = PyObject_CallMethodObjArgs(obj, name_is_neg, NULL);
    if (is_neg == NULL) {
        return -1;
    }
    Py_DECREF(is_neg);
    if (is_neg == Py_True) {
        /* A lazily negated view (torch._neg_view) has no memory holding its values: the resolved
         * copy is read instead, kept alive for the call. Written into, the copy would swallow
         * the result: refused. */
        if (writable) {
            PyErr_Format(PyExc_ValueError, "%s is a lazily negated view (torch._neg_view): an output "
                         "needs memory of its own (pass a tensor that is not negated)", arg->name);
            return -1;
        }
        obj = PyObject_CallMethodObjArgs(obj, name_resolve_neg, NULL);
        if (obj == NULL) {
            return -1;
        }
        arg->owner = obj;
    }
    /* No strides or no storage (sparse, mkldnn, nested): view() names the layout. */
    PyObject *strides = PyObject_CallMethodObjArgs(obj, name_stride, NULL);
    PyObject *address = strides != NULL ? PyObject_CallMethodObjArgs(obj, name_data_ptr, NULL) : NULL;
    if (address == NULL) {
        Py_XDECREF(strides);
        if (!PyErr_ExceptionMatches(PyExc_RuntimeError)) {
            return -1;
        }
        PyErr_Clear();
        return get_tensor_through_python(obj, arg, ndim, writable, reference, token);
    }
    const dtype_info *dtype = raw_dtype(code, arg->name, "tensor");
    PyObject *shape = dtype != NULL ? PyObject_GetAttr(obj, name_shape) : NULL;
    int result = -1;
    if (shape != NULL) {
        void *data = PyLong_AsVoidPtr(address);
        performer_tensor_t *t = &arg->tensor;
        memset(t, 0, sizeof *t);
        if (!(data == NULL && PyErr_Occurred()) &&
            tuple_ints(shape, arg->name, "shape", "tensor", ndim, t->shape) == 0 &&
            tuple_ints(strides, arg->name, "strides", "tensor", ndim, t->strides) == 0) {
            result = finish_tensor(arg, data, dtype, ndim, token, reference);
        }
    }
    Py_DECREF(strides);
    Py_XDECREF(address);
    Py_XDECREF(shape);
    return result;
}

/* _register_tensor_type(tensor_type, dtype_codes, view[, to_dlpack[, from_dlpack]]): see the
 * section's comment; from_dlpack (or None) makes the tensors of new_torch_tensor. */
static PyObject *
register_tensor_type(PyObject *module, PyObject *args)
{
    PyObject *type, *dtypes, *view, *to_dlpack = Py_None, *from_dlpack = Py_None;
    if (!PyArg_ParseTuple(args, "O!O!O|OO:_register_tensor_type", &PyType_Type, &type, &PyDict_Type, &dtypes, &view,
                          &to_dlpack, &from_dlpack)) {
        return NULL;
    }
    if (!PyCallable_Check(view) || (to_dlpack != Py_None && !PyCallable_Check(to_dlpack)) ||
        (from_dlpack != Py_None && !PyCallable_Check(from_dlpack))) {
        PyErr_SetString(PyExc_TypeError, "_register_tensor_type: view, to_dlpack and from_dlpack must be callable");
        return NULL;
    }
    if (from_dlpack == Py_None) {
        Py_CLEAR(tensor_from_dlpack);
    } else {
        Py_INCREF(from_dlpack);
        Py_XSETREF_COMPAT(tensor_from_dlpack, from_dlpack);
    }
    const char *names[] = {"dtype", "is_cpu", "is_neg", "resolve_neg", "data_ptr", "shape", "stride"};
    PyObject **slots[] = {&name_dtype, &name_is_cpu, &name_is_neg, &name_resolve_neg, &name_data_ptr, &name_shape,
                          &name_stride};
    for (int i = 0; i < 7; i++) {
        if (*slots[i] == NULL && (*slots[i] = PyUnicode_InternFromString(names[i])) == NULL) {
            return NULL;
        }
    }
    Py_INCREF(type);
    Py_INCREF(dtypes);
    Py_INCREF(view);
    Py_XSETREF_COMPAT(tensor_type, (PyTypeObject *)type);
    Py_XSETREF_COMPAT(tensor_dtypes, dtypes);
    Py_XSETREF_COMPAT(tensor_view, view);
    if (to_dlpack == Py_None) {
        Py_CLEAR(tensor_to_dlpack);
    } else {
        Py_INCREF(to_dlpack);
        Py_XSETREF_COMPAT(tensor_to_dlpack, to_dlpack);
    }
    Py_RETURN_NONE;
}

/* Tensors of at least this many bytes that performer.torch writes get huge-page advice. */
#define HUGE_PAGE_ADVICE_BYTES ((int64_t)4 << 20)

/* An output tensor of performer.torch (made just before the call: torch.empty and friends): PyTorch's
 * CPU allocator gives a large one fresh 4 KiB pages, and the kernel's first write then pays a page
 * fault per 4 KiB (a new 32 MiB output: 15 ms of a 1-thread call at N = 16384, against 3.7 ms in
 * 2 MiB pages). Advise huge pages before the kernel writes, as NumPy does for its own arrays of
 * >= 4 MiB. Advice only: whatever madvise answers (THP off, not anonymous memory) changes nothing
 * else, and memory already touched keeps its contents. */
static void
advise_huge_pages(const performer_tensor_t *t)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const dtype_info *dtype = find_dtype(t->dtype);
    if (dtype == NULL || t->data == NULL) {
        return;
    }
    int64_t last = 0;  /* offset of the last element, in elements (outputs have strides >= 0) */
    for (int i = 0; i < 4; i++) {
        if (t->shape[i] == 0 || t->strides[i] < 0) {
            return;
        }
        last += (t->shape[i] - 1) * t->strides[i];
    }
    int64_t bytes = (last + 1) * dtype->itemsize;
    if (bytes < HUGE_PAGE_ADVICE_BYTES) {
        return;
    }
    const uintptr_t page = 4096, begin = (uintptr_t)t->data;
    uintptr_t start = (begin + page - 1) & ~(page - 1), end = (begin + (uintptr_t)bytes) & ~(page - 1);
    if (end > start) {
        (void)madvise((void *)start, end - start, MADV_HUGEPAGE);
    }
#else
    (void)t;
#endif
}

static int
get_tensor_mode(PyObject *obj, tensor_arg *arg, int ndim, int writable, const tensor_arg *reference, int token)
{
    if (is_tensor(obj)) {
        int result = get_torch_tensor(obj, arg, ndim, writable, reference, token);
        if (result == 0 && writable) {
            advise_huge_pages(&arg->tensor);
        }
        return result;
    }
    if (PyTuple_Check(obj)) {
        return get_raw_view(obj, arg, ndim, writable, reference, token);
    }
    return get_array(obj, arg, ndim, writable, reference, token);
}

/* Takes objs[0 .. count-1] (rank 4) into t[0 .. count-1]: read-only before first_output, written
 * from it on; every dtype must equal the first's. Returns 0, or -1 with an exception (as get_tensor). */
static int
get_tensors(PyObject *const *objs, tensor_arg *t, int count, int first_output)
{
    for (int i = 0; i < count; i++) {
        if (get_tensor(objs[i], &t[i], 4, i >= first_output, i == 0 ? NULL : &t[0]) < 0) {
            return -1;
        }
    }
    return 0;
}

/* The dtype reference for lse, states and denominators: q, except in a half-precision call,
 * whose lse, states and denominators are float32 (the library checks that and names them). */
static const tensor_arg *
lse_reference(const tensor_arg *q)
{
    int half = q->tensor.dtype == PERFORMER_FLOAT16 || q->tensor.dtype == PERFORMER_BFLOAT16;
    return half ? NULL : q;
}

/* The tensor of an optional argument: NULL when it was None (not taken). */
static performer_tensor_t *
optional_tensor(tensor_arg *arg)
{
    return arg->present ? &arg->tensor : NULL;
}

static void
release_all(tensor_arg *args, int count)
{
    for (int i = 0; i < count; i++) {
        if (args[i].held) {
            buffer_release(&args[i].buffer);
            args[i].held = 0;
        }
        Py_CLEAR(args[i].owner);
    }
}

/* ------------------------------------------------------------------------------------------
 * Options
 * ------------------------------------------------------------------------------------------ */

/* Converts a per-batch key array `name` (kv_lengths, kv_starts: None or a sequence of batch
 * ints) into a PyMem array in *array (NULL for None). Returns 0, or -1 with an exception set
 * (and *array NULL). */
static int
get_kv_array(PyObject *values, const char *name, int64_t batch, int64_t **array)
{
    *array = NULL;
    if (values == Py_None) {
        return 0;
    }
    PyObject *sequence = PySequence_Fast(values, name);
    if (sequence == NULL) {
        PyErr_Format(PyExc_TypeError, "%s must be None or a sequence of ints", name);
        return -1;
    }
    Py_ssize_t count = PySequence_Size(sequence);
    if ((int64_t)count != batch) {
        PyErr_Format(PyExc_ValueError, "%s has %zd entries but batch = %lld",
                     name, count, (long long)batch);
        Py_DECREF(sequence);
        return -1;
    }
    int64_t *result = PyMem_Malloc(sizeof(int64_t) * (size_t)(count > 0 ? count : 1));
    if (result == NULL) {
        Py_DECREF(sequence);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        /* a list or a tuple (PySequence_Fast): borrowed items */
        PyObject *item = PyList_Check(sequence) ? PyList_GetItem(sequence, i) : PyTuple_GetItem(sequence, i);
        PyObject *index = item != NULL ? PyNumber_Index(item) : NULL;
        if (index == NULL) {
            PyErr_Clear();
            PyObject *found = item != NULL ? type_name(item) : NULL;
            PyErr_Format(PyExc_TypeError, "%s[%zd] must be an int, not %S", name, i, found != NULL ? found : Py_None);
            Py_XDECREF(found);
            Py_DECREF(sequence);
            PyMem_Free(result);
            return -1;
        }
        long long value = PyLong_AsLongLong(index);
        Py_DECREF(index);
        if (value == -1 && PyErr_Occurred()) {
            PyErr_Format(PyExc_ValueError, "%s[%zd] does not fit in 64 bits", name, i);
            Py_DECREF(sequence);
            PyMem_Free(result);
            return -1;
        }
        result[i] = (int64_t)value;
    }
    Py_DECREF(sequence);
    *array = result;
    return 0;
}

/* kv_lengths and kv_starts into *lengths, *starts (each PyMem or NULL). Returns 0, or -1 with an
 * exception set and both freed. */
static int
get_kv_arrays(PyObject *kv_lengths, PyObject *kv_starts, int64_t batch, int64_t **lengths, int64_t **starts)
{
    *starts = NULL;
    if (get_kv_array(kv_lengths, "kv_lengths", batch, lengths) < 0) {
        return -1;
    }
    if (get_kv_array(kv_starts, "kv_starts", batch, starts) < 0) {
        PyMem_Free(*lengths);
        *lengths = NULL;
        return -1;
    }
    return 0;
}

typedef struct {
    performer_softmax_options_t options;
    int64_t *kv_lengths;  /* owned (PyMem), or NULL */
    int64_t *kv_starts;   /* owned (PyMem), or NULL */
} softmax_options;

/* Fills *o from the Python values. batch is q.shape[0]. Returns 0 or -1 with an exception. */
static int
get_softmax_options(softmax_options *o, int causal, PyObject *scale, PyObject *kv_lengths,
                    PyObject *kv_starts, int64_t batch)
{
    performer_softmax_options_init(&o->options);
    o->kv_lengths = NULL;
    o->kv_starts = NULL;
    o->options.causal = causal ? 1 : 0;
    if (scale != Py_None) {
        double value = PyFloat_AsDouble(scale);
        if (value == -1.0 && PyErr_Occurred()) {
            return -1;
        }
        o->options.has_scale = 1;
        o->options.scale = value;
    }
    if (get_kv_arrays(kv_lengths, kv_starts, batch, &o->kv_lengths, &o->kv_starts) < 0) {
        return -1;
    }
    o->options.kv_lengths = o->kv_lengths;
    o->options.kv_starts = o->kv_starts;
    return 0;
}

static void
free_softmax_options(softmax_options *o)
{
    PyMem_Free(o->kv_lengths);
    PyMem_Free(o->kv_starts);
    o->kv_lengths = NULL;
    o->kv_starts = NULL;
}

/* ------------------------------------------------------------------------------------------
 * softmax_forward(q, k, v, out, lse, causal, scale, kv_lengths, kv_starts)
 * ------------------------------------------------------------------------------------------ */

PyDoc_STRVAR(softmax_forward_doc,
"softmax_forward(q, k, v, out, lse, causal, scale, kv_lengths, kv_starts) -> None\n\n"
"Low-level forward: writes softmax(scale q k^T + mask) v into out (B x H x N x M) and, when\n"
"lse is not None, the row log-sum-exp into lse (B x H x N). Use performer.softmax_attention.");

static PyObject *
softmax_forward(PyObject *module, PyObject *args)
{
    PyObject *obj[4], *lse_obj, *scale, *kv_lengths, *kv_starts = Py_None;  /* optional */
    int causal;
    if (!PyArg_ParseTuple(args, "OOOOOpOO|O:softmax_forward", &obj[0], &obj[1], &obj[2], &obj[3],
                          &lse_obj, &causal, &scale, &kv_lengths, &kv_starts)) {
        return NULL;
    }
    tensor_arg t[5] = {{"q"}, {"k"}, {"v"}, {"out"}, {"lse"}};
    softmax_options o = {0};
    PyObject *result = NULL;

    if (get_tensors(obj, t, 4, 3) < 0 ||
        (lse_obj != Py_None && get_tensor(lse_obj, &t[4], 3, 1, lse_reference(&t[0])) < 0)) {
        goto done;
    }
    if (get_softmax_options(&o, causal, scale, kv_lengths, kv_starts, t[0].tensor.shape[0]) < 0) {
        goto done;
    }
    performer_status status;
    Py_BEGIN_ALLOW_THREADS
    status = performer_softmax_forward(&t[0].tensor, &t[1].tensor, &t[2].tensor, &t[3].tensor,
                                       optional_tensor(&t[4]), &o.options);
    Py_END_ALLOW_THREADS
    result = none_or_raise(status);
done:
    free_softmax_options(&o);
    release_all(t, 5);
    return result;
}

/* ------------------------------------------------------------------------------------------
 * softmax_backward(q, k, v, out, lse, dout, dq, dk, dv, causal, scale, kv_lengths, kv_starts)
 * ------------------------------------------------------------------------------------------ */

PyDoc_STRVAR(softmax_backward_doc,
"softmax_backward(q, k, v, out, lse, dout, dq, dk, dv, causal, scale, kv_lengths,\n"
"                 kv_starts) -> None\n\n"
"Low-level backward: writes the gradients of the loss into dq, dk, dv given the forward's\n"
"out and lse (B x H x N) and dout. Use performer.softmax_attention_backward.");

static PyObject *
softmax_backward(PyObject *module, PyObject *args)
{
    PyObject *obj[9], *scale, *kv_lengths, *kv_starts = Py_None;  /* optional */
    int causal;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOpOO|O:softmax_backward", &obj[0], &obj[1], &obj[2], &obj[3],
                          &obj[4], &obj[5], &obj[6], &obj[7], &obj[8], &causal, &scale, &kv_lengths,
                          &kv_starts)) {
        return NULL;
    }
    tensor_arg t[9] = {{"q"}, {"k"}, {"v"}, {"out"}, {"lse"}, {"dout"}, {"dq"}, {"dk"}, {"dv"}};
    softmax_options o = {0};
    PyObject *result = NULL;

    for (int i = 0; i < 9; i++) {
        int ndim = i == 4 ? 3 : 4;
        int writable = i >= 6;
        const tensor_arg *reference = i == 0 ? NULL : i == 4 ? lse_reference(&t[0]) : &t[0];
        if (get_tensor(obj[i], &t[i], ndim, writable, reference) < 0) {
            goto done;
        }
    }
    if (get_softmax_options(&o, causal, scale, kv_lengths, kv_starts, t[0].tensor.shape[0]) < 0) {
        goto done;
    }
    performer_status status;
    Py_BEGIN_ALLOW_THREADS
    status = performer_softmax_backward(&t[0].tensor, &t[1].tensor, &t[2].tensor, &t[3].tensor,
                                        &t[4].tensor, &t[5].tensor, &t[6].tensor, &t[7].tensor,
                                        &t[8].tensor, &o.options);
    Py_END_ALLOW_THREADS
    result = none_or_raise(status);
done:
    free_softmax_options(&o);
    release_all(t, 9);
    return result;
}

/* ------------------------------------------------------------------------------------------
 * softmax_merge(out_a, lse_a, out_b, lse_b, out, lse)
 * ------------------------------------------------------------------------------------------ */

PyDoc_STRVAR(softmax_merge_doc,
"softmax_merge(out_a, lse_a, out_b, lse_b, out, lse) -> None\n\n"
"Low-level merge of two partial softmax results over disjoint key sets (outs B x H x N x M,\n"
"lses B x H x N) into out, lse (which may be out_a, lse_a). Use performer.softmax_merge.");

static PyObject *
softmax_merge(PyObject *module, PyObject *args)
{
    PyObject *obj[6];
    if (!PyArg_ParseTuple(args, "OOOOOO:softmax_merge", &obj[0], &obj[1], &obj[2], &obj[3], &obj[4], &obj[5])) {
        return NULL;
    }
    tensor_arg t[6] = {{"out_a"}, {"lse_a"}, {"out_b"}, {"lse_b"}, {"out"}, {"lse"}};
    PyObject *result = NULL;
    for (int i = 0; i < 6; i++) {
        /* outs share out_a's dtype; the lses are float32 when out_a is half (lse_reference). */
        const tensor_arg *reference = i == 0 ? NULL : i % 2 ? lse_reference(&t[0]) : &t[0];
        if (get_tensor(obj[i], &t[i], i % 2 ? 3 : 4, i >= 4, reference) < 0) {
            goto done;
        }
    }
    performer_status status;
    Py_BEGIN_ALLOW_THREADS
    status = performer_softmax_merge(&t[0].tensor, &t[1].tensor, &t[2].tensor, &t[3].tensor, &t[4].tensor,
                                     &t[5].tensor);
    Py_END_ALLOW_THREADS
    result = none_or_raise(status);
done:
    release_all(t, 6);
    return result;
}

/* ------------------------------------------------------------------------------------------
 * Linear attention
 * ------------------------------------------------------------------------------------------ */

typedef struct {
    performer_linear_options_t options;
    int64_t *kv_lengths;  /* owned (PyMem), or NULL */
    int64_t *kv_starts;   /* owned (PyMem), or NULL */
} linear_options;

/* Fills *o. feature_map is the C enum value (the Python layer maps names to it). */
static int
get_linear_options(linear_options *o, int causal, int feature_map, double eps, int normalize, PyObject *kv_lengths,
                   PyObject *kv_starts, int64_t batch)
{
    performer_linear_options_init(&o->options);
    o->options.causal = causal ? 1 : 0;
    o->options.feature_map = feature_map;
    o->options.eps = eps;
    o->options.normalize = normalize ? 1 : 0;
    if (get_kv_arrays(kv_lengths, kv_starts, batch, &o->kv_lengths, &o->kv_starts) < 0) {
        return -1;
    }
    o->options.kv_lengths = o->kv_lengths;
    o->options.kv_starts = o->kv_starts;
    return 0;
}

/* Takes an optional state pair (S rank 4, z rank 3 seen as B x H x C x 1) into t[0], t[1]:
 * both None, or both arrays. Returns 0 or -1 with an exception. */
static int
get_state_pair(PyObject *s_obj, PyObject *z_obj, tensor_arg *t, int writable, const tensor_arg *reference)
{
    if (s_obj == Py_None && z_obj == Py_None) {
        return 0;
    }
    if (s_obj == Py_None || z_obj == Py_None) {
        PyErr_Format(PyExc_ValueError, "%s and %s must both be given or both be None", t[0].name, t[1].name);
        return -1;
    }
    if (get_tensor(s_obj, &t[0], 4, writable, reference) < 0 ||
        get_tensor(z_obj, &t[1], 3, writable, reference) < 0) {
        return -1;
    }
    return 0;
}

static int get_state_triple(PyObject *s_obj, PyObject *z_obj, PyObject *c_obj, tensor_arg *t, int writable,
                            const tensor_arg *reference);

/* A group of tensor arguments of a state-only call after k and v: one gradient (dk or dv, of k's
 * dtype and rank 4), or a state pair (S, z) / triple (S, z, c) (float32 in a half call), written or
 * read; a required state must not be None. */
typedef struct {
    int first, count, writable, required;
} state_call_group;

/*
 * The tensors of linear_state, favor_state and their backward: k, v (read-only, one dtype) in
 * obj[0], obj[1], then the groups in order. Every tensor is taken before a missing required state
 * is reported. Returns 0, or -1 with an exception (as get_tensor: the caller releases t).
 */
static int
get_state_call_tensors(PyObject *const *obj, tensor_arg *t, const state_call_group *groups, int group_count)
{
    if (get_tensor(obj[0], &t[0], 4, 0, NULL) < 0 || get_tensor(obj[1], &t[1], 4, 0, &t[0]) < 0) {
        return -1;
    }
    for (int g = 0; g < group_count; g++) {
        PyObject *const *o = obj + groups[g].first;
        tensor_arg *arg = t + groups[g].first;
        int writable = groups[g].writable;
        int status = groups[g].count == 1 ? get_tensor(o[0], arg, 4, writable, &t[0])
                     : groups[g].count == 2 ? get_state_pair(o[0], o[1], arg, writable, lse_reference(&t[0]))
                                            : get_state_triple(o[0], o[1], o[2], arg, writable, lse_reference(&t[0]));
        if (status < 0) {
            return -1;
        }
    }
    for (int g = 0; g < group_count; g++) {
        const tensor_arg *arg = t + groups[g].first;
        if (groups[g].required && obj[groups[g].first] == Py_None) {
            if (groups[g].count == 2) {
                PyErr_Format(PyExc_ValueError, "%s and %s are required", arg[0].name, arg[1].name);
            } else {
                PyErr_Format(PyExc_ValueError, "%s, %s and %s are required", arg[0].name, arg[1].name, arg[2].name);
            }
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(linear_forward_doc,
"linear_forward(q, k, v, out, S0, z0, S_N, z_N, den, causal, feature_map, eps, normalize, kv_lengths,\n"
"               kv_starts)\n"
"    -> None\n\n"
"Low-level forward: writes linear attention into out (B x H x N x M); S0/z0 (or None) is the\n"
"initial state, S_N/z_N (or None) receive the final one (z as B x H x C); den (or None)\n"
"receives the denominators (B x H x N). Use performer.linear_attention.");

static PyObject *
linear_forward(PyObject *module, PyObject *args)
{
    PyObject *obj[9], *kv_lengths, *kv_starts = Py_None;  /* optional */
    int causal, feature_map, normalize;
    double eps;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOpidpO|O:linear_forward", &obj[0], &obj[1], &obj[2], &obj[3], &obj[4],
                          &obj[5], &obj[6], &obj[7], &obj[8], &causal, &feature_map, &eps, &normalize,
                          &kv_lengths, &kv_starts)) {
        return NULL;
    }
    tensor_arg t[9] = {{"q"}, {"k"}, {"v"}, {"out"}, {"S0"}, {"z0"}, {"S_N"}, {"z_N"}, {"denominators"}};
    linear_options o = {0};
    PyObject *result = NULL;
    if (get_tensors(obj, t, 4, 3) < 0 ||
        get_state_pair(obj[4], obj[5], &t[4], 0, lse_reference(&t[0])) < 0 ||
        get_state_pair(obj[6], obj[7], &t[6], 1, lse_reference(&t[0])) < 0 ||
        (obj[8] != Py_None && get_tensor(obj[8], &t[8], 3, 1, lse_reference(&t[0])) < 0)) {
        goto done;
    }
    if (get_linear_options(&o, causal, feature_map, eps, normalize, kv_lengths, kv_starts, t[0].tensor.shape[0]) < 0) {
        goto done;
    }
    performer_status status;
    Py_BEGIN_ALLOW_THREADS
    status = performer_linear_forward_with_denominators(
        &t[0].tensor, &t[1].tensor, &t[2].tensor, &t[3].tensor, optional_tensor(&t[4]), optional_tensor(&t[5]),
        optional_tensor(&t[6]), optional_tensor(&t[7]), optional_tensor(&t[8]), &o.options);
    Py_END_ALLOW_THREADS
    result = none_or_raise(status);
done:
    PyMem_Free(o.kv_lengths);
    PyMem_Free(o.kv_starts);
    release_all(t, 9);
    return result;
}

PyDoc_STRVAR(linear_backward_doc,
"linear_backward(q, k, v, dout, dq, dk, dv, S0, z0, dS_N, dz_N, dS0, dz0, causal, feature_map, eps,\n"
"                normalize, kv_lengths, kv_starts) -> None\n\n"
"Low-level backward: writes dq, dk, dv and, when dS0/dz0 are not None, the gradient of the\n"
"initial state. Use performer.linear_attention_backward.");

static PyObject *
linear_backward(PyObject *module, PyObject *args)
{
    PyObject *obj[13], *kv_lengths, *kv_starts = Py_None;  /* optional */
    int causal, feature_map, normalize;
    double eps;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOOpidpO|O:linear_backward", &obj[0], &obj[1], &obj[2], &obj[3],
                          &obj[4], &obj[5], &obj[6], &obj[7], &obj[8], &obj[9], &obj[10], &obj[11], &obj[12],
                          &causal, &feature_map, &eps, &normalize, &kv_lengths, &kv_starts)) {
        return NULL;
    }
    tensor_arg t[13] = {{"q"}, {"k"}, {"v"}, {"dout"}, {"dq"}, {"dk"}, {"dv"},
                        {"S0"}, {"z0"}, {"dS_N"}, {"dz_N"}, {"dS0"}, {"dz0"}};
    linear_options o = {0};
    PyObject *result = NULL;
    if (get_tensors(obj, t, 7, 4) < 0) {
        goto done;
    }
    if (get_state_pair(obj[7], obj[8], &t[7], 0, lse_reference(&t[0])) < 0 ||
        get_state_pair(obj[9], obj[10], &t[9], 0, lse_reference(&t[0])) < 0 ||
        get_state_pair(obj[11], obj[12], &t[11], 1, lse_reference(&t[0])) < 0) {
        goto done;
    }
    if (get_linear_options(&o, causal, feature_map, eps, normalize, kv_lengths, kv_starts, t[0].tensor.shape[0]) < 0) {
        goto done;
    }
    performer_status status;
    performer_tensor_t *state[6];
    for (int i = 0; i < 6; i++) {
        state[i] = optional_tensor(&t[7 + i]);
    }
    Py_BEGIN_ALLOW_THREADS
    status = performer_linear_backward(&t[0].tensor, &t[1].tensor, &t[2].tensor, &t[3].tensor, &t[4].tensor,
                                       &t[5].tensor, &t[6].tensor, state[0], state[1], state[2], state[3],
                                       state[4], state[5], &o.options);
    Py_END_ALLOW_THREADS
    result = none_or_raise(status);
done:
    PyMem_Free(o.kv_lengths);
    PyMem_Free(o.kv_starts);
    release_all(t, 13);
    return result;
}

PyDoc_STRVAR(linear_initial_state_gradient_doc,
"linear_initial_state_gradient(q, out, dout, den, dS0, dz0, feature_map, eps, normalize) -> None\n\n"
"Low-level query-side gradient of a forward's initial state: writes dS0 (B x H x C x M) and dz0\n"
"(B x H x C) from q, out, dout and the forward's denominators den (B x H x N, or None when not\n"
"normalized). Use performer.linear_initial_state_gradient.");

static PyObject *
linear_initial_state_gradient(PyObject *module, PyObject *args)
{
    PyObject *obj[6];
    int feature_map, normalize;
    double eps;
    if (!PyArg_ParseTuple(args, "OOOOOOidp:linear_initial_state_gradient", &obj[0], &obj[1], &obj[2], &obj[3],
                          &obj[4], &obj[5], &feature_map, &eps, &normalize)) {
        return NULL;
    }
    tensor_arg t[6] = {{"q"}, {"out"}, {"dout"}, {"denominators"}, {"dS0"}, {"dz0"}};
    linear_options o = {0};
    PyObject *result = NULL;
    if (get_tensors(obj, t, 3, 3) < 0 ||
        (obj[3] != Py_None && get_tensor(obj[3], &t[3], 3, 0, lse_reference(&t[0])) < 0) ||
        get_state_pair(obj[4], obj[5], &t[4], 1, lse_reference(&t[0])) < 0) {
        goto done;
    }
    if (obj[4] == Py_None) {
        PyErr_SetString(PyExc_ValueError, "dS0 and dz0 are required");
        goto done;
    }
    if (get_linear_options(&o, 0, feature_map, eps, normalize, Py_None, Py_None, t[0].tensor.shape[0]) < 0) {
        goto done;
    }
    performer_status status;
    Py_BEGIN_ALLOW_THREADS
    status = performer_linear_initial_state_gradient(&t[0].tensor, &t[1].tensor, &t[2].tensor, optional_tensor(&t[3]),
                                                     &t[4].tensor, &t[5].tensor, &o.options);
    Py_END_ALLOW_THREADS
    result = none_or_raise(status);
done:
    PyMem_Free(o.kv_lengths);
    PyMem_Free(o.kv_starts);
    release_all(t, 6);
    return result;
}

PyDoc_STRVAR(linear_state_doc,
"linear_state(k, v, S0, z0, S, z, feature_map, kv_lengths, kv_starts) -> None\n\n"
"Low-level state-only call: writes the state of k, v (S: B x Hs x C x M, z: B x Hs x C) into\n"
"S, z, starting from S0/z0 (or None). Use performer.linear_state.");

static PyObject *
linear_state(PyObject *module, PyObject *args)
{
    PyObject *obj[6], *kv_lengths, *kv_starts = Py_None;  /* optional */
    int feature_map;
    if (!PyArg_ParseTuple(args, "OOOOOOiO|O:linear_state", &obj[0], &obj[1], &obj[2], &obj[3], &obj[4], &obj[5],
                          &feature_map, &kv_lengths, &kv_starts)) {
        return NULL;
    }
    tensor_arg t[6] = {{"k"}, {"v"}, {"S0"}, {"z0"}, {"S"}, {"z"}};
    linear_options o = {0};
    PyObject *result = NULL;
    static const state_call_group groups[] = {{2, 2, 0, 0}, {4, 2, 1, 1}};  /* S0, z0; S, z */
    if (get_state_call_tensors(obj, t, groups, 2) < 0) {
        goto done;
    }
    if (get_linear_options(&o, 0, feature_map, 1e-6, 1, kv_lengths, kv_starts, t[0].tensor.shape[0]) < 0) {
        goto done;
    }
    performer_status status;
    Py_BEGIN_ALLOW_THREADS
    status = performer_linear_state(&t[0].tensor, &t[1].tensor, optional_tensor(&t[2]), optional_tensor(&t[3]),
                                    &t[4].tensor, &t[5].tensor, &o.options);
    Py_END_ALLOW_THREADS
    result = none_or_raise(status);
done:
    PyMem_Free(o.kv_lengths);
    PyMem_Free(o.kv_starts);
    release_all(t, 6);
    return result;
}

PyDoc_STRVAR(linear_state_backward_doc,
"linear_state_backward(k, v, dS, dz, dk, dv, dS0, dz0, feature_map, kv_lengths, kv_starts) -> None\n\n"
"Low-level backward of linear_state: writes dk, dv and, when dS0/dz0 are not None, the initial\n"
"state's gradient. Use performer.linear_state_backward.");

static PyObject *
linear_state_backward(PyObject *module, PyObject *args)
{
    PyObject *obj[8], *kv_lengths, *kv_starts = Py_None;  /* optional */
    int feature_map;
    if (!PyArg_ParseTuple(args, "OOOOOOOOiO|O:linear_state_backward", &obj[0], &obj[1], &obj[2], &obj[3], &obj[4],
                          &obj[5], &obj[6], &obj[7], &feature_map, &kv_lengths, &kv_starts)) {
        return NULL;
    }
    tensor_arg t[8] = {{"k"}, {"v"}, {"dS"}, {"dz"}, {"dk"}, {"dv"}, {"dS0"}, {"dz0"}};
    linear_options o = {0};
    PyObject *result = NULL;
    static const state_call_group groups[] = {{2, 2, 0, 1}, {4, 1, 1, 0}, {5, 1, 1, 0}, {6, 2, 1, 0}};
    if (get_state_call_tensors(obj, t, groups, 4) < 0) {  /* dS, dz; dk; dv; dS0, dz0 */
        goto done;
    }
    if (get_linear_options(&o, 0, feature_map, 1e-6, 1, kv_lengths, kv_starts, t[0].tensor.shape[0]) < 0) {
        goto done;
    }
    performer_status status;
    Py_BEGIN_ALLOW_THREADS
    status = performer_linear_state_backward(&t[0].tensor, &t[1].tensor, &t[2].tensor, &t[3].tensor, &t[4].tensor,
                                             &t[5].tensor, optional_tensor(&t[6]), optional_tensor(&t[7]),
                                             &o.options);
    Py_END_ALLOW_THREADS
    result = none_or_raise(status);
done:
    PyMem_Free(o.kv_lengths);
    PyMem_Free(o.kv_starts);
    release_all(t, 8);
    return result;
}

/* ------------------------------------------------------------------------------------------
 * Decoders: a performer_linear_decoder_t or performer_favor_decoder_t owned by a Python object.
 * One object layout and one set of methods serve both kinds; a decoder_ops table holds what
 * differs (the type's name, the state's parts and the C functions that take them).
 * ------------------------------------------------------------------------------------------ */

#define DECODER_MAX_STATE 3

typedef struct {
    const char *type_name;                    /* in messages: "LinearDecoder", "FavorDecoder" */
    int state_count;                          /* 2: (S, z); 3: (S, z, c) */
    const char *state_names[DECODER_MAX_STATE];
    const char *state_arguments;              /* "(S, z)" or "(S, z, c)", for argument-count errors */
    void (*destroy)(void *handle);
    performer_status (*reset)(void *handle);
    performer_status (*step)(void *handle, const performer_tensor_t *q, const performer_tensor_t *k,
                             const performer_tensor_t *v, performer_tensor_t *out);
    performer_status (*get_state)(void *handle, performer_tensor_t *const *state);
    performer_status (*set_state)(void *handle, const performer_tensor_t *const *state);
    /* A step on a caller's state (S, z), or NULL (the FAVOR+ decoder: the C ABI has none). */
    performer_status (*state_step)(void *handle, const performer_tensor_t *q, const performer_tensor_t *k,
                                   const performer_tensor_t *v, performer_tensor_t *out, performer_tensor_t *s,
                                   performer_tensor_t *z);
} decoder_ops;

typedef struct {
    PyObject_HEAD
    const decoder_ops *ops;
    void *handle;  /* the kind's decoder handle; NULL until __init__ succeeds */
    int busy;      /* a call is running (without the GIL) on this decoder */
    int dtype;
    int64_t out_shape[3];  /* B x H x M of a step's output (_tensor_step allocates it) */
} DecoderObject;

static PyObject *
decoder_new(PyTypeObject *type, const decoder_ops *ops)
{
    DecoderObject *self = (DecoderObject *)PyType_GenericAlloc(type, 0);
    if (self != NULL) {
        self->ops = ops;
        self->handle = NULL;
        self->busy = 0;
        self->dtype = PERFORMER_FLOAT32;
    }
    return (PyObject *)self;
}

/* -1 with an exception when __init__ runs while another thread uses the decoder. */
static int
decoder_check_idle(DecoderObject *self)
{
    if (self->busy) {
        PyErr_Format(PyExc_RuntimeError, "%s is in use by another thread", self->ops->type_name);
        return -1;
    }
    return 0;
}

/* The end of a successful __init__: the new handle replaces the old one (__init__ called again). */
static void
decoder_adopt(DecoderObject *self, void *handle, int dtype, int64_t batch, int64_t heads, int64_t value_dim)
{
    self->ops->destroy(self->handle);
    self->handle = handle;
    self->dtype = dtype;
    self->out_shape[0] = batch;
    self->out_shape[1] = heads;
    self->out_shape[2] = value_dim;
}

/* The end of a heap type's tp_dealloc: frees self and drops the instance's reference to its type. */
static void
free_instance(PyObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    freefunc free_slot = (freefunc)PyType_GetSlot(type, Py_tp_free);
    free_slot(self);
    Py_DECREF(type);
}

static void
decoder_dealloc(DecoderObject *self)
{
    PyObject_GC_UnTrack(self);
    self->ops->destroy(self->handle);
    self->handle = NULL;
    free_instance((PyObject *)self);
}

/* The object holds no Python references but its (heap) type's. */
static int
decoder_traverse(DecoderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return 0;
}

/* Claims the decoder for one call; -1 with an exception when it is not initialized or busy. */
static int
decoder_claim(DecoderObject *self)
{
    if (self->handle == NULL) {
        PyErr_Format(PyExc_RuntimeError, "%s was not initialized", self->ops->type_name);
        return -1;
    }
    if (self->busy) {
        PyErr_Format(PyExc_RuntimeError, "%s is in use by another thread (one decoder: one thread at a time)",
                     self->ops->type_name);
        return -1;
    }
    self->busy = 1;
    return 0;
}

/* A reference for the dtype checks of the extension: a tensor_arg carrying the decoder's dtype. */
static void
decoder_reference(DecoderObject *self, tensor_arg *reference)
{
    memset(reference, 0, sizeof *reference);
    reference->name = "the decoder";
    reference->tensor.dtype = self->dtype;
}

/* The reference for state tensors: the decoder's dtype, or float32 for a half decoder (whose
 * state is float32 whatever its tokens; performer.h, "Half precision"). */
static void
decoder_state_reference(DecoderObject *self, tensor_arg *reference)
{
    decoder_reference(self, reference);
    if (self->dtype == PERFORMER_FLOAT16 || self->dtype == PERFORMER_BFLOAT16) {
        reference->name = "the decoder's state";
        reference->tensor.dtype = PERFORMER_FLOAT32;
    }
}

typedef performer_status (*decoder_tokens_fn)(void *handle, const performer_tensor_t *q,
                                              const performer_tensor_t *k, const performer_tensor_t *v,
                                              performer_tensor_t *out);
/* A step on a caller's state: tokens as decoder_tokens_fn, then the state (S, z), updated in place. */
typedef performer_status (*decoder_state_step_fn)(void *handle, const performer_tensor_t *q,
                                                  const performer_tensor_t *k, const performer_tensor_t *v,
                                                  performer_tensor_t *out, performer_tensor_t *s,
                                                  performer_tensor_t *z);

/* _step / _prefill(q, k, v, out) -> out, or with state_call _step_state(q, k, v, out, S, z) -> out.
 * token: rank-3 B x heads x features tensors (one position), else rank-4 B x heads x N x features;
 * S is B x H x C x M, z B x H x C. */
static const char *const state_arg_names[2] = {"S", "z"};

static PyObject *
decoder_tokens_call(DecoderObject *self, PyObject *const *args, Py_ssize_t nargs, const char *method, int token,
                    decoder_tokens_fn call, decoder_state_step_fn state_call, const char *const *state_names)
{
    int count = state_call != NULL ? 6 : 4;
    if (nargs != count) {
        PyErr_Format(PyExc_TypeError, "%s expects %d arguments (q, k, v, out%s), got %zd", method, count,
                     state_call != NULL ? ", S, z" : "", nargs);
        return NULL;
    }
    if (decoder_claim(self) < 0) {
        return NULL;
    }
    tensor_arg reference, state_reference, t[6] = {{"q"}, {"k"}, {"v"}, {"out"}, {state_names[0]}, {state_names[1]}};
    decoder_reference(self, &reference);
    decoder_state_reference(self, &state_reference);
    PyObject *result = NULL;
    for (int i = 0; i < count; i++) {
        int ndim = i < 4 ? (token ? 3 : 4) : i == 4 ? 4 : 3;
        if (get_tensor_mode(args[i], &t[i], ndim, i >= 3, i < 4 ? &reference : &state_reference, token && i < 4) < 0) {
            goto done;
        }
    }
    performer_status status;
    Py_BEGIN_ALLOW_THREADS
    status = state_call != NULL
                 ? state_call(self->handle, &t[0].tensor, &t[1].tensor, &t[2].tensor, &t[3].tensor, &t[4].tensor,
                              &t[5].tensor)
                 : call(self->handle, &t[0].tensor, &t[1].tensor, &t[2].tensor, &t[3].tensor);
    Py_END_ALLOW_THREADS
    if (status != PERFORMER_OK) {
        raise_status(status);
        goto done;
    }
    Py_INCREF(args[3]);
    result = args[3];
done:
    release_all(t, count);
    self->busy = 0;
    return result;
}

static PyObject *
decoder_step(DecoderObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return decoder_tokens_call(self, args, nargs, "_step", 1, self->ops->step, NULL, state_arg_names);
}

/*
 * _tensor_step(q, k, v, out, S, z) -> out: performer.torch's step. out None: a new tensor made
 * here (new_torch_tensor; freed again on error); S, z None: the decoder's own state, else the
 * caller's state tensors (named as performer.torch names them), updated in place.
 */
static PyObject *
decoder_tensor_step(DecoderObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    static const char *const names[2] = {"state[0] (S)", "state[1] (z)"};
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "_tensor_step expects 6 arguments (q, k, v, out, S, z), got %zd", nargs);
        return NULL;
    }
    int on_state = args[4] != Py_None || args[5] != Py_None;
    if (on_state && self->ops->state_step == NULL) {
        PyErr_Format(PyExc_TypeError, "%s has no step on a caller's state", self->ops->type_name);
        return NULL;
    }
    PyObject *a[6] = {args[0], args[1], args[2], args[3], args[4], args[5]}, *made = NULL;
    if (a[3] == Py_None) {
        if ((made = new_torch_tensor(self->dtype, 3, self->out_shape)) == NULL) {
            return NULL;
        }
        a[3] = made;
    }
    PyObject *result = on_state ? decoder_tokens_call(self, a, 6, "_tensor_step", 1, NULL, self->ops->state_step, names)
                                : decoder_tokens_call(self, a, 4, "_tensor_step", 1, self->ops->step, NULL, names);
    Py_XDECREF(made);
    return result;
}

/* _get_state(S, z[, c]) / _set_state(S, z[, c]): S B x H x C x M, z (and c) B x H x C. */
static PyObject *
decoder_state_call(DecoderObject *self, PyObject *const *args, Py_ssize_t nargs, int write)
{
    const decoder_ops *ops = self->ops;
    if (nargs != ops->state_count) {
        PyErr_Format(PyExc_TypeError, "expected %d arguments %s, got %zd", ops->state_count, ops->state_arguments,
                     nargs);
        return NULL;
    }
    if (decoder_claim(self) < 0) {
        return NULL;
    }
    tensor_arg reference, t[DECODER_MAX_STATE];
    performer_tensor_t *state[DECODER_MAX_STATE];
    memset(t, 0, sizeof t);
    decoder_state_reference(self, &reference);
    PyObject *result = NULL;
    for (int i = 0; i < ops->state_count; i++) {
        t[i].name = ops->state_names[i];
        state[i] = &t[i].tensor;
        if (get_tensor(args[i], &t[i], i == 0 ? 4 : 3, write, &reference) < 0) {
            goto done;
        }
    }
    performer_status status;
    Py_BEGIN_ALLOW_THREADS
    status = write ? ops->get_state(self->handle, state)
                   : ops->set_state(self->handle, (const performer_tensor_t *const *)state);
    Py_END_ALLOW_THREADS
    result = none_or_raise(status);
done:
    release_all(t, ops->state_count);
    self->busy = 0;
    return result;
}

static PyObject *
decoder_get_state(DecoderObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return decoder_state_call(self, args, nargs, 1);
}

static PyObject *
decoder_set_state(DecoderObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return decoder_state_call(self, args, nargs, 0);
}

static PyObject *numpy_empty;  /* numpy.empty, imported on first need */

/*
 * _state_copy(S_shape, z_shape[, c_shape], dtype) -> (S, z[, c]): new NumPy arrays (numpy.empty,
 * called from here: no Python frame per array) holding a copy of the state -- the `state`
 * properties in one call. The arrays own their memory.
 */
static PyObject *
decoder_state_copy(DecoderObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int count = self->ops->state_count;
    if (nargs != count + 1) {
        PyErr_Format(PyExc_TypeError, "_state_copy expects %d arguments (the state's shapes, dtype), got %zd",
                     count + 1, nargs);
        return NULL;
    }
    if (numpy_empty == NULL) {
        PyObject *numpy = PyImport_ImportModule("numpy");
        if (numpy == NULL) {
            return NULL;
        }
        numpy_empty = PyObject_GetAttrString(numpy, "empty");
        Py_DECREF(numpy);
        if (numpy_empty == NULL) {
            return NULL;
        }
    }
    PyObject *arrays[DECODER_MAX_STATE] = {NULL, NULL, NULL}, *result = NULL, *filled;
    for (int i = 0; i < count; i++) {
        if ((arrays[i] = PyObject_CallFunctionObjArgs(numpy_empty, args[i], args[count], NULL)) == NULL) {
            goto done;
        }
    }
    filled = decoder_state_call(self, arrays, count, 1);
    if (filled != NULL) {
        Py_DECREF(filled);
        result = count == 2 ? PyTuple_Pack(2, arrays[0], arrays[1]) : PyTuple_Pack(3, arrays[0], arrays[1], arrays[2]);
    }
done:
    for (int i = 0; i < count; i++) {
        Py_XDECREF(arrays[i]);
    }
    return result;
}

static PyObject *
decoder_reset(DecoderObject *self, PyObject *unused)
{
    if (decoder_claim(self) < 0) {
        return NULL;
    }
    performer_status status = self->ops->reset(self->handle);
    self->busy = 0;
    return none_or_raise(status);
}

/* LinearDecoder */

static void
linear_decoder_destroy(void *handle)
{
    performer_linear_decoder_destroy(handle);
}

static performer_status
linear_decoder_reset(void *handle)
{
    return performer_linear_decoder_reset(handle);
}

static performer_status
linear_decoder_step(void *handle, const performer_tensor_t *q, const performer_tensor_t *k, const performer_tensor_t *v,
                    performer_tensor_t *out)
{
    return performer_linear_decoder_step(handle, q, k, v, out);
}

static performer_status
linear_decoder_prefill(void *handle, const performer_tensor_t *q, const performer_tensor_t *k,
                       const performer_tensor_t *v, performer_tensor_t *out)
{
    return performer_linear_decoder_prefill(handle, q, k, v, out);
}

static performer_status
linear_decoder_get_state(void *handle, performer_tensor_t *const *state)
{
    return performer_linear_decoder_get_state(handle, state[0], state[1]);
}

static performer_status
linear_decoder_set_state(void *handle, const performer_tensor_t *const *state)
{
    return performer_linear_decoder_set_state(handle, state[0], state[1]);
}

static performer_status linear_decoder_step_with_state(void *handle, const performer_tensor_t *q,
                                                       const performer_tensor_t *k, const performer_tensor_t *v,
                                                       performer_tensor_t *out, performer_tensor_t *s,
                                                       performer_tensor_t *z);

static const decoder_ops linear_decoder_ops = {
    .type_name = "LinearDecoder",
    .state_count = 2,
    .state_names = {"S", "z"},
    .state_arguments = "(S, z)",
    .destroy = linear_decoder_destroy,
    .reset = linear_decoder_reset,
    .step = linear_decoder_step,
    .get_state = linear_decoder_get_state,
    .set_state = linear_decoder_set_state,
    .state_step = linear_decoder_step_with_state,
};

static PyObject *
linear_decoder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    return decoder_new(type, &linear_decoder_ops);
}

/* _performer.LinearDecoder(dtype, batch, heads, key_heads, dim, value_dim, feature_map, eps), the
 * dtype and feature map as C enum values (the Python layer maps names to them). */
static int
linear_decoder_init(DecoderObject *self, PyObject *args, PyObject *kwargs)
{
    int dtype, feature_map;
    long long batch, heads, key_heads, dim, value_dim;
    double eps;
    if (!PyArg_ParseTuple(args, "iLLLLLid:LinearDecoder", &dtype, &batch, &heads, &key_heads, &dim, &value_dim,
                          &feature_map, &eps)) {
        return -1;
    }
    if (decoder_check_idle(self) < 0) {
        return -1;
    }
    performer_linear_decoder_t handle = NULL;
    performer_status status = performer_linear_decoder_create(
        &handle, (performer_dtype)dtype, batch, heads, key_heads, dim, value_dim, (performer_feature_map)feature_map,
        eps);
    if (status != PERFORMER_OK) {
        raise_status(status);
        return -1;
    }
    decoder_adopt(self, handle, dtype, batch, heads, value_dim);
    return 0;
}

/* _prefill(q, k, v, out) -> out: rank-4 prompt tensors. */
static PyObject *
linear_decoder_prefill_method(DecoderObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return decoder_tokens_call(self, args, nargs, "_prefill", 0, linear_decoder_prefill, NULL, state_arg_names);
}

/* _step_state(q, k, v, out, S, z) -> out: one token on the caller's state (updated in place);
 * the decoder's own state is untouched. */
static performer_status
linear_decoder_step_with_state(void *handle, const performer_tensor_t *q, const performer_tensor_t *k,
                               const performer_tensor_t *v, performer_tensor_t *out, performer_tensor_t *s,
                               performer_tensor_t *z)
{
    return performer_linear_decoder_step_with_state(handle, q, k, v, out, s, z);
}

static PyObject *
linear_decoder_step_state_method(DecoderObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    return decoder_tokens_call(self, args, nargs, "_step_state", 1, NULL, linear_decoder_step_with_state,
                               state_arg_names);
}

static PyMethodDef linear_decoder_methods[] = {
    {"_step", (PyCFunction)(void (*)(void))decoder_step, METH_FASTCALL,
     "_step(q, k, v, out) -> out: one token (q B x H x D, k B x Hk x D, v B x Hk x M; out B x H x M)."},
    {"_step_state", (PyCFunction)(void (*)(void))linear_decoder_step_state_method, METH_FASTCALL,
     "_step_state(q, k, v, out, S, z) -> out: one token on a caller's state, updated in place."},
    {"_tensor_step", (PyCFunction)(void (*)(void))decoder_tensor_step, METH_FASTCALL,
     "_tensor_step(q, k, v, out, S, z) -> out: performer.torch's step (out None: a new tensor; S, z: a "
     "caller's state, or None)."},
    {"_prefill", (PyCFunction)(void (*)(void))linear_decoder_prefill_method, METH_FASTCALL,
     "_prefill(q, k, v, out) -> out: a prompt (rank 4, B x heads x N x features)."},
    {"_get_state", (PyCFunction)(void (*)(void))decoder_get_state, METH_FASTCALL,
     "_get_state(S, z) -> None: copies the state into S (B x H x C x M) and z (B x H x C)."},
    {"_state_copy", (PyCFunction)(void (*)(void))decoder_state_copy, METH_FASTCALL,
     "_state_copy(S_shape, z_shape, dtype) -> (S, z): new NumPy arrays holding the state."},
    {"_set_state", (PyCFunction)(void (*)(void))decoder_set_state, METH_FASTCALL,
     "_set_state(S, z) -> None: replaces the state."},
    {"_reset", (PyCFunction)decoder_reset, METH_NOARGS, "_reset() -> None: a zero state."},
    {NULL, NULL, 0, NULL},
};

/* Heap types (PyType_FromSpec): static type objects are not in the limited API. */
static PyType_Slot linear_decoder_slots[] = {
    {Py_tp_doc, "Low-level owner of a performer_linear_decoder_t; use performer.LinearDecoder."},
    {Py_tp_new, linear_decoder_new},
    {Py_tp_init, linear_decoder_init},
    {Py_tp_dealloc, decoder_dealloc},
    {Py_tp_traverse, decoder_traverse},
    {Py_tp_methods, linear_decoder_methods},
    {0, NULL},
};

static PyType_Spec linear_decoder_spec = {
    .name = "performer._performer.LinearDecoder",
    .basicsize = sizeof(DecoderObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = linear_decoder_slots,
};

/* ------------------------------------------------------------------------------------------
 * FAVOR+: projections (a performer_favor_projection_t owned by a Python object), feature
 * maps, and the FAVOR+ decoder
 * ------------------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    performer_favor_projection_t handle;  /* NULL until _create / _create_from_matrix succeeds */
} ProjectionObject;

static PyTypeObject *ProjectionType;  /* made by the module's init */

static PyObject *
projection_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    ProjectionObject *self = (ProjectionObject *)PyType_GenericAlloc(type, 0);
    if (self != NULL) {
        self->handle = NULL;
    }
    return (PyObject *)self;
}

static void
projection_dealloc(ProjectionObject *self)
{
    PyObject_GC_UnTrack(self);
    performer_favor_projection_destroy(self->handle);
    self->handle = NULL;
    free_instance((PyObject *)self);
}

static int
projection_traverse(ProjectionObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    return 0;
}

/* The handle of a projection object; NULL with an exception when obj is none or not created. */
static performer_favor_projection_t
projection_handle(PyObject *obj, const char *name)
{
    if (!PyObject_TypeCheck(obj, ProjectionType)) {
        raise_with_type_name(PyExc_TypeError, "%s must be a performer.FavorProjection, not %S", name, obj);
        return NULL;
    }
    performer_favor_projection_t handle = ((ProjectionObject *)obj)->handle;
    if (handle == NULL) {
        PyErr_Format(PyExc_RuntimeError, "%s: the FavorProjection was not initialized", name);
    }
    return handle;
}

/* A handle, once set, is never replaced: other threads may be using it without the GIL. */
static int
projection_check_unset(ProjectionObject *self)
{
    if (self->handle != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FavorProjection is already initialized");
        return -1;
    }
    return 0;
}

/* _create(dim, num_features, kind, norms, seed): kind and norms as C enum values. */
static PyObject *
projection_create(ProjectionObject *self, PyObject *args)
{
    long long dim, num_features;
    int kind, norms;
    unsigned long long seed;
    if (!PyArg_ParseTuple(args, "LLiiK:_create", &dim, &num_features, &kind, &norms, &seed) ||
        projection_check_unset(self) < 0) {
        return NULL;
    }
    performer_favor_projection_t handle = NULL;
    performer_status status;
    Py_BEGIN_ALLOW_THREADS
    status = performer_favor_projection_create(&handle, dim, num_features, (performer_favor_projection_kind)kind,
                                               (performer_favor_norms)norms, seed);
    Py_END_ALLOW_THREADS
    if (status != PERFORMER_OK) {
        return raise_status(status);
    }
    self->handle = handle;
    Py_RETURN_NONE;
}

/* _create_from_matrix(w): w a 1 x 1 x m x D buffer. */
static PyObject *
projection_create_from_matrix(ProjectionObject *self, PyObject *obj)
{
    if (projection_check_unset(self) < 0) {
        return NULL;
    }
    tensor_arg t = {"W"};
    PyObject *result = NULL;
    if (get_tensor(obj, &t, 4, 0, NULL) < 0) {
        goto done;
    }
    performer_favor_projection_t handle = NULL;
    performer_status status = performer_favor_projection_create_from_matrix(&handle, &t.tensor);
    if (status != PERFORMER_OK) {
        raise_status(status);
        goto done;
    }
    self->handle = handle;
    Py_INCREF(Py_None);
    result = Py_None;
done:
    release_all(&t, 1);
    return result;
}

static PyObject *
projection_redraw(ProjectionObject *self, PyObject *unused)
{
    performer_favor_projection_t handle = projection_handle((PyObject *)self, "projection");
    if (handle == NULL) {
        return NULL;
    }
    performer_status status;
    Py_BEGIN_ALLOW_THREADS
    status = performer_favor_projection_redraw(handle);
    Py_END_ALLOW_THREADS
    return none_or_raise(status);
}

/* _get_matrix(out): out a writable 1 x 1 x m x D buffer. */
static PyObject *
projection_get_matrix(ProjectionObject *self, PyObject *obj)
{
    performer_favor_projection_t handle = projection_handle((PyObject *)self, "projection");
    if (handle == NULL) {
        return NULL;
    }
    tensor_arg t = {"out"};
    PyObject *result = NULL;
    if (get_tensor(obj, &t, 4, 1, NULL) < 0) {
        goto done;
    }
    performer_status status = performer_favor_projection_get_matrix(handle, &t.tensor);
    result = none_or_raise(status);
done:
    release_all(&t, 1);
    return result;
}

/* _info() -> (dim, num_features, kind, norms, seed, draw); kind, norms and seed are None for
 * a caller's W. One consistent snapshot is not needed: only redraw changes anything (draw). */
static PyObject *
projection_info(ProjectionObject *self, PyObject *unused)
{
    performer_favor_projection_t handle = projection_handle((PyObject *)self, "projection");
    if (handle == NULL) {
        return NULL;
    }
    int64_t dim = 0, num_features = 0;
    uint64_t seed = 0, draw = 0;
    performer_favor_projection_kind kind = PERFORMER_PROJECTION_ORTHOGONAL;
    performer_favor_norms norms = PERFORMER_NORMS_CHI;
    performer_status status = performer_favor_projection_get_dim(handle, &dim);
    if (status == PERFORMER_OK) status = performer_favor_projection_get_num_features(handle, &num_features);
    if (status == PERFORMER_OK) status = performer_favor_projection_get_draw(handle, &draw);
    if (status != PERFORMER_OK) {
        return raise_status(status);
    }
    /* A caller's W has no seed, kind or norms: those getters then fail (not an error here). */
    int generated = performer_favor_projection_get_seed(handle, &seed) == PERFORMER_OK &&
                    performer_favor_projection_get_kind(handle, &kind) == PERFORMER_OK &&
                    performer_favor_projection_get_norms(handle, &norms) == PERFORMER_OK;
    if (!generated) {
        return Py_BuildValue("LLOOOK", (long long)dim, (long long)num_features, Py_None, Py_None, Py_None,
                             (unsigned long long)draw);
    }
    return Py_BuildValue("LLiiKK", (long long)dim, (long long)num_features, (int)kind, (int)norms,
                         (unsigned long long)seed, (unsigned long long)draw);
}

static PyMethodDef projection_methods[] = {
    {"_create", (PyCFunction)projection_create, METH_VARARGS,
     "_create(dim, num_features, kind, norms, seed) -> None (C enum codes)."},
    {"_create_from_matrix", (PyCFunction)projection_create_from_matrix, METH_O,
     "_create_from_matrix(w) -> None: w a 1 x 1 x m x D buffer, copied."},
    {"_redraw", (PyCFunction)projection_redraw, METH_NOARGS, "_redraw() -> None: the next draw."},
    {"_get_matrix", (PyCFunction)projection_get_matrix, METH_O,
     "_get_matrix(out) -> None: copies W into out (1 x 1 x m x D, float32 or float64)."},
    {"_info", (PyCFunction)projection_info, METH_NOARGS,
     "_info() -> (dim, num_features, kind, norms, seed, draw); None for what a caller's W lacks."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot projection_slots[] = {
    {Py_tp_doc, "Low-level owner of a performer_favor_projection_t; use performer.FavorProjection."},
    {Py_tp_new, projection_new},
    {Py_tp_dealloc, projection_dealloc},
    {Py_tp_traverse, projection_traverse},
    {Py_tp_methods, projection_methods},
    {0, NULL},
};

static PyType_Spec projection_spec = {
    .name = "performer._performer.FavorProjection",
    .basicsize = sizeof(ProjectionObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = projection_slots,
};

/* Fills *o (features as the C enum value, scale None or a number). */
static int
get_favor_options(performer_favor_options_t *o, int features, PyObject *scale, double eps, double relu_offset)
{
    performer_favor_options_init(o);
    o->features = features;
    o->eps = eps;
    o->relu_offset = relu_offset;
    if (scale != Py_None) {
        double value = PyFloat_AsDouble(scale);
        if (value == -1.0 && PyErr_Occurred()) {
            return -1;
        }
        o->has_scale = 1;
        o->scale = value;
    }
    return 0;
}

PyDoc_STRVAR(favor_features_doc,
"favor_features(x, projection, out, features, scale, relu_offset) -> None\n\n"
"Low-level: writes phi(x) (B x H x N x C) into out. Use performer.favor_features.");

static PyObject *
favor_features(PyObject *module, PyObject *args)
{
    PyObject *obj[2], *projection, *scale;
    int features;
    double relu_offset;
    if (!PyArg_ParseTuple(args, "OOOiOd:favor_features", &obj[0], &projection, &obj[1], &features, &scale,
                          &relu_offset)) {
        return NULL;
    }
    performer_favor_projection_t handle = projection_handle(projection, "projection");
    if (handle == NULL) {
        return NULL;
    }
    tensor_arg t[2] = {{"x"}, {"out"}};
    performer_favor_options_t o;
    PyObject *result = NULL;
    if (get_tensors(obj, t, 2, 1) < 0 ||
        get_favor_options(&o, features, scale, 0.0, relu_offset) < 0) {
        goto done;
    }
    performer_status status;
    Py_BEGIN_ALLOW_THREADS
    status = performer_favor_features(&t[0].tensor, handle, &t[1].tensor, &o);
    Py_END_ALLOW_THREADS
    result = none_or_raise(status);
done:
    release_all(t, 2);
    return result;
}

/* Takes an optional state triple (S rank 4, z and c rank 3 seen as B x H x C x 1) into t[0..2]:
 * all None, or all arrays. Returns 0 or -1 with an exception. */
static int
get_state_triple(PyObject *s_obj, PyObject *z_obj, PyObject *c_obj, tensor_arg *t, int writable,
                 const tensor_arg *reference)
{
    int nones = (s_obj == Py_None) + (z_obj == Py_None) + (c_obj == Py_None);
    if (nones == 3) {
        return 0;
    }
    if (nones != 0) {
        PyErr_Format(PyExc_ValueError, "%s, %s and %s must all be given or all be None", t[0].name, t[1].name,
                     t[2].name);
        return -1;
    }
    if (get_tensor(s_obj, &t[0], 4, writable, reference) < 0 || get_tensor(z_obj, &t[1], 3, writable, reference) < 0 ||
        get_tensor(c_obj, &t[2], 3, writable, reference) < 0) {
        return -1;
    }
    return 0;
}

/* Fills *o (attention options), *lengths and *starts (PyMem, or NULL). Returns 0 or -1 with an
 * exception. */
static int
get_favor_attention_options(performer_favor_options_t *o, int64_t **lengths, int64_t **starts, int causal,
                            int features, PyObject *scale, double eps, double relu_offset, PyObject *kv_lengths,
                            PyObject *kv_starts, int64_t batch)
{
    *lengths = NULL;
    *starts = NULL;
    if (get_favor_options(o, features, scale, eps, relu_offset) < 0 ||
        get_kv_arrays(kv_lengths, kv_starts, batch, lengths, starts) < 0) {
        return -1;
    }
    o->causal = causal ? 1 : 0;
    o->kv_lengths = *lengths;
    o->kv_starts = *starts;
    return 0;
}

PyDoc_STRVAR(favor_forward_doc,
"favor_forward(q, k, v, projection, out, S0, z0, c0, S_N, z_N, c_N, causal, features, scale, eps,\n"
"              relu_offset, kv_lengths, kv_starts, units, den) -> None\n\n"
"Low-level: writes FAVOR+ attention into out (B x H x N x M); (S0, z0, c0) (or Nones) is the\n"
"initial scaled state, (S_N, z_N, c_N) (or Nones) receive the final one (z, c as B x H x C);\n"
"units and den (both or neither, B x H x N) receive the row units U_i and scaled denominators\n"
"den_i. Use performer.favor_attention.");

static PyObject *
favor_forward(PyObject *module, PyObject *args)
{
    PyObject *obj[12], *projection, *scale, *kv_lengths, *kv_starts = Py_None;  /* optional */
    obj[10] = obj[11] = Py_None;  /* optional row scales */
    int causal, features;
    double eps, relu_offset;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOpiOddO|OOO:favor_forward", &obj[0], &obj[1], &obj[2], &projection,
                          &obj[3], &obj[4], &obj[5], &obj[6], &obj[7], &obj[8], &obj[9], &causal, &features, &scale,
                          &eps, &relu_offset, &kv_lengths, &kv_starts, &obj[10], &obj[11])) {
        return NULL;
    }
    performer_favor_projection_t handle = projection_handle(projection, "projection");
    if (handle == NULL) {
        return NULL;
    }
    tensor_arg t[12] = {{"q"}, {"k"}, {"v"}, {"out"}, {"S0"}, {"z0"}, {"c0"}, {"S_N"}, {"z_N"}, {"c_N"},
                        {"row_units"}, {"row_denominators"}};
    performer_favor_options_t o;
    int64_t *lengths = NULL, *starts = NULL;
    PyObject *result = NULL;
    if (get_tensors(obj, t, 4, 3) < 0 ||
        get_state_triple(obj[4], obj[5], obj[6], &t[4], 0, lse_reference(&t[0])) < 0 ||
        get_state_triple(obj[7], obj[8], obj[9], &t[7], 1, lse_reference(&t[0])) < 0 ||
        (obj[10] != Py_None && get_tensor(obj[10], &t[10], 3, 1, lse_reference(&t[0])) < 0) ||
        (obj[11] != Py_None && get_tensor(obj[11], &t[11], 3, 1, lse_reference(&t[0])) < 0)) {
        goto done;
    }
    if (get_favor_attention_options(&o, &lengths, &starts, causal, features, scale, eps, relu_offset, kv_lengths,
                                    kv_starts, t[0].tensor.shape[0]) < 0) {
        goto done;
    }
    performer_tensor_t *state[6];
    for (int i = 0; i < 6; i++) {
        state[i] = optional_tensor(&t[4 + i]);
    }
    performer_status status;
    Py_BEGIN_ALLOW_THREADS
    status = performer_favor_forward_with_row_scales(&t[0].tensor, &t[1].tensor, &t[2].tensor, handle, &t[3].tensor,
                                                     state[0], state[1], state[2], state[3], state[4], state[5],
                                                     optional_tensor(&t[10]), optional_tensor(&t[11]), &o);
    Py_END_ALLOW_THREADS
    result = none_or_raise(status);
done:
    PyMem_Free(lengths);
    PyMem_Free(starts);
    release_all(t, 12);
    return result;
}

PyDoc_STRVAR(favor_backward_doc,
"favor_backward(q, k, v, dout, projection, dq, dk, dv, S0, z0, c0, dS_N, dz_N, dS0, dz0, causal, features,\n"
"               scale, eps, relu_offset, kv_lengths, kv_starts) -> None\n\n"
"Low-level: writes dq, dk, dv and, when dS0/dz0 are not None, the gradient of the initial\n"
"scaled state (c held fixed). Use performer.favor_attention_backward.");

static PyObject *
favor_backward(PyObject *module, PyObject *args)
{
    PyObject *obj[14], *projection, *scale, *kv_lengths, *kv_starts = Py_None;  /* optional */
    int causal, features;
    double eps, relu_offset;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOOOOpiOddO|O:favor_backward", &obj[0], &obj[1], &obj[2], &obj[3],
                          &projection, &obj[4], &obj[5], &obj[6], &obj[7], &obj[8], &obj[9], &obj[10], &obj[11],
                          &obj[12], &obj[13], &causal, &features, &scale, &eps, &relu_offset, &kv_lengths,
                          &kv_starts)) {
        return NULL;
    }
    performer_favor_projection_t handle = projection_handle(projection, "projection");
    if (handle == NULL) {
        return NULL;
    }
    tensor_arg t[14] = {{"q"}, {"k"}, {"v"}, {"dout"}, {"dq"}, {"dk"}, {"dv"},
                        {"S0"}, {"z0"}, {"c0"}, {"dS_N"}, {"dz_N"}, {"dS0"}, {"dz0"}};
    performer_favor_options_t o;
    int64_t *lengths = NULL, *starts = NULL;
    PyObject *result = NULL;
    if (get_tensors(obj, t, 7, 4) < 0) {
        goto done;
    }
    if (get_state_triple(obj[7], obj[8], obj[9], &t[7], 0, lse_reference(&t[0])) < 0 ||
        get_state_pair(obj[10], obj[11], &t[10], 0, lse_reference(&t[0])) < 0 ||
        get_state_pair(obj[12], obj[13], &t[12], 1, lse_reference(&t[0])) < 0) {
        goto done;
    }
    if (get_favor_attention_options(&o, &lengths, &starts, causal, features, scale, eps, relu_offset, kv_lengths,
                                    kv_starts, t[0].tensor.shape[0]) < 0) {
        goto done;
    }
    performer_tensor_t *state[7];
    for (int i = 0; i < 7; i++) {
        state[i] = optional_tensor(&t[7 + i]);
    }
    performer_status status;
    Py_BEGIN_ALLOW_THREADS
    status = performer_favor_backward(&t[0].tensor, &t[1].tensor, &t[2].tensor, &t[3].tensor, handle, &t[4].tensor,
                                      &t[5].tensor, &t[6].tensor, state[0], state[1], state[2], state[3], state[4],
                                      state[5], state[6], &o);
    Py_END_ALLOW_THREADS
    result = none_or_raise(status);
done:
    PyMem_Free(lengths);
    PyMem_Free(starts);
    release_all(t, 14);
    return result;
}

PyDoc_STRVAR(favor_state_doc,
"favor_state(k, v, projection, S0, z0, c0, S, z, c, features, scale, relu_offset, kv_lengths, kv_starts)\n"
"    -> None\n\n"
"Low-level state-only call: writes the scaled FAVOR+ state of k, v (S: B x Hs x C x M, z, c:\n"
"B x Hs x C) into S, z, c, starting from (S0, z0, c0) (or Nones). Use performer.favor_state.");

static PyObject *
favor_state(PyObject *module, PyObject *args)
{
    PyObject *obj[8], *projection, *scale, *kv_lengths, *kv_starts;
    int features;
    double relu_offset;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOiOdOO:favor_state", &obj[0], &obj[1], &projection, &obj[2], &obj[3],
                          &obj[4], &obj[5], &obj[6], &obj[7], &features, &scale, &relu_offset, &kv_lengths,
                          &kv_starts)) {
        return NULL;
    }
    performer_favor_projection_t handle = projection_handle(projection, "projection");
    if (handle == NULL) {
        return NULL;
    }
    tensor_arg t[8] = {{"k"}, {"v"}, {"S0"}, {"z0"}, {"c0"}, {"S"}, {"z"}, {"c"}};
    performer_favor_options_t o;
    int64_t *lengths = NULL, *starts = NULL;
    PyObject *result = NULL;
    static const state_call_group groups[] = {{2, 3, 0, 0}, {5, 3, 1, 1}};  /* S0, z0, c0; S, z, c */
    if (get_state_call_tensors(obj, t, groups, 2) < 0) {
        goto done;
    }
    if (get_favor_attention_options(&o, &lengths, &starts, 0, features, scale, 0.0, relu_offset, kv_lengths,
                                    kv_starts, t[0].tensor.shape[0]) < 0) {
        goto done;
    }
    performer_status status;
    Py_BEGIN_ALLOW_THREADS
    status = performer_favor_state(&t[0].tensor, &t[1].tensor, handle, optional_tensor(&t[2]),
                                   optional_tensor(&t[3]), optional_tensor(&t[4]), &t[5].tensor, &t[6].tensor,
                                   &t[7].tensor, &o);
    Py_END_ALLOW_THREADS
    result = none_or_raise(status);
done:
    PyMem_Free(lengths);
    PyMem_Free(starts);
    release_all(t, 8);
    return result;
}

PyDoc_STRVAR(favor_state_backward_doc,
"favor_state_backward(k, v, projection, dS, dz, dk, dv, dS0, dz0, S0, z0, c0, features, scale,\n"
"                     relu_offset, kv_lengths, kv_starts) -> None\n\n"
"Low-level backward of favor_state (shifts held fixed): writes dk, dv and, when dS0/dz0 are not\n"
"None, the initial scaled state's gradient. Use performer.favor_state_backward.");

static PyObject *
favor_state_backward(PyObject *module, PyObject *args)
{
    PyObject *obj[11], *projection, *scale, *kv_lengths, *kv_starts;
    int features;
    double relu_offset;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOiOdOO:favor_state_backward", &obj[0], &obj[1], &projection, &obj[2],
                          &obj[3], &obj[4], &obj[5], &obj[6], &obj[7], &obj[8], &obj[9], &obj[10], &features,
                          &scale, &relu_offset, &kv_lengths, &kv_starts)) {
        return NULL;
    }
    performer_favor_projection_t handle = projection_handle(projection, "projection");
    if (handle == NULL) {
        return NULL;
    }
    tensor_arg t[11] = {{"k"}, {"v"}, {"dS"}, {"dz"}, {"dk"}, {"dv"}, {"dS0"}, {"dz0"}, {"S0"}, {"z0"}, {"c0"}};
    performer_favor_options_t o;
    int64_t *lengths = NULL, *starts = NULL;
    PyObject *result = NULL;
    static const state_call_group groups[] = {{2, 2, 0, 1}, {4, 1, 1, 0}, {5, 1, 1, 0}, {6, 2, 1, 0}, {8, 3, 0, 0}};
    if (get_state_call_tensors(obj, t, groups, 5) < 0) {  /* dS, dz; dk; dv; dS0, dz0; S0, z0, c0 */
        goto done;
    }
    if (get_favor_attention_options(&o, &lengths, &starts, 0, features, scale, 0.0, relu_offset, kv_lengths,
                                    kv_starts, t[0].tensor.shape[0]) < 0) {
        goto done;
    }
    performer_status status;
    Py_BEGIN_ALLOW_THREADS
    status = performer_favor_state_backward(&t[0].tensor, &t[1].tensor, handle, &t[2].tensor, &t[3].tensor,
                                            &t[4].tensor, &t[5].tensor, optional_tensor(&t[6]),
                                            optional_tensor(&t[7]), optional_tensor(&t[8]), optional_tensor(&t[9]),
                                            optional_tensor(&t[10]), &o);
    Py_END_ALLOW_THREADS
    result = none_or_raise(status);
done:
    PyMem_Free(lengths);
    PyMem_Free(starts);
    release_all(t, 11);
    return result;
}

/* favor_initial_state_gradient (the FAVOR+ query-side initial-state gradient) */

PyDoc_STRVAR(favor_initial_state_gradient_doc,
"favor_initial_state_gradient(q, projection, c0, U, den, out, dout, dS0, dz0, features, scale,\n"
"                             relu_offset) -> None\n\n"
"Low-level query-side gradient of a FAVOR+ forward's initial triple: writes dS0 (B x H x C x M)\n"
"and dz0 (B x H x C) from q, c0 (B x H x C), the forward's row units U and denominators den\n"
"(B x H x N), out and dout. Use performer.favor_initial_state_gradient.");

static PyObject *
favor_initial_state_gradient(PyObject *module, PyObject *args)
{
    PyObject *obj[8], *projection, *scale;
    int features;
    double relu_offset;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOiOd:favor_initial_state_gradient", &obj[0], &projection, &obj[1],
                          &obj[2], &obj[3], &obj[4], &obj[5], &obj[6], &obj[7], &features, &scale, &relu_offset)) {
        return NULL;
    }
    performer_favor_projection_t handle = projection_handle(projection, "projection");
    if (handle == NULL) {
        return NULL;
    }
    tensor_arg t[8] = {{"q"}, {"c0"}, {"row_units"}, {"row_denominators"}, {"out"}, {"dout"}, {"dS0"}, {"dz0"}};
    performer_favor_options_t o;
    int64_t *lengths = NULL, *starts = NULL;
    PyObject *result = NULL;
    /* q, out, dout rank 4; c0, U, den, dz0 rank 3 (seen as ... x 1); dS0 rank 4. */
    static const int ranks[8] = {4, 3, 3, 3, 4, 4, 4, 3};
    for (int i = 0; i < 8; i++) {
        if (get_tensor(obj[i], &t[i], ranks[i], i >= 6, i == 0 ? NULL : &t[0]) < 0) {
            goto done;
        }
    }
    if (get_favor_attention_options(&o, &lengths, &starts, 0, features, scale, 0.0, relu_offset, Py_None, Py_None,
                                    t[0].tensor.shape[0]) < 0) {
        goto done;
    }
    performer_status status;
    Py_BEGIN_ALLOW_THREADS
    status = performer_favor_initial_state_gradient(&t[0].tensor, handle, &t[1].tensor, &t[2].tensor, &t[3].tensor,
                                                    &t[4].tensor, &t[5].tensor, &t[6].tensor, &t[7].tensor, &o);
    Py_END_ALLOW_THREADS
    result = none_or_raise(status);
done:
    PyMem_Free(lengths);
    PyMem_Free(starts);
    release_all(t, 8);
    return result;
}

/* FavorDecoder */

static void
favor_decoder_destroy(void *handle)
{
    performer_favor_decoder_destroy(handle);
}

static performer_status
favor_decoder_reset(void *handle)
{
    return performer_favor_decoder_reset(handle);
}

static performer_status
favor_decoder_step(void *handle, const performer_tensor_t *q, const performer_tensor_t *k, const performer_tensor_t *v,
                   performer_tensor_t *out)
{
    return performer_favor_decoder_step(handle, q, k, v, out);
}

static performer_status
favor_decoder_get_state(void *handle, performer_tensor_t *const *state)
{
    return performer_favor_decoder_get_state(handle, state[0], state[1], state[2]);
}

static performer_status
favor_decoder_set_state(void *handle, const performer_tensor_t *const *state)
{
    return performer_favor_decoder_set_state(handle, state[0], state[1], state[2]);
}

static const decoder_ops favor_decoder_ops = {
    .type_name = "FavorDecoder",
    .state_count = 3,
    .state_names = {"S", "z", "c"},
    .state_arguments = "(S, z, c)",
    .destroy = favor_decoder_destroy,
    .reset = favor_decoder_reset,
    .step = favor_decoder_step,
    .get_state = favor_decoder_get_state,
    .set_state = favor_decoder_set_state,
};

static PyObject *
favor_decoder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    return decoder_new(type, &favor_decoder_ops);
}

/* _performer.FavorDecoder(projection, dtype, batch, heads, value_dim, features, scale, eps,
 * relu_offset): dtype and features as C enum values, scale None or a number. */
static int
favor_decoder_init(DecoderObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *projection, *scale;
    int dtype, features;
    long long batch, heads, value_dim;
    double eps, relu_offset;
    if (!PyArg_ParseTuple(args, "OiLLLiOdd:FavorDecoder", &projection, &dtype, &batch, &heads, &value_dim, &features,
                          &scale, &eps, &relu_offset)) {
        return -1;
    }
    if (decoder_check_idle(self) < 0) {
        return -1;
    }
    performer_favor_projection_t projection_h = projection_handle(projection, "projection");
    performer_favor_options_t o;
    if (projection_h == NULL || get_favor_options(&o, features, scale, eps, relu_offset) < 0) {
        return -1;
    }
    performer_favor_decoder_t handle = NULL;
    performer_status status = performer_favor_decoder_create(&handle, projection_h, (performer_dtype)dtype, batch, heads,
                                                             value_dim, &o);
    if (status != PERFORMER_OK) {
        raise_status(status);
        return -1;
    }
    decoder_adopt(self, handle, dtype, batch, heads, value_dim);
    return 0;
}

static PyMethodDef favor_decoder_methods[] = {
    {"_step", (PyCFunction)(void (*)(void))decoder_step, METH_FASTCALL,
     "_step(q, k, v, out) -> out: one token (q, k B x H x D, v B x H x M; out B x H x M)."},
    {"_tensor_step", (PyCFunction)(void (*)(void))decoder_tensor_step, METH_FASTCALL,
     "_tensor_step(q, k, v, out, None, None) -> out: performer.torch's step (out None: a new tensor)."},
    {"_get_state", (PyCFunction)(void (*)(void))decoder_get_state, METH_FASTCALL,
     "_get_state(S, z, c) -> None: copies the scaled state into S (B x H x C x M), z and c (B x H x C)."},
    {"_state_copy", (PyCFunction)(void (*)(void))decoder_state_copy, METH_FASTCALL,
     "_state_copy(S_shape, z_shape, c_shape, dtype) -> (S, z, c): new NumPy arrays holding the state."},
    {"_set_state", (PyCFunction)(void (*)(void))decoder_set_state, METH_FASTCALL,
     "_set_state(S, z, c) -> None: replaces the state."},
    {"_reset", (PyCFunction)decoder_reset, METH_NOARGS, "_reset() -> None: an empty state."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot favor_decoder_slots[] = {
    {Py_tp_doc, "Low-level owner of a performer_favor_decoder_t; use performer.FavorDecoder."},
    {Py_tp_new, favor_decoder_new},
    {Py_tp_init, favor_decoder_init},
    {Py_tp_dealloc, decoder_dealloc},
    {Py_tp_traverse, decoder_traverse},
    {Py_tp_methods, favor_decoder_methods},
    {0, NULL},
};

static PyType_Spec favor_decoder_spec = {
    .name = "performer._performer.FavorDecoder",
    .basicsize = sizeof(DecoderObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = favor_decoder_slots,
};

/* ------------------------------------------------------------------------------------------
 * Threads, versions, ISA
 * ------------------------------------------------------------------------------------------ */

PyDoc_STRVAR(set_num_threads_doc,
"set_num_threads(n) -> None\n\nBounds the library's threads to n (1..1024); 0 restores the default.");

static PyObject *
set_num_threads(PyObject *module, PyObject *arg)
{
    long long n = PyLong_AsLongLong(arg);
    if (n == -1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_SetString(PyExc_ValueError, "number of threads is out of range (0 or 1..1024)");
        }
        return NULL;
    }
    if (n < INT32_MIN || n > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "number of threads %lld is out of range (0 or 1..1024)", n);
        return NULL;
    }
    performer_status status = performer_set_num_threads((int)n);
    return none_or_raise(status);
}

static PyObject *
get_num_threads(PyObject *module, PyObject *unused)
{
    return PyLong_FromLong(performer_get_num_threads());
}

static PyObject *
version_string(PyObject *module, PyObject *unused)
{
    return PyUnicode_FromString(performer_version_string());
}

static PyObject *
version(PyObject *module, PyObject *unused)
{
    return PyLong_FromLong(performer_version());
}

static PyObject *
abi_version(PyObject *module, PyObject *unused)
{
    return PyLong_FromLong(performer_abi_version());
}

static PyObject *
kernel_isa(PyObject *module, PyObject *unused)
{
    const char *isa = performer_kernel_isa();
    return PyUnicode_FromString(isa != NULL ? isa : "");
}

static PyObject *
live_handle_count(PyObject *module, PyObject *unused)
{
    return PyLong_FromLongLong((long long)performer_live_handle_count());
}

/* Tests read arrays through __array_struct__ (the 3.9/3.10 path) on any interpreter with this. */
static PyObject *
set_array_struct(PyObject *module, PyObject *arg)
{
    int use = PyObject_IsTrue(arg);
    if (use < 0) {
        return NULL;
    }
    int previous = !has_stable_buffer_protocol;
    if (!use && !(buffer_protocol_compiled && running_hexversion >= 0x030b0000)) {
        PyErr_SetString(PyExc_RuntimeError, "the buffer protocol is not in this interpreter's stable ABI");
        return NULL;
    }
    has_stable_buffer_protocol = !use;
    return PyBool_FromLong(previous);
}

static PyObject *
array_reader(PyObject *module, PyObject *unused)
{
    return PyUnicode_FromString(has_stable_buffer_protocol ? "buffer" : "__array_struct__");
}

/* True when plain NumPy arrays are read from their fields (_numpy_fields.c) in the buffer mode. */
static PyObject *
numpy_fields_reader(PyObject *module, PyObject *unused)
{
    return PyBool_FromLong(has_stable_buffer_protocol && numpy_fields_active());
}

static PyMethodDef module_methods[] = {
    {"softmax_forward", softmax_forward, METH_VARARGS, softmax_forward_doc},
    {"softmax_backward", softmax_backward, METH_VARARGS, softmax_backward_doc},
    {"softmax_merge", softmax_merge, METH_VARARGS, softmax_merge_doc},
    {"linear_forward", linear_forward, METH_VARARGS, linear_forward_doc},
    {"linear_initial_state_gradient", linear_initial_state_gradient, METH_VARARGS,
     linear_initial_state_gradient_doc},
    {"linear_backward", linear_backward, METH_VARARGS, linear_backward_doc},
    {"linear_state", linear_state, METH_VARARGS, linear_state_doc},
    {"linear_state_backward", linear_state_backward, METH_VARARGS, linear_state_backward_doc},
    {"favor_state", favor_state, METH_VARARGS, favor_state_doc},
    {"favor_state_backward", favor_state_backward, METH_VARARGS, favor_state_backward_doc},
    {"favor_initial_state_gradient", favor_initial_state_gradient, METH_VARARGS,
     favor_initial_state_gradient_doc},
    {"favor_features", favor_features, METH_VARARGS, favor_features_doc},
    {"favor_forward", favor_forward, METH_VARARGS, favor_forward_doc},
    {"favor_backward", favor_backward, METH_VARARGS, favor_backward_doc},
    {"set_num_threads", set_num_threads, METH_O, set_num_threads_doc},
    {"get_num_threads", get_num_threads, METH_NOARGS, "get_num_threads() -> int"},
    {"version_string", version_string, METH_NOARGS, "version_string() -> str: performer_version_string()"},
    {"version", version, METH_NOARGS, "version() -> int: performer_version()"},
    {"abi_version", abi_version, METH_NOARGS, "abi_version() -> int: performer_abi_version()"},
    {"_register_tensor_type", register_tensor_type, METH_VARARGS,
     "_register_tensor_type(tensor_type, dtype_codes, view, to_dlpack=None) -> None: the extension reads "
     "plain tensors of tensor_type whose dtype is in dtype_codes itself (through to_dlpack(tensor), a "
     "DLPack capsule, when given); view(name, tensor) gives a raw view of any other instance "
     "(performer.torch)"},
    {"_set_array_struct", set_array_struct, METH_O,
     "_set_array_struct(flag) -> bool: read arrays through __array_struct__ (tests); the previous flag"},
    {"_array_reader", array_reader, METH_NOARGS,
     "_array_reader() -> str: 'buffer' (CPython >= 3.11) or '__array_struct__' (3.9, 3.10)"},
    {"_numpy_fields_reader", numpy_fields_reader, METH_NOARGS,
     "_numpy_fields_reader() -> bool: plain NumPy arrays are read from their fields, not their buffer"},
    {"_output_block", output_block, METH_VARARGS,
     "_output_block(shape, typestr, nbytes) -> OutputBlock: recycled memory of a large output; "
     "numpy.asarray(block) is the array"},
    {"_output_cache_limit", output_cache_limit, METH_VARARGS,
     "_output_cache_limit([nbytes]) -> int: the previous limit of the output cache; sets it when nbytes >= 0"},
    {"_output_cache_contents", output_cache_contents, METH_NOARGS,
     "_output_cache_contents() -> (bytes, blocks) the output cache holds"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef isa_methods[] = {
    {"kernel_isa", kernel_isa, METH_NOARGS, "kernel_isa() -> str: performer_kernel_isa()"},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef handle_count_methods[] = {
    {"live_handle_count", live_handle_count, METH_NOARGS,
     "live_handle_count() -> int: performer_live_handle_count()"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "performer._performer",
    "C extension over libperformer's C ABI; use the `performer` package.",
    -1,
    module_methods,
};

PyMODINIT_FUNC
PyInit__performer(void)
{
    if (performer_abi_version() != PERFORMER_ABI_VERSION) {
        PyErr_Format(PyExc_ImportError,
                     "performer: libperformer.so has ABI version %d but this extension was built "
                     "for %d (reinstall the package)",
                     performer_abi_version(), PERFORMER_ABI_VERSION);
        return NULL;
    }
    PyObject *hexversion = PySys_GetObject("hexversion");  /* borrowed */
    running_hexversion = hexversion != NULL ? PyLong_AsLong(hexversion) : -1;
    if (running_hexversion == -1 && PyErr_Occurred()) {
        return NULL;
    }
    has_stable_buffer_protocol = running_hexversion >= 0x030b0000 && buffer_protocol_compiled;
    if (has_stable_buffer_protocol) {
        numpy_fields_init();
    }
    if (struct_attribute == NULL) {
        struct_attribute = PyUnicode_InternFromString("__array_struct__");
        if (struct_attribute == NULL) {
            return NULL;
        }
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    PyType_Spec *specs[] = {&linear_decoder_spec, &projection_spec, &favor_decoder_spec};
    const char *names[] = {"LinearDecoder", "FavorProjection", "FavorDecoder"};
    for (int i = 0; i < 3; i++) {
        PyObject *type = PyType_FromSpec(specs[i]);
        if (type == NULL) {
            Py_DECREF(module);
            return NULL;
        }
        if (i == 1) {
            Py_XDECREF(ProjectionType);  /* the module is initialized again (a subinterpreter) */
            Py_INCREF(type);
            ProjectionType = (PyTypeObject *)type;
        }
        if (PyModule_AddObject(module, names[i], type) < 0) {
            Py_DECREF(type);
            Py_DECREF(module);
            return NULL;
        }
    }
    if (output_pool_init(module) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    if ((performer_kernel_isa != NULL && PyModule_AddFunctions(module, isa_methods) < 0) ||
        (performer_live_handle_count != NULL && PyModule_AddFunctions(module, handle_count_methods) < 0) ||
        PyModule_AddIntConstant(module, "ABI_VERSION", PERFORMER_ABI_VERSION) < 0 ||
        PyModule_AddIntConstant(module, "HEADER_VERSION", PERFORMER_VERSION_NUMBER) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}

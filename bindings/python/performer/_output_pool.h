/*
 * _output_pool.c: recycled memory for the package's large outputs (see that file).
 */
#ifndef PERFORMER_OUTPUT_POOL_H
#define PERFORMER_OUTPUT_POOL_H

#include <Python.h>

/* The bytes of dead outputs kept for later ones unless the program sets another limit. */
#define OUTPUT_CACHE_DEFAULT_LIMIT ((size_t)256 << 20)

/* Adds the OutputBlock type to the module; 0, or -1 with an exception. */
int output_pool_init(PyObject *module);

/* _output_block(shape, typestr, nbytes) -> OutputBlock: memory for a C-contiguous array of
 * `shape` and NumPy `typestr` (nbytes bytes) that numpy.asarray turns into the array. */
PyObject *output_block(PyObject *module, PyObject *args);

/* _output_cache_limit([nbytes]) -> int: the previous limit; sets it (freeing cached blocks over
 * it) when nbytes >= 0 is given (-1, the default, only reads it). */
PyObject *output_cache_limit(PyObject *module, PyObject *args);

/* _output_cache_contents() -> (bytes, blocks) held in the cache. */
PyObject *output_cache_contents(PyObject *module, PyObject *unused);

#endif

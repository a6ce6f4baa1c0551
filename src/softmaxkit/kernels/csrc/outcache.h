/* The output cache: writable memory blocks for large outputs, as Python
 * objects with the buffer protocol, kept for reuse when freed (outcache.c). */
#ifndef SK_OUTCACHE_H
#define SK_OUTCACHE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>

/* readies the block type; -1 with an exception set on failure */
int outcache_init(void);
/* a block of `size` bytes (> 0), 64-byte aligned: a cached one of that size
 * when there is one; NULL with an exception set on failure */
PyObject *outcache_block(size_t size);
/* the most the cache keeps, in bytes; lowering it frees the oldest blocks */
void outcache_set_limit(size_t limit);
size_t outcache_limit(void);
/* the bytes the cache keeps now */
size_t outcache_bytes(void);

#endif

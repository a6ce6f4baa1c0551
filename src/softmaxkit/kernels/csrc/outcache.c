/* The output cache (outcache.h).  The C allocator gives blocks as large as
 * the outputs that use them straight back to the OS when they are freed, so
 * every call would have the OS fault in and zero each page of a new output
 * again, which can take as long as the kernel itself.  A freed block is kept
 * instead, up to `cache_limit` bytes in all, and a later output of the same
 * size takes it.  NumPy arrays made on a block keep it alive. */
#include "outcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_SLOTS 8

typedef struct {
    PyObject_HEAD
    void *p;
    size_t size;
} block_t;

static struct {
    void *p;
    size_t size;
} cache[CACHE_SLOTS];
static int cache_n; /* slots in use, oldest first */
static size_t cache_bytes, cache_limit;
static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;

/* Free the oldest blocks until the cache is within `limit` and has a free slot
 * (with `room`).  Called with cache_mu held. */
static void cache_trim(size_t limit, int room) {
    while (cache_n && (cache_bytes > limit || (room && cache_n == CACHE_SLOTS))) {
        free(cache[0].p);
        cache_bytes -= cache[0].size;
        cache_n--;
        memmove(cache, cache + 1, cache_n * sizeof cache[0]);
    }
}

static void *cache_take(size_t size) {
    void *p = NULL;
    pthread_mutex_lock(&cache_mu);
    for (int i = cache_n - 1; i >= 0; i--) {
        if (cache[i].size == size) {
            p = cache[i].p;
            cache_bytes -= size;
            cache_n--;
            memmove(cache + i, cache + i + 1, (cache_n - i) * sizeof cache[0]);
            break;
        }
    }
    pthread_mutex_unlock(&cache_mu);
    return p;
}

static void cache_give(void *p, size_t size) {
    pthread_mutex_lock(&cache_mu);
    if (size <= cache_limit) {
        cache_trim(cache_limit - size, 1);
        cache[cache_n].p = p;
        cache[cache_n].size = size;
        cache_n++;
        cache_bytes += size;
        p = NULL;
    }
    pthread_mutex_unlock(&cache_mu);
    free(p);
}

static void block_dealloc(block_t *b) {
    cache_give(b->p, b->size);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static int block_getbuffer(block_t *b, Py_buffer *view, int flags) {
    return PyBuffer_FillInfo(view, (PyObject *)b, b->p, (Py_ssize_t)b->size, 0, flags);
}

static PyBufferProcs block_as_buffer = {(getbufferproc)block_getbuffer, NULL};

static PyTypeObject block_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "softmaxkit.kernels._kernels.Block",
    .tp_basicsize = sizeof(block_t),
    .tp_dealloc = (destructor)block_dealloc,
    .tp_as_buffer = &block_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Writable memory for one output; returned to the output cache when freed.",
};

int outcache_init(void) { return PyType_Ready(&block_type); }

PyObject *outcache_block(size_t size) {
    void *p = cache_take(size);
    if (!p && posix_memalign(&p, 64, size) != 0) return PyErr_NoMemory();
    block_t *b = PyObject_New(block_t, &block_type);
    if (!b) {
        cache_give(p, size);
        return NULL;
    }
    b->p = p;
    b->size = size;
    return (PyObject *)b;
}

void outcache_set_limit(size_t limit) {
    pthread_mutex_lock(&cache_mu);
    cache_limit = limit;
    cache_trim(cache_limit, 0);
    pthread_mutex_unlock(&cache_mu);
}

size_t outcache_limit(void) {
    pthread_mutex_lock(&cache_mu);
    size_t limit = cache_limit;
    pthread_mutex_unlock(&cache_mu);
    return limit;
}

size_t outcache_bytes(void) {
    pthread_mutex_lock(&cache_mu);
    size_t b = cache_bytes;
    pthread_mutex_unlock(&cache_mu);
    return b;
}

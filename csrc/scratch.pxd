# Scratch memory of the kernels, shared by unfold.pyx and pool.pyx.

from libc.stdlib cimport malloc


cdef inline void* per_thread_scratch(Py_ssize_t threads, Py_ssize_t cells, size_t itemsize,
                                     Py_ssize_t* stride) except NULL:
    """Uninitialised scratch of `cells` cells of `itemsize` bytes for each of
    `threads` threads (at least one), `stride` cells apart: whole 64-byte
    lines and one more, so that no two threads share a line wherever malloc
    put the block (it aligns to 16 bytes only). Free it with ``free``."""
    stride[0] = ((cells * itemsize + 63) // 64 + 1) * 64 // itemsize
    cdef size_t nbytes = max(threads, 1) * stride[0] * itemsize
    cdef void* p = malloc(max(nbytes, 1))  # malloc(0) may give NULL
    if p == NULL:
        raise MemoryError(f"cannot allocate {threads} x {cells} scratch cells of {itemsize} bytes")
    return p


cdef inline void* scratch_if(bint needed, Py_ssize_t threads, Py_ssize_t cells, size_t itemsize,
                             Py_ssize_t* stride) except? NULL:
    """per_thread_scratch if `needed`; else NULL, `stride` 0 (every thread's
    scratch is then NULL, for a kernel that does not touch it)."""
    if not needed:
        stride[0] = 0
        return NULL
    return per_thread_scratch(threads, cells, itemsize, stride)

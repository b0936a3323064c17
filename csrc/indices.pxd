# Indices that the kernels take from the caller's arrays (max_pool2d_backward's
# argmaxes, max_unpool2d's, the loss's labels). Python checks them first or
# the kernel does, and another thread may change them between that check
# and the kernel, or while it runs: a kernel reads each index once, with
# read_index, and checks that value before it addresses memory with it.

from cython cimport floating
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memset

cdef extern from *:
    """
    /* volatile: the compiler may not read the index again after the check. */
    static inline int64_t fcnn_read_index(const int64_t *p) {
        return *(const volatile int64_t *)p;
    }
    """
    int64_t read_index "fcnn_read_index" (const int64_t* p) noexcept nogil


cdef inline Py_ssize_t scatter_plane(
    const floating* src, const int64_t* idx, floating* dst, Py_ssize_t L, Py_ssize_t plane,
    bint add,
) noexcept nogil:
    """Zero the `plane` cells at `dst`, then put each of the L values at
    `src` at its index: added up if `add` (max_pool2d_backward), else the
    last one stays (max_unpool2d, as PyTorch's loop). Returns how many
    indices lay outside the plane; those are skipped (the caller raises)."""
    cdef Py_ssize_t k, outside = 0
    cdef int64_t i
    memset(dst, 0, plane * sizeof(floating))
    for k in range(L):
        i = read_index(&idx[k])
        if <uint64_t> i >= <uint64_t> plane:
            outside += 1
        elif add:
            dst[i] += src[k]
        else:
            dst[i] = src[k]
    return outside


cdef inline object checked(object result, Py_ssize_t outside, Py_ssize_t size):
    """`result`, or ValueError if `outside` indices lay outside their planes
    of `size` cells (the kernels that count them as they read them)."""
    if outside:
        raise ValueError(f"indices must lie in [0, {size}), got {outside} outside")
    return result

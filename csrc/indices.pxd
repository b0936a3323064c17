# Indices that the kernels take from the caller's arrays (max_pool2d_backward's
# argmaxes, the loss's labels). Python checks them first, but another thread
# may change them between that check and the kernel, or while it runs: a
# kernel reads each index once, with read_index, and checks that value
# before it addresses memory with it.

from libc.stdint cimport int64_t

cdef extern from *:
    """
    /* volatile: the compiler may not read the index again after the check. */
    static inline int64_t fcnn_read_index(const int64_t *p) {
        return *(const volatile int64_t *)p;
    }
    """
    int64_t read_index "fcnn_read_index" (const int64_t* p) noexcept nogil

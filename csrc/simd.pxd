# The instruction-set level and the non-temporal copies of simd.h (see there).

cdef extern from "simd.h" nogil:
    const bint FCNN_HAVE_STREAM
    void fcnn_stream(void* dst, const void* s, Py_ssize_t nbytes)
    void fcnn_stream_fence()
    int fcnn_simd_level()
    int fcnn_set_simd_cap(int cap)

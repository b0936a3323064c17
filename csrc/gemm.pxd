# The products of the GEMM drivers (conv.pyx, winograd.pyx): BLAS calls
# through SciPy's BLAS (the Python layer holds it at one thread while they
# run), and gemm_simd.h's product with one operand packed once per call.

from cython cimport floating
from libc.stddef cimport ptrdiff_t
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv

from scratch cimport per_thread_scratch


cdef extern from "gemm_simd.h" nogil:
    enum: FCNN_GEMM_MR  # rows of a packed tile
    int fcnn_gemm_level()
    ptrdiff_t fcnn_gemm_ld_f32(ptrdiff_t n)
    ptrdiff_t fcnn_gemm_ld_f64(ptrdiff_t n)
    ptrdiff_t fcnn_gemm_packed_size(ptrdiff_t m, ptrdiff_t k)
    void fcnn_gemm_pack_f32(const float* a, ptrdiff_t lda, ptrdiff_t m, ptrdiff_t k, float* packed)
    void fcnn_gemm_pack_f64(const double* a, ptrdiff_t lda, ptrdiff_t m, ptrdiff_t k,
                            double* packed)
    void fcnn_gemm_f32(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const float* packed,
                       const float* b, ptrdiff_t ldb, const float* bias, float* c, ptrdiff_t ldc)
    void fcnn_gemm_f64(ptrdiff_t m, ptrdiff_t n, ptrdiff_t k, const double* packed,
                       const double* b, ptrdiff_t ldb, const double* bias, double* c,
                       ptrdiff_t ldc)
    void fcnn_gemm_implicit_f32(ptrdiff_t m, ptrdiff_t k, const float* packed,
                                const ptrdiff_t* offs, const float* s, ptrdiff_t rstep,
                                ptrdiff_t rows, ptrdiff_t ow, const float* bias, float* out,
                                ptrdiff_t ldc)
    void fcnn_gemm_implicit_f64(ptrdiff_t m, ptrdiff_t k, const double* packed,
                                const ptrdiff_t* offs, const double* s, ptrdiff_t rstep,
                                ptrdiff_t rows, ptrdiff_t ow, const double* bias, double* out,
                                ptrdiff_t ldc)
    void fcnn_transpose_f32(const float* src, ptrdiff_t lds, ptrdiff_t rows, ptrdiff_t cols,
                            float* dst, ptrdiff_t ldd)
    void fcnn_transpose_f64(const double* src, ptrdiff_t lds, ptrdiff_t rows, ptrdiff_t cols,
                            double* dst, ptrdiff_t ldd)
    void fcnn_wgrad_implicit_f32(ptrdiff_t K, ptrdiff_t Fp, const float* dt, const float* s,
                                 const ptrdiff_t* offs, ptrdiff_t rstep, ptrdiff_t rows,
                                 ptrdiff_t ow, float* dwt, int accumulate)
    void fcnn_wgrad_implicit_f64(ptrdiff_t K, ptrdiff_t Fp, const double* dt, const double* s,
                                 const ptrdiff_t* offs, ptrdiff_t rstep, ptrdiff_t rows,
                                 ptrdiff_t ow, double* dwt, int accumulate)


cdef inline void blas_gemm(char* ta, char* tb, int m, int n, int k,
                           const floating* a, int lda, const floating* b, int ldb,
                           floating beta, floating* c, int ldc) noexcept nogil:
    """Column-major ``c = op(a) @ op(b) + beta * c`` (m x n, inner size k)."""
    cdef floating one = 1
    if floating is float:
        sgemm(ta, tb, &m, &n, &k, &one, <float*> a, &lda, <float*> b, &ldb, &beta, c, &ldc)
    else:
        dgemm(ta, tb, &m, &n, &k, &one, <double*> a, &lda, <double*> b, &ldb, &beta, c, &ldc)


cdef inline void gemm(char* ta, char* tb, int m, int n, int k,
                      const floating* a, int lda, const floating* b, int ldb,
                      floating* c, int ldc) noexcept nogil:
    """Column-major ``c = op(a) @ op(b)`` (m x n, inner size k)."""
    blas_gemm(ta, tb, m, n, k, a, lda, b, ldb, 0, c, ldc)


cdef inline void row_sums(int rows, int length, const floating* a, int lda,
                          const floating* ones, floating beta, floating* out) noexcept nogil:
    """``out[r] = sum(a[r*lda : r*lda + length]) + beta * out[r]`` for r < rows, as
    NumPy's ``a @ ones`` computes the sums (a BLAS GEMV)."""
    cdef floating one = 1
    cdef int inc = 1
    if floating is float:
        sgemv("T", &length, &rows, &one, <float*> a, &lda, <float*> ones, &inc, &beta, out, &inc)
    else:
        dgemv("T", &length, &rows, &one, <double*> a, &lda, <double*> ones, &inc, &beta, out,
              &inc)


cdef inline Py_ssize_t own_gemm_ld(Py_ssize_t n, floating* kind) noexcept nogil:
    """gemm_simd.h's row stride for rows of `n` cells of `kind`'s type."""
    if floating is float:
        return fcnn_gemm_ld_f32(n)
    else:
        return fcnn_gemm_ld_f64(n)


cdef inline floating* own_gemm_pack(const floating* a, Py_ssize_t lda, Py_ssize_t m,
                                    Py_ssize_t k, Py_ssize_t count,
                                    Py_ssize_t step) except NULL:
    """`count` matrices (m x k, row stride lda, matrix i at ``a + i*step``)
    packed by gemm_simd.h, matrix i's at ``i * fcnn_gemm_packed_size(m, k)``
    of the result (free it with ``free``)."""
    cdef Py_ssize_t size = fcnn_gemm_packed_size(m, k), i, stride = 0
    cdef floating* packed = <floating*> per_thread_scratch(1, count * size, sizeof(floating),
                                                           &stride)
    for i in range(count):
        if floating is float:
            fcnn_gemm_pack_f32(a + i * step, lda, m, k, packed + i * size)
        else:
            fcnn_gemm_pack_f64(a + i * step, lda, m, k, packed + i * size)
    return packed


cdef inline void own_gemm(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k, const floating* packed,
                          const floating* b, Py_ssize_t ldb, const floating* bias, floating* c,
                          Py_ssize_t ldc) noexcept nogil:
    """gemm_simd.h's row-major ``c = a @ b + bias`` (m x n, inner size k;
    `a` packed by own_gemm_pack, `bias` per row or NULL)."""
    if floating is float:
        fcnn_gemm_f32(m, n, k, packed, b, ldb, bias, c, ldc)
    else:
        fcnn_gemm_f64(m, n, k, packed, b, ldb, bias, c, ldc)


cdef inline void own_implicit(Py_ssize_t m, Py_ssize_t k, const floating* packed,
                              const ptrdiff_t* offs, const floating* s, Py_ssize_t rstep,
                              Py_ssize_t rows, Py_ssize_t ow, const floating* bias,
                              floating* out, Py_ssize_t ldc) noexcept nogil:
    """gemm_simd.h's convolution of `rows` output rows from a padded input
    (AVX-512 only; see fcnn_gemm_implicit_*)."""
    if floating is float:
        fcnn_gemm_implicit_f32(m, k, packed, offs, s, rstep, rows, ow, bias, out, ldc)
    else:
        fcnn_gemm_implicit_f64(m, k, packed, offs, s, rstep, rows, ow, bias, out, ldc)


cdef inline void own_wgrad(Py_ssize_t K, Py_ssize_t Fp, const floating* dt, const floating* s,
                           const ptrdiff_t* offs, Py_ssize_t rstep, Py_ssize_t rows,
                           Py_ssize_t ow, floating* dwt, bint accumulate) noexcept nogil:
    """gemm_simd.h's transposed weight gradient of `rows` output rows from a
    padded input (AVX-512 only; see fcnn_wgrad_implicit_*)."""
    if floating is float:
        fcnn_wgrad_implicit_f32(K, Fp, dt, s, offs, rstep, rows, ow, dwt, accumulate)
    else:
        fcnn_wgrad_implicit_f64(K, Fp, dt, s, offs, rstep, rows, ow, dwt, accumulate)


cdef inline void own_transpose(const floating* src, Py_ssize_t lds, Py_ssize_t rows,
                               Py_ssize_t cols, floating* dst, Py_ssize_t ldd) noexcept nogil:
    """``dst[j*ldd + i] = src[i*lds + j]`` for i < rows, j < cols (AVX-512
    only; see fcnn_transpose_*)."""
    if floating is float:
        fcnn_transpose_f32(src, lds, rows, cols, dst, ldd)
    else:
        fcnn_transpose_f64(src, lds, rows, cols, dst, ldd)

# The BLAS calls of the GEMM drivers (conv.pyx, winograd.pyx), through
# SciPy's BLAS (the Python layer holds it at one thread while they run).

from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, dgemv, sgemm, sgemv


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

"""How the compiled kernels were built (OpenMP or not, which compiler)."""

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define FASTCNN_OPENMP 1
    #else
    #define FASTCNN_OPENMP 0
    static int omp_get_max_threads(void) { return 1; }
    #endif
    #ifdef __VERSION__
    #define FASTCNN_COMPILER __VERSION__
    #else
    #define FASTCNN_COMPILER "unknown"
    #endif
    """
    const int FASTCNN_OPENMP
    const char* FASTCNN_COMPILER
    int omp_get_max_threads() noexcept nogil

#: True when the kernels were compiled with OpenMP (else they run serially).
OPENMP = bool(FASTCNN_OPENMP)
#: The C compiler's version string.
COMPILER = FASTCNN_COMPILER.decode("utf-8", "replace")


def max_threads():
    """OpenMP's current default team size (honours OMP_NUM_THREADS and threadpoolctl)."""
    return omp_get_max_threads()

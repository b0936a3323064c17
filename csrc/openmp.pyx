"""How the compiled kernels were built (OpenMP or not, which compiler), and
the OpenMP team that runs Python work in parallel (``fastcnn._backend.run_chunks``)."""

from cython.parallel cimport prange, threadid

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


def run_parallel(object work, Py_ssize_t n, int num_threads):
    """Call ``work(i, t)`` for every i in range(n) on an OpenMP team of num_threads.

    ``t`` is the calling thread's number in the team (0 = the caller). The
    iterations are handed out one by one (dynamic schedule); each takes the
    GIL to call `work`, which NumPy and the kernels release while they run.
    The first exception raised by `work` is raised here once the iterations
    under way have finished; no iteration starts after it.
    """
    cdef Py_ssize_t i
    cdef int t
    with nogil:
        for i in prange(n, num_threads=num_threads, schedule="dynamic", chunksize=1):
            t = threadid()
            with gil:
                work(i, t)

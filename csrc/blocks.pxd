# How the element-wise kernels (activation.pyx, optim.pyx) split flat arrays
# over threads: in blocks of BLOCK cells, each block's loop free to vectorise.
# Every cell is computed alone, so results do not depend on the split.

cdef enum:
    # 64 KiB of float32 per block: large enough that a block pays for its
    # scheduling, small enough that a few blocks go to each thread.
    BLOCK = 16384


cdef inline Py_ssize_t block_count(Py_ssize_t n) noexcept nogil:
    return (n + BLOCK - 1) // BLOCK


cdef inline Py_ssize_t block_size(Py_ssize_t n, Py_ssize_t block) noexcept nogil:
    """Cells of block number `block` of an array of n cells."""
    return min(<Py_ssize_t> BLOCK, n - block * BLOCK)

# Compiler directives (bounds checks off unless FASTCNN_DEBUG) are set in setup.py.
"""Compiled activations, forward and backward, on flat C-contiguous arrays.

Python twins: ``fastcnn.reference.relu``, ``relu_backward``, ``leaky_relu``
and ``leaky_relu_backward``. Any shape is passed flattened. Cells are
computed independently in blocks (``blocks.pxd``); each select picks
between values already loaded (or constants), so that the compiler
vectorises it instead of branching on the data (it will not speculate a
load or a product that a branch may skip). Each cell's value is the twin's, bit for bit. A slope given as a
double is first rounded to the arrays' dtype, as NumPy does with a Python
float.
"""

from cython cimport floating
from cython.parallel cimport prange

from blocks cimport BLOCK, block_count, block_size


cdef void _relu(const floating* x, floating* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = x[i]
        # NaN stays NaN (NaN <= 0 is false); -0.0 becomes 0.0
        out[i] = 0 if v <= 0 else v


def relu(const floating[::1] x, floating[::1] out not None, int num_threads):
    """relu(x, out, num_threads) -> out

    ``out = 0 where x <= 0, else x`` (NaN propagates).
    """
    cdef Py_ssize_t n = x.shape[0], b
    with nogil:
        for b in prange(block_count(n), schedule="static", num_threads=num_threads):
            _relu(&x[b * BLOCK], &out[b * BLOCK], block_size(n, b))
    return out.base


cdef void _relu_backward(const floating* dout, const floating* x, floating* out,
                         Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, v
    for i in range(n):
        g = dout[i]
        v = x[i]
        out[i] = g if v > 0 else 0


def relu_backward(const floating[::1] dout, const floating[::1] x, floating[::1] out not None,
                  int num_threads):
    """relu_backward(dout, x, out, num_threads) -> out

    ``out = dout where x > 0, else 0`` (also where dout is inf or NaN).
    """
    cdef Py_ssize_t n = x.shape[0], b
    with nogil:
        for b in prange(block_count(n), schedule="static", num_threads=num_threads):
            _relu_backward(&dout[b * BLOCK], &x[b * BLOCK], &out[b * BLOCK], block_size(n, b))
    return out.base


cdef void _leaky_relu(const floating* x, floating slope, floating* out,
                      Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = x[i]
        out[i] = v * (1 if v > 0 else slope)  # v * 1 is v


def leaky_relu(const floating[::1] x, double negative_slope, floating[::1] out not None,
               int num_threads):
    """leaky_relu(x, negative_slope, out, num_threads) -> out

    ``out = x where x > 0, else x * negative_slope``.
    """
    cdef Py_ssize_t n = x.shape[0], b
    cdef floating slope = <floating> negative_slope
    with nogil:
        for b in prange(block_count(n), schedule="static", num_threads=num_threads):
            _leaky_relu(&x[b * BLOCK], slope, &out[b * BLOCK], block_size(n, b))
    return out.base


cdef void _leaky_relu_backward(const floating* dout, const floating* x, floating slope,
                               floating* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, v
    for i in range(n):
        g = dout[i]
        v = x[i]
        out[i] = g * (1 if v > 0 else slope)


def leaky_relu_backward(const floating[::1] dout, const floating[::1] x, double negative_slope,
                        floating[::1] out not None, int num_threads):
    """leaky_relu_backward(dout, x, negative_slope, out, num_threads) -> out

    ``out = dout where x > 0, else dout * negative_slope``.
    """
    cdef Py_ssize_t n = x.shape[0], b
    cdef floating slope = <floating> negative_slope
    with nogil:
        for b in prange(block_count(n), schedule="static", num_threads=num_threads):
            _leaky_relu_backward(&dout[b * BLOCK], &x[b * BLOCK], slope, &out[b * BLOCK],
                                 block_size(n, b))
    return out.base

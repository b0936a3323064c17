# Compiler directives (bounds checks off unless FASTCNN_DEBUG) are set in setup.py.
"""Compiled element-wise kernels on flat C-contiguous arrays: the activations,
forward and backward, a residual connection's sum and dropout.

Python twins: ``fastcnn.reference.relu``, ``relu_backward``, ``leaky_relu``,
``leaky_relu_backward``, ``sigmoid``, ``sigmoid_backward``, ``tanh``,
``tanh_backward``, ``elu``, ``elu_backward``, ``add`` (with the ReLU
after the sum fused) and ``dropout``. Any shape is passed flattened.
Cells are computed independently in blocks (``blocks.pxd``); each select
picks between values already loaded (or constants), so that
the compiler vectorises it instead of branching on the data (it will not
speculate a load or a product that a branch may skip). A scalar given as a
double is first rounded to the arrays' dtype, as NumPy does with a Python
float, and constants are typed: Cython writes a literal 1 as the double
1.0, which would carry float32 arithmetic into double.

Each cell's value is the twin's, bit for bit, but where a transcendental
function is involved. In float32, tanh, sigmoid and elu's expm1 are the
arithmetic of ``vmath.h``, which the compiler vectorises: sigmoid and
expm1, computed in double and rounded once, are within an ulp of the
exact values; tanh, computed in float, within 1.1 ulps.
float64 elu's expm1 is too, within 2 ulps; float64 tanh and sigmoid call
the C library's tanh and exp (vectorised to that accuracy, they were no
faster), as SciPy's expit, the sigmoid twin, does. NumPy's own vectorised
functions, the other twins, match the exact values only to an ulp or
three. The backward passes of sigmoid and tanh work from
the forward's output and are exact; elu's calls the C library's exp.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, expf, tanh as c_tanh
from libc.stdint cimport uint64_t

from blocks cimport BLOCK, block_count, block_size
from rectify cimport leaky_slope_at, relu_grad, relu_of


cdef extern from "vmath.h" nogil:
    float fcnn_tanh_f(float x)
    float fcnn_sigmoid_f(float x)
    double fcnn_expm1_nonpositive_f(double x)
    double fcnn_expm1_nonpositive_d(double x)


# Every kernel takes two coefficients, unused by those that have fewer, so
# that one loop splits the blocks over threads for all of them; a kernel is
# called through a pointer once per block, as it would be called directly.

cdef _map(
    void (*kernel)(const floating*, floating, floating, floating*, Py_ssize_t) noexcept nogil,
    const floating[::1] x, floating p, floating q, floating[::1] out, int num_threads,
):
    """out = kernel(x, p, q) block by block, without the GIL; returns out's array."""
    cdef Py_ssize_t n = x.shape[0], b
    with nogil:
        for b in prange(block_count(n), schedule="static", num_threads=num_threads):
            kernel(&x[b * BLOCK], p, q, &out[b * BLOCK], block_size(n, b))
    return out.base


cdef _map2(
    void (*kernel)(const floating*, const floating*, floating, floating, floating*,
                   Py_ssize_t) noexcept nogil,
    const floating[::1] dout, const floating[::1] x, floating p, floating q,
    floating[::1] out, int num_threads,
):
    """out = kernel(dout, x, p, q) block by block, without the GIL; returns out's array."""
    cdef Py_ssize_t n = x.shape[0], b
    with nogil:
        for b in prange(block_count(n), schedule="static", num_threads=num_threads):
            kernel(&dout[b * BLOCK], &x[b * BLOCK], p, q, &out[b * BLOCK], block_size(n, b))
    return out.base


cdef void _relu(const floating* x, floating p, floating q, floating* out,
                Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = relu_of(x[i])


def relu(const floating[::1] x, floating[::1] out not None, int num_threads):
    """relu(x, out, num_threads) -> out

    ``out = 0 where x <= 0, else x`` (NaN propagates).
    """
    return _map(_relu[floating], x, 0, 0, out, num_threads)


cdef void _relu_backward(const floating* dout, const floating* x, floating p, floating q,
                         floating* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = relu_grad(dout[i], x[i])


def relu_backward(const floating[::1] dout, const floating[::1] x, floating[::1] out not None,
                  int num_threads):
    """relu_backward(dout, x, out, num_threads) -> out

    ``out = dout where x > 0, else 0`` (also where dout is inf or NaN).
    """
    return _map2(_relu_backward[floating], dout, x, 0, 0, out, num_threads)


cdef void _add(const floating* a, const floating* b, floating relu_after, floating q,
               floating* out, Py_ssize_t n) noexcept nogil:
    # the choice made once per block, each loop as in its own kernel
    cdef Py_ssize_t i
    cdef floating v
    if relu_after:
        for i in range(n):
            v = a[i] + b[i]
            out[i] = 0 if v <= 0 else v
    else:
        for i in range(n):
            out[i] = a[i] + b[i]


def add(const floating[::1] a, const floating[::1] b, bint relu_after,
        floating[::1] out not None, int num_threads):
    """add(a, b, relu_after, out, num_threads) -> out

    ``out = a + b``, then, if `relu_after`, ``0 where out <= 0`` (as relu).
    """
    return _map2(_add[floating], a, b, relu_after, 0, out, num_threads)


cdef void _leaky_scaled(const floating* dout, const floating* x, floating slope,
                        floating q, floating* out, Py_ssize_t n) noexcept nogil:
    # dout times leaky_relu's slope at x; with dout = x, leaky_relu
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = dout[i] * leaky_slope_at(x[i], slope)


def leaky_relu(const floating[::1] x, double negative_slope, floating[::1] out not None,
               int num_threads):
    """leaky_relu(x, negative_slope, out, num_threads) -> out

    ``out = x where x > 0, else x * negative_slope``.
    """
    return _map2(_leaky_scaled[floating], x, x, <floating> negative_slope, 0, out, num_threads)


def leaky_relu_backward(const floating[::1] dout, const floating[::1] x, double negative_slope,
                        floating[::1] out not None, int num_threads):
    """leaky_relu_backward(dout, x, negative_slope, out, num_threads) -> out

    ``out = dout where x > 0, else dout * negative_slope``.
    """
    return _map2(_leaky_scaled[floating], dout, x, <floating> negative_slope, 0, out,
                 num_threads)


cdef inline floating _exp(floating v) noexcept nogil:
    if floating is float:
        return expf(v)
    else:
        return exp(v)


cdef void _sigmoid(const floating* x, floating p, floating q, floating* out,
                   Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating one = 1
    for i in range(n):
        if floating is float:
            out[i] = fcnn_sigmoid_f(x[i])
        else:
            # exp(-x) = inf for very negative x gives 1 / inf = 0: no overflow
            out[i] = one / (one + exp(-x[i]))


def sigmoid(const floating[::1] x, floating[::1] out not None, int num_threads):
    """sigmoid(x, out, num_threads) -> out

    ``out = 1 / (1 + exp(-x))``, as ``scipy.special.expit``.
    """
    return _map(_sigmoid[floating], x, 0, 0, out, num_threads)


cdef void _tanh(const floating* x, floating p, floating q, floating* out,
                Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if floating is float:
            out[i] = fcnn_tanh_f(x[i])
        else:
            out[i] = c_tanh(x[i])


def tanh(const floating[::1] x, floating[::1] out not None, int num_threads):
    """tanh(x, out, num_threads) -> out"""
    return _map(_tanh[floating], x, 0, 0, out, num_threads)


cdef void _by_output(const floating* dout, const floating* y, floating of_tanh, floating q,
                     floating* out, Py_ssize_t n) noexcept nogil:
    # the derivative chosen once per block, each loop as in its own kernel
    cdef Py_ssize_t i
    cdef floating one = 1
    if of_tanh:
        for i in range(n):
            out[i] = dout[i] * (one - y[i] * y[i])
    else:
        for i in range(n):
            out[i] = dout[i] * y[i] * (one - y[i])


def _by_output_backward(bint of_tanh, const floating[::1] dout, const floating[::1] y,
                        floating[::1] out not None, int num_threads):
    """_by_output_backward(of_tanh, dout, y, out, num_threads) -> out

    sigmoid_backward, ``out = dout * y * (1 - y)``, or, if `of_tanh`,
    tanh_backward, ``out = dout * (1 - y * y)``, for the forward's output y.
    """
    return _map2(_by_output[floating], dout, y, of_tanh, 0, out, num_threads)


# Dropout's draws: cell i's is the i-th output of SplitMix64 started at the
# call's key (a counter-based generator: any block computes its own cells,
# so the masks do not depend on the thread count), its top 53 bits an
# integer in [0, 2**53) that keeps the cell if it is at least `threshold`.
cdef enum:
    DRAW_SHIFT = 11  # 64 - 53


cdef inline uint64_t _draw(uint64_t key, uint64_t i) noexcept nogil:
    cdef uint64_t z = key + (i + 1) * <uint64_t> 0x9E3779B97F4A7C15ULL
    z = (z ^ (z >> 30)) * <uint64_t> 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t> 0x94D049BB133111EBULL
    return (z ^ (z >> 31)) >> DRAW_SHIFT


def dropout(const floating[::1] x, uint64_t key, uint64_t threshold, double scale,
            floating[::1] out not None, floating[::1] mask not None, int num_threads):
    """dropout(x, key, threshold, scale, out, mask, num_threads) -> (out, mask)

    ``mask = scale where draw(key, i) >= threshold, else 0`` (`scale` rounded
    to the arrays' dtype) and ``out = x * mask``.
    """
    cdef Py_ssize_t n = x.shape[0], b, i, lo
    cdef floating s = <floating> scale, zero = 0
    with nogil:
        for b in prange(block_count(n), schedule="static", num_threads=num_threads):
            lo = b * BLOCK
            for i in range(lo, lo + block_size(n, b)):
                mask[i] = s if _draw(key, i) >= threshold else zero
                out[i] = x[i] * mask[i]
    return out.base, mask.base


cdef inline floating _negative_part(floating v) noexcept nogil:
    """min(v, 0), NaN kept (the exponentials below then give NaN)."""
    return 0 if v > 0 else v


cdef void _elu(const floating* x, floating alpha, floating scale, floating* out,
               Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v, e
    for i in range(n):
        v = x[i]
        if floating is float:
            e = <float> fcnn_expm1_nonpositive_f(_negative_part(v))
        else:
            e = fcnn_expm1_nonpositive_d(_negative_part(v))
        out[i] = scale * (v if v > 0 else alpha * e)


def elu(const floating[::1] x, double alpha, double scale, floating[::1] out not None,
        int num_threads):
    """elu(x, alpha, scale, out, num_threads) -> out

    ``out = scale * (x where x > 0, else alpha * expm1(x))``: ELU with
    scale 1, SELU with its constants.
    """
    return _map(_elu[floating], x, <floating> alpha, <floating> scale, out, num_threads)


cdef void _elu_backward(const floating* dout, const floating* x, floating alpha,
                        floating scale, floating* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating v, e, one = 1
    for i in range(n):
        v = x[i]
        e = _exp(_negative_part(v))
        out[i] = dout[i] * (scale * (one if v > 0 else alpha * e))


def elu_backward(const floating[::1] dout, const floating[::1] x, double alpha, double scale,
                 floating[::1] out not None, int num_threads):
    """elu_backward(dout, x, alpha, scale, out, num_threads) -> out

    ``out = dout * scale * (1 where x > 0, else alpha * exp(x))``.
    """
    return _map2(_elu_backward[floating], dout, x, <floating> alpha, <floating> scale, out,
                 num_threads)

# The rectifiers' expressions, shared by activation.pyx (the ReLU and
# LeakyReLU kernels) and conv.pyx (the convolution's forward, which applies
# the activation after it to its outputs, and its backward, which applies
# the gradient of the activation before it to its input gradient, while
# they are in cache): one home, so that fused and unfused results have the
# same bits. Each is a
# select between values already loaded, which the callers' loops vectorise.

from cython cimport floating


cdef inline floating relu_of(floating v) noexcept nogil:
    """0 where v <= 0, else v: NaN stays NaN, -0.0 becomes 0.0."""
    return 0 if v <= 0 else v


cdef inline floating relu_grad(floating g, floating v) noexcept nogil:
    """ReLU's gradient `g` where its input v > 0, else 0 (also where g is
    inf or NaN)."""
    return g if v > 0 else 0


cdef inline floating leaky_slope_at(floating x, floating slope) noexcept nogil:
    """LeakyReLU's slope at x: 1 where x > 0, else `slope` (its value is
    ``x * leaky_slope_at(x, slope)``: x * 1 is x)."""
    cdef floating one = 1
    return one if x > 0 else slope

# Compiler directives (bounds checks off unless FASTCNN_DEBUG) are set in setup.py.
"""Compiled softmax cross-entropy, forward and backward in one pass over the rows.

Python twin: ``fastcnn.reference.softmax_cross_entropy``. Labels are int64
in ``[0, K)``, checked in Python. Rows run in parallel, each writing its own
gradient row and its own loss; the row losses are then added in row order,
so the result does not depend on the number of threads. Per row, as
``fastcnn.losses``: the logits shifted by their maximum and exponentiated in
the logits' dtype; the sum of the exponentials, its logarithm and the
probabilities in double.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport INFINITY, NAN, exp, expf, log
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from indices cimport read_index


cdef inline floating _exp(floating v) noexcept nogil:
    if floating is float:
        return expf(v)
    else:
        return exp(v)


cdef double _row(const floating* x, Py_ssize_t k, Py_ssize_t label, double n,
                 floating* out) noexcept nogil:
    """Fill the row's gradient; return its loss, ``log(sum(exp)) - shifted[label]``."""
    cdef Py_ssize_t j
    cdef floating top = -INFINITY, v
    cdef double total = 0
    for j in range(k):
        v = x[j]
        # NaN is skipped here and reaches the sum below; an infinite maximum
        # makes inf - inf = NaN there: a NaN row either way, as in NumPy.
        top = v if v > top else top
    for j in range(k):
        v = _exp(<floating> (x[j] - top))
        out[j] = v
        total = total + v
    for j in range(k):
        out[j] = <floating> ((out[j] / total - (j == label)) / n)
    # a label that another thread moved out of the row (indices.pxd): no
    # read outside the row, a NaN loss
    if <size_t> label >= <size_t> k:
        return NAN
    return log(total) - <floating> (x[label] - top)


def softmax_cross_entropy(
    const floating[:, ::1] logits,
    const int64_t[::1] labels,
    floating[:, ::1] out not None,
    int num_threads,
):
    """softmax_cross_entropy(logits, labels, out, num_threads) -> (loss, out)

    Mean cross-entropy of softmax(logits (N, K)) against labels (N,), as a
    float rounded to the logits' dtype; fills out with
    ``(softmax(logits) - onehot(labels)) / N``.
    """
    cdef Py_ssize_t n = logits.shape[0], k = logits.shape[1], i
    cdef double total = 0
    cdef double* losses
    if n == 0:
        return float("nan"), out.base
    losses = <double*> malloc(n * sizeof(double))
    if losses == NULL:
        raise MemoryError(f"cannot allocate {n} row losses")
    try:
        with nogil:
            for i in prange(n, schedule="static", num_threads=num_threads):
                losses[i] = _row(&logits[i, 0], k, read_index(&labels[i]), n, &out[i, 0])
            for i in range(n):
                total = total + losses[i]
    finally:
        free(losses)
    return <double> <floating> (total / n), out.base

# Compiler directives (bounds checks off unless FASTCNN_DEBUG) are set in setup.py.
"""Compiled optimizer updates: one call updates one parameter (and its state) in place.

Python twins: ``fastcnn.reference.sgd_update``, ``adam_update``,
``adagrad_update``, ``rmsprop_update`` and ``adadelta_update``, which are
the NumPy code of ``fastcnn.optim``. Arrays are flat and C-contiguous, one
dtype; a state array that the options leave unused may be empty. Scalar
hyper-parameters come as doubles and are rounded to the arrays' dtype
first, as NumPy rounds a Python float, and every cell then goes through the
same operations in the same order as in NumPy, each rounded to the dtype:
the results are bitwise NumPy's. Cells are independent, updated in blocks
(``blocks.pxd``).

Every update starts with ``fastcnn.optim.Optimizer.step``'s common terms:
the gradient negated if `maximize`, then ``+ weight_decay * param`` if
`weight_decay` is not 0.
"""

from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf

from blocks cimport BLOCK, block_count, block_size


cdef inline floating _sqrt(floating v) noexcept nogil:
    if floating is float:
        return sqrtf(v)
    else:
        return sqrt(v)


cdef inline floating _grad(floating g, floating p, bint maximize, floating weight_decay,
                           bint decay) noexcept nogil:
    if maximize:
        g = -g
    if decay:
        g = g + weight_decay * p
    return g


# Each block function updates cells [lo, hi) and only touches the state
# arrays its options use (the others may be empty).


cdef void _sgd(floating* param, const floating* grad, floating* buf, Py_ssize_t lo,
               Py_ssize_t hi, floating lr, floating momentum, floating keep, floating decay_rate,
               bint decay, bint use_momentum, bint nesterov, bint maximize,
               bint first_step) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, b
    for i in range(lo, hi):
        g = _grad(grad[i], param[i], maximize, decay_rate, decay)
        if use_momentum:
            if first_step:
                b = g
            else:
                b = buf[i] * momentum
                b = b + keep * g
            buf[i] = b
            if nesterov:
                g = g + momentum * b
            else:
                g = b
        param[i] = param[i] - lr * g


def sgd_update(
    floating[::1] param not None,
    const floating[::1] grad,
    floating[::1] momentum_buffer not None,
    double lr, double momentum, double dampening, double weight_decay,
    bint nesterov, bint maximize, bint first_step,
    int num_threads,
):
    """sgd_update(param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, nesterov, maximize, first_step, num_threads) -> param

    ``fastcnn.optim.SGD``'s step. With momentum, the buffer becomes the
    gradient on the first step, else ``buf * momentum + (1 - dampening) *
    grad``; the step is then the buffer (or ``grad + momentum * buf`` for
    Nesterov). ``param -= lr * step``. The buffer is unused (may be empty)
    without momentum.
    """
    cdef Py_ssize_t n = param.shape[0], b
    cdef floating* buf = &momentum_buffer[0] if momentum_buffer.shape[0] else NULL
    with nogil:
        for b in prange(block_count(n), schedule="static", num_threads=num_threads):
            _sgd(&param[0], &grad[0], buf, b * BLOCK, b * BLOCK + block_size(n, b),
                 <floating> lr, <floating> momentum, <floating> (1 - dampening),
                 <floating> weight_decay, weight_decay != 0, momentum != 0, nesterov, maximize,
                 first_step)
    return param.base


cdef void _adam(floating* param, const floating* grad, floating* exp_avg, floating* exp_avg_sq,
                floating* max_exp_avg_sq, Py_ssize_t lo, Py_ssize_t hi, floating keep1,
                floating beta2, floating keep2, floating eps, floating decay_rate,
                floating step_size, floating bias_correction2_sqrt, bint decay, bint amsgrad,
                bint maximize) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, m, v, top, denom
    for i in range(lo, hi):
        g = _grad(grad[i], param[i], maximize, decay_rate, decay)
        m = exp_avg[i]
        m = m + keep1 * (g - m)
        exp_avg[i] = m
        v = exp_avg_sq[i] * beta2
        v = v + keep2 * g * g
        exp_avg_sq[i] = v
        if amsgrad:
            top = max_exp_avg_sq[i]
            # np.maximum: a NaN on either side wins
            top = top if (top >= v or top != top) else v
            max_exp_avg_sq[i] = top
            v = top
        denom = _sqrt(v) / bias_correction2_sqrt + eps
        param[i] = param[i] - step_size * (m / denom)


def adam_update(
    floating[::1] param not None,
    const floating[::1] grad,
    floating[::1] exp_avg not None,
    floating[::1] exp_avg_sq not None,
    floating[::1] max_exp_avg_sq not None,
    double beta1, double beta2, double eps, double weight_decay,
    double step_size, double bias_correction2_sqrt,
    bint amsgrad, bint maximize,
    int num_threads,
):
    """adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, eps, weight_decay, step_size, bias_correction2_sqrt, amsgrad, maximize, num_threads) -> param

    ``fastcnn.optim.Adam``'s step, given ``step_size = lr / (1 - beta1**t)``
    and ``bias_correction2_sqrt = sqrt(1 - beta2**t)`` for step t:
    ``exp_avg += (1 - beta1) * (grad - exp_avg)``, ``exp_avg_sq = exp_avg_sq
    * beta2 + (1 - beta2) * grad * grad``, ``max_exp_avg_sq`` its running
    maximum with `amsgrad` (unused, may be empty, without), and
    ``param -= step_size * (exp_avg / (sqrt(second moment) /
    bias_correction2_sqrt + eps))``.
    """
    cdef Py_ssize_t n = param.shape[0], b
    cdef floating* top = &max_exp_avg_sq[0] if max_exp_avg_sq.shape[0] else NULL
    with nogil:
        for b in prange(block_count(n), schedule="static", num_threads=num_threads):
            _adam(&param[0], &grad[0], &exp_avg[0], &exp_avg_sq[0], top, b * BLOCK,
                  b * BLOCK + block_size(n, b), <floating> (1 - beta1), <floating> beta2,
                  <floating> (1 - beta2), <floating> eps, <floating> weight_decay,
                  <floating> step_size, <floating> bias_correction2_sqrt, weight_decay != 0,
                  amsgrad, maximize)
    return param.base


cdef void _adagrad(floating* param, const floating* grad, floating* state_sum, Py_ssize_t lo,
                   Py_ssize_t hi, floating clr, floating eps, floating decay_rate, bint decay,
                   bint maximize) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, s
    for i in range(lo, hi):
        g = _grad(grad[i], param[i], maximize, decay_rate, decay)
        s = state_sum[i] + g * g
        state_sum[i] = s
        param[i] = param[i] - clr * (g / (_sqrt(s) + eps))


def adagrad_update(
    floating[::1] param not None,
    const floating[::1] grad,
    floating[::1] state_sum not None,
    double clr, double eps, double weight_decay,
    bint maximize,
    int num_threads,
):
    """adagrad_update(param, grad, state_sum, clr, eps, weight_decay, maximize, num_threads) -> param

    ``fastcnn.optim.Adagrad``'s step with the decayed learning rate `clr`:
    ``sum += grad * grad``, ``param -= clr * (grad / (sqrt(sum) + eps))``.
    """
    cdef Py_ssize_t n = param.shape[0], b
    with nogil:
        for b in prange(block_count(n), schedule="static", num_threads=num_threads):
            _adagrad(&param[0], &grad[0], &state_sum[0], b * BLOCK,
                     b * BLOCK + block_size(n, b), <floating> clr, <floating> eps,
                     <floating> weight_decay, weight_decay != 0, maximize)
    return param.base


cdef inline void _rmsprop_cell(floating* param, const floating* grad, floating* square_avg,
                               floating* grad_avg, floating* buf, Py_ssize_t i, floating lr,
                               floating alpha, floating keep, floating eps, floating momentum,
                               floating decay_rate, bint decay, bint use_momentum,
                               bint centered, bint maximize) noexcept nogil:
    cdef floating g, sq, ga, avg, b
    g = _grad(grad[i], param[i], maximize, decay_rate, decay)
    sq = square_avg[i] * alpha
    sq = sq + keep * g * g
    square_avg[i] = sq
    if centered:
        ga = grad_avg[i]
        ga = ga + keep * (g - ga)
        grad_avg[i] = ga
        avg = _sqrt(sq - ga * ga)
    else:
        avg = _sqrt(sq)
    avg = avg + eps
    if use_momentum:
        b = buf[i] * momentum
        b = b + g / avg
        buf[i] = b
        param[i] = param[i] - lr * b
    else:
        param[i] = param[i] - lr * (g / avg)


cdef void _rmsprop(floating* param, const floating* grad, floating* square_avg,
                   floating* grad_avg, floating* buf, Py_ssize_t lo, Py_ssize_t hi,
                   floating lr, floating alpha, floating keep, floating eps, floating momentum,
                   floating decay_rate, bint decay, bint use_momentum, bint centered,
                   bint maximize) noexcept nogil:
    # One loop per choice of the optional state arrays, which the compiler
    # would otherwise not take out of the loop (nor vectorise it).
    cdef Py_ssize_t i
    if centered and use_momentum:
        for i in range(lo, hi):
            _rmsprop_cell(param, grad, square_avg, grad_avg, buf, i, lr, alpha, keep, eps,
                          momentum, decay_rate, decay, True, True, maximize)
    elif centered:
        for i in range(lo, hi):
            _rmsprop_cell(param, grad, square_avg, grad_avg, buf, i, lr, alpha, keep, eps,
                          momentum, decay_rate, decay, False, True, maximize)
    elif use_momentum:
        for i in range(lo, hi):
            _rmsprop_cell(param, grad, square_avg, grad_avg, buf, i, lr, alpha, keep, eps,
                          momentum, decay_rate, decay, True, False, maximize)
    else:
        for i in range(lo, hi):
            _rmsprop_cell(param, grad, square_avg, grad_avg, buf, i, lr, alpha, keep, eps,
                          momentum, decay_rate, decay, False, False, maximize)


def rmsprop_update(
    floating[::1] param not None,
    const floating[::1] grad,
    floating[::1] square_avg not None,
    floating[::1] grad_avg not None,
    floating[::1] momentum_buffer not None,
    double lr, double alpha, double eps, double weight_decay, double momentum,
    bint centered, bint maximize,
    int num_threads,
):
    """rmsprop_update(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, eps, weight_decay, momentum, centered, maximize, num_threads) -> param

    ``fastcnn.optim.RMSprop``'s step: ``square_avg = square_avg * alpha +
    (1 - alpha) * grad * grad``; ``avg = sqrt(square_avg) + eps`` (centered:
    ``grad_avg += (1 - alpha) * (grad - grad_avg)`` and ``sqrt(square_avg -
    grad_avg**2) + eps``); with momentum > 0 ``buf = buf * momentum + grad /
    avg`` and ``param -= lr * buf``, else ``param -= lr * (grad / avg)``.
    grad_avg and momentum_buffer are unused (may be empty) without their
    option.
    """
    cdef Py_ssize_t n = param.shape[0], b
    cdef floating* avg = &grad_avg[0] if grad_avg.shape[0] else NULL
    cdef floating* buf = &momentum_buffer[0] if momentum_buffer.shape[0] else NULL
    with nogil:
        for b in prange(block_count(n), schedule="static", num_threads=num_threads):
            _rmsprop(&param[0], &grad[0], &square_avg[0], avg, buf, b * BLOCK,
                     b * BLOCK + block_size(n, b), <floating> lr, <floating> alpha,
                     <floating> (1 - alpha), <floating> eps, <floating> momentum,
                     <floating> weight_decay, weight_decay != 0, momentum > 0, centered,
                     maximize)
    return param.base


cdef void _adadelta(floating* param, const floating* grad, floating* square_avg,
                    floating* acc_delta, Py_ssize_t lo, Py_ssize_t hi, floating lr, floating rho,
                    floating keep, floating eps, floating decay_rate, bint decay,
                    bint maximize) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating g, sq, delta, acc
    for i in range(lo, hi):
        g = _grad(grad[i], param[i], maximize, decay_rate, decay)
        sq = square_avg[i] * rho
        sq = sq + keep * g * g
        square_avg[i] = sq
        acc = acc_delta[i]
        delta = _sqrt(acc + eps) / _sqrt(sq + eps) * g
        acc = acc * rho
        acc_delta[i] = acc + keep * delta * delta
        param[i] = param[i] - lr * delta


def adadelta_update(
    floating[::1] param not None,
    const floating[::1] grad,
    floating[::1] square_avg not None,
    floating[::1] acc_delta not None,
    double lr, double rho, double eps, double weight_decay,
    bint maximize,
    int num_threads,
):
    """adadelta_update(param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay, maximize, num_threads) -> param

    ``fastcnn.optim.Adadelta``'s step: ``square_avg = square_avg * rho +
    (1 - rho) * grad * grad``, ``delta = sqrt(acc_delta + eps) /
    sqrt(square_avg + eps) * grad``, ``acc_delta = acc_delta * rho +
    (1 - rho) * delta * delta``, ``param -= lr * delta``.
    """
    cdef Py_ssize_t n = param.shape[0], b
    with nogil:
        for b in prange(block_count(n), schedule="static", num_threads=num_threads):
            _adadelta(&param[0], &grad[0], &square_avg[0], &acc_delta[0], b * BLOCK,
                      b * BLOCK + block_size(n, b), <floating> lr, <floating> rho,
                      <floating> (1 - rho), <floating> eps, <floating> weight_decay,
                      weight_decay != 0, maximize)
    return param.base

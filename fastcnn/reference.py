"""The NumPy kernel set: the oracle of the compiled kernels and their fallback.

Each function has the same name, arguments and results as its compiled twin
in ``fastcnn._kernels`` (see :mod:`fastcnn._backend`). Inputs are already
validated by :mod:`fastcnn._validation`: C-contiguous float32/float64 arrays,
int64 indices and a consistent geometry. Every function fills the `out`
array it is given (or updates its arguments in place, for the optimizers)
and returns it.

The code favours clarity over speed, but never loops over pixels in Python:
it loops over the ``kh * kw`` kernel offsets at most. Where floating-point
sums are involved, the additions happen in the same order as in the compiled
kernels, so that both sets give bitwise-identical results; the exceptions
say so (the GEMM drivers, the batch-norm and loss reductions, and the
activations that call exp or tanh, which agree to rounding).

Geometry arguments: kernel ``(kh, kw)``, stride ``(sh, sw)``, top/left
padding ``(ph, pw)``, dilation ``(dh, dw)`` and output size ``(oh, ow)``.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided
from scipy.special import expit

from ._docstrings import fill_doc

__all__ = [
    "im2col",
    "col2im",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "adaptive_avg_pool2d_forward",
    "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d_forward",
    "conv2d_forward",
    "conv2d_backward",
    "conv2d_direct_forward",
    "conv2d_direct_backward",
    "linear_forward",
    "linear_backward",
    "winograd_weight",
    "winograd_conv2d",
    "winograd_conv2d_backward",
    "batch_norm_stats",
    "batch_norm_elemt",
    "batch_norm_backward_reduce",
    "batch_norm_backward_elemt",
    "relu",
    "relu_backward",
    "add",
    "dropout",
    "leaky_relu",
    "leaky_relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "tanh",
    "tanh_backward",
    "elu",
    "elu_backward",
    "softmax_cross_entropy",
    "sgd_update",
    "adam_update",
    "adagrad_update",
    "rmsprop_update",
    "adadelta_update",
    "interpolate_nearest",
    "interpolate_nearest_backward",
    "interpolate_bilinear",
    "interpolate_bilinear_backward",
    "max_unpool2d",
    "max_unpool2d_backward",
]


def _pad_to_cover(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, value):
    """Pad the spatial dims so that every window lies inside the result.

    Top/left get the requested padding; bottom/right get whatever the last
    window needs (which may be less than the top/left padding, or more with
    asymmetric "same" padding or ceil mode).
    """
    _, _, h, w = x.shape
    bottom = max(0, (oh - 1) * sh + (kh - 1) * dh + 1 - ph - h)
    right = max(0, (ow - 1) * sw + (kw - 1) * dw + 1 - pw - w)
    return np.pad(x, ((0, 0), (0, 0), (ph, bottom), (pw, right)), constant_values=value)


def _offset_view(xp, i, j, sh, sw, dh, dw, oh, ow):
    """The ``(N, C, oh, ow)`` view of padded `xp` seen by kernel offset (i, j)."""
    return xp[:, :, i * dh : i * dh + (oh - 1) * sh + 1 : sh, j * dw : j * dw + (ow - 1) * sw + 1 : sw]


def _windows(xp, kh, kw, sh, sw, dh, dw, oh, ow):
    """Read-only ``(N, C, oh, ow, kh, kw)`` view of every window of padded `xp`."""
    n, c = xp.shape[:2]
    s_n, s_c, s_h, s_w = xp.strides
    return as_strided(
        xp,
        shape=(n, c, oh, ow, kh, kw),
        strides=(s_n, s_c, sh * s_h, sw * s_w, dh * s_h, dw * s_w),
        writeable=False,
    )


def im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, out):
    """Unfold windows into columns, as ``torch.nn.functional.unfold``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    out : ndarray, shape (N, C*kh*kw, oh*ow), same dtype as `x`
        Row ``c*kh*kw + i*kw + j`` holds offset (i, j) of channel c; columns
        run row-major over output positions. Cells in the padding are zero.
    """
    n, c = x.shape[:2]
    xp = _pad_to_cover(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, 0)
    cols = out.reshape(n, c, kh, kw, oh, ow)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, i, j] = _offset_view(xp, i, j, sh, sw, dh, dw, oh, ow)
    return out


def col2im(cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, out):
    """Sum columns back into an image: the adjoint of :func:`im2col` (``F.fold``).

    Parameters
    ----------
    cols : ndarray, shape (N, C*kh*kw, oh*ow)
    out : ndarray, shape (N, C, H, W), same dtype as `cols`
        Each pixel receives the sum of every column entry that im2col would
        have copied from it (padding entries are dropped).
    """
    n, c, h, w = out.shape
    acc = _pad_to_cover(np.zeros_like(out), kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, 0)
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    # Offsets in (i, j) order: the order in which the compiled kernel adds.
    for i in range(kh):
        for j in range(kw):
            _offset_view(acc, i, j, sh, sw, dh, dw, oh, ow)[...] += cols[:, :, i, j]
    out[...] = acc[:, :, ph : ph + h, pw : pw + w]
    return out


def _scan_pick(values, valid):
    """The position along the last axis that PyTorch's max scan keeps: the
    last NaN, or else the first maximum of the `valid` entries (the first
    valid one if all are -inf). The others must hold -inf."""
    is_nan = np.isnan(values)
    last_nan = values.shape[-1] - 1 - np.argmax(is_nan[..., ::-1], axis=-1)
    first_best = np.argmax((values == values.max(axis=-1, keepdims=True)) & valid, axis=-1)
    return np.where(is_nan.any(axis=-1), last_nan, first_best)


# The arrays of the max pools (docstring section, see fastcnn._docstrings).
_MAX_ARRAYS = """
x : ndarray, shape (N, C, H, W)
out : ndarray, shape (N, C, oh, ow), same dtype as `x`
indices : ndarray of int64, shape (N, C, oh, ow)
    Flat index ``ih * W + iw`` of each maximum inside its (n, c) plane.
"""


def _plane_sizes(inputs, outputs):
    """``(h, w, oh, ow)``: the planes of a pool's `inputs` (its x, or the
    gradient dx) and of its `outputs` (out, or dout)."""
    return inputs.shape[2], inputs.shape[3], outputs.shape[2], outputs.shape[3]


@fill_doc(max_arrays=_MAX_ARRAYS)
def max_pool2d(x, kh, kw, sh, sw, ph, pw, dh, dw, out, indices):
    """Max pooling with argmax, as ``F.max_pool2d(..., return_indices=True)``.

    Each window is scanned row by row keeping ``v > best or isnan(v)``: ties
    go to the first maximum; a NaN wins and the last NaN's index is kept.
    Padding cells are skipped.

    Parameters
    ----------
    {max_arrays}
    """
    h, w, oh, ow = _plane_sizes(x, out)
    geometry = (kh, kw, sh, sw, dh, dw, oh, ow)
    vals = _windows(_pad_to_cover(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, -np.inf), *geometry)
    inside = np.ones((1, 1, h, w), dtype=bool)
    valid = _windows(_pad_to_cover(inside, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, False), *geometry)
    vals = vals.reshape(vals.shape[:4] + (kh * kw,))
    valid = valid.reshape(valid.shape[:4] + (kh * kw,))
    pos = _scan_pick(vals, valid)

    ih = np.arange(oh)[:, None] * sh - ph + (pos // kw) * dh
    iw = np.arange(ow)[None, :] * sw - pw + (pos % kw) * dw
    # The chosen cell's own value: of tied -0.0 and 0.0 the first one wins.
    out[...] = np.take_along_axis(vals, pos[..., None], axis=-1)[..., 0]
    indices[...] = ih * w + iw
    return out, indices


def max_pool2d_backward(dout, indices, out):
    """Route each output gradient to the one input its max came from (an
    index outside its plane is a ValueError).

    Parameters
    ----------
    dout : ndarray, shape (N, C, oh, ow)
    indices : ndarray of int64, shape (N, C, oh, ow), each in ``[0, H*W)``
    out : ndarray, shape (N, C, H, W), same dtype as `dout`
        Overlapping windows that chose the same input add up.
    """
    n, c, h, w = out.shape
    _check_plane_indices(indices, h * w)
    planes = out.reshape(n * c, h * w)
    planes.fill(0)
    plane_of = np.repeat(np.arange(n * c), dout.shape[2] * dout.shape[3])
    # np.add.at adds in index order, the order of the compiled kernel.
    np.add.at(planes, (plane_of, indices.ravel()), dout.ravel())
    return out


def _avg_divisors(h, w, kh, kw, sh, sw, ph, pw, oh, ow, count_include_pad, divisor_override):
    """``(oh, ow)`` divisors, as PyTorch's avg_pool2d CPU kernel."""
    if divisor_override:
        return np.full((oh, ow), divisor_override, dtype=np.int64)

    def extent(size, k, s, p, o):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, size + p)
        if count_include_pad:
            return end - start
        return np.minimum(end, size) - np.maximum(start, 0)

    return np.outer(extent(h, kh, sh, ph, oh), extent(w, kw, sw, pw, ow))


def avg_pool2d(x, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override, out):
    """Average pooling, as ``F.avg_pool2d``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    count_include_pad : bool
        Divide by the window clipped to the padded input (True) or by the
        number of real input cells in it (False).
    divisor_override : int
        If non-zero, divide every window sum by it instead.
    out : ndarray, shape (N, C, oh, ow), same dtype as `x`
    """
    h, w, oh, ow = _plane_sizes(x, out)
    xp = _pad_to_cover(x, kh, kw, sh, sw, ph, pw, 1, 1, oh, ow, 0)
    acc = np.zeros_like(out)
    for i in range(kh):
        for j in range(kw):
            acc += _offset_view(xp, i, j, sh, sw, 1, 1, oh, ow)
    div = _avg_divisors(h, w, kh, kw, sh, sw, ph, pw, oh, ow, count_include_pad, divisor_override)
    np.divide(acc, div.astype(out.dtype), out=out)
    return out


def avg_pool2d_backward(dout, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override, out):
    """Gradient of :func:`avg_pool2d`: each window spreads ``dout / divisor``.

    Parameters
    ----------
    dout : ndarray, shape (N, C, oh, ow)
    out : ndarray, shape (N, C, H, W), same dtype as `dout`
    """
    h, w, oh, ow = _plane_sizes(out, dout)
    div = _avg_divisors(h, w, kh, kw, sh, sw, ph, pw, oh, ow, count_include_pad, divisor_override)
    grad = dout / div.astype(dout.dtype)
    acc = _pad_to_cover(np.zeros_like(out), kh, kw, sh, sw, ph, pw, 1, 1, oh, ow, 0)
    # The compiled kernel visits windows in row-major order; for one pixel
    # that is kernel offsets in decreasing order, so add them in that order.
    for i in reversed(range(kh)):
        for j in reversed(range(kw)):
            _offset_view(acc, i, j, sh, sw, 1, 1, oh, ow)[...] += grad
    out[...] = acc[:, :, ph : ph + h, pw : pw + w]
    return out


# Adaptive pooling. Window i of n along an axis of `size` cells covers
# cells floor(i*size/n) to ceil((i+1)*size/n) (exclusive), as PyTorch's. The
# twins gather every window's cells in row-major order along a last axis
# (padded at its end with cells that change nothing) and reduce along it:
# the sums by np.add.accumulate, which adds one cell after the other, as
# the compiled kernels (and PyTorch) do.


def _adaptive_windows(size, n):
    """Starts and ends of the `n` windows along an axis of `size` cells.

    As the compiled kernels compute them, without forming ``i*size`` (which
    can overflow): with ``size = q*n + r``, ``floor(i*size/n) = i*q +
    floor(i*r/n)``, and ``i*r < n*n``.
    """
    i = np.arange(n, dtype=np.int64)
    q, r = divmod(size, n)
    return i * q + i * r // n, (i + 1) * q + ((i + 1) * r + n - 1) // n


def _sequential_sum(terms):
    """The sum along the last axis, one term after the other from +0.0."""
    # accumulate starts from the first term; adding +0.0 at the end turns a
    # -0.0 into the +0.0 that a sum from +0.0 gives (and changes nothing else)
    return np.add.accumulate(terms, axis=-1)[..., -1] + terms.dtype.type(0)


def _adaptive_cells(h, w, oh, ow):
    """Every window's cells in row-major order: ``(oh, ow, K)`` flat indices
    ``ih*W + iw`` (K the largest window's cell count) and whether each is one
    of the window's cells (the rest, at the end, repeat its first cell)."""
    hs, he = _adaptive_windows(h, oh)
    ws, we = _adaptive_windows(w, ow)
    kh, kw = (he - hs)[:, None, None], (we - ws)[None, :, None]
    k = np.arange(int(kh.max()) * int(kw.max()))
    inside = k < kh * kw
    k = np.where(inside, k, 0)
    return (hs[:, None, None] + k // kw) * w + ws[None, :, None] + k % kw, inside


def _per_window(a, h, w):
    """`a` ``(..., oh, ow)`` divided by the height, then by the width, of each
    window over an ``(h, w)`` input."""
    hs, he = _adaptive_windows(h, a.shape[-2])
    ws, we = _adaptive_windows(w, a.shape[-1])
    t = a.dtype.type
    return a / (he - hs).astype(t)[:, None] / (we - ws).astype(t)


def _planes(a):
    """`a` ``(N, C, H, W)`` as ``(N, C, H*W)``."""
    return a.reshape(a.shape[:2] + (a.shape[2] * a.shape[3],))


#: A 1x1 adaptive average sums each plane in this many lanes (cell i in lane
#: i % 16), each from +0.0 in order, then the lanes in order, as the compiled
#: kernel does (PyTorch computes it as a mean, in yet another order).
_PLANE_LANES = 16


def _plane_sums(x):
    """The ``(N, C)`` sums of the planes of `x` in :data:`_PLANE_LANES` lanes."""
    n, c, h, w = x.shape
    rows = -(-h * w // _PLANE_LANES)
    # the lanes' last cells padded with +0.0, which changes no sum
    cells = np.zeros((n, c, rows * _PLANE_LANES), dtype=x.dtype)
    cells[..., : h * w] = _planes(x)
    lanes = _sequential_sum(np.swapaxes(cells.reshape(n, c, rows, _PLANE_LANES), -1, -2))
    return _sequential_sum(lanes)


def adaptive_avg_pool2d_forward(x, out):
    """Adaptive average pooling, as ``F.adaptive_avg_pool2d``.

    Each window's cells are summed row by row from +0.0, the sum divided by
    the window's height, then by its width (PyTorch's order); a 1x1 output
    sums its plane in lanes (:data:`_PLANE_LANES`).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    out : ndarray, shape (N, C, oh, ow), same dtype as `x`
    """
    h, w, oh, ow = _plane_sizes(x, out)
    if oh == ow == 1:
        sums = _plane_sums(x)[..., None, None]
    else:
        cells, inside = _adaptive_cells(h, w, oh, ow)
        sums = _sequential_sum(np.where(inside, _planes(x)[:, :, cells], x.dtype.type(0)))
    out[...] = _per_window(sums, h, w)
    return out


@fill_doc(max_arrays=_MAX_ARRAYS)
def adaptive_max_pool2d_forward(x, out, indices):
    """Adaptive max pooling with argmax, as ``F.adaptive_max_pool2d(...,
    return_indices=True)``.

    Each window is scanned row by row keeping ``v > best or isnan(v)`` from
    -inf and the window's first cell: ties go to the first maximum; a NaN
    wins and the last NaN's index is kept.

    Parameters
    ----------
    {max_arrays}
    """
    h, w, oh, ow = _plane_sizes(x, out)
    cells, inside = _adaptive_cells(h, w, oh, ow)
    values = np.where(inside, _planes(x)[:, :, cells], x.dtype.type(-np.inf))
    pos = _scan_pick(values, inside)
    # the chosen cell's own value: of tied -0.0 and 0.0 the first one wins
    out[...] = np.take_along_axis(values, pos[..., None], axis=-1)[..., 0]
    indices[...] = np.take_along_axis(np.broadcast_to(cells, values.shape), pos[..., None],
                                      axis=-1)[..., 0]
    return out, indices


def adaptive_avg_pool2d_backward(dout, out):
    """Gradient of :func:`adaptive_avg_pool2d_forward`.

    Each window's share is its gradient divided by its height, then by its
    width; a cell receives the shares of the windows that hold it in
    row-major window order, added from +0.0 (PyTorch's order).

    Parameters
    ----------
    dout : ndarray, shape (N, C, oh, ow)
    out : ndarray, shape (N, C, H, W), same dtype as `dout`
    """
    h, w, oh, ow = _plane_sizes(out, dout)
    share = _per_window(dout, h, w)
    hs, he = _adaptive_windows(h, oh)
    ws, we = _adaptive_windows(w, ow)
    # the windows that hold each row (or column) are consecutive: from the
    # first that ends after it to the first that starts after it
    rows = np.arange(h)
    first_row = np.searchsorted(he, rows, side="right")
    rows_held = np.searchsorted(hs, rows, side="right") - first_row
    cols = np.arange(w)
    first_col = np.searchsorted(we, cols, side="right")
    cols_held = np.searchsorted(ws, cols, side="right") - first_col
    # (H, W, R*S) windows of each cell in row-major order, R and S the most
    # windows that hold a row and a column
    a = np.arange(int(rows_held.max()))[:, None]
    b = np.arange(int(cols_held.max()))[None, :]
    oy = first_row[:, None, None, None] + a
    ox = first_col[None, :, None, None] + b
    inside = (a < rows_held[:, None, None, None]) & (b < cols_held[None, :, None, None])
    flat = np.where(inside, oy * ow + ox, 0).reshape(h, w, -1)
    terms = np.where(inside.reshape(h, w, -1), _planes(share)[:, :, flat], dout.dtype.type(0))
    out[...] = _sequential_sum(terms)
    return out


# GEMM drivers. They make the compiled drivers' BLAS calls through NumPy's
# matmul (a GEMM per sample and group, a GEMV for the bias sums) and add up
# in the same order; the two BLAS libraries (NumPy's and SciPy's) may still
# round a product differently, so these twins agree with the compiled
# drivers to rounding, not bit for bit.

# The twins unfold this many bytes of columns at a time (NumPy has no
# per-sample loop to keep them in cache, but memory must stay bounded).
_COLUMN_BYTES = 16 << 20


def _sample_blocks(n, sample_bytes):
    step = max(1, _COLUMN_BYTES // max(sample_bytes, 1))
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def conv2d_forward(x, weight, bias, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, groups, activation,
                   negative_slope, out):
    """Convolution (cross-correlation), as ``F.conv2d``, by im2col and GEMMs.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    weight : ndarray, shape (F, C/groups*kh*kw)
    bias : ndarray, shape (F,) or (0,) for none
    activation : int
        Applied to the outputs: 0 none, 1 :func:`relu`, 2 :func:`leaky_relu`
        of `negative_slope`.
    negative_slope : float
    out : ndarray, shape (N, F, oh, ow), same dtype as `x`
    """
    if activation not in (0, 1, 2):
        raise ValueError(f"activation must be 0, 1 or 2, got {activation}")
    n, c = x.shape[:2]
    f, kg = weight.shape
    fg, length = f // groups, oh * ow
    w = weight.reshape(groups, fg, kg)
    y = out.reshape(n, groups, fg, length)
    for part in _sample_blocks(n, c * kh * kw * length * x.itemsize):
        cols = im2col(x[part], kh, kw, sh, sw, ph, pw, dh, dw, oh, ow,
                      np.empty((part.stop - part.start, c * kh * kw, length), x.dtype))
        np.matmul(w, cols.reshape(-1, groups, kg, length), out=y[part])
    if bias.size:
        out += bias.reshape(f, 1, 1)
    flat = out.reshape(-1)
    if activation == 1:
        relu(flat, flat)
    elif activation == 2:
        leaky_relu(flat, negative_slope, flat)
    return out


def _chunk_param_grads(dout, x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, groups, dweight,
                       dbias):
    """Weight (F, C/groups*kh*kw) and bias (F,) gradients of a chunk of samples
    (dout, x), each sample's by a GEMM, summed over the samples in order into
    `dweight` and `dbias`."""
    m, c = x.shape[:2]
    f, kg = dweight.shape
    fg, length = f // groups, oh * ow
    cols = im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow,
                  np.empty((m, c * kh * kw, length), x.dtype))
    g = dout.reshape(m, groups, fg, length)
    products = np.matmul(g, cols.reshape(m, groups, kg, length).transpose(0, 1, 3, 2))
    # Summed over axis 0, sample after sample, as the compiled drivers do.
    products.reshape(m, f, kg).sum(axis=0, out=dweight)
    np.matmul(dout.reshape(m, f, length), np.ones(length, x.dtype)).sum(axis=0, out=dbias)


def conv2d_backward(dout, x, weight, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, groups, chunk,
                    activation, negative_slope, dx, dweight_parts, dbias_parts):
    """Gradients of :func:`conv2d_forward` with respect to x, weight and bias.

    Parameters
    ----------
    dout : ndarray, shape (N, F, oh, ow)
    x : ndarray, shape (N, C, H, W)
    weight : ndarray, shape (F, C/groups*kh*kw)
    chunk : int
        Samples ``[p*chunk, (p+1)*chunk)`` form chunk p.
    activation : int
        Applied to dx: 0 nothing, 1 :func:`relu_backward` at `x`, 2
        :func:`leaky_relu_backward` at `x` of `negative_slope` (the gradient
        of a rectifier whose output is `x`).
    negative_slope : float
    dx : ndarray, shape (N, C, H, W), filled; or shape (0, C, H, W) for the
        parameter gradients only
    dweight_parts : ndarray, shape (ceil(N/chunk), F, C/groups*kh*kw), filled
        Chunk p's weight gradient, summed over its samples in order; or shape
        (0, F, C/groups*kh*kw) for the input gradient only.
    dbias_parts : ndarray, shape (ceil(N/chunk), F), filled
        Chunk p's bias gradient, likewise; shape (0, F) with the former.
    """
    if activation not in (0, 1, 2):
        raise ValueError(f"activation must be 0, 1 or 2, got {activation}")
    n, c = x.shape[:2]
    f, kg = weight.shape
    fg, length = f // groups, oh * ow
    w_t = weight.reshape(groups, fg, kg).transpose(0, 2, 1)
    for p in range(-(-n // chunk)):
        part = slice(p * chunk, min(n, (p + 1) * chunk))
        m = part.stop - part.start
        if len(dweight_parts):
            _chunk_param_grads(dout[part], x[part], kh, kw, sh, sw, ph, pw, dh, dw, oh, ow,
                               groups, dweight_parts[p], dbias_parts[p])
        if not len(dx):
            continue
        dcols = np.matmul(w_t, dout[part].reshape(m, groups, fg, length))
        col2im(dcols.reshape(m, c * kh * kw, length), kh, kw, sh, sw, ph, pw, dh, dw, oh, ow,
               dx[part])
    if len(dx) and activation:
        flat, at = dx.reshape(-1), x.reshape(-1)
        if activation == 1:
            relu_backward(flat, at, flat)
        else:
            leaky_relu_backward(flat, at, negative_slope, flat)
    return dx


def conv2d_direct_forward(x, weight, bias, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, out):
    """Convolution (cross-correlation) with groups = 1, tap by tap.

    Each output is ``+0.0`` plus the rounded products of its taps in order
    (c, i, j), padding cells (+0.0) included, then plus the bias, as in the
    compiled kernel: the same bits.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    weight : ndarray, shape (F, C*kh*kw)
    bias : ndarray, shape (F,) or (0,) for none
    out : ndarray, shape (N, F, oh, ow), same dtype as `x`
    """
    c = x.shape[1]
    xp = _pad_to_cover(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, 0)
    out[...] = 0
    for ch in range(c):
        for i in range(kh):
            for j in range(kw):
                taps = _offset_view(xp[:, ch : ch + 1], i, j, sh, sw, dh, dw, oh, ow)
                out += weight[:, (ch * kh + i) * kw + j, None, None] * taps
    if bias.size:
        out += bias.reshape(-1, 1, 1)
    return out


def conv2d_direct_backward(dout, x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, chunk,
                           dweight_parts, dbias_parts):
    """Weight and bias gradients of :func:`conv2d_direct_forward`, chunk by chunk.

    The GEMM driver's sums (:func:`conv2d_backward`); the compiled kernel
    adds each output's products in another order and agrees to rounding.

    Parameters
    ----------
    dout : ndarray, shape (N, F, oh, ow)
    x : ndarray, shape (N, C, H, W)
    chunk : int
        Samples ``[p*chunk, (p+1)*chunk)`` form chunk p.
    dweight_parts : ndarray, shape (ceil(N/chunk), F, C*kh*kw), filled
        Chunk p's weight gradient, summed over its samples in order.
    dbias_parts : ndarray, shape (ceil(N/chunk), F), filled
        Chunk p's bias gradient, likewise.
    """
    for p in range(len(dweight_parts)):
        part = slice(p * chunk, (p + 1) * chunk)
        _chunk_param_grads(dout[part], x[part], kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, 1,
                           dweight_parts[p], dbias_parts[p])
    return dweight_parts


def linear_forward(x, weight, bias, chunk, out):
    """``out = x @ weight.T + bias``, as ``F.linear``.

    Parameters
    ----------
    x : ndarray, shape (N, I)
    weight : ndarray, shape (O, I)
    bias : ndarray, shape (O,) or (0,) for none
    chunk : int
        Rows ``[p*chunk, (p+1)*chunk)`` form one GEMM.
    out : ndarray, shape (N, O)
    """
    for lo in range(0, len(x), chunk):
        np.matmul(x[lo : lo + chunk], weight.T, out=out[lo : lo + chunk])
    if bias.size:
        out += bias
    return out


def linear_backward(dout, x, weight, chunk, dx, dweight_parts, dbias_parts):
    """Gradients of :func:`linear_forward`.

    Parameters
    ----------
    dout : ndarray, shape (N, O)
    x : ndarray, shape (N, I)
    weight : ndarray, shape (O, I)
    chunk : int
        Rows ``[p*chunk, (p+1)*chunk)`` form chunk p.
    dx : ndarray, shape (N, I), filled with ``dout @ weight``; or shape
        (0, I) for the parameter gradients only
    dweight_parts : ndarray, shape (ceil(N/chunk), O, I), filled
        Chunk p's ``dout.T @ x``.
    dbias_parts : ndarray, shape (ceil(N/chunk), O), filled
        Chunk p's column sums of dout, row after row.
    """
    for p in range(len(dweight_parts)):
        rows = slice(p * chunk, (p + 1) * chunk)
        if len(dx):
            np.matmul(dout[rows], weight, out=dx[rows])
        np.matmul(dout[rows].T, x[rows], out=dweight_parts[p])
        dout[rows].sum(axis=0, out=dbias_parts[p])
    return dx


# ---------------------------------------------------------------------------
# Winograd convolution F(4x4, 3x3) (csrc/winograd.pyx; the transforms and
# the choice of points are explained in csrc/winograd.h). The transforms are
# the compiled kernel's expressions, operation by operation: the same bits.
# The products go through NumPy's BLAS: equal to rounding.


def _winograd_weight_1d(g, t):
    """The 6 transformed taps of 3 taps `g` (arrays), in arithmetic of type `t`."""
    g0, g1, g2 = g
    s = g0 + g2
    third, c15, m4c15 = t(1.0 / 3.0), t(1.0 / 15.0), t(-4.0 / 15.0)
    return [g0, (g1 - s) * third, (s + g1) * third, (t(4) * g0 + g2 + t(2) * g1) * m4c15,
            (g0 + t(4) * g2 - t(2) * g1) * c15, g2]


def _winograd_input_1d(d, t):
    """The 6 transformed cells of 6 input cells `d`."""
    d0, d1, d2, d3, d4, d5 = d
    a, b = d3 - d1, d4 - d2
    half, two, c1_5, c2_5 = t(0.5), t(2), t(1.5), t(2.5)
    return [d0 + d4 - two * d2 + c1_5 * a, b + half * a + c1_5 * (d1 - d2),
            b + c2_5 * a + c1_5 * (d1 + d2), b + two * a, b - half * a,
            d1 - two * d3 + d5 + c1_5 * b]


def _winograd_dout_1d(g, t):
    """The 6 transformed cells of 4 output-gradient cells `g` (F(3x3, 4x4)'s G)."""
    g0, g1, g2, g3 = g
    even, odd = g0 + g2, g1 + g3
    third, two, four, eight = t(1.0 / 3.0), t(2), t(4), t(8)
    return [g0, (odd - even) * third, (even + odd) * third,
            (eight * g0 + four * g1 + two * g2 + g3) * t(-2.0 / 15.0),
            (g0 - two * g1 + four * g2 - eight * g3) * t(1.0 / 15.0), g3]


def _winograd_output_1d(m, t, cells=4):
    """The 4 output cells of 6 products `m`, or the 3 weight-gradient taps
    (``cells=3``: F(3x3, 4x4)'s A transposed, whose last row alone differs)."""
    m0, m1, m2, m3, m4, m5 = m
    p, q = m2 + m1, m2 - m1
    y2 = p + (t(0.25) * m3 + t(4) * m4)
    head = [m0 + p + (m3 + m4), q + (t(0.5) * m3 - t(2) * m4)]
    if cells == 3:
        return head + [y2 + m5]
    return head + [y2, q + (t(0.125) * m3 - t(8) * m4) + m5]


def winograd_weight(weight, out):
    """The transformed kernels of the Winograd convolution.

    Parameters
    ----------
    weight : ndarray, shape (F, C, 3, 3)
    out : ndarray, shape (36, F, C), filled
        ``out[6*r + s, f, c] = (G @ weight[f, c] @ G.T)[r, s]``.
    """
    t = weight.dtype.type
    g = weight.transpose(2, 3, 0, 1)  # (3 rows, 3 columns, F, C)
    with np.errstate(invalid="ignore", over="ignore"):  # the caller checks for those
        cols = _winograd_weight_1d(g, t)  # each kernel column: 3 rows -> 6
        for r in range(6):  # then each transformed row: 3 columns -> 6
            out[6 * r : 6 * r + 6] = _winograd_weight_1d(cols[r], t)
    return out


def winograd_conv2d(x, u, bias, ph, pw, gw, samples, rows, out, nonfinite):
    """Convolution of stride 1 by Winograd's F(4x4, 3x3), kernels in blocks of 3x3 taps.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    u : ndarray, shape (36, F, gh*gw*C)
        The transformed gh x gw blocks of 3x3 taps of the kernels
        (:func:`winograd_weight`): block (a, b), taps ``[3*a, 3*a + 3)`` x
        ``[3*b, 3*b + 3)``, its channel c at ``(a*gw + b)*C + c``.
    bias : ndarray, shape (F,) or (0,) for none
    ph, pw : int
        Top/left padding; negative crops. Block (a, b) reads `x` with
        padding (ph - 3*a, pw - 3*b).
    gw : int
        Blocks per kernel row.
    samples, rows : int
        Blocks of the batch: samples ``[g*samples, (g+1)*samples)``, tile
        rows ``[b*rows, (b+1)*rows)`` (all when ``samples > 1``), each block
        one GEMM per transformed position, numbered ``g*ceil(ceil(oh/4)/rows) + b``.
    out : ndarray, shape (N, F, oh, ow), filled
    nonfinite : ndarray, shape (number of blocks,), uint8, filled
        1 where one of the block's output tiles (before clipping and bias)
        holds a NaN or an infinity, else 0.
    """
    with np.errstate(invalid="ignore", over="ignore"):  # such blocks are flagged
        return _winograd_conv2d(x, u, bias, ph, pw, gw, samples, rows, out, nonfinite)


def _winograd_blocks(n, oh, samples, rows):
    """Each block of a Winograd kernel's batch, in order: (samples, first tile row, tile rows)."""
    th = -(-oh // 4)
    for lo in range(0, n, samples):
        for ty0 in range(0, th, rows):
            yield slice(lo, min(n, lo + samples)), ty0, min(th, ty0 + rows) - ty0


def _winograd_input_tiles(x, ph, pw, gh, gw, oh, ow, part, ty0, nt):
    """The transformed 6x6 input tiles of tile rows ``[ty0, ty0 + nt)`` of samples
    `part` for each of gh x gw blocks of 3x3 taps: (36, gh*gw*C, tiles)."""
    return np.concatenate([_winograd_block_tiles(x, ph - 3 * a, pw - 3 * b, oh, ow, part, ty0, nt)
                           for a in range(gh) for b in range(gw)], axis=1)


def _winograd_block_tiles(x, ph, pw, oh, ow, part, ty0, nt):
    """:func:`_winograd_input_tiles` of one block, padding (ph, pw) (cells outside
    what a direct 3x3 convolution reads are zero): (36, C, tiles)."""
    _, c, h, w = x.shape
    tw = -(-ow // 4)
    t = x.dtype.type
    # a direct 3x3 convolution reads rows [-ph, oh + 2 - ph): the rest is zero
    hr, wr = min(h, oh + 2 - ph), min(w, ow + 2 - pw)
    c0 = max(0, -pw)
    c1 = max(c0, min(wr, 4 * tw + 2 - pw))
    r0 = max(0, 4 * ty0 - ph)
    r1 = max(r0, min(hr, 4 * (ty0 + nt) + 2 - ph))
    m = part.stop - part.start
    tiles = np.zeros((m, c, 4 * nt + 2, 4 * tw + 2), x.dtype)
    tiles[:, :, r0 + ph - 4 * ty0 : r1 + ph - 4 * ty0, c0 + pw : c1 + pw] = \
        x[part, :, r0:r1, c0:c1]
    d = as_strided(tiles, (6, 6, m, c, nt, tw),
                   (tiles.strides[2], tiles.strides[3], *tiles.strides[:2],
                    4 * tiles.strides[2], 4 * tiles.strides[3]), writeable=False)
    e = _winograd_input_1d(d, t)  # each tile column: 6 rows -> 6, then each row
    v = np.stack([s for r in range(6) for s in _winograd_input_1d(e[r], t)])
    return v.transpose(0, 2, 1, 3, 4).reshape(36, c, m * nt * tw)


def _winograd_conv2d(x, u, bias, ph, pw, gw, samples, rows, out, nonfinite):
    f, gh = u.shape[1], u.shape[2] // (x.shape[1] * gw)
    oh, ow = out.shape[2:]
    tw = -(-ow // 4)
    t = x.dtype.type
    for item, (part, ty0, nt) in enumerate(_winograd_blocks(len(x), oh, samples, rows)):
        m = part.stop - part.start
        prod = np.matmul(u, _winograd_input_tiles(x, ph, pw, gh, gw, oh, ow, part, ty0, nt))
        prod = prod.reshape(6, 6, f, m, nt, tw)
        hor = [_winograd_output_1d(prod[r], t) for r in range(6)]  # each row: 6 -> 4
        y = [_winograd_output_1d([hor[r][j] for r in range(6)], t) for j in range(4)]
        # y[j][i]: cell (i, j) of every tile, (F, m, nt, tw)
        y = np.array(y)
        nonfinite[item] = not np.isfinite(y).all()
        y = y.transpose(3, 2, 4, 1, 5, 0).reshape(m, f, 4 * nt, 4 * tw)
        y = y[:, :, : min(oh, 4 * (ty0 + nt)) - 4 * ty0, :ow]
        if bias.size:
            y = y + bias.reshape(f, 1, 1)
        out[part, :, 4 * ty0 : 4 * ty0 + y.shape[2]] = y
    return out


def winograd_conv2d_backward(dout, x, ph, pw, gw, samples, rows, chunk, dweight_parts,
                             dbias_parts):
    """Weight and bias gradients of :func:`winograd_conv2d` by Winograd's F(3x3, 4x4).

    Parameters
    ----------
    dout : ndarray, shape (N, F, oh, ow)
    x : ndarray, shape (N, C, H, W)
        The input of the forward call (padding ph, pw; gw blocks of 3x3
        taps per kernel row; blocks of the batch `samples`, `rows`).
    chunk : int
        The blocks of groups ``[p*chunk, (p+1)*chunk)`` of `samples` samples
        form chunk p.
    dweight_parts : ndarray, shape (number of chunks, F, gh*gw*C*9), filled
        Chunk p's weight gradient: its blocks' products of transformed
        tiles, summed in order, then transformed into 3x3 kernels (the
        blocks of taps in the order of :func:`winograd_conv2d`'s `u`).
    dbias_parts : ndarray, shape (number of chunks, F), filled
        Chunk p's bias gradient: the sums of its blocks' rows of dout.
    """
    with np.errstate(invalid="ignore", over="ignore"):  # the caller checks the results
        return _winograd_conv2d_backward(dout, x, ph, pw, gw, samples, rows, chunk,
                                         dweight_parts, dbias_parts)


def _winograd_conv2d_backward(dout, x, ph, pw, gw, samples, rows, chunk, dweight_parts,
                              dbias_parts):
    c = dweight_parts.shape[2] // 9  # channels of every block
    gh = c // (x.shape[1] * gw)
    f, oh, ow = dout.shape[1:]
    tw = -(-ow // 4)
    t = x.dtype.type
    blocks = list(_winograd_blocks(len(x), oh, samples, rows))
    per_chunk = len(blocks) // -(-len(x) // samples) * chunk
    for p in range(len(dweight_parts)):
        sums, biases = None, None
        for part, ty0, nt in blocks[p * per_chunk : (p + 1) * per_chunk]:
            m = part.stop - part.start
            planes = dout[part, :, 4 * ty0 : 4 * (ty0 + nt)]
            g = np.zeros((m, f, 4 * nt, 4 * tw), x.dtype)
            g[:, :, : planes.shape[2], :ow] = planes
            # (4 rows, 4 columns, m, F, nt, tw) tiles: each column 4 -> 6, then each row
            e = _winograd_dout_1d(g.reshape(m, f, nt, 4, tw, 4).transpose(3, 5, 0, 1, 2, 4), t)
            d = np.stack([s for r in range(6) for s in _winograd_dout_1d(e[r], t)])
            d = d.transpose(0, 2, 1, 3, 4).reshape(36, f, m * nt * tw)
            v = _winograd_input_tiles(x, ph, pw, gh, gw, oh, ow, part, ty0, nt)
            prod = np.matmul(d, v.transpose(0, 2, 1))
            sums = prod if sums is None else sums + prod
            planes = planes.reshape(m, f, -1)
            ones = np.ones(planes.shape[2], x.dtype)
            for s in range(m):
                b = planes[s] @ ones
                biases = b if biases is None else biases + b
        sums = sums.reshape(6, 6, f, c)
        hor = [_winograd_output_1d(sums[r], t, 3) for r in range(6)]  # each row: 6 -> 3
        taps = [_winograd_output_1d([hor[r][j] for r in range(6)], t, 3) for j in range(3)]
        # taps[j][i]: tap (i, j) of every kernel, (F, C)
        dweight_parts[p] = np.array(taps).transpose(2, 3, 1, 0).reshape(f, c * 9)
        dbias_parts[p] = biases
    return dweight_parts


# ---------------------------------------------------------------------------
# Batch normalisation of (N, C, L) arrays (L = H*W, or 1 for (N, C)).
# Per-channel statistics and sums are float64 whatever the data's dtype; the
# element-wise results are computed in float64 and rounded once.


def batch_norm_stats(x, mean, var):
    """Per-channel mean and biased variance over N and L, by two passes.

    Parameters
    ----------
    x : ndarray, shape (N, C, L), N*L >= 1
    mean, var : ndarray of float64, shape (C,)
        Filled with ``mean(x)`` and ``mean((x - mean)**2)`` per channel.

    The compiled kernel sums in another order (tiles of shifted values):
    the two agree to rounding, not bitwise.
    """
    np.mean(x, axis=(0, 2), dtype=np.float64, out=mean)
    centered = x - mean[:, None]
    np.mean(centered * centered, axis=(0, 2), out=var)
    return mean, var


def batch_norm_elemt(x, mean, inv_std, weight, bias, relu, out):
    """``out = (x - mean) * (weight * inv_std) + bias`` per channel.

    Parameters
    ----------
    x : ndarray, shape (N, C, L)
    mean, inv_std : ndarray of float64, shape (C,)
    weight, bias : ndarray, shape (C,), dtype of `x`
    relu : bool
        Whether a ReLU is fused: ``out = relu(...)`` (as :func:`relu`).
    out : ndarray, shape (N, C, L), dtype of `x`
    """
    scale = weight * inv_std
    out[...] = (x - mean[:, None]) * scale[:, None] + bias[:, None]
    if relu:
        out[out <= 0] = 0  # as the ReLU kernel: NaN stays NaN, -0.0 becomes 0.0
    return out


def _through_relu(dout, x, mean, inv_std, weight, bias, relu):
    """`dout`, zeroed where a fused ReLU's input (the forward's normalised
    value, recomputed) was not positive if `relu`."""
    if not relu:
        return dout
    y = batch_norm_elemt(x, mean, inv_std, weight, bias, False, np.empty_like(x))
    return np.where(y > 0, dout, 0)


def batch_norm_backward_reduce(dout, x, mean, inv_std, weight, bias, relu, sum_dout, sum_dout_xc):
    """Per-channel ``sum(dout)`` and ``sum(dout * (x - mean))`` over N and L.

    Parameters
    ----------
    dout, x : ndarray, shape (N, C, L), one dtype
    mean, inv_std : ndarray of float64, shape (C,)
    weight, bias : ndarray, shape (C,), dtype of `x`
    relu : bool
        The forward's (:func:`batch_norm_elemt`): dout is then zeroed where
        its normalised value was not positive (inv_std, weight and bias
        matter only then).
    sum_dout, sum_dout_xc : ndarray of float64, shape (C,)
        Filled with the sums (agreeing with the compiled kernel's to rounding).
    """
    dout = _through_relu(dout, x, mean, inv_std, weight, bias, relu)
    np.sum(dout, axis=(0, 2), dtype=np.float64, out=sum_dout)
    np.sum(dout * (x - mean[:, None]), axis=(0, 2), out=sum_dout_xc)
    return sum_dout, sum_dout_xc


def batch_norm_backward_elemt(dout, x, mean, inv_std, weight, bias, relu, sum_dout, sum_dout_xc,
                              training, out):
    """The input gradient of batch normalisation.

    Parameters
    ----------
    dout, x : ndarray, shape (N, C, L), one dtype
    mean, inv_std, sum_dout, sum_dout_xc : ndarray of float64, shape (C,)
        The forward's statistics and :func:`batch_norm_backward_reduce`'s sums.
    weight, bias : ndarray, shape (C,), dtype of `x`
    relu : bool
        The forward's: dout is first zeroed as in :func:`batch_norm_backward_reduce`.
    training : bool
        Whether the forward normalised with the batch's statistics (which
        then depend on x) or with fixed running statistics.
    out : ndarray, shape (N, C, L), dtype of `x`
        With M = N*L: ``((dout - sum_dout / M) - (x - mean) * proj) * scale``
        where ``proj = sum_dout_xc / M * inv_std * inv_std`` and
        ``scale = inv_std * weight``; ``dout * scale`` if not `training`.
    """
    dout = _through_relu(dout, x, mean, inv_std, weight, bias, relu)
    count = dout.shape[0] * dout.shape[2]
    scale = (inv_std * weight)[:, None]
    if training:
        mean_dy = (sum_dout / count)[:, None]
        proj = (sum_dout_xc / count * inv_std * inv_std)[:, None]
        out[...] = ((dout - mean_dy) - (x - mean[:, None]) * proj) * scale
    else:
        out[...] = dout * scale
    return out


# ---------------------------------------------------------------------------
# Activations, cell by cell on flat arrays (any shape, flattened). A slope is
# rounded to the arrays' dtype first, as NumPy rounds a Python float.

# Docstring sections (see fastcnn._docstrings) of the activations' arrays.
_OF_INPUT = """
Parameters
----------
x : ndarray, shape (n,)
out : ndarray, shape (n,), dtype of `x`
"""
_OF_OUTPUT = """
Parameters
----------
dout, y : ndarray, shape (n,), one dtype
out : ndarray, shape (n,), dtype of `y`
"""


@fill_doc(arrays=_OF_INPUT)
def relu(x, out):
    """``out = 0 where x <= 0, else x``: NaN stays NaN, -0.0 becomes 0.0.

    {arrays}
    """
    out[...] = np.where(x <= 0, 0, x)
    return out


def relu_backward(dout, x, out):
    """``out = dout where x > 0, else 0`` (0 also where dout is inf or NaN).

    Parameters
    ----------
    dout, x : ndarray, shape (n,), one dtype
        `x` is the forward's input.
    out : ndarray, shape (n,), dtype of `x`
    """
    out[...] = np.where(x > 0, dout, 0)
    return out


def add(a, b, relu_after, out):
    """``out = a + b``, then, if `relu_after`, :func:`relu` of it (a residual
    connection's sum and the ReLU that follows it, in one pass).

    Parameters
    ----------
    a, b : ndarray, shape (n,), one dtype
    relu_after : bool
    out : ndarray, shape (n,), dtype of `a`
    """
    np.add(a, b, out=out)
    return relu(out, out) if relu_after else out


_DRAW_MULTIPLIERS = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9),
                     np.uint64(0x94D049BB133111EB))


def dropout(x, key, threshold, scale, out, mask):
    """``mask = scale where draw(key, i) >= threshold, else 0`` and ``out = x * mask``.

    Cell i's draw is the top 53 bits of the i-th output of SplitMix64
    started at `key`: an integer in ``[0, 2**53)``, so that ``threshold =
    ceil(p * 2**53)`` drops each cell with probability `p`.

    Parameters
    ----------
    x : ndarray, shape (n,)
    key, threshold : int
        In ``[0, 2**64)`` and ``[0, 2**53]``.
    scale : float
        Rounded to the dtype of `x`.
    out, mask : ndarray, shape (n,), dtype of `x`
    """
    gamma, m1, m2 = _DRAW_MULTIPLIERS
    z = np.arange(1, x.size + 1, dtype=np.uint64) * gamma + np.uint64(key)  # wraps mod 2**64
    z = (z ^ (z >> np.uint64(30))) * m1
    z = (z ^ (z >> np.uint64(27))) * m2
    draws = (z ^ (z >> np.uint64(31))) >> np.uint64(11)
    mask[...] = np.where(draws >= np.uint64(threshold), x.dtype.type(scale), 0)
    np.multiply(x, mask, out=out)
    return out, mask


def leaky_relu(x, negative_slope, out):
    """``out = x where x > 0, else x * negative_slope``.

    Parameters
    ----------
    x : ndarray, shape (n,)
    negative_slope : float
    out : ndarray, shape (n,), dtype of `x`
    """
    out[...] = np.where(x > 0, x, x * x.dtype.type(negative_slope))
    return out


def leaky_relu_backward(dout, x, negative_slope, out):
    """``out = dout where x > 0, else dout * negative_slope``.

    Parameters
    ----------
    dout, x : ndarray, shape (n,), one dtype
        `x` is the forward's input.
    negative_slope : float
    out : ndarray, shape (n,), dtype of `x`
    """
    out[...] = np.where(x > 0, dout, dout * x.dtype.type(negative_slope))
    return out


@fill_doc(arrays=_OF_INPUT)
def sigmoid(x, out):
    """``out = 1 / (1 + exp(-x))`` by ``scipy.special.expit`` (never overflows).

    {arrays}
    """
    return expit(x, out=out)


@fill_doc(arrays=_OF_OUTPUT)
def sigmoid_backward(dout, y, out):
    """``out = dout * y * (1 - y)`` for the forward's output `y`.

    {arrays}
    """
    out[...] = dout * y * (1 - y)
    return out


@fill_doc(arrays=_OF_INPUT)
def tanh(x, out):
    """``out = tanh(x)`` (NumPy's; the compiled kernel computes float32 in
    float, csrc/vmath.h, and calls the C library's for float64).

    {arrays}
    """
    return np.tanh(x, out=out)


@fill_doc(arrays=_OF_OUTPUT)
def tanh_backward(dout, y, out):
    """``out = dout * (1 - y * y)`` for the forward's output `y`.

    {arrays}
    """
    out[...] = dout * (1 - y * y)
    return out


def elu(x, alpha, scale, out):
    """``out = scale * (x where x > 0, else alpha * expm1(x))`` (SELU: its constants).

    Parameters
    ----------
    x : ndarray, shape (n,)
    alpha, scale : float
    out : ndarray, shape (n,), dtype of `x`
    """
    t = x.dtype.type
    # expm1 of min(x, 0) (NaN kept): no overflow in the branch not taken
    negative_part = np.where(x > 0, 0, x)
    out[...] = t(scale) * np.where(x > 0, x, t(alpha) * np.expm1(negative_part))
    return out


def elu_backward(dout, x, alpha, scale, out):
    """``out = dout * scale * (1 where x > 0, else alpha * exp(x))``.

    Parameters
    ----------
    dout, x : ndarray, shape (n,), one dtype
        `x` is the forward's input.
    alpha, scale : float
    out : ndarray, shape (n,), dtype of `x`
    """
    t = x.dtype.type
    negative_part = np.where(x > 0, 0, x)
    out[...] = dout * (t(scale) * np.where(x > 0, 1, t(alpha) * np.exp(negative_part)))
    return out


# ---------------------------------------------------------------------------
# Loss


def softmax_cross_entropy(logits, labels, out):
    """Mean cross-entropy of softmax(logits) against labels, and its gradient.

    As :func:`fastcnn.losses.softmax_cross_entropy`: the logits are shifted
    by each row's maximum and exponentiated in their dtype; the row sums,
    their logarithms and the probabilities are float64.

    Parameters
    ----------
    logits : ndarray, shape (N, K), N >= 1
    labels : ndarray of int64, shape (N,), each in ``[0, K)``
    out : ndarray, shape (N, K), dtype of `logits`
        Filled with ``(softmax(logits) - onehot(labels)) / N``.

    Returns
    -------
    loss : float
        The mean over rows, rounded to the dtype of `logits`.
    out : ndarray
        `out`. (The compiled kernel sums in another order and uses the C
        library's exp: both agree to a few units in the last place.)
    """
    n = logits.shape[0]
    rows = np.arange(n)
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    total = exp.sum(axis=1, keepdims=True, dtype=np.float64)
    loss = (np.log(total[:, 0]) - shifted[rows, labels]).sum() / n
    probs = exp / total
    probs[rows, labels] -= 1
    np.divide(probs, n, out=out, casting="same_kind")
    return float(logits.dtype.type(loss)), out


# ---------------------------------------------------------------------------
# Optimizer updates: fastcnn.optim's NumPy code, one parameter at a time, in
# place. Arrays are flat, of one dtype; a state array that the options
# leave unused may be empty. Scalars are rounded to the dtype first (as
# NumPy does with Python floats, which the optimizers pass).


def _common_terms(param, grad, weight_decay, maximize):
    """The gradient after ``fastcnn.optim.Optimizer.step``'s common terms."""
    if maximize:
        grad = -grad
    if weight_decay != 0:
        grad = grad + param.dtype.type(weight_decay) * param
    return grad


def sgd_update(param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, nesterov,
               maximize, first_step):
    """``fastcnn.optim.SGD``'s step; `first_step` starts the momentum buffer from the gradient.

    Parameters
    ----------
    param, grad, momentum_buffer : ndarray, shape (n,), one dtype
        `param` and the buffer (unused without momentum) are updated in place.
    lr, momentum, dampening, weight_decay : float
    nesterov, maximize, first_step : bool
    """
    t = param.dtype.type
    grad = _common_terms(param, grad, weight_decay, maximize)
    if momentum != 0:
        if first_step:
            momentum_buffer[...] = grad
        else:
            momentum_buffer *= t(momentum)
            momentum_buffer += t(1 - dampening) * grad
        grad = grad + t(momentum) * momentum_buffer if nesterov else momentum_buffer
    param -= t(lr) * grad
    return param


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, eps,
                weight_decay, step_size, bias_correction2_sqrt, amsgrad, maximize):
    """``fastcnn.optim.Adam``'s step, given its step size and bias correction.

    Parameters
    ----------
    param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq : ndarray, shape (n,), one dtype
        Updated in place but `grad`; `max_exp_avg_sq` only with `amsgrad`.
    beta1, beta2, eps, weight_decay : float
    step_size, bias_correction2_sqrt : float
        ``lr / (1 - beta1**t)`` and ``sqrt(1 - beta2**t)`` at step t.
    amsgrad, maximize : bool
    """
    t = param.dtype.type
    grad = _common_terms(param, grad, weight_decay, maximize)
    exp_avg += t(1 - beta1) * (grad - exp_avg)
    exp_avg_sq *= t(beta2)
    exp_avg_sq += t(1 - beta2) * grad * grad
    if amsgrad:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        second_moment = max_exp_avg_sq
    else:
        second_moment = exp_avg_sq
    denom = np.sqrt(second_moment) / t(bias_correction2_sqrt) + t(eps)
    param -= t(step_size) * (exp_avg / denom)
    return param


def adagrad_update(param, grad, state_sum, clr, eps, weight_decay, maximize):
    """``fastcnn.optim.Adagrad``'s step with the decayed learning rate `clr`.

    Parameters
    ----------
    param, grad, state_sum : ndarray, shape (n,), one dtype
        `param` and the sum of squared gradients are updated in place.
    clr, eps, weight_decay : float
    maximize : bool
    """
    t = param.dtype.type
    grad = _common_terms(param, grad, weight_decay, maximize)
    state_sum += grad * grad
    std = np.sqrt(state_sum) + t(eps)
    param -= t(clr) * (grad / std)
    return param


def rmsprop_update(param, grad, square_avg, grad_avg, momentum_buffer, lr, alpha, eps,
                   weight_decay, momentum, centered, maximize):
    """``fastcnn.optim.RMSprop``'s step.

    Parameters
    ----------
    param, grad, square_avg, grad_avg, momentum_buffer : ndarray, shape (n,), one dtype
        Updated in place but `grad`; `grad_avg` only if `centered`, the
        buffer only with momentum > 0.
    lr, alpha, eps, weight_decay, momentum : float
    centered, maximize : bool
    """
    t = param.dtype.type
    grad = _common_terms(param, grad, weight_decay, maximize)
    square_avg *= t(alpha)
    square_avg += t(1 - alpha) * grad * grad
    if centered:
        grad_avg += t(1 - alpha) * (grad - grad_avg)
        avg = np.sqrt(square_avg - grad_avg * grad_avg)
    else:
        avg = np.sqrt(square_avg)
    avg += t(eps)
    if momentum > 0:
        momentum_buffer *= t(momentum)
        momentum_buffer += grad / avg
        param -= t(lr) * momentum_buffer
    else:
        param -= t(lr) * (grad / avg)
    return param


def adadelta_update(param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay, maximize):
    """``fastcnn.optim.Adadelta``'s step.

    Parameters
    ----------
    param, grad, square_avg, acc_delta : ndarray, shape (n,), one dtype
        Updated in place but `grad`.
    lr, rho, eps, weight_decay : float
    maximize : bool
    """
    t = param.dtype.type
    grad = _common_terms(param, grad, weight_decay, maximize)
    square_avg *= t(rho)
    square_avg += t(1 - rho) * grad * grad
    std = np.sqrt(square_avg + t(eps))
    delta = np.sqrt(acc_delta + t(eps)) / std * grad
    acc_delta *= t(rho)
    acc_delta += t(1 - rho) * delta * delta
    param -= t(lr) * delta
    return param


# Resampling. interpolate's twins take the per-axis tables that
# fastcnn.functional computes: the source row (column) of every output row
# (column) for nearest; for bilinear, ``(2, oh)`` neighbours and their
# weights, output row i reading ``rw[0, i] * row r[0, i] + rw[1, i] * row
# r[1, i]`` (likewise along W). The backward twins sum along H, then along
# W, each cell's terms in the order of the outputs they come from (tap 0
# before tap 1), as the compiled kernels.


def _scatter_along(values, index, weights, size, axis):
    """Adjoint of reading `values` through `index` along `axis`: ``(taps, L)``
    tables of targets in ``[0, size)`` (and `weights`, or None) for the ``L``
    cells of `values` along `axis`. Each target's terms are added in the
    order (source, tap)."""
    taps, length = index.shape
    shape = list(values.shape)
    shape[axis] = size
    out = np.zeros(shape, dtype=values.dtype)
    sources = np.repeat(np.arange(length), taps)
    terms = np.take(values, sources, axis=axis)
    if weights is not None:
        terms *= weights.T.reshape((-1,) + (1,) * (values.ndim - 1 - axis))
    # np.add.at adds in index order: for each target, its terms in order.
    np.add.at(out, (slice(None),) * axis + (index.T.reshape(-1),), terms)
    return out


def interpolate_nearest(x, rows, cols, out):
    """Nearest-neighbour resampling: ``out[..., i, j] = x[..., rows[i], cols[j]]``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    rows, cols : ndarray of int64, shapes (oh,) and (ow,)
        The source row of every output row, in ``[0, H)``; likewise columns.
    out : ndarray, shape (N, C, oh, ow), same dtype as `x`
    """
    out[...] = np.take(np.take(x, rows, axis=2), cols, axis=3)
    return out


def interpolate_nearest_backward(dout, rows, cols, out):
    """Gradient of :func:`interpolate_nearest`: each output's gradient summed
    into its source.

    Parameters
    ----------
    dout : ndarray, shape (N, C, oh, ow)
    rows, cols : ndarray of int64, shapes (oh,) and (ow,)
        As for :func:`interpolate_nearest`.
    out : ndarray, shape (N, C, H, W), same dtype as `dout`
    """
    h, w = out.shape[2:]
    by_rows = _scatter_along(dout, rows[None], None, h, 2)
    out[...] = _scatter_along(by_rows, cols[None], None, w, 3)
    return out


def interpolate_bilinear(x, rows, row_weights, cols, col_weights, out):
    """Bilinear resampling: ``rw0 * (cw0 * x00 + cw1 * x01) + rw1 * (cw0 * x10 + cw1 * x11)``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    rows : ndarray of int64, shape (2, oh)
        The two source rows of every output row, in ``[0, H)``.
    row_weights : ndarray, shape (2, oh), same dtype as `x`
        Their weights.
    cols, col_weights : ndarray, shapes (2, ow)
        The same along W.
    out : ndarray, shape (N, C, oh, ow), same dtype as `x`
    """
    # Along W first, every input row, then pairs of those rows along H.
    t = col_weights[0] * np.take(x, cols[0], axis=3) + col_weights[1] * np.take(x, cols[1], axis=3)
    out[...] = (row_weights[0][:, None] * np.take(t, rows[0], axis=2)
                + row_weights[1][:, None] * np.take(t, rows[1], axis=2))
    return out


def interpolate_bilinear_backward(dout, rows, row_weights, cols, col_weights, out):
    """Gradient of :func:`interpolate_bilinear` with respect to its input.

    Parameters
    ----------
    dout : ndarray, shape (N, C, oh, ow)
    rows, row_weights, cols, col_weights
        As for :func:`interpolate_bilinear`.
    out : ndarray, shape (N, C, H, W), same dtype as `dout`
    """
    h, w = out.shape[2:]
    by_rows = _scatter_along(dout, rows, row_weights, h, 2)
    out[...] = _scatter_along(by_rows, cols, col_weights, w, 3)
    return out


def _check_plane_indices(indices, plane):
    """The indices of max_pool2d_backward and max_unpool2d are checked by
    their kernels (the compiled ones as they read them), with the same error."""
    # Seen as unsigned, a negative index is huge: one pass checks both ends.
    outside = np.count_nonzero(indices.view(np.uint64) >= plane)
    if outside:
        raise ValueError(f"indices must lie in [0, {plane}), got {outside} outside")


def max_unpool2d(x, indices, out):
    """Scatter each value to its index in its (n, c) plane, zeros elsewhere.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    indices : ndarray of int64, shape (N, C, H, W)
        Each in ``[0, oh*ow)``, else ValueError.
    out : ndarray, shape (N, C, oh, ow), same dtype as `x`
        Where indices repeat in a plane, the value last in the input's
        row-major order stays (as PyTorch's loop).
    """
    n, c, oh, ow = out.shape
    _check_plane_indices(indices, oh * ow)
    planes = np.arange(n * c)[:, None] * (oh * ow)
    targets = (indices.reshape(n * c, -1) + planes).ravel()
    # each target's last source: its first one in the reversed order
    last = targets.size - 1 - np.unique(targets[::-1], return_index=True)[1]
    flat = out.reshape(-1)
    flat.fill(0)
    flat[targets[last]] = x.reshape(-1)[last]
    return out


def max_unpool2d_backward(dout, indices, out):
    """Gradient of :func:`max_unpool2d`: `dout` read at the indices.

    Parameters
    ----------
    dout : ndarray, shape (N, C, oh, ow)
    indices
        As for :func:`max_unpool2d`.
    out : ndarray, shape (N, C, H, W), same dtype as `dout`
    """
    n, c = out.shape[:2]
    _check_plane_indices(indices, dout.shape[2] * dout.shape[3])
    gathered = np.take_along_axis(dout.reshape(n, c, -1), indices.reshape(n, c, -1), axis=2)
    out[...] = gathered.reshape(out.shape)
    return out

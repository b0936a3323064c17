"""The NumPy kernel set: the oracle of the compiled kernels and their fallback.

Each function has the same name, arguments and results as its compiled twin
in ``fastcnn._kernels`` (see :mod:`fastcnn._backend`). Inputs are already
validated by :mod:`fastcnn._validation`: C-contiguous float32/float64 arrays,
int64 indices and a consistent geometry. Every function fills the `out`
array it is given and returns it.

The code favours clarity over speed, but never loops over pixels in Python:
it loops over the ``kh * kw`` kernel offsets at most. Where floating-point
sums are involved, the additions happen in the same order as in the compiled
kernels, so that both sets give bitwise-identical results.

Geometry arguments: kernel ``(kh, kw)``, stride ``(sh, sw)``, top/left
padding ``(ph, pw)``, dilation ``(dh, dw)`` and output size ``(oh, ow)``.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = [
    "im2col",
    "col2im",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
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


def max_pool2d(x, kh, kw, sh, sw, ph, pw, dh, dw, out, indices):
    """Max pooling with argmax, as ``F.max_pool2d(..., return_indices=True)``.

    Each window is scanned row by row keeping ``v > best or isnan(v)``: ties
    go to the first maximum; a NaN wins and the last NaN's index is kept.
    Padding cells are skipped.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    out : ndarray, shape (N, C, oh, ow), same dtype as `x`
    indices : ndarray of int64, shape (N, C, oh, ow)
        Flat index ``ih * W + iw`` of each maximum inside its (n, c) plane.
    """
    _, _, h, w = x.shape
    oh, ow = out.shape[2:]
    geometry = (kh, kw, sh, sw, dh, dw, oh, ow)
    vals = _windows(_pad_to_cover(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, -np.inf), *geometry)
    inside = np.ones((1, 1, h, w), dtype=bool)
    valid = _windows(_pad_to_cover(inside, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, False), *geometry)
    vals = vals.reshape(vals.shape[:4] + (kh * kw,))
    valid = valid.reshape(valid.shape[:4] + (kh * kw,))

    is_nan = np.isnan(vals)
    has_nan = is_nan.any(axis=-1)
    last_nan = kh * kw - 1 - np.argmax(is_nan[..., ::-1], axis=-1)
    best = vals.max(axis=-1)
    first_best = np.argmax((vals == best[..., None]) & valid, axis=-1)
    pos = np.where(has_nan, last_nan, first_best)

    ih = np.arange(oh)[:, None] * sh - ph + (pos // kw) * dh
    iw = np.arange(ow)[None, :] * sw - pw + (pos % kw) * dw
    # The chosen cell's own value: with ties between -0.0 and +0.0, `best`
    # may carry the other zero's sign.
    out[...] = np.take_along_axis(vals, pos[..., None], axis=-1)[..., 0]
    indices[...] = ih * w + iw
    return out, indices


def max_pool2d_backward(dout, indices, out):
    """Route each output gradient to the one input its max came from.

    Parameters
    ----------
    dout : ndarray, shape (N, C, oh, ow)
    indices : ndarray of int64, shape (N, C, oh, ow), each in ``[0, H*W)``
    out : ndarray, shape (N, C, H, W), same dtype as `dout`
        Overlapping windows that chose the same input add up.
    """
    n, c, h, w = out.shape
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
    _, _, h, w = x.shape
    oh, ow = out.shape[2:]
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
    n, c, h, w = out.shape
    oh, ow = dout.shape[2:]
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

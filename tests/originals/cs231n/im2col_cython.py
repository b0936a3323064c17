"""NumPy stand-ins for the course's ``im2col_cython.pyx``.

Same signatures, layouts, flooring and dtypes (float32/float64 only), and
the same bug: the row of cell (ii, jj) of channel c is
``c*fw*fh + ii*field_height + jj``, so for non-square fields rows collide
(the last write wins, in the Cython loops' order c, ii, jj). The Cython
loops run over every pixel; these loop over (c, ii, jj) with array slices.
"""

import numpy as np


def _check_float(a):
    if a.dtype not in (np.float32, np.float64):
        raise TypeError("No matching signature found")


def _row(c, ii, jj, field_height, field_width):
    return c * field_width * field_height + ii * field_height + jj


def _taps(start, count, stride):
    """The cells a kernel offset reads along one axis: a strided slice."""
    return slice(start, start + stride * (count - 1) + 1, stride)


def im2col_cython(x, field_height, field_width, padding, stride):
    _check_float(x)
    N, C, H, W = x.shape
    HH = (H + 2 * padding - field_height) // stride + 1
    WW = (W + 2 * padding - field_width) // stride + 1
    p = padding
    x_padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), mode="constant")
    cols = np.zeros((C * field_height * field_width, HH, WW, N), dtype=x.dtype)
    for c in range(C):
        for ii in range(field_height):
            for jj in range(field_width):
                window = x_padded[:, c, _taps(ii, HH, stride), _taps(jj, WW, stride)]
                cols[_row(c, ii, jj, field_height, field_width)] = window.transpose(1, 2, 0)
    return cols.reshape(C * field_height * field_width, HH * WW * N)


def col2im_cython(cols, N, C, H, W, field_height, field_width, padding, stride):
    _check_float(cols)
    HH = (H + 2 * padding - field_height) // stride + 1
    WW = (W + 2 * padding - field_width) // stride + 1
    x_padded = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=cols.dtype)
    by_position = cols.reshape(-1, HH, WW, N)
    for c in range(C):
        for ii in range(field_height):
            for jj in range(field_width):
                row = by_position[_row(c, ii, jj, field_height, field_width)].transpose(2, 0, 1)
                x_padded[:, c, _taps(ii, HH, stride), _taps(jj, WW, stride)] += row
    if padding > 0:
        return x_padded[:, :, padding:-padding, padding:-padding]
    return x_padded


def col2im_6d_cython(cols, N, C, H, W, HH, WW, pad, stride):
    _check_float(cols)
    out_h = (H + 2 * pad - HH) // stride + 1
    out_w = (W + 2 * pad - WW) // stride + 1
    x_padded = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=cols.dtype)
    for hh in range(HH):
        for ww in range(WW):
            x_padded[:, :, _taps(hh, out_h, stride), _taps(ww, out_w, stride)] += (
                cols[:, hh, ww].transpose(1, 0, 2, 3))
    if pad > 0:
        return x_padded[:, :, pad:-pad, pad:-pad]
    return x_padded

"""What the drop-ins share: NumPy's dtype promotion, the column layout of the
CS231n lineage, and the ``im2col.py`` functions CS231n and hipsternet both ship.

The code the drop-ins replace does its arithmetic with plain NumPy, so mixed
float32/float64/integer operands promote as ``np.result_type`` says. fastcnn's
core API refuses mixed dtypes; the helpers here convert the operands first and
give every result the dtype the original's NumPy expression would have had
(an integer result becomes float64: the kernels are floating-point only).

Column layout of all three projects: for images ``(N, C, H, W)``, a
``fh x fw`` field, stride ``s`` and output ``oh x ow`` (``L = oh*ow``),
``cols`` has shape ``(C*fh*fw, L*N)`` and
``cols[(c*fh + a)*fw + b, (y*ow + x)*N + n] == padded[n, c, y*s + a, x*s + b]``:
rows as fastcnn's, columns position-major and batch-minor, where
:func:`fastcnn.im2col` gives ``(N, C*fh*fw, L)``. Padding here is
``((top, bottom), (left, right))``.
"""

from __future__ import annotations

import numpy as np

from .. import _validation as v
from .. import functional as F

__all__ = [
    "float_dtype",
    "promote",
    "conv2d",
    "conv2d_backward",
    "symmetric",
    "zero_pad",
    "split_padding",
    "window_indices",
    "unfold",
    "fold",
    "get_im2col_indices",
    "im2col_indices",
    "col2im_indices",
]


def float_dtype(**arrays) -> np.dtype:
    """The dtype NumPy arithmetic on `arrays` gives, as float32 or float64.

    ``np.result_type`` of the arrays' dtypes (``None`` entries ignored); an
    integer or bool result becomes float64.

    Raises
    ------
    TypeError
        If the result is another kind (float16, complex, object...).
    """
    dtypes = {name: np.asarray(a).dtype for name, a in arrays.items() if a is not None}
    result = np.result_type(*dtypes.values())
    if result.kind in "biu":
        return np.dtype(np.float64)
    if result.kind == "f" and result.itemsize in (4, 8):
        return np.dtype(result.type)  # native byte order
    got = ", ".join(f"{name}.dtype={dtype}" for name, dtype in dtypes.items())
    raise TypeError(
        f"{' and '.join(dtypes)} must be float32, float64 or integer arrays "
        f"(promoting to {result}), got {got}"
    )


def promote(**arrays) -> tuple:
    """`arrays` (``None`` passes through) converted to their common :func:`float_dtype`."""
    dtype = float_dtype(**arrays)
    return tuple(None if a is None else np.asarray(a, dtype=dtype) for a in arrays.values())


def conv2d(x, weight, bias, stride, padding) -> np.ndarray:
    """:func:`fastcnn.conv2d` of operands of any float/integer dtypes.

    The result has the dtype of ``weight @ columns(x) + bias`` in NumPy.
    """
    x, weight, bias = promote(x=x, weight=weight, bias=bias)
    return F.conv2d(x, weight, bias, stride=stride, padding=padding)


def conv2d_backward(dout, x, weight, stride, padding):
    """:func:`fastcnn.conv2d_backward` with the originals' result dtypes.

    The originals compute ``dx`` from ``weight.T @ dout``, ``dweight`` from
    ``dout @ columns(x).T`` and ``dbias`` as ``dout.sum(...)``: so ``dx`` has
    the dtype of `weight` and `dout` together, ``dweight`` of `dout` and `x`,
    ``dbias`` of `dout`. The gradients are computed in the dtype of all three
    and rounded to those.
    """
    dtypes = (
        float_dtype(weight=weight, dout=dout),
        float_dtype(dout=dout, x=x),
        float_dtype(dout=dout),
    )
    dout, x, weight = promote(dout=dout, x=x, weight=weight)
    grads = F.conv2d_backward(dout, x, weight, stride=stride, padding=padding)
    return tuple(g.astype(t, copy=False) for g, t in zip(grads, dtypes))


def symmetric(padding: int):
    """``padding`` on all four sides, as ``((top, bottom), (left, right))``."""
    return ((padding, padding), (padding, padding))


def zero_pad(x: np.ndarray, pads) -> np.ndarray:
    """`x` with ``pads`` zero rows/columns added (`x` itself if there are none)."""
    (top, bottom), (left, right) = pads
    if top == bottom == left == right == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


def split_padding(x: np.ndarray, pads):
    """Turn ``pads`` into ``(x', (top, left))`` that fastcnn's symmetric padding takes.

    fastcnn pads top/left and bottom/right alike; an extra bottom row or
    right column (ML-From-Scratch's "same" for even fields) is added to `x`
    itself. The images of a result then run from ``[:H, :W]``.
    """
    (top, bottom), (left, right) = pads
    if bottom < top or right < left:
        raise ValueError(
            f"padding must have bottom >= top and right >= left, got {pads!r}"
        )
    return zero_pad(x, ((0, bottom - top), (0, right - left))), (top, left)


def window_indices(channels: int, field, stride: int, out_size):
    """``(k, i, j)`` with ``cols = padded[:, k, i, j]`` of shape ``(N, C*fh*fw, L)``.

    ``k`` (shape ``(C*fh*fw, 1)``) is each row's channel, ``i`` and ``j``
    (shape ``(C*fh*fw, L)``) the padded-image row and column it reads at each
    output position. int64.
    """
    fh, fw = field
    oh, ow = out_size
    c, a, b = np.unravel_index(np.arange(channels * fh * fw, dtype=np.int64), (channels, fh, fw))
    y, x = np.unravel_index(np.arange(oh * ow, dtype=np.int64), (oh, ow))
    return c[:, None], a[:, None] + stride * y, b[:, None] + stride * x


# With a horizontal stride of 1 the batch folds into the image width: the N
# images side by side, pixel (y, x) of image n at column x*N + n, form one
# image whose im2col with dilation (1, N) and left padding left*N IS the
# (C*fh*fw, L*N) layout, columns (y*ow + x)*N + n. The columns are written
# once, where unfolding batch-major and then moving N innermost copies them
# twice (and col2im likewise reads them once instead of twice).


def unfold(x: np.ndarray, field, stride, pads) -> np.ndarray:
    """im2col of float `x` ``(N, C, H, W)`` into the ``(C*fh*fw, L*N)`` layout.

    Returns a fresh C-contiguous array of `x`'s dtype.
    """
    x, (top, left) = split_padding(x, pads)
    n, c, h, w = x.shape
    sh, sw = v.pair(stride, "stride")
    if sw == 1 and n:
        wide = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).reshape(1, c, h, w * n)
        cols = F.im2col(wide, field, stride=(sh, 1), padding=(top, left * n), dilation=(1, n))
        return cols.reshape(cols.shape[1], -1)
    cols = F.im2col(x, field, stride=(sh, sw), padding=(top, left))
    _, rows, length = cols.shape
    return np.ascontiguousarray(cols.transpose(1, 2, 0)).reshape(rows, length * n)


def fold(cols, x_shape, field, stride, pads, name: str = "cols") -> np.ndarray:
    """col2im from the ``(C*fh*fw, L*N)`` layout: the adjoint of :func:`unfold`.

    `cols` may have any shape of that size (the originals reshape it); its
    dtype is kept (integers become float64). Returns ``(N, C, H, W)``.
    """
    (cols,) = promote(**{name: cols})
    n, c, h, w = v.input_shape_4d(x_shape, "x_shape")
    sh, sw = v.pair(stride, "stride")
    (top, bottom), (left, right) = pads
    # fastcnn pads both sides alike: the bottom/right surplus becomes image rows
    # that are dropped afterwards.
    size = (h + bottom - top, w + right - left)
    win = v.conv_window((n, c) + size, field, stride, (top, left), 1)
    rows, length = c * win.kh * win.kw, win.oh * win.ow
    if cols.size != rows * length * n:
        raise ValueError(
            f"{name} must hold C*fh*fw x L*N = {rows} x {length * n} values for x_shape="
            f"{(n, c, h, w)} (L = {win.oh}*{win.ow} windows), got shape {cols.shape}"
        )
    if sw == 1 and n:  # the batch folded into the width, as in unfold
        wide = F.col2im(cols.reshape(1, rows, length * n), (size[0], size[1] * n), field,
                        stride=(sh, 1), padding=(top, left * n), dilation=(1, n))
        images = wide.reshape(c, size[0], size[1], n)[:, :h, :w]
        return np.ascontiguousarray(images.transpose(3, 0, 1, 2))
    batch_major = cols.reshape(rows, length, n).transpose(2, 0, 1)
    images = F.col2im(batch_major, size, field, stride=(sh, sw), padding=(top, left))
    return images if size == (h, w) else images[:, :, :h, :w]


# CS231n's im2col.py and hipsternet's im2col.py (a copy of it): one
# implementation for both drop-ins.


def _tiled_extent(size: int, field: int, padding: int, stride: int, axis: str) -> int:
    span = size + 2 * padding - field
    if span < 0 or span % stride:
        raise ValueError(
            f"the {axis} windows must tile the padded input: ({axis} + 2*padding - field) % stride "
            f"== 0 with {axis}={size}, padding={padding}, field={field}, stride={stride}"
        )
    return span // stride + 1


def _im2col_geometry(x_shape, field_height, field_width, padding, stride):
    """Validated ``(N, C, H, W), (oh, ow), padding, stride`` of the im2col.py functions."""
    shape = v.input_shape_4d(x_shape, "x_shape")
    fh = v.positive_int(field_height, "field_height")
    fw = v.positive_int(field_width, "field_width")
    padding = v.integer(padding, "padding")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")
    stride = v.positive_int(stride, "stride")
    out = (
        _tiled_extent(shape[2], fh, padding, stride, "H"),
        _tiled_extent(shape[3], fw, padding, stride, "W"),
    )
    return shape, (fh, fw), out, padding, stride


def get_im2col_indices(x_shape, field_height, field_width, padding=1, stride=1):
    """Fancy indices of every window: ``x_padded[:, k, i, j]`` is the im2col.

    Parameters
    ----------
    x_shape : tuple of 4 ints
        ``(N, C, H, W)`` of the unpadded images.
    field_height, field_width : int
    padding : int
        Zero padding on all four sides.
    stride : int
        The windows must tile the padded input exactly.

    Returns
    -------
    k : ndarray of int64, shape (C*fh*fw, 1)
        Channel of each row.
    i, j : ndarray of int64, shape (C*fh*fw, oh*ow)
        Row and column, in the padded image, of each row at each output
        position (row-major over positions).

    Notes
    -----
    Where the three im2col.py functions differ from the originals: the
    tiling check compares W with `field_width` (the originals' assert
    compares it with `field_height`, rejecting valid and accepting invalid
    non-square fields) and raises ValueError rather than AssertionError;
    CS231n's copy computes float output sizes and fails on Python 3
    (``np.arange`` of a float), these compute integer sizes. Integer inputs
    give float64 results where the originals keep the integer dtype.
    """
    shape, field, out, _, stride = _im2col_geometry(
        x_shape, field_height, field_width, padding, stride
    )
    return window_indices(shape[1], field, stride, out)


def im2col_indices(x, field_height, field_width, padding=1, stride=1):
    """Every window of `x` as a column, in the ``(C*fh*fw, L*N)`` layout.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    field_height, field_width, padding, stride : int
        As :func:`get_im2col_indices`.

    Returns
    -------
    cols : ndarray, shape (C*fh*fw, oh*ow*N), dtype of `x`
        Column ``(y*ow + x)*N + n`` is the window at output position (y, x)
        of image n.

    See Also
    --------
    get_im2col_indices : where this differs from the originals.
    """
    (x,) = promote(x=x)
    v.check_nchw(x, "x")
    _, field, _, padding, stride = _im2col_geometry(
        x.shape, field_height, field_width, padding, stride
    )
    return unfold(x, field, stride, symmetric(padding))


def col2im_indices(cols, x_shape, field_height=3, field_width=3, padding=1, stride=1):
    """Sum columns back into images: the adjoint of :func:`im2col_indices`.

    Parameters
    ----------
    cols : array_like of C*fh*fw * oh*ow*N values
        In the layout of :func:`im2col_indices` (any shape of that size).
    x_shape : tuple of 4 ints
        ``(N, C, H, W)`` of the images.
    field_height, field_width, padding, stride : int
        As :func:`get_im2col_indices`.

    Returns
    -------
    x : ndarray, shape `x_shape`, dtype of `cols`
        Overlapping windows add up.

    See Also
    --------
    get_im2col_indices : where this differs from the originals.
    """
    shape, field, _, padding, stride = _im2col_geometry(
        x_shape, field_height, field_width, padding, stride
    )
    return fold(cols, shape, field, stride, symmetric(padding))



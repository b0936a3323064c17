"""Stateless CNN operations with the semantics of ``torch.nn.functional``.

Every function validates its arguments once (:mod:`fastcnn._validation`),
allocates its result and hands the loops to the active kernel set
(:mod:`fastcnn._backend`). Convolutions are im2col + BLAS GEMMs, sample by
sample, in compiled code (see :func:`conv2d`). Arrays are NCHW,
float32 or float64; `kernel_size`, `stride`, `padding` and `dilation` take an
int or an ``(h, w)`` pair.
"""

from __future__ import annotations

import numpy as np

from . import _backend
from . import _validation as v
from ._backend import in_pieces, kernel

__all__ = [
    "im2col",
    "col2im",
    "conv2d",
    "conv2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
]


# Every op allocates its result and hands it to a kernel, through
# _backend.in_pieces (a long call runs in pieces, so that Ctrl-C works). An
# empty batch never reaches a kernel: its result is already complete, and
# the twin's broadcasts over (oh, ow) could be huge even when there is no
# data at all.


def _plane_taps(win: v.Window, h: int, w: int) -> int:
    """Cells that a kernel of window `win` touches in one (h, w) plane (for in_pieces)."""
    return win.kh * win.kw * win.oh * win.ow + h * w


def _rows(index, k: int):
    """An in_pieces index of (n, c) planes as an index of a (N, C*k, L) array's rows."""
    if len(index) == 1:
        return index
    n, c = index
    return n, slice(c.start * k, c.stop * k)


def _samples(index, chunk: int) -> slice:
    """The samples of an in_pieces index of chunks of `chunk` samples."""
    return slice(index[0].start * chunk, index[0].stop * chunk)


def _unfold(x: np.ndarray, win: v.Window) -> np.ndarray:
    n, c, h, w = x.shape
    k = win.kh * win.kw
    out = np.empty((n, c * k, win.oh * win.ow), dtype=x.dtype)
    if n:
        in_pieces("im2col", (n, c), (x, *win, out), lambda i: (x[i], *win, out[_rows(i, k)]),
                  taps=_plane_taps(win, h, w))
    return out


def _fold(cols: np.ndarray, shape, win: v.Window) -> np.ndarray:
    out = np.empty(shape, dtype=cols.dtype)
    if shape[0]:
        k = win.kh * win.kw
        in_pieces("col2im", shape[:2], (cols, *win, out),
                  lambda i: (cols[_rows(i, k)], *win, out[i]), taps=_plane_taps(win, *shape[2:]))
    return out


def im2col(x, kernel_size, stride=1, padding=0, dilation=1) -> np.ndarray:
    """Copy every sliding window of `x` into a column, as ``F.unfold``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W), float32 or float64
    kernel_size, stride, dilation : int or (int, int)
    padding : int or (int, int)
        Zero padding on each side.

    Returns
    -------
    cols : ndarray, shape (N, C*kh*kw, oh*ow), dtype of `x`
        Row ``c*kh*kw + i*kw + j`` holds kernel offset (i, j) of channel c;
        columns run row-major over the output positions, with
        ``oh = (H + 2*ph - dh*(kh-1) - 1) // sh + 1`` (likewise ``ow``).

    See Also
    --------
    col2im : its adjoint (not its inverse).
    """
    x = v.as_float_array(x, "x")
    v.check_nchw(x, "x")
    return _unfold(x, v.conv_window(x.shape, kernel_size, stride, padding, dilation))


def col2im(cols, output_size, kernel_size, stride=1, padding=0, dilation=1) -> np.ndarray:
    """Sum columns back into images, as ``F.fold``: the adjoint of :func:`im2col`.

    Where windows overlap, their entries ADD UP, so ``col2im(im2col(x))``
    is `x` times the number of windows covering each pixel, not `x`.

    Parameters
    ----------
    cols : array_like, shape (N, C*kh*kw, L), float32 or float64
        L must be the number of windows that fit in `output_size`.
    output_size : int or (int, int)
        ``(H, W)`` of the images.
    kernel_size, stride, padding, dilation : int or (int, int)
        As for :func:`im2col`.

    Returns
    -------
    x : ndarray, shape (N, C, H, W), dtype of `cols`
    """
    cols = v.as_float_array(cols, "cols")
    c, h, w, win = v.col2im_window(cols.shape, output_size, kernel_size, stride, padding, dilation)
    return _fold(cols, (cols.shape[0], c, h, w), win)


def _conv_operands(x, weight, groups, weight_name="weight"):
    """Validate x, weight and groups; return them with ``(F, C/groups)``."""
    x = v.as_float_array(x, "x")
    v.check_nchw(x, "x")
    weight = v.as_float_array(weight, weight_name)
    if weight.ndim != 4 or min(weight.shape) == 0:
        raise ValueError(
            f"{weight_name} must be a non-empty 4-D array (F, C/groups, kh, kw), "
            f"got shape {weight.shape}"
        )
    groups = v.positive_int(groups, "groups")
    n_in, n_out = x.shape[1], weight.shape[0]
    if n_in % groups or n_out % groups:
        raise ValueError(
            f"groups={groups} must divide both in_channels={n_in} and out_channels={n_out}"
        )
    if weight.shape[1] != n_in // groups:
        raise ValueError(
            f"{weight_name}.shape[1] must be in_channels/groups = {n_in}/{groups} = "
            f"{n_in // groups}, got {weight_name} of shape {weight.shape}"
        )
    return x, weight, groups


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) -> np.ndarray:
    """2-D cross-correlation, as ``F.conv2d``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W), float32 or float64
    weight : array_like, shape (F, C/groups, kh, kw), dtype of `x`
    bias : array_like, shape (F,), dtype of `x`, optional
    stride, dilation : int or (int, int)
    padding : int, (int, int), "valid" or "same"
        "same" (stride 1 only) pads so the output has the input's size; an
        odd total puts the extra row/column at the bottom/right.
    groups : int
        Channels are split into `groups` independent convolutions
        (``groups == C == F`` is depthwise).

    Returns
    -------
    out : ndarray, shape (N, F, oh, ow), dtype of `x`

    Notes
    -----
    Each sample is unfolded (im2col) into a buffer that stays in cache
    while BLAS multiplies it by the weight. :func:`fastcnn.set_num_threads`
    governs the whole op: the samples are spread over that many threads,
    each calling a one-thread BLAS. The result does not depend on the
    number of threads.
    """
    x, weight, groups = _conv_operands(x, weight, groups)
    if bias is not None:
        bias = v.as_float_array(bias, "bias")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},), got {bias.shape}")
    v.check_same_dtype(x=x, weight=weight, bias=bias)
    win = v.conv_window(x.shape, weight.shape[2:], stride, padding, dilation)
    return _conv2d(x, weight, bias, win, groups)


# BLAS takes C ints: a GEMM with a larger dimension goes to the twin, whose
# NumPy BLAS has 64-bit ones.
_BLAS_INT_MAX = 2**31 - 1


def _gemm(dims, macs: int) -> dict:
    """in_pieces's `parallel` and `twin` for a GEMM driver call: GEMMs of
    dimensions `dims`, `macs` multiply-adds in all."""
    return dict(parallel=macs >= _backend.PARALLEL_MACS, twin=max(dims) > _BLAS_INT_MAX)


def _no_bias(dtype) -> np.ndarray:
    return np.empty(0, dtype)


def _conv2d(x, weight, bias, win: v.Window, groups: int) -> np.ndarray:
    """:func:`conv2d` of validated operands (C-contiguous, one dtype) and window."""
    n, f = x.shape[0], weight.shape[0]
    out = np.empty((n, f, win.oh, win.ow), dtype=x.dtype)
    if not n:  # (an empty batch's output planes may be huge)
        return out
    kg, length = weight[0].size, win.oh * win.ow
    weight = weight.reshape(f, kg)
    bias = _no_bias(x.dtype) if bias is None else bias
    in_pieces("conv2d_forward", (n,), (x, weight, bias, *win, groups, out),
              lambda i: (x[i], weight, bias, *win, groups, out[i]),
              macs=f * kg * length, taps=(x.shape[1] * win.kh * win.kw + f) * length,
              **_gemm((length, kg, f), n * f * kg * length))
    return out


def conv2d_backward(dout, x, weight, stride=1, padding=0, dilation=1, groups=1):
    """Gradients of :func:`conv2d` with respect to its input, weight and bias.

    Parameters
    ----------
    dout : array_like, shape (N, F, oh, ow), dtype of `x`
        Gradient of the loss with respect to the conv2d output.
    x, weight, stride, padding, dilation, groups
        The arguments of the forward call.

    Returns
    -------
    dx : ndarray, shape (N, C, H, W)
    dweight : ndarray, shape (F, C/groups, kh, kw)
    dbias : ndarray, shape (F,)
        Returned whether or not the forward call had a bias.

    Notes
    -----
    Threaded as :func:`conv2d`. The batch is cut into chunks that depend on
    the sizes only; each chunk sums its samples' dweight and dbias in order,
    and the chunks' sums are added in chunk order, so the results do not
    depend on the number of threads either.
    """
    x, weight, groups = _conv_operands(x, weight, groups)
    dout = v.as_float_array(dout, "dout")
    v.check_same_dtype(x=x, weight=weight, dout=dout)
    win = v.conv_window(x.shape, weight.shape[2:], stride, padding, dilation)
    expected = (x.shape[0], weight.shape[0], win.oh, win.ow)
    if dout.shape != expected:
        raise ValueError(f"dout must have the conv2d output shape {expected}, got {dout.shape}")
    return _conv2d_backward(dout, x, weight, win, groups)


# The most chunks a backward pass cuts a batch into, and the most bytes
# their per-chunk weight gradients may take.
_MAX_CHUNKS = 32
_CHUNK_GRAD_BYTES = 64 << 20

# A long convolution backward gets more chunks, where the memory allows, of
# about this long on one thread (estimated as in _backend.in_pieces): it
# runs in pieces of whole chunks (so that every chunk sums as in one call),
# and Ctrl-C should not wait for a long chunk.
_CHUNK_SECONDS = 0.05


def _batch_chunks(n: int, grad_bytes: int, most: int = _MAX_CHUNKS) -> tuple[int, int]:
    """``(samples per chunk, number of chunks)`` of a pass over `n` samples
    whose weight gradient takes `grad_bytes`: enough chunks (at most `most`)
    to keep every thread busy, from the sizes only (never the thread count)."""
    count = max(1, min(n, most, _CHUNK_GRAD_BYTES // max(grad_bytes, 1)))
    size = -(-n // count)
    return size, -(-n // size)


def _conv2d_backward(dout, x, weight, win: v.Window, groups: int):
    """:func:`conv2d_backward` of validated operands (C-contiguous, one dtype) and window."""
    n, f = x.shape[0], weight.shape[0]
    kg, length = weight[0].size, win.oh * win.ow
    dx = np.empty(x.shape, dtype=x.dtype)
    if not n:
        return dx, np.zeros_like(weight), np.zeros(f, x.dtype)
    macs, taps = 2 * f * kg * length, (3 * x.shape[1] * win.kh * win.kw + f) * length
    seconds = n * (macs * _backend.MAC_SECONDS + taps * _backend.TAP_SECONDS)
    size, count = _batch_chunks(n, weight.nbytes, max(_MAX_CHUNKS, int(seconds / _CHUNK_SECONDS)))
    dweight = np.empty((count, f, kg), dtype=x.dtype)
    dbias = np.empty((count, f), dtype=x.dtype)
    w = weight.reshape(f, kg)

    def piece(i):
        s = _samples(i, size)
        return dout[s], x[s], w, *win, groups, size, dx[s], dweight[i], dbias[i]

    in_pieces("conv2d_backward", (count,), (dout, x, w, *win, groups, size, dx, dweight, dbias),
              piece, macs=size * macs, taps=size * taps, **_gemm((length, kg, f), n * macs))
    return dx, dweight.sum(axis=0).reshape(weight.shape), dbias.sum(axis=0)


# Every chunk of a linear layer's batch reads the whole weight: fewer, larger
# chunks than a convolution's.
_LINEAR_CHUNKS = 8


def _linear(x: np.ndarray, weight: np.ndarray, bias) -> np.ndarray:
    """``x @ weight.T + bias`` (``F.linear``) of validated 2-D operands of one dtype.

    x (N, I), weight (O, I), bias (O,) or None; returns (N, O).
    """
    n, o = len(x), len(weight)
    out = np.empty((n, o), dtype=x.dtype)
    if not n:
        return out
    size, count = _batch_chunks(n, weight.nbytes, _LINEAR_CHUNKS)
    bias = _no_bias(x.dtype) if bias is None else bias
    in_pieces("linear_forward", (count,), (x, weight, bias, size, out),
              lambda i: (x[_samples(i, size)], weight, bias, size, out[_samples(i, size)]),
              macs=size * weight.size, **_gemm(weight.shape + (size,), n * weight.size))
    return out


def _linear_backward(dout: np.ndarray, x: np.ndarray, weight: np.ndarray):
    """Gradients ``(dx, dweight, dbias)`` of :func:`_linear`, from validated operands."""
    n = len(x)
    dx = np.empty(x.shape, dtype=x.dtype)
    if not n:
        return dx, np.zeros_like(weight), np.zeros(len(weight), x.dtype)
    size, count = _batch_chunks(n, weight.nbytes, _LINEAR_CHUNKS)
    dweight = np.empty((count,) + weight.shape, dtype=x.dtype)
    dbias = np.empty((count, len(weight)), dtype=x.dtype)

    def piece(i):
        s = _samples(i, size)
        return dout[s], x[s], weight, size, dx[s], dweight[i], dbias[i]

    in_pieces("linear_backward", (count,), (dout, x, weight, size, dx, dweight, dbias), piece,
              macs=size * 2 * weight.size, **_gemm(weight.shape + (size,), 2 * n * weight.size))
    return dx, dweight.sum(axis=0), dbias.sum(axis=0)


def max_pool2d(
    x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    """2-D max pooling, as ``F.max_pool2d``.

    Each window is scanned row by row: ties go to the FIRST maximum, NaN
    propagates (its index is the last NaN seen) and padding never wins.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W), float32 or float64
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to `kernel_size`.
    padding : int or (int, int)
        Implicit -inf padding, at most half the kernel.
    dilation : int or (int, int)
    ceil_mode : bool
        Round the output size up (a last, partial window is kept if it starts
        inside the input or the left padding).
    return_indices : bool
        Also return the argmax of every window.

    Returns
    -------
    out : ndarray, shape (N, C, oh, ow), dtype of `x`
    indices : ndarray of int64, shape (N, C, oh, ow)
        Only if `return_indices`: flat ``ih * W + iw`` inside each plane, for
        :func:`max_pool2d_backward`.
    """
    x = v.as_float_array(x, "x")
    v.check_nchw(x, "x")
    win = v.pool_window(x.shape, kernel_size, stride, padding, dilation, ceil_mode)
    return_indices = v.flag(return_indices, "return_indices")
    out, indices = _max_pool2d(x, win)
    return (out, indices) if return_indices else out


def _max_pool2d(x: np.ndarray, win: v.Window) -> tuple[np.ndarray, np.ndarray]:
    """:func:`max_pool2d` of a validated `x` and window: ``(out, indices)``."""
    shape = x.shape[:2] + (win.oh, win.ow)
    out = np.empty(shape, dtype=x.dtype)
    indices = np.empty(shape, dtype=np.int64)
    if shape[0]:
        # (a max-pool tap, a comparison and two selects, costs about two)
        in_pieces("max_pool2d", shape[:2], (x, *win.params, out, indices),
                  taps=_plane_taps(win, *x.shape[2:]) + win.kh * win.kw * win.oh * win.ow)
    return out, indices


def max_pool2d_backward(dout, indices, input_shape) -> np.ndarray:
    """Gradient of :func:`max_pool2d`: each output's gradient goes to its argmax.

    Parameters
    ----------
    dout : array_like, shape (N, C, oh, ow), float32 or float64
    indices : array_like of any integer dtype, shape (N, C, oh, ow)
        As returned by ``max_pool2d(..., return_indices=True)``; each in
        ``[0, H*W)``.
    input_shape : tuple of 4 ints
        ``(N, C, H, W)`` of the forward input.

    Returns
    -------
    dx : ndarray, shape `input_shape`, dtype of `dout`
        Exactly one input per output receives its gradient; where windows
        overlap and chose the same input, the gradients add up.
    """
    dout = v.as_float_array(dout, "dout")
    v.check_nchw(dout, "dout")
    indices = v.as_indices(indices)
    shape = v.input_shape_4d(input_shape)
    if indices.shape != dout.shape:
        raise ValueError(
            f"indices and dout must have the same shape, got {indices.shape} and {dout.shape}"
        )
    if dout.shape[:2] != shape[:2]:
        raise ValueError(
            f"dout's (N, C)={dout.shape[:2]} must match input_shape's (N, C)={shape[:2]}"
        )
    plane = shape[2] * shape[3]
    # Seen as unsigned, a negative index is huge: one pass checks both ends.
    if indices.size and indices.view(np.uint64).max() >= plane:
        raise ValueError(
            f"indices must lie in [0, H*W) = [0, {plane}) for input_shape={shape}, "
            f"got values in [{indices.min()}, {indices.max()}]"
        )
    return _max_pool2d_backward(dout, indices, shape)


def _max_pool2d_backward(dout: np.ndarray, indices: np.ndarray, shape) -> np.ndarray:
    """:func:`max_pool2d_backward` of validated `dout`, in-range int64 `indices` and shape."""
    out = np.empty(shape, dtype=dout.dtype)
    if shape[0]:
        in_pieces("max_pool2d_backward", shape[:2], (dout, indices, out),
                  taps=dout.shape[2] * dout.shape[3] + shape[2] * shape[3])
    return out


def _avg_args(shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """Validate avg_pool2d's arguments; return the kernel's arguments after the array."""
    win = v.pool_window(shape, kernel_size, stride, padding, 1, ceil_mode)
    count_include_pad = v.flag(count_include_pad, "count_include_pad")
    if divisor_override is not None:
        divisor_override = v.positive_int(divisor_override, "divisor_override", v.MAX_WINDOW_PARAM)
    return (win.kh, win.kw, win.sh, win.sw, win.ph, win.pw, count_include_pad, divisor_override or 0), win


def avg_pool2d(
    x,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
) -> np.ndarray:
    """2-D average pooling, as ``F.avg_pool2d``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W), float32 or float64
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to `kernel_size`.
    padding : int or (int, int)
        Zero padding, at most half the kernel.
    ceil_mode : bool
        Round the output size up, as in :func:`max_pool2d`.
    count_include_pad : bool
        Divide by the window clipped to the padded input (True), or by the
        number of real input cells in the window (False).
    divisor_override : int, optional
        Divide every window sum by this instead.

    Returns
    -------
    out : ndarray, shape (N, C, oh, ow), dtype of `x`
    """
    x = v.as_float_array(x, "x")
    v.check_nchw(x, "x")
    args, win = _avg_args(x.shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                          divisor_override)
    out = np.empty(x.shape[:2] + (win.oh, win.ow), dtype=x.dtype)
    if x.shape[0]:
        in_pieces("avg_pool2d", x.shape[:2], (x, *args, out), taps=_plane_taps(win, *x.shape[2:]))
    return out


def avg_pool2d_backward(
    dout,
    input_shape,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode=False,
    count_include_pad=True,
    divisor_override=None,
) -> np.ndarray:
    """Gradient of :func:`avg_pool2d` with respect to its input.

    Parameters
    ----------
    dout : array_like, shape (N, C, oh, ow), float32 or float64
    input_shape : tuple of 4 ints
        ``(N, C, H, W)`` of the forward input.
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        The arguments of the forward call.

    Returns
    -------
    dx : ndarray, shape `input_shape`, dtype of `dout`
    """
    dout = v.as_float_array(dout, "dout")
    v.check_nchw(dout, "dout")
    shape = v.input_shape_4d(input_shape)
    args, win = _avg_args(shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                          divisor_override)
    expected = shape[:2] + (win.oh, win.ow)
    if dout.shape != expected:
        raise ValueError(f"dout must have the avg_pool2d output shape {expected}, got {dout.shape}")
    out = np.empty(shape, dtype=dout.dtype)
    if shape[0]:
        in_pieces("avg_pool2d_backward", shape[:2], (dout, *args, out),
                  taps=_plane_taps(win, *shape[2:]))
    return out


# ---------------------------------------------------------------------------
# The math between convolutions, for the layers, the loss and the optimizers:
# private entry points that take arguments those have validated already
# (C-contiguous arrays of one float dtype, consistent shapes), allocate the
# results and call the active kernel set.


def _batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum, eps):
    """Batch normalisation over every axis but 1, as ``F.batch_norm``.

    Parameters
    ----------
    x : ndarray, shape (N, C, *spatial), float32 or float64
        Statistics are taken per channel over N and the spatial axes.
    weight, bias : ndarray, shape (C,), dtype of `x`
    running_mean, running_var : ndarray, shape (C,), dtype of `x`
        Normalise in evaluation mode. In training mode they are updated in
        place (``running = (1 - momentum) * running + momentum * batch``,
        with the unbiased batch variance), and the batch's mean and biased
        variance normalise.
    training : bool
    momentum, eps : float

    Returns
    -------
    out : ndarray, shape and dtype of `x`
    cache : tuple or None
        What :func:`_batch_norm_backward` needs; None for an empty batch
        (in evaluation mode; training mode raises).

    Raises
    ------
    ValueError
        In training mode with fewer than 2 values per channel.
    """
    n, channels = x.shape[:2]
    length = int(np.prod(x.shape[2:], dtype=np.int64))
    samples = n * length
    if training and samples < 2:
        raise ValueError(
            "training-mode BatchNorm needs more than 1 value per channel, "
            f"got x of shape {x.shape}; use training=False or a larger batch"
        )
    out = np.empty_like(x)
    if n == 0:
        return out, None
    x3 = x.reshape(n, channels, length)
    if training:
        mean, var = kernel("batch_norm_stats")(x3, np.empty(channels), np.empty(channels))
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * (samples / (samples - 1))
    else:
        mean, var = running_mean.astype(np.float64), running_var.astype(np.float64)
    inv_std = 1.0 / np.sqrt(var + eps)
    kernel("batch_norm_elemt")(x3, mean, inv_std, weight, bias, out.reshape(x3.shape))
    return out, (x3, mean, inv_std, training)


def _batch_norm_backward(dout, cache, weight):
    """Gradients of :func:`_batch_norm_forward`.

    Parameters
    ----------
    dout : ndarray, shape and dtype of the forward's output
    cache : the forward's cache
    weight : ndarray, shape (C,), the forward's weight

    Returns
    -------
    dx : ndarray, shape and dtype of `dout`
    dweight, dbias : ndarray, shape (C,), dtype of `weight`
        ``sum(dout * x_hat)`` and ``sum(dout)`` per channel (zero for an
        empty batch).
    """
    if cache is None:
        return np.empty_like(dout), np.zeros_like(weight), np.zeros_like(weight)
    x3, mean, inv_std, training = cache
    channels = x3.shape[1]
    dout3 = dout.reshape(x3.shape)
    sum_dout, sum_dout_xc = kernel("batch_norm_backward_reduce")(
        dout3, x3, mean, np.empty(channels), np.empty(channels))
    dx = np.empty_like(dout)
    kernel("batch_norm_backward_elemt")(dout3, x3, mean, inv_std, weight, sum_dout, sum_dout_xc,
                                        training, dx.reshape(x3.shape))
    return dx, (sum_dout_xc * inv_std).astype(weight.dtype), sum_dout.astype(weight.dtype)


def _flat_apply(name, out_like, *args):
    """Kernel `name` on the flattened arrays of `args` (other arguments as
    given), into a new array shaped and typed as `out_like`."""
    out = np.empty_like(out_like)
    flat = [a.reshape(-1) if isinstance(a, np.ndarray) else a for a in args]
    kernel(name)(*flat, out.reshape(-1))
    return out


def _relu(x):
    """``max(x, 0)`` as ``F.relu`` (NaN propagates; -0.0 gives 0.0); any shape."""
    return _flat_apply("relu", x, x)


def _relu_backward(dout, x):
    """dx of :func:`_relu`: `dout` where the forward input `x` > 0, else 0."""
    return _flat_apply("relu_backward", dout, dout, x)


def _leaky_relu(x, negative_slope):
    """`x` where ``x > 0``, else ``x * negative_slope`` (as ``F.leaky_relu``); any shape."""
    return _flat_apply("leaky_relu", x, x, negative_slope)


def _leaky_relu_backward(dout, x, negative_slope):
    """dx of :func:`_leaky_relu`: `dout` where ``x > 0``, else ``dout * negative_slope``."""
    return _flat_apply("leaky_relu_backward", dout, dout, x, negative_slope)


def _sigmoid(x):
    """``1 / (1 + exp(-x))`` as ``scipy.special.expit`` (never overflows); any shape."""
    return _flat_apply("sigmoid", x, x)


def _sigmoid_backward(dout, y):
    """dx of :func:`_sigmoid` from its output `y`: ``dout * y * (1 - y)``."""
    return _flat_apply("sigmoid_backward", dout, dout, y)


def _tanh(x):
    """``tanh(x)``; any shape."""
    return _flat_apply("tanh", x, x)


def _tanh_backward(dout, y):
    """dx of :func:`_tanh` from its output `y`: ``dout * (1 - y * y)``."""
    return _flat_apply("tanh_backward", dout, dout, y)


def _elu(x, alpha, scale=1.0):
    """``scale * (x where x > 0, else alpha * expm1(x))``: ``F.elu``, or ``F.selu``
    with SELU's alpha and scale; any shape."""
    return _flat_apply("elu", x, x, alpha, scale)


def _elu_backward(dout, x, alpha, scale=1.0):
    """dx of :func:`_elu`: ``dout * scale * (1 where x > 0, else alpha * exp(x))``."""
    return _flat_apply("elu_backward", dout, dout, x, alpha, scale)


def _softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against labels, and its gradient.

    Parameters
    ----------
    logits : ndarray, shape (N, K), float32 or float64, N, K >= 1
    labels : ndarray of int, shape (N,), each in ``[0, K)``

    Returns
    -------
    loss : float
        As :func:`fastcnn.losses.softmax_cross_entropy` (a value of the
        logits' dtype; NaN for a row with NaN or +inf).
    dlogits : ndarray, shape (N, K), dtype of `logits`
        ``(softmax(logits) - onehot(labels)) / N``.
    """
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    return kernel("softmax_cross_entropy")(logits, labels, np.empty_like(logits))


# Optimizer steps: one parameter, updated in place with its state dict
# (fastcnn.optim's keys, PyTorch's names), from the raw gradient: the steps
# apply the optimizers' common terms (maximize, weight decay) themselves.
# Parameters, gradients and states are C-contiguous (the layers make them
# so, and the states here are made like their parameter), so their flat
# views are views.


def _flat(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1)


def _unused(param: np.ndarray) -> np.ndarray:
    """An empty array of `param`'s dtype, for a state array the options leave unused."""
    return param.reshape(-1)[:0]


def _sgd_step(param, grad, state, *, lr, momentum, dampening, nesterov, weight_decay,
              maximize):
    """One step of ``fastcnn.optim.SGD`` on `param`, in place.

    `state` gets ``momentum_buffer`` on the first step with momentum.
    Bitwise the NumPy update of ``fastcnn.optim``.
    """
    first_step = momentum != 0 and "momentum_buffer" not in state
    if first_step:
        state["momentum_buffer"] = np.empty_like(param)
    buf = _flat(state["momentum_buffer"]) if momentum != 0 else _unused(param)
    kernel("sgd_update")(_flat(param), _flat(grad), buf, lr, momentum, dampening, weight_decay,
                         nesterov, maximize, first_step)


def _adam_step(param, grad, state, *, lr, betas, eps, weight_decay, amsgrad, maximize):
    """One step of ``fastcnn.optim.Adam`` on `param`, in place.

    `state` holds ``step``, ``exp_avg``, ``exp_avg_sq`` (and
    ``max_exp_avg_sq`` with `amsgrad`), made on the first step.
    """
    if not state:
        state.update(step=0, exp_avg=np.zeros_like(param), exp_avg_sq=np.zeros_like(param))
        if amsgrad:
            state["max_exp_avg_sq"] = np.zeros_like(param)
    state["step"] += 1
    beta1, beta2 = betas
    step = state["step"]
    step_size = lr / (1 - beta1**step)
    bias_correction2_sqrt = float(np.sqrt(1 - beta2**step))
    top = _flat(state["max_exp_avg_sq"]) if amsgrad else _unused(param)
    kernel("adam_update")(_flat(param), _flat(grad), _flat(state["exp_avg"]),
                          _flat(state["exp_avg_sq"]), top, beta1, beta2, eps, weight_decay,
                          step_size, bias_correction2_sqrt, amsgrad, maximize)


def _adagrad_step(param, grad, state, *, lr, lr_decay, eps, weight_decay, maximize):
    """One step of ``fastcnn.optim.Adagrad`` on `param`, in place.

    `state` holds ``step`` and ``sum`` already (the optimizer makes them at
    construction, as PyTorch).
    """
    state["step"] += 1
    clr = lr / (1 + (state["step"] - 1) * lr_decay)
    kernel("adagrad_update")(_flat(param), _flat(grad), _flat(state["sum"]), clr, eps,
                             weight_decay, maximize)


def _rmsprop_step(param, grad, state, *, lr, alpha, eps, weight_decay, momentum, centered,
                  maximize):
    """One step of ``fastcnn.optim.RMSprop`` on `param`, in place.

    `state` holds ``step``, ``square_avg`` (and ``momentum_buffer`` with
    momentum > 0, ``grad_avg`` if `centered`), made on the first step.
    """
    if not state:
        state.update(step=0, square_avg=np.zeros_like(param))
        if momentum > 0:
            state["momentum_buffer"] = np.zeros_like(param)
        if centered:
            state["grad_avg"] = np.zeros_like(param)
    state["step"] += 1
    grad_avg = _flat(state["grad_avg"]) if centered else _unused(param)
    buf = _flat(state["momentum_buffer"]) if momentum > 0 else _unused(param)
    kernel("rmsprop_update")(_flat(param), _flat(grad), _flat(state["square_avg"]), grad_avg,
                             buf, lr, alpha, eps, weight_decay, momentum, centered, maximize)


def _adadelta_step(param, grad, state, *, lr, rho, eps, weight_decay, maximize):
    """One step of ``fastcnn.optim.Adadelta`` on `param`, in place.

    `state` holds ``step``, ``square_avg`` and ``acc_delta``, made on the
    first step.
    """
    if not state:
        state.update(step=0, square_avg=np.zeros_like(param), acc_delta=np.zeros_like(param))
    state["step"] += 1
    kernel("adadelta_update")(_flat(param), _flat(grad), _flat(state["square_avg"]),
                              _flat(state["acc_delta"]), lr, rho, eps, weight_decay, maximize)

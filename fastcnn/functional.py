"""Stateless CNN operations with the semantics of ``torch.nn.functional``.

Every function validates its arguments once (:mod:`fastcnn._validation`),
allocates its result and hands the loops to the active kernel set
(:mod:`fastcnn._backend`). Convolutions are im2col + BLAS GEMMs, sample by
sample, in compiled code, direct for few input channels, or by Winograd's
algorithm for kernels of stride 1 (see :func:`conv2d`). Arrays are NCHW,
float32 or float64; `kernel_size`, `stride`, `padding` and `dilation` take an
int or an ``(h, w)`` pair.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from . import _backend
from . import _validation as v
from ._backend import in_pieces, kernel
from ._buffers import empty, empty_like
from ._docstrings import fill_doc

__all__ = [
    "im2col",
    "col2im",
    "conv2d",
    "conv2d_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "pad",
    "pad_backward",
    "interpolate",
    "interpolate_backward",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_backward",
    "max_unpool2d",
    "max_unpool2d_backward",
    "group_norm",
    "group_norm_backward",
    "layer_norm",
    "layer_norm_backward",
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
    out = empty((n, c * k, win.oh * win.ow), dtype=x.dtype)
    if n:
        in_pieces("im2col", (n, c), (x, *win, out), lambda i: (x[i], *win, out[_rows(i, k)]),
                  taps=_plane_taps(win, h, w))
    return out


def _fold(cols: np.ndarray, shape, win: v.Window) -> np.ndarray:
    out = empty(shape, dtype=cols.dtype)
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
    while it is multiplied by the weight (with AVX2 and FMA, by fastcnn's
    own product, bands of output rows at a time, with the weight packed
    once per call; elsewhere by BLAS); a layer of few input channels
    (at most 32 taps ``C*kh*kw`` and 32 filters, groups = 1) runs a direct
    convolution instead, accumulating every tap in vector registers, and 3x3
    kernels of stride 1 and dilation 1 (one group) with at least 4 input
    channels, on outputs of at least 8x8, run Winograd's F(4x4, 3x3), which
    needs a quarter of the multiplications; 4x4 to 6x6 kernels, as four
    blocks of 3x3 taps, with at least 16 input channels and 32 filters on
    outputs of at least 16x16 (0.36 of the multiplications for 5x5). Its
    results differ from im2col's by rounding (within 1e-5 of the largest
    output in float32, also with 512 channels), and a call with a NaN or an
    infinity in its inputs runs im2col, so that those values reach the same
    outputs as in PyTorch. :func:`conv2d_backward` computes the gradients
    by Winograd likewise, where that pays.
    :func:`fastcnn.set_num_threads` governs the whole op: the samples are
    spread over that many threads, each calling a one-thread BLAS. The
    result does not depend on the number of threads.
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
    return empty(0, dtype)


# A convolution of at most this many taps per output (C/groups * kh * kw)
# and filters runs the direct kernels (csrc/direct.pyx) instead of im2col +
# GEMM, where they have their AVX2 code: there the GEMM's inner dimension is
# too thin to pay for the unfolding. (From side-by-side timings of both
# algorithms over C 1..16, kernels 1..7, 4..64 filters, strides 1 and 2, on
# a 2-core AMD EPYC: the direct forward is 1.2-10x as fast up to 32 filters
# and 32 taps; with 64 filters both mostly write the output, about as fast.)
_DIRECT_MAX_TAPS = 32
#: ... and of windows at most this many cells high and wide.
_DIRECT_MAX_EXTENT = 32
_DIRECT_MAX_FILTERS = 32
#: ... on output rows longer than this: on 8x8 planes the GEMM was faster
#: (by 1.1-2x forward and backward, 1 to 3 channels, 3x3 and 5x5 kernels).
#: Where the GEMM driver's forward has AVX-512 (its implicit convolution),
#: it is faster on first layers (1-3 channels, 3x3 and 5x5, 6-32 filters:
#: 0.65-0.90x the direct kernels' time forward, 0.71-0.94x backward, on a
#: 2-core Xeon, 1 and 2 threads), and the direct kernels are not used.
_DIRECT_MIN_WIDTH = 8


def _direct_eligible(x, weight, win: v.Window, groups: int) -> bool:
    """Whether conv2d of these operands (forward, weight and bias gradients)
    runs the direct kernels rather than the GEMM driver."""
    # They copy the input zero-padded, every column phase of the stride, in
    # bands as high as a window: with a stride beyond the window, mostly
    # cells that no window reads, and a widely dilated window's band is huge.
    extent_h, extent_w = (win.kh - 1) * win.dh + 1, (win.kw - 1) * win.dw + 1
    if (groups != 1 or win.sh > extent_h or win.sw > extent_w
            or max(extent_h, extent_w) > _DIRECT_MAX_EXTENT):
        return False
    forced = _backend.conv_algorithm()
    if forced != "auto":
        return forced == "direct"
    return (x.shape[1] * win.kh * win.kw <= _DIRECT_MAX_TAPS
            and len(weight) <= _DIRECT_MAX_FILTERS and win.ow > _DIRECT_MIN_WIDTH
            and _backend.direct_simd() and not _backend.implicit_conv())


# 3x3 convolutions of stride 1 run Winograd's F(4x4, 3x3) (csrc/winograd.pyx)
# where it is eligible and pays: 36 multiply-adds per 16 outputs and channel
# instead of 144, plus transforms whose cost grows with C + F rather than
# C * F. Larger kernels run it as gh x gw blocks of 3x3 taps (a 5x5 kernel,
# zero-padded to 6x6: four blocks, 144 multiply-adds per 16 outputs and
# channel instead of 400), each block a 3x3 convolution of the input
# shifted by 3 taps per block, summed in the GEMMs as 4*C channels. The
# input gradient of such a convolution is one too: that of dout padded by
# k - 1 - padding with the kernels turned by 180 degrees, in and out
# channels swapped; the weight gradient is Winograd's F(3x3, 4x4) per block.

#: Tiles of the input that one block of a Winograd call transforms and
#: multiplies at once (one GEMM per transformed position): enough columns
#: for BLAS, few enough that the block's transforms stay in cache.
_WINOGRAD_TILES = 64

# Where "auto" picks Winograd, from side-by-side timings of both algorithms
# (batches of 64 and 128, one thread): it pays from 4 input channels C on,
# for any number of output channels F, but not on planes under 8x8, whose
# tiles are too few to amortise the transforms. With AVX-512 (the implicit
# kernels, _backend.implicit_conv, and Winograd's wide transforms), the
# input gradient by Winograd took 0.5-1.0x the other algorithm's time on
# every such shape measured (16 -> 32 channels on 14x14: 0.6x; whole
# training steps of mnist: 0.96x). Without it, the input gradient by im2col
# multiplies dout by the weight in one large GEMM (F deep, 9*C wide), which
# outruns Winograd's transforms of F planes when C is under F/2 (8 -> 32
# channels on 16x16: 0.7x Winograd's time). With few channels (C*F under
# 2048) the transforms weigh more, and the gradients pay only on planes that
# the 4x4 tiles cover with little waste. (With AVX-512, the implicit weight
# gradient took 0.7-0.9x Winograd's time on some shapes with few channels
# alone, e.g. 8 -> 32 channels on 16x16, but whole training steps that
# computed it so were no faster: their rule is unchanged.)

#: The fewest input channels with which "auto" picks Winograd.
_WINOGRAD_MIN_CHANNELS = 4
#: The smallest output plane (both sides) on which "auto" picks Winograd.
_WINOGRAD_MIN_SIZE = 8
#: Below this C*F, "auto" computes the gradients by Winograd only where
#: its tiles cover at most this much more than the output plane.
_WINOGRAD_FEW_CHANNELS, _WINOGRAD_MAX_WASTE = 2048, 1.15

# Kernels of 2x2 blocks (4x4 to 6x6) transform the input four times over, so
# their GEMMs must be wide to pay: from side-by-side timings of 5x5
# convolutions (batch 64, one thread, AVX-512) the forward took 0.8-0.9x the
# GEMM driver's time from 16 -> 32 channels on 16x16 planes and more (32 ->
# 64 on 16x16: 10.5 vs 13.0 ms; 128 -> 128: 0.66x), but not on 8x8 planes
# or with few channels (6 -> 16 on 14x14: 2.3x); the input gradient, whose
# transforms run over 4*F planes, paid from 64 -> 64 channels (0.83x), the
# weight gradient from 128 -> 128 (0.73x). Larger kernels (nine blocks and
# more: 7x7 took 1.65x) keep the other algorithms.

#: Per part, the fewest (input channels, filters) with which "auto" runs a
#: kernel of 2x2 blocks of 3x3 taps by Winograd, on output planes of at
#: least _WINOGRAD_BLOCKS_MIN_SIZE a side.
_WINOGRAD_BLOCKS_MIN = {"forward": (16, 32), "input": (64, 64), "weight": (128, 128)}
_WINOGRAD_BLOCKS_MIN_SIZE = 16


def _winograd_eligible(win: v.Window, groups: int, c: int, f: int, part: str) -> bool:
    """Whether `part` ("forward", "input" or "weight" gradient) of a
    convolution of window `win` from `c` to `f` channels runs Winograd
    (:func:`fastcnn._backend.use_conv_algorithm`)."""
    algorithm = _backend.conv_algorithm()
    if (algorithm not in ("auto", "winograd")
            or (win.sh, win.sw, win.dh, win.dw, groups) != (1, 1, 1, 1, 1)):
        return False
    if algorithm == "winograd":
        return True
    if (win.kh, win.kw) != (3, 3):
        least_c, least_f = _WINOGRAD_BLOCKS_MIN[part]
        return (3 < max(win.kh, win.kw) <= 6 and c >= least_c and f >= least_f
                and min(win.oh, win.ow) >= _WINOGRAD_BLOCKS_MIN_SIZE)
    if c < _WINOGRAD_MIN_CHANNELS or min(win.oh, win.ow) < _WINOGRAD_MIN_SIZE:
        return False
    if part == "forward":
        return True
    if part == "input" and _backend.implicit_conv():
        return True
    covered = 16 * -(-win.oh // 4) * -(-win.ow // 4)  # cells of the tiles
    if c * f < _WINOGRAD_FEW_CHANNELS and covered > _WINOGRAD_MAX_WASTE * win.oh * win.ow:
        return False
    return part != "input" or 2 * c >= f


def _winograd_blocks(n: int, oh: int, ow: int) -> tuple[int, int]:
    """``(samples, tile rows)`` of a Winograd call's blocks (from the sizes only)."""
    th, tw = -(-oh // 4), -(-ow // 4)
    if th * tw >= _WINOGRAD_TILES:
        return 1, max(1, _WINOGRAD_TILES // tw)
    return min(n, _WINOGRAD_TILES // (th * tw)), th


def _all_finite(*arrays: np.ndarray) -> bool:
    """Whether every value of the (non-empty) `arrays` is finite, without a
    temporary: a NaN makes the minimum NaN, an infinity the minimum or maximum
    infinite."""
    return all(np.isfinite(a.min()) and np.isfinite(a.max()) for a in arrays)


def _kernel_blocks(weight: np.ndarray) -> tuple[np.ndarray, int]:
    """``(blocks, gw)``: `weight` (F, C, kh, kw) as gh x gw blocks of 3x3 taps
    (zero past its edges), (F, gh*gw*C, 3, 3), block (a, b)'s channel c at
    ``(a*gw + b)*C + c`` (the layout of csrc/winograd.pyx's kernels)."""
    f, c, kh, kw = weight.shape
    if (kh, kw) == (3, 3):
        return weight, 1
    gh, gw = -(-kh // 3), -(-kw // 3)
    padded = np.zeros((f, c, 3 * gh, 3 * gw), weight.dtype)
    padded[:, :, :kh, :kw] = weight
    blocks = empty((f, gh, gw, c, 3, 3), weight.dtype)
    np.copyto(blocks, padded.reshape(f, c, gh, 3, gw, 3).transpose(0, 2, 4, 1, 3, 5))
    return blocks.reshape(f, gh * gw * c, 3, 3), gw


def _kernels_of_blocks(blocks: np.ndarray, shape: tuple) -> np.ndarray:
    """The kernels (F, C, kh, kw) = `shape` whose :func:`_kernel_blocks` are
    `blocks` (F, gh*gw*C*9), taps past their edges dropped."""
    f, c, kh, kw = shape
    if (kh, kw) == (3, 3):
        return blocks.reshape(shape)
    gh, gw = -(-kh // 3), -(-kw // 3)
    taps = blocks.reshape(f, gh, gw, c, 3, 3).transpose(0, 3, 1, 4, 2, 5)
    out = empty(shape, blocks.dtype)
    np.copyto(out, taps.reshape(f, c, 3 * gh, 3 * gw)[:, :, :kh, :kw])
    return out


def _winograd(x, weight, bias, ph: int, pw: int, out: np.ndarray) -> bool:
    """Fill `out` (N, F, oh, ow) with the convolution of stride 1 of `x`
    (N, C, H, W) with `weight` (F, C, kh, kw) and `bias` (or None), top/left
    padding (ph, pw), by Winograd. False if a value read or computed was not
    finite: a NaN or infinity spreads over Winograd's tiles, so the caller
    computes the convolution directly instead (`out` is then garbage)."""
    n = x.shape[0]
    f, (oh, ow) = weight.shape[0], out.shape[2:]
    blocks, gw = _kernel_blocks(weight)
    c = blocks.shape[1]  # channels of every block of taps
    u = empty((36, f, c), x.dtype)
    in_pieces("winograd_weight", (1,), (blocks, u))
    if not _all_finite(u):
        return False
    samples, rows = _winograd_blocks(n, oh, ow)
    th, tw = -(-oh // 4), -(-ow // 4)
    row_blocks, count = -(-th // rows), -(-n // samples)  # per group, groups of samples
    nonfinite = empty(count * row_blocks, np.uint8)
    bias = _no_bias(x.dtype) if bias is None else bias
    tiles = samples * th * tw  # of a group
    columns = samples * min(rows, th) * tw  # of a block's GEMMs

    def piece(i):
        s = _samples(i, samples)
        return (x[s], u, bias, ph, pw, gw, samples, rows, out[s],
                nonfinite[i[0].start * row_blocks : i[0].stop * row_blocks])

    in_pieces("winograd_conv2d", (count,),
              (x, u, bias, ph, pw, gw, samples, rows, out, nonfinite), piece,
              macs=36 * f * c * tiles, taps=36 * (c + f) * tiles,
              **_gemm((columns, c, f), 36 * f * c * tiles * count))
    return not nonfinite.any()


def _winograd_weight_grads(dout, x, weight, ph: int, pw: int):
    """``(dweight, dbias)`` of the convolution of stride 1 of `x` (N, C, H, W)
    with kernels of `weight`'s shape, top/left padding (ph, pw), whose output
    gradient is `dout` (N, F, oh, ow), by Winograd; None if a value read or
    computed was not finite (see :func:`_winograd`)."""
    n = x.shape[0]
    f, oh, ow = dout.shape[1:]
    kh, kw = weight.shape[2:]
    gh, gw = -(-kh // 3), -(-kw // 3)
    c = gh * gw * x.shape[1]  # channels of every block of taps
    samples, rows = _winograd_blocks(n, oh, ow)
    th, tw = -(-oh // 4), -(-ow // 4)
    tiles = samples * th * tw  # of a group of samples
    macs, taps = 36 * f * c * tiles, 36 * (c + f) * tiles
    groups = -(-n // samples)
    seconds = groups * (macs * _backend.MAC_SECONDS + taps * _backend.TAP_SECONDS)
    size, count = _batch_chunks(groups, f * c * 9 * x.itemsize,
                                max(_MAX_CHUNKS, int(seconds / _CHUNK_SECONDS)))
    dweight = empty((count, f, c * 9), x.dtype)
    dbias = empty((count, f), x.dtype)

    def piece(i):
        s = _samples(i, size * samples)
        return dout[s], x[s], ph, pw, gw, samples, rows, size, dweight[i], dbias[i]

    in_pieces("winograd_conv2d_backward", (count,),
              (dout, x, ph, pw, gw, samples, rows, size, dweight, dbias), piece,
              macs=size * macs, taps=size * taps,
              **_gemm((samples * min(rows, th) * tw, c, f), groups * macs))
    dweight, dbias = _kernels_of_blocks(_sum_parts(dweight), weight.shape), _sum_parts(dbias)
    if not _all_finite(dweight, dbias):
        return None
    return dweight, dbias


#: The rectifiers that :func:`_conv2d` applies to its outputs, and whose
#: gradient :func:`_conv2d_backward` applies to its input gradient: their
#: codes in the GEMM driver's kernels (which apply them while a band is in
#: cache); the other algorithms run the kernels of their names after.
_CONV_ACTIVATIONS = {"relu": 1, "leaky_relu": 2}


def _activation_args(activation: str | None, negative_slope: float) -> tuple[int, tuple]:
    """``(code, scalars)`` of `activation` (see _CONV_ACTIVATIONS; 0 for
    None): the GEMM driver's code and the scalar arguments of its kernels."""
    if activation is None:
        return 0, ()
    code = _CONV_ACTIVATIONS[activation]
    return code, (() if code == 1 else (negative_slope,))


def _conv2d(x, weight, bias, win: v.Window, groups: int, activation: str | None = None,
            negative_slope: float = 0.0) -> np.ndarray:
    """:func:`conv2d` of validated operands (C-contiguous, one dtype) and
    window, then `activation` ("relu", or "leaky_relu" of `negative_slope`,
    as :func:`_relu` and :func:`_leaky_relu`, bit for bit), if not None."""
    n, f = x.shape[0], weight.shape[0]
    out = empty((n, f, win.oh, win.ow), dtype=x.dtype)
    if not n:  # (an empty batch's output planes may be huge)
        return out
    code, args = _activation_args(activation, negative_slope)
    if (_winograd_eligible(win, groups, x.shape[1], f, "forward")
            and _winograd(x, weight, bias, win.ph, win.pw, out)):
        return _in_place(activation, out, *args)
    kg, length = weight[0].size, win.oh * win.ow
    weight = weight.reshape(f, kg)
    bias = _no_bias(x.dtype) if bias is None else bias
    macs = f * kg * length
    if _direct_eligible(x, weight, win, groups):
        in_pieces("conv2d_direct_forward", (n,), (x, weight, bias, *win, out),
                  lambda i: (x[i], weight, bias, *win, out[i]),
                  macs=macs, taps=x[0].size + f * length,
                  parallel=n * macs >= _backend.PARALLEL_MACS)
        return _in_place(activation, out, *args)
    in_pieces("conv2d_forward", (n,), (x, weight, bias, *win, groups, code, negative_slope, out),
              lambda i: (x[i], weight, bias, *win, groups, code, negative_slope, out[i]),
              macs=macs, taps=(x.shape[1] * win.kh * win.kw + f) * length,
              **_gemm((length, kg, f), n * macs))
    return out


def _in_place(name: str | None, out: np.ndarray, *args) -> np.ndarray:
    """`out` after the activation kernel `name`, if not None, of `out` and
    `args` (arrays of its shape, then scalars), written over `out` (those
    kernels read each cell before they write it)."""
    if name is not None:
        flat = out.reshape(-1)
        kernel(name)(flat, *(a.reshape(-1) if isinstance(a, np.ndarray) else a for a in args),
                     flat)
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

# A chunk's partial weight gradient is written, then added to the others':
# memory traffic that its products should outweigh. So a convolution's
# backward makes chunks of enough samples to do this many multiply-adds per
# cell of the weight gradient (per output cell of a sample, one), as long
# as the batch still makes _MIN_CHUNKS chunks for a team of threads to share.
_CHUNK_MACS_PER_GRAD_CELL = 2048
_MIN_CHUNKS = 8

# A long convolution backward gets more chunks, where the memory allows, of
# about this long on one thread (estimated as in _backend.in_pieces): it
# runs in pieces of whole chunks (so that every chunk sums as in one call),
# and Ctrl-C should not wait for a long chunk.
_CHUNK_SECONDS = 0.05


def _batch_chunks(n: int, grad_bytes: int, most: int = _MAX_CHUNKS,
                  least: int = 1) -> tuple[int, int]:
    """``(samples per chunk, number of chunks)`` of a pass over `n` samples
    whose weight gradient takes `grad_bytes`: enough chunks (at most `most`)
    to keep every thread busy, of at least `least` samples where that
    leaves _MIN_CHUNKS of them, from the sizes only (never the thread count)."""
    count = max(1, min(n, most, _CHUNK_GRAD_BYTES // max(grad_bytes, 1),
                       max(_MIN_CHUNKS, n // max(least, 1))))
    size = -(-n // count)
    return size, -(-n // size)


def _sum_parts(parts: np.ndarray) -> np.ndarray:
    """The chunks' partial sums added in chunk order (the one chunk's, as it is)."""
    return parts[0] if len(parts) == 1 else parts.sum(axis=0, out=empty(parts.shape[1:],
                                                                          parts.dtype))


def _turned(weight: np.ndarray) -> np.ndarray:
    """The kernels of the input gradient's convolution: `weight` (F, C, kh, kw)
    with in and out channels swapped and turned by 180 degrees, C-contiguous."""
    out = empty((weight.shape[1], weight.shape[0], *weight.shape[2:]), weight.dtype)
    np.copyto(out, weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])
    return out


def _conv2d_backward(dout, x, weight, win: v.Window, groups: int, input_grad: bool = True,
                     weight_grad: bool = True, input_activation: str | None = None,
                     negative_slope: float = 0.0):
    """:func:`conv2d_backward` of validated operands (C-contiguous, one dtype) and window.

    With ``input_grad=False`` the returned dx is None and is not computed;
    with ``weight_grad=False`` so are dweight and dbias, and only the shape
    and dtype of `x` are read. With `input_activation` ("relu", or
    "leaky_relu" of `negative_slope` >= 0), dx is then that activation's
    gradient for an output `x` (as :func:`_relu_backward` and
    :func:`_leaky_relu_backward` at `x`, bit for bit).
    Where Winograd's kernels apply (:func:`_winograd_eligible`) they compute
    dx, or the weight and bias gradients, or both; where the direct kernels
    apply (:func:`_direct_eligible`) they compute the weight and bias
    gradients; the GEMM driver computes the rest.
    """
    n, f = x.shape[0], weight.shape[0]
    kg, length = weight[0].size, win.oh * win.ow
    dx = empty(x.shape if input_grad else (0, *x.shape[1:]), dtype=x.dtype)
    if not n:
        return dx if input_grad else None, np.zeros_like(weight), np.zeros(f, x.dtype)
    c = x.shape[1]
    code, args = _activation_args(input_activation, negative_slope)
    # By Winograd where eligible (see _winograd); what it could not compute, by the others
    dx_done = not input_grad or _winograd_eligible(win, groups, c, f, "input") and _winograd(
        dout, _turned(weight), None, win.kh - 1 - win.ph, win.kw - 1 - win.pw, dx)
    if input_grad and dx_done and input_activation is not None:
        _in_place(input_activation + "_backward", dx, x, *args)
    grads = None if weight_grad else (None, None)
    if weight_grad and _winograd_eligible(win, groups, c, f, "weight"):
        grads = _winograd_weight_grads(dout, x, weight, win.ph, win.pw)
    if dx_done and grads is not None:
        return dx if input_grad else None, *grads
    want_dx, want_grads = not dx_done, grads is None
    product = f * kg * length  # multiply-adds of one sample's dx, or of its dweight
    columns = c * win.kh * win.kw * length  # cells of one sample's im2col
    seconds = n * ((want_dx + want_grads) * product * _backend.MAC_SECONDS
                   + ((2 * want_dx + want_grads) * columns + f * length) * _backend.TAP_SECONDS)
    # chunks of enough samples to outweigh their gradients, none much longer than _CHUNK_SECONDS
    least = min(-(-_CHUNK_MACS_PER_GRAD_CELL // length),
                int(_CHUNK_SECONDS * n / max(seconds, 1e-9)))
    size, count = _batch_chunks(n, weight.nbytes, max(_MAX_CHUNKS, int(seconds / _CHUNK_SECONDS)),
                                least if want_grads else 1)
    dweight = empty((count, f, kg), dtype=x.dtype)
    dbias = empty((count, f), dtype=x.dtype)
    w = weight.reshape(f, kg)
    direct = want_grads and _direct_eligible(x, w, win, groups)
    if direct:
        def direct_piece(i):
            s = _samples(i, size)
            return dout[s], x[s], *win, size, dweight[i], dbias[i]

        in_pieces("conv2d_direct_backward", (count,), (dout, x, *win, size, dweight, dbias),
                  direct_piece, macs=size * product, taps=size * (x[0].size + f * length),
                  parallel=n * product >= _backend.PARALLEL_MACS)
    gemm_grads = want_grads and not direct
    if want_dx or gemm_grads:
        # chunks of no gradients: dx only; a dx of no samples: the gradients only
        dw_parts, db_parts = (dweight, dbias) if gemm_grads else (dweight[:0], dbias[:0])
        dx_part = dx if want_dx else dx[:0]
        macs = (want_dx + gemm_grads) * product
        taps = (2 * want_dx + gemm_grads) * columns + f * length

        def piece(i):
            s = _samples(i, size)
            return (dout[s], x[s], w, *win, groups, size, code, negative_slope, dx_part[s],
                    dw_parts[i], db_parts[i])

        in_pieces("conv2d_backward", (count,),
                  (dout, x, w, *win, groups, size, code, negative_slope, dx_part, dw_parts,
                   db_parts),
                  piece, macs=size * macs, taps=size * taps, **_gemm((length, kg, f), n * macs))
    if want_grads:
        grads = _sum_parts(dweight).reshape(weight.shape), _sum_parts(dbias)
    return dx if input_grad else None, *grads


# Every chunk of a linear layer's batch reads the whole weight: fewer, larger
# chunks than a convolution's, of at least _LINEAR_MIN_ROWS samples (the
# kernels spread a chunk's GEMMs over the team by blocks of features).
_LINEAR_CHUNKS, _LINEAR_MIN_ROWS = 8, 256


def _linear_chunks(n: int, weight: np.ndarray) -> tuple[int, int]:
    """``(samples per chunk, number of chunks)`` of a linear layer's batch of `n`."""
    return _batch_chunks(n, weight.nbytes, max(1, min(_LINEAR_CHUNKS, n // _LINEAR_MIN_ROWS)))


def _linear(x: np.ndarray, weight: np.ndarray, bias) -> np.ndarray:
    """``x @ weight.T + bias`` (``F.linear``) of validated 2-D operands of one dtype.

    x (N, I), weight (O, I), bias (O,) or None; returns (N, O).
    """
    n, o = len(x), len(weight)
    out = empty((n, o), dtype=x.dtype)
    if not n:
        return out
    size, count = _linear_chunks(n, weight)
    bias = _no_bias(x.dtype) if bias is None else bias
    in_pieces("linear_forward", (count,), (x, weight, bias, size, out),
              lambda i: (x[_samples(i, size)], weight, bias, size, out[_samples(i, size)]),
              macs=size * weight.size, **_gemm(weight.shape + (size,), n * weight.size))
    return out


def _linear_backward(dout: np.ndarray, x: np.ndarray, weight: np.ndarray,
                     input_grad: bool = True):
    """Gradients ``(dx, dweight, dbias)`` of :func:`_linear`, from validated
    operands; dx is None and not computed if `input_grad` is False."""
    n = len(x)
    dx = empty(x.shape if input_grad else (0, x.shape[1]), dtype=x.dtype)
    if not n:
        return dx if input_grad else None, np.zeros_like(weight), np.zeros(len(weight), x.dtype)
    size, count = _linear_chunks(n, weight)
    dweight = empty((count,) + weight.shape, dtype=x.dtype)
    dbias = empty((count, len(weight)), dtype=x.dtype)

    def piece(i):
        s = _samples(i, size)
        return dout[s], x[s], weight, size, dx[s], dweight[i], dbias[i]

    in_pieces("linear_backward", (count,), (dout, x, weight, size, dx, dweight, dbias), piece,
              macs=size * 2 * weight.size, **_gemm(weight.shape + (size,), 2 * n * weight.size))
    return dx if input_grad else None, _sum_parts(dweight), _sum_parts(dbias)


# Docstring sections (see fastcnn._docstrings) and checks of the pools and
# resamplers and their backwards.
_POOL_WINDOW = """
x : array_like, shape (N, C, H, W), float32 or float64
kernel_size : int or (int, int)
stride : int or (int, int), optional
    Defaults to `kernel_size`.
"""
_GRADIENT_IN = """
dout : array_like, shape (N, C, oh, ow), float32 or float64
input_shape : tuple of 4 ints
    ``(N, C, H, W)`` of the forward input.
"""
_GRADIENT_OUT = """
Returns
-------
dx : ndarray, shape `input_shape`, dtype of `dout`
"""


def _gradient_operands(dout, input_shape) -> tuple[np.ndarray, tuple]:
    """A backward's `dout`, checked 4-D float, and its `input_shape` as 4 ints."""
    dout = v.as_float_array(dout, "dout")
    v.check_nchw(dout, "dout")
    return dout, v.input_shape_4d(input_shape)


def _check_dout_shape(dout: np.ndarray, expected: tuple, op: str) -> None:
    """`dout` must have the shape `expected` of the forward `op`'s output."""
    if dout.shape != expected:
        raise ValueError(f"dout must have the {op} output shape {expected}, got {dout.shape}")


def _check_planes(dout: np.ndarray, shape: tuple) -> None:
    """`dout` must have the (N, C) of the forward input's `shape`."""
    if dout.shape[:2] != shape[:2]:
        raise ValueError(
            f"dout's (N, C)={dout.shape[:2]} must match input_shape's (N, C)={shape[:2]}"
        )


@fill_doc(window=_POOL_WINDOW)
def max_pool2d(
    x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False
):
    """2-D max pooling, as ``F.max_pool2d``.

    Each window is scanned row by row: ties go to the FIRST maximum, NaN
    propagates (its index is the last NaN seen) and padding never wins.

    Parameters
    ----------
    {window}
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
    out = empty(shape, dtype=x.dtype)
    indices = empty(shape, dtype=np.int64)
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
    _check_planes(dout, shape)
    with _index_errors(indices, lambda: f"[0, H*W) = [0, {shape[2] * shape[3]}) for "
                                        f"input_shape={shape}"):
        return _max_pool2d_backward(dout, indices, shape)


def _max_pool2d_backward(dout: np.ndarray, indices: np.ndarray, shape) -> np.ndarray:
    """:func:`max_pool2d_backward` of validated `dout`, int64 `indices` and
    shape (the kernels raise ValueError if an index lies outside its plane)."""
    out = empty(shape, dtype=dout.dtype)
    if shape[0]:
        in_pieces("max_pool2d_backward", shape[:2], (dout, indices, out),
                  taps=dout.shape[2] * dout.shape[3] + shape[2] * shape[3])
    return out


class _index_errors:
    """A context that says in full the ValueError of a kernel that checks its
    `indices` itself (as it reads them, saving a pass): they must lie in the
    range that ``allowed()`` words (called then only: the context is on the
    path of every call)."""

    def __init__(self, indices: np.ndarray, allowed) -> None:
        self.indices, self.allowed = indices, allowed

    def __enter__(self) -> None:
        pass

    def __exit__(self, kind, error, traceback) -> None:
        if kind is not None and issubclass(kind, ValueError):
            raise ValueError(
                f"indices must lie in {self.allowed()}, got values in "
                f"[{self.indices.min()}, {self.indices.max()}]"
            ) from None


def _avg_args(shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """Validate avg_pool2d's arguments; return the kernel's arguments after the array."""
    win = v.pool_window(shape, kernel_size, stride, padding, 1, ceil_mode)
    count_include_pad = v.flag(count_include_pad, "count_include_pad")
    if divisor_override is not None:
        divisor_override = v.positive_int(divisor_override, "divisor_override", v.MAX_WINDOW_PARAM)
    return (win.kh, win.kw, win.sh, win.sw, win.ph, win.pw, count_include_pad, divisor_override or 0), win


@fill_doc(window=_POOL_WINDOW)
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
    {window}
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
    return _avg_pool2d(x, *_avg_args(x.shape, kernel_size, stride, padding, ceil_mode,
                                     count_include_pad, divisor_override))


def _avg_pool2d(x: np.ndarray, args: tuple, win: v.Window) -> np.ndarray:
    """:func:`avg_pool2d` of a validated `x` and the ``(args, win)`` of
    :func:`_avg_args`."""
    out = empty(x.shape[:2] + (win.oh, win.ow), dtype=x.dtype)
    if x.shape[0]:
        in_pieces("avg_pool2d", x.shape[:2], (x, *args, out), taps=_plane_taps(win, *x.shape[2:]))
    return out


@fill_doc(gradient_in=_GRADIENT_IN, gradient_out=_GRADIENT_OUT)
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
    {gradient_in}
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        The arguments of the forward call.

    {gradient_out}
    """
    dout, shape = _gradient_operands(dout, input_shape)
    args, win = _avg_args(shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                          divisor_override)
    _check_dout_shape(dout, shape[:2] + (win.oh, win.ow), "avg_pool2d")
    return _avg_pool2d_backward(dout, shape, args, win)


def _avg_pool2d_backward(dout: np.ndarray, shape, args: tuple, win: v.Window) -> np.ndarray:
    """:func:`avg_pool2d_backward` of a validated `dout` of the input `shape`
    and the ``(args, win)`` of :func:`_avg_args`."""
    out = empty(shape, dtype=dout.dtype)
    if shape[0]:
        in_pieces("avg_pool2d_backward", shape[:2], (dout, *args, out),
                  taps=_plane_taps(win, *shape[2:]))
    return out


# ---------------------------------------------------------------------------
# The math between convolutions, for the layers, the loss and the optimizers:
# private entry points that take arguments those have validated already
# (C-contiguous arrays of one float dtype, consistent shapes), allocate the
# results and call the active kernel set.


def _batch_norm_forward(x, weight, bias, running_mean, running_var, training, momentum, eps,
                        relu=False):
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
    relu : bool
        Fuse a ReLU: ``out`` is ``relu(batch_norm(x))``, in the same pass
        (and the backward takes the gradient of that, in the same passes).

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
    out = empty_like(x)
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
    kernel("batch_norm_elemt")(x3, mean, inv_std, weight, bias, relu, out.reshape(x3.shape))
    return out, (x3, mean, inv_std, training, relu, bias)


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
        return empty_like(dout), np.zeros_like(weight), np.zeros_like(weight)
    x3, mean, inv_std, training, relu, bias = cache
    channels = x3.shape[1]
    dout3 = dout.reshape(x3.shape)
    forward = (mean, inv_std, weight, bias, relu)  # (the fused ReLU's windows come from them)
    sum_dout, sum_dout_xc = kernel("batch_norm_backward_reduce")(
        dout3, x3, *forward, np.empty(channels), np.empty(channels))
    dx = empty_like(dout)
    kernel("batch_norm_backward_elemt")(dout3, x3, *forward, sum_dout, sum_dout_xc, training,
                                        dx.reshape(x3.shape))
    return dx, (sum_dout_xc * inv_std).astype(weight.dtype), sum_dout.astype(weight.dtype)


def _flat_apply(name, out_like, *args):
    """Kernel `name` on the flattened arrays of `args` (other arguments as
    given), into a new array shaped and typed as `out_like`."""
    out = empty_like(out_like)
    flat = [a.reshape(-1) if isinstance(a, np.ndarray) else a for a in args]
    kernel(name)(*flat, out.reshape(-1))
    return out


def _relu(x):
    """``max(x, 0)`` as ``F.relu`` (NaN propagates; -0.0 gives 0.0); any shape."""
    return _flat_apply("relu", x, x)


def _relu_backward(dout, x):
    """dx of :func:`_relu`: `dout` where the forward input `x` > 0, else 0."""
    return _flat_apply("relu_backward", dout, dout, x)


def _add(a, b, relu_after: bool = False):
    """``a + b`` of two arrays of one shape (NumPy's type promotion), then,
    if `relu_after`, :func:`_relu` of it, in one pass."""
    if a.dtype != b.dtype:
        dtype = np.result_type(a, b)
        a, b = a.astype(dtype, copy=False), b.astype(dtype, copy=False)
    return _flat_apply("add", a, a, b, relu_after)


def _dropout(x, p: float, key: int):
    """``(x * mask, mask)``: `mask` is ``1 / (1 - p)`` (0 if p is 1) in each
    cell kept, 0 in each cell dropped with probability `p`, from the draws of
    `key` (an integer in ``[0, 2**64)``; see ``fastcnn.reference.dropout``);
    any shape."""
    threshold = math.ceil(p * 2.0**53)  # exact: p * 2**53 is a scaling by a power of 2
    scale = 0.0 if p == 1 else 1.0 / (1.0 - p)
    out, mask = empty_like(x), empty_like(x)
    kernel("dropout")(x.reshape(-1), key, threshold, scale, out.reshape(-1), mask.reshape(-1))
    return out, mask


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
    return kernel("softmax_cross_entropy")(logits, labels, empty_like(logits))


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


# -- padding and resampling ------------------------------------------------
# Each of these ops gathers input cells along H and along W separately, so
# forward and backward are two 1-D gathers and their adjoints (scatter-adds).


def _scatter_add(values: np.ndarray, index: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Adjoint of ``np.take(x, index, axis)``: sum `values` into `size` cells along `axis`."""
    shape = list(values.shape)
    shape[axis] = size
    out = np.zeros(shape, dtype=values.dtype)
    lead = (slice(None),) * (axis % values.ndim)
    if len(index) and np.all(index[1:] >= index[:-1]):
        # Sorted (resampling): each target's sources are one run, summed by reduceat,
        # many times faster than np.add.at.
        starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
        out[lead + (index[starts],)] = np.add.reduceat(values, starts, axis=axis)
    else:
        np.add.at(out, lead + (index,), values)
    return out


_PAD_MODES = ("constant", "reflect", "replicate", "circular")


def _pad_args(pad, mode):
    """Validate pad() arguments apart from the input size; return
    ``((left, right, top, bottom), mode)``."""
    mode = v.choice(mode, "mode", _PAD_MODES)
    if not isinstance(pad, (tuple, list)) or len(pad) not in (2, 4):
        raise ValueError(
            f"pad must be a tuple (left, right, top, bottom) or (left, right), got {pad!r}"
        )
    if len(pad) == 2 and mode != "constant":
        raise ValueError(
            f"pad must have 4 entries (left, right, top, bottom) for mode={mode!r}, got {pad!r}"
        )
    amounts = tuple(v.integer(p, "pad", "a tuple of ints") for p in (*pad, 0, 0)[:4])
    if max(abs(p) for p in amounts) > v.MAX_WINDOW_PARAM:
        raise ValueError(f"pad amounts must be at most {v.MAX_WINDOW_PARAM} in size, got {pad!r}")
    return amounts, mode


def _pad_shape(shape, pad, mode) -> tuple:
    """The output shape of pad() for an input of `shape`, every argument checked
    but the limits of reflect and circular padding."""
    (left, right, top, bottom), mode = _pad_args(pad, mode)
    n, c, h, w = shape
    for size, before, after, axis in ((h, top, bottom, "H"), (w, left, right, "W")):
        if size + before + after < 1:
            raise ValueError(f"pad={tuple(pad)} would leave nothing of input {axis}={size}")
    return (n, c, h + top + bottom, w + left + right)


def _pad_plan(shape, pad, mode):
    """Validate pad() arguments for an input of `shape`; return the source index of
    every output row and column (-1 where the constant goes) and the mode."""
    (left, right, top, bottom), mode = _pad_args(pad, mode)
    _, _, h, w = shape
    sources = []
    _pad_shape(shape, pad, mode)
    for size, before, after, axis in ((h, top, bottom, "H"), (w, left, right, "W")):
        if mode == "reflect" and max(before, after) >= size:
            raise ValueError(
                f"pad for mode='reflect' must be less than the input size along {axis}={size}, "
                f"got {(before, after)}"
            )
        if mode == "circular":
            # As PyTorch: crop first, then wrap around what is left.
            kept = np.arange(max(-before, 0), size - max(-after, 0))
            if max(before, after) > min(size, len(kept)):
                raise ValueError(
                    f"pad for mode='circular' must be at most the (cropped) input size along "
                    f"{axis}={len(kept)} (it wraps around once), got {(before, after)}"
                )
            wrapped = np.arange(-max(before, 0), len(kept) + max(after, 0)) % len(kept)
            sources.append(kept[wrapped])
            continue
        idx = np.arange(-before, size + after)
        if mode == "constant":
            idx[(idx < 0) | (idx >= size)] = -1
        elif mode == "reflect":
            idx = np.abs(idx)
            idx = np.where(idx >= size, 2 * (size - 1) - idx, idx)
        else:
            idx = np.clip(idx, 0, size - 1)
        sources.append(idx)
    return sources[0], sources[1], mode


def _inside(index: np.ndarray):
    """The output slice whose sources are inside the input, and that input slice
    (constant padding: the sources of a row or column are consecutive)."""
    valid = np.flatnonzero(index >= 0)
    if not valid.size:
        return slice(0, 0), slice(0, 0)
    first, last = valid[0], valid[-1]
    return slice(first, last + 1), slice(index[first], index[last] + 1)


def pad(x, pad, mode="constant", value=0.0) -> np.ndarray:
    """Pad (or, with negative amounts, crop) the spatial axes, as ``F.pad``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W), float32 or float64
    pad : tuple of 4 ints (left, right, top, bottom)
        Cells added on each side; negative values remove cells. ``mode="constant"``
        also takes ``(left, right)`` (W only).
    mode : {"constant", "reflect", "replicate", "circular"}
        ``reflect`` mirrors without repeating the edge (each pad less than
        the input size on its axis), ``replicate`` repeats the edge,
        ``circular`` wraps around (each pad at most the input size).
    value : float
        The fill of ``mode="constant"``.

    Returns
    -------
    out : ndarray, shape (N, C, H + top + bottom, W + left + right), dtype of `x`
    """
    x = v.as_float_array(x, "x")
    v.check_nchw(x, "x")
    out_shape = _pad_shape(x.shape, pad, mode)
    value = v.real(value, "value") if mode == "constant" else 0.0
    if not x.shape[0]:  # (the index arrays could be larger than the empty result)
        return empty(out_shape, dtype=x.dtype)
    rows, cols, mode = _pad_plan(x.shape, pad, mode)
    if mode != "constant":
        return np.take(np.take(x, rows, axis=2), cols, axis=3)
    out = np.full(x.shape[:2] + (len(rows), len(cols)), value, dtype=x.dtype)
    (out_h, in_h), (out_w, in_w) = _inside(rows), _inside(cols)
    out[:, :, out_h, out_w] = x[:, :, in_h, in_w]
    return out


def pad_backward(dout, input_shape, pad, mode="constant") -> np.ndarray:
    """Gradient of :func:`pad` with respect to its input.

    Parameters
    ----------
    dout : array_like, shape of the pad output, float32 or float64
    input_shape : tuple of 4 ints
        ``(N, C, H, W)`` of the forward input.
    pad, mode
        The arguments of the forward call.

    Returns
    -------
    dx : ndarray, shape `input_shape`, dtype of `dout`
        Every output cell's gradient goes to the input cell it was copied
        from (reflected and wrapped copies add up); padding constants and
        cropped cells get none.
    """
    dout, shape = _gradient_operands(dout, input_shape)
    _check_dout_shape(dout, _pad_shape(shape, pad, mode), "pad")
    if not shape[0]:
        return empty(shape, dtype=dout.dtype)
    rows, cols, mode = _pad_plan(shape, pad, mode)
    if mode != "constant":
        return _scatter_add(_scatter_add(dout, rows, shape[2], 2), cols, shape[3], 3)
    dx = np.zeros(shape, dtype=dout.dtype)
    (out_h, in_h), (out_w, in_w) = _inside(rows), _inside(cols)
    dx[:, :, in_h, in_w] = dout[:, :, out_h, out_w]
    return dx


_INTERPOLATE_MODES = ("nearest", "bilinear")


def _interpolate_args(size, scale_factor, mode, align_corners, recompute_scale_factor):
    """Validate interpolate() arguments apart from the input size; return
    ``(size, factors, mode, align_corners, recompute)``, one of `size` and
    `factors` an ``(h, w)`` pair and the other None."""
    mode = v.choice(mode, "mode", _INTERPOLATE_MODES)
    if align_corners is not None:
        if mode == "nearest":
            raise ValueError(
                "align_corners can only be set with mode='bilinear', got "
                f"align_corners={align_corners!r} with mode='nearest'"
            )
        align_corners = v.flag(align_corners, "align_corners")
    if (size is None) == (scale_factor is None):
        raise ValueError("exactly one of size and scale_factor must be given")
    if size is not None:
        if recompute_scale_factor is not None:
            raise ValueError("recompute_scale_factor only applies with scale_factor, not size")
        size = v.spatial_size(size, "size", maximum=v.MAX_WINDOW_PARAM)
        return size, None, mode, bool(align_corners), False
    if isinstance(scale_factor, (tuple, list)):
        if len(scale_factor) != 2:
            raise ValueError(f"scale_factor must be a float or a pair, got {scale_factor!r}")
        factors = scale_factor
    else:
        factors = (scale_factor, scale_factor)
    factors = tuple(v.real(f, "scale_factor", low=0, low_open=True) for f in factors)
    recompute = False if recompute_scale_factor is None else v.flag(
        recompute_scale_factor, "recompute_scale_factor")
    return None, factors, mode, bool(align_corners), recompute


def _interpolate_plan(shape, size, scale_factor, mode, align_corners, recompute_scale_factor):
    """Validate interpolate() arguments; return ``(oh, ow, scales, mode, align_corners)``.

    `scales` are the user's scale factors where PyTorch uses them to place
    the samples (given, and not recomputed), else None.
    """
    size, factors, mode, align, recompute = _interpolate_args(
        size, scale_factor, mode, align_corners, recompute_scale_factor)
    if size is not None:
        return *size, (None, None), mode, align
    h, w = shape[2:]
    sh, sw = factors
    if max(h * sh, w * sw) > v.MAX_WINDOW_PARAM:
        raise ValueError(
            f"scale_factor={scale_factor!r} makes an output side larger than "
            f"{v.MAX_WINDOW_PARAM} for input (H, W)={(h, w)}"
        )
    oh, ow = int(h * sh), int(w * sw)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"output would be empty: input (H, W)={(h, w)} times scale_factor={scale_factor!r} "
            f"gives {(oh, ow)}"
        )
    return oh, ow, (None, None) if recompute else (sh, sw), mode, align


def _nearest_source(in_size: int, out_size: int, scale) -> np.ndarray:
    """Source of every output index, as PyTorch's nearest_idx (float32 arithmetic)."""
    o = np.arange(out_size)
    if out_size == in_size:
        return o
    if out_size == 2 * in_size:
        return o >> 1
    step = np.float32(1.0 / scale) if scale else np.float32(in_size) / np.float32(out_size)
    return np.minimum(np.floor(o.astype(np.float32) * step).astype(np.int64), in_size - 1)


def _linear_taps(in_size, out_size, scale, align_corners, dtype):
    """``(index, weights)``, each ``(2, out_size)``: output index o reads
    ``weights[0, o] * x[index[0, o]] + weights[1, o] * x[index[1, o]]``,
    computed in `dtype` as PyTorch's compute_source_index_and_lambda."""
    o = np.arange(out_size)
    if out_size == in_size:  # PyTorch copies, whatever the scale factor
        return np.stack([o, o]), np.stack([np.ones(out_size, dtype), np.zeros(out_size, dtype)])
    o = o.astype(dtype)
    if align_corners:
        step = dtype.type(in_size - 1) / dtype.type(out_size - 1) if out_size > 1 else dtype.type(0)
        src = step * o
    else:
        step = dtype.type(1.0 / scale) if scale else dtype.type(in_size) / dtype.type(out_size)
        src = np.maximum(step * (o + dtype.type(0.5)) - dtype.type(0.5), dtype.type(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = i0 + (i0 < in_size - 1)
    l1 = np.clip(src - i0.astype(dtype), 0, 1).astype(dtype)
    return np.stack([i0, i1]), np.stack([(1 - l1).astype(dtype), l1])


def _interpolate_tables(shape, oh, ow, scales, mode, align, dtype):
    """The kernel (name) and per-axis tables of interpolate() from an
    (N, C, H, W) input to (oh, ow), read-only (see :func:`_axis_tables`)."""
    return _axis_tables(*shape[2:], oh, ow, *scales, mode, align, np.dtype(dtype))


@functools.lru_cache(maxsize=64)
def _axis_tables(h, w, oh, ow, sh, sw, mode, align, dtype):
    """:func:`_interpolate_tables`, made once per geometry: a network resamples
    the same sizes at every step, and on small planes making the tables took
    as long as a tenth of the kernel. Read-only, as they are shared."""
    if mode == "nearest":
        tables = _nearest_source(h, oh, sh), _nearest_source(w, ow, sw)
    else:
        tables = (*_linear_taps(h, oh, sh, align, dtype), *_linear_taps(w, ow, sw, align, dtype))
    for table in tables:
        table.setflags(write=False)
    return ("interpolate_nearest" if mode == "nearest" else "interpolate_bilinear"), tables


def _resample(name, src, tables, out, taps):
    """Run interpolate's kernel `name` from `src` into `out`, the tables shared by
    every (n, c) plane. (Its kernels take about a tap's time per cell read or
    written: the taps of a plane are its input and output cells.)"""
    if out.shape[0]:
        in_pieces(name, out.shape[:2], (src, *tables, out),
                  lambda i: (src[i], *tables, out[i]), taps=taps)
    return out


def interpolate(
    x, size=None, scale_factor=None, mode="nearest", align_corners=None,
    recompute_scale_factor=None,
) -> np.ndarray:
    """Resample the spatial axes, as ``F.interpolate`` (modes nearest and bilinear).

    Parameters
    ----------
    x : array_like, shape (N, C, H, W), float32 or float64
    size : int or (int, int), optional
        Output ``(oh, ow)``. Exactly one of `size` and `scale_factor`.
    scale_factor : float or (float, float), optional
        ``oh = floor(H * scale_factor)``. Unless `recompute_scale_factor`,
        the samples are placed by ``1 / scale_factor``, not ``H / oh``
        (as PyTorch; the two differ when ``H * scale_factor`` is not whole).
    mode : {"nearest", "bilinear"}
        ``nearest`` copies ``x[floor(i * H / oh)]`` (PyTorch's legacy
        nearest, in float32 arithmetic).
    align_corners : bool, optional
        Bilinear only (None means False). True maps the corner pixels'
        centres onto each other; False treats pixels as areas.
    recompute_scale_factor : bool, optional
        With `scale_factor`: place the samples by ``H / oh`` instead.

    Returns
    -------
    out : ndarray, shape (N, C, oh, ow), dtype of `x`
        An axis whose size does not change is copied, as in PyTorch.
    """
    x = v.as_float_array(x, "x")
    v.check_nchw(x, "x")
    oh, ow, scales, mode, align = _interpolate_plan(
        x.shape, size, scale_factor, mode, align_corners, recompute_scale_factor)
    out = empty(x.shape[:2] + (oh, ow), dtype=x.dtype)
    if not x.shape[0]:  # (the tables could be larger than the empty result)
        return out
    name, tables = _interpolate_tables(x.shape, oh, ow, scales, mode, align, x.dtype)
    return _resample(name, x, tables, out, taps=oh * ow + x.shape[2] * x.shape[3])


@fill_doc(gradient_in=_GRADIENT_IN, gradient_out=_GRADIENT_OUT)
def interpolate_backward(
    dout, input_shape, size=None, scale_factor=None, mode="nearest", align_corners=None,
    recompute_scale_factor=None,
) -> np.ndarray:
    """Gradient of :func:`interpolate` with respect to its input.

    Parameters
    ----------
    {gradient_in}
    size, scale_factor, mode, align_corners, recompute_scale_factor
        The arguments of the forward call.

    {gradient_out}
        Summed along H, then along W, each cell's terms in output order.
    """
    dout, shape = _gradient_operands(dout, input_shape)
    oh, ow, scales, mode, align = _interpolate_plan(
        shape, size, scale_factor, mode, align_corners, recompute_scale_factor)
    _check_dout_shape(dout, shape[:2] + (oh, ow), "interpolate")
    out = empty(shape, dtype=dout.dtype)
    if not shape[0]:
        return out
    name, tables = _interpolate_tables(shape, oh, ow, scales, mode, align, dout.dtype)
    return _resample(name + "_backward", dout, tables, out, taps=oh * ow + shape[2] * shape[3])


# -- adaptive pooling and unpooling ----------------------------------------


def _adaptive_shape(shape, output_size) -> tuple:
    """Validate `output_size`; the output shape of an adaptive pool of an input of `shape`."""
    oh, ow = v.spatial_size(output_size, "output_size", allow_none=True,
                            maximum=v.MAX_WINDOW_PARAM)
    return tuple(shape[:2]) + (shape[2] if oh is None else oh, shape[3] if ow is None else ow)


def _adaptive_taps(shape, oh: int, ow: int) -> int:
    """Cells an adaptive pool kernel touches in one plane of `shape` (for in_pieces):
    its windows' cells (a window holds at most ``H // oh + 2`` rows) and its outputs."""
    h, w = shape[2:]
    return (h + 2 * oh) * (w + 2 * ow) + oh * ow


def adaptive_avg_pool2d(x, output_size) -> np.ndarray:
    """Average pooling to a given output size, as ``F.adaptive_avg_pool2d``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W), float32 or float64
    output_size : int, (int, int), or a pair with None
        ``(oh, ow)``; None keeps the input's size on that axis.

    Returns
    -------
    out : ndarray, shape (N, C, oh, ow), dtype of `x`
        Window i along H covers rows ``floor(i*H/oh)`` to ``ceil((i+1)*H/oh)``
        (exclusive); windows overlap when oh does not divide H. Each window
        is summed row by row and divided by its height, then by its width,
        as PyTorch does (bit for bit, except for PyTorch's 1x1 output, a
        mean summed in another order).
    """
    x = v.as_float_array(x, "x")
    v.check_nchw(x, "x")
    out = empty(_adaptive_shape(x.shape, output_size), dtype=x.dtype)
    if x.shape[0]:
        in_pieces("adaptive_avg_pool2d_forward", x.shape[:2], (x, out),
                  taps=_adaptive_taps(x.shape, *out.shape[2:]))
    return out


@fill_doc(gradient_in=_GRADIENT_IN, gradient_out=_GRADIENT_OUT)
def adaptive_avg_pool2d_backward(dout, input_shape) -> np.ndarray:
    """Gradient of :func:`adaptive_avg_pool2d` with respect to its input.

    Parameters
    ----------
    {gradient_in}
        ``(oh, ow)`` is the forward's output size.

    {gradient_out}
        Each window's gradient divided by its height, then by its width,
        goes to each of its cells; a cell adds those of the windows that
        hold it in row-major window order, as PyTorch does.
    """
    dout, shape = _gradient_operands(dout, input_shape)
    _check_planes(dout, shape)
    _adaptive_shape(shape, dout.shape[2:])
    out = empty(shape, dtype=dout.dtype)
    if shape[0]:
        in_pieces("adaptive_avg_pool2d_backward", shape[:2], (dout, out),
                  taps=_adaptive_taps(shape, *dout.shape[2:]))
    return out


def adaptive_max_pool2d(x, output_size, return_indices=False):
    """Max pooling to a given output size, as ``F.adaptive_max_pool2d``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W), float32 or float64
    output_size : int, (int, int), or a pair with None
        Windows as in :func:`adaptive_avg_pool2d`.
    return_indices : bool
        Also return the argmax of every window.

    Returns
    -------
    out : ndarray, shape (N, C, oh, ow), dtype of `x`
        Ties go to the first maximum in row-major order; NaN propagates (its
        index is the last NaN), as :func:`max_pool2d`.
    indices : ndarray of int64, shape (N, C, oh, ow)
        Only if `return_indices`: flat ``ih * W + iw`` in each plane, for
        :func:`adaptive_max_pool2d_backward` or :func:`max_unpool2d`.
    """
    x = v.as_float_array(x, "x")
    v.check_nchw(x, "x")
    return_indices = v.flag(return_indices, "return_indices")
    shape = _adaptive_shape(x.shape, output_size)
    out, indices = empty(shape, dtype=x.dtype), empty(shape, dtype=np.int64)
    if x.shape[0]:
        # (a max-pool tap, a comparison and two selects, costs about two)
        in_pieces("adaptive_max_pool2d_forward", x.shape[:2], (x, out, indices),
                  taps=2 * _adaptive_taps(x.shape, *shape[2:]))
    return (out, indices) if return_indices else out


def adaptive_max_pool2d_backward(dout, indices, input_shape) -> np.ndarray:
    """Gradient of :func:`adaptive_max_pool2d`: each output's gradient goes to its argmax.

    The same scatter as :func:`max_pool2d_backward`, with the same arguments
    and checks.
    """
    return max_pool2d_backward(dout, indices, input_shape)


def _unpool_shape(shape, kernel_size, stride, padding, output_size):
    """Validate max_unpool2d's geometry for an input of `shape`; return ``(oh, ow)``."""
    kh, kw = v.pair(kernel_size, "kernel_size")
    sh, sw = (kh, kw) if stride is None else v.pair(stride, "stride")
    ph, pw = v.pair(padding, "padding", minimum=0)
    default = tuple(
        (size - 1) * s + k - 2 * p for size, s, k, p in zip(shape[2:], (sh, sw), (kh, kw), (ph, pw))
    )
    if output_size is None:
        if min(default) < 1:
            raise ValueError(
                f"output would be empty: input (H, W)={shape[2:]} with kernel_size={(kh, kw)}, "
                f"stride={(sh, sw)}, padding={(ph, pw)} gives {default}"
            )
        return default
    size = v.shape_tuple(output_size, "output_size")
    if len(size) == 4:
        size = size[2:]
    if len(size) != 2:
        raise ValueError(f"output_size must be (H, W) or (N, C, H, W), got {output_size!r}")
    for got, d, s, axis in zip(size, default, (sh, sw), "HW"):
        if not d - s < got < d + s or got < 1:
            raise ValueError(
                f"output_size must be within ({d - s}, {d + s}) along {axis} for this input "
                f"and stride, got {tuple(size)}"
            )
    return size


def _unpool_indices(indices, shape) -> np.ndarray:
    """Validate unpooling indices' dtype and shape (the kernels check their range)."""
    indices = v.as_indices(indices)
    if indices.shape != tuple(shape):
        raise ValueError(
            f"indices must have the shape of x {tuple(shape)}, got {indices.shape}"
        )
    return indices


def _unpool(name, src, indices, out, plane: int, taps: int) -> np.ndarray:
    """Run max_unpool2d's kernel `name` on (n, c) planes of `plane` cells; an
    index outside one is the kernel's ValueError, said here in full."""
    if out.shape[0]:
        with _index_errors(indices, lambda: f"[0, {plane}) (the output plane's oh*ow)"):
            in_pieces(name, out.shape[:2], (src, indices, out), taps=taps)
    return out


def max_unpool2d(x, indices, kernel_size, stride=None, padding=0, output_size=None) -> np.ndarray:
    """Partial inverse of :func:`max_pool2d`, as ``F.max_unpool2d``: each value goes
    to its index, every other cell is zero.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W), float32 or float64
    indices : array_like of integers, shape of `x`
        Flat ``ih * ow + iw`` in each output plane, e.g. from
        ``max_pool2d(..., return_indices=True)``.
    kernel_size, stride, padding : int or (int, int)
        Those of the pooling; `stride` defaults to `kernel_size`.
    output_size : (int, int) or (N, C, int, int), optional
        Default ``((H - 1) * sh - 2 * ph + kh, ...)``; another size must lie
        strictly within one stride of it. Pass the pooling's input size when
        it was odd or pooled with ``ceil_mode``: the indices are flat in THAT
        plane, and the default size may have another width.

    Returns
    -------
    out : ndarray, shape (N, C, oh, ow), dtype of `x`
    """
    x = v.as_float_array(x, "x")
    v.check_nchw(x, "x")
    oh, ow = _unpool_shape(x.shape, kernel_size, stride, padding, output_size)
    indices = _unpool_indices(indices, x.shape)
    out = empty(x.shape[:2] + (oh, ow), dtype=x.dtype)
    return _unpool("max_unpool2d", x, indices, out, oh * ow, taps=oh * ow + x.shape[2] * x.shape[3])


def max_unpool2d_backward(dout, indices) -> np.ndarray:
    """Gradient of :func:`max_unpool2d` with respect to `x`: `dout` read at the indices.

    Parameters
    ----------
    dout : array_like, shape (N, C, oh, ow), float32 or float64
    indices : array_like of integers, shape (N, C, H, W)
        The forward's indices.

    Returns
    -------
    dx : ndarray, shape of `indices`, dtype of `dout`
    """
    dout = v.as_float_array(dout, "dout")
    v.check_nchw(dout, "dout")
    n, c, oh, ow = dout.shape
    idx = np.asarray(indices)
    if idx.ndim != 4 or idx.shape[:2] != (n, c):
        raise ValueError(
            f"indices must be 4-D with dout's (N, C)={(n, c)}, got shape {idx.shape}"
        )
    idx = _unpool_indices(idx, idx.shape)
    out = empty(idx.shape, dtype=dout.dtype)
    return _unpool("max_unpool2d_backward", dout, idx, out, oh * ow,
                   taps=2 * idx.shape[2] * idx.shape[3])


# -- group and layer normalisation -----------------------------------------


def _norm_operands(x, weight, bias, param_shape, eps, dout=None):
    """Validate normalisation operands; return them (weight/bias may be None) and eps."""
    v.check_same_dtype(x=x, weight=weight, bias=bias, dout=dout)
    v.check_param_shape(weight, "weight", param_shape)
    v.check_param_shape(bias, "bias", param_shape)
    return v.real(eps, "eps", low=0, low_open=True)


def _optional_array(value, name):
    return None if value is None else v.as_float_array(value, name)


def _normalize(x: np.ndarray, groups_shape, eps: float):
    """``(x - mean) / sqrt(var + eps)`` over the last axis of `x` seen as `groups_shape`;
    returns the normalised array (shape of x) and 1/sqrt(var + eps)."""
    xg = x.reshape(groups_shape)
    centred = xg - xg.mean(axis=-1, keepdims=True)
    var = np.mean(centred * centred, axis=-1, keepdims=True)
    rstd = 1 / np.sqrt(var + x.dtype.type(eps))
    return (centred * rstd).reshape(x.shape), rstd


def _normalize_backward(g: np.ndarray, xhat: np.ndarray, rstd, groups_shape) -> np.ndarray:
    """Input gradient of a normalisation, from the gradient `g` of its normalised output."""
    gg, xg = g.reshape(groups_shape), xhat.reshape(groups_shape)
    dx = gg - gg.mean(axis=-1, keepdims=True) - xg * np.mean(gg * xg, axis=-1, keepdims=True)
    return (dx * rstd).reshape(g.shape)


def _affine_norm(x, weight, bias, eps, groups_shape) -> np.ndarray:
    """Normalise `x` over the last axis of `groups_shape`, then scale and shift by
    `weight` and `bias` (None, or arrays that broadcast against `x`)."""
    if not x.size:
        return empty_like(x)
    out, _ = _normalize(x, groups_shape, eps)
    if weight is not None:
        out *= weight
    if bias is not None:
        out += bias
    return out


def _affine_norm_backward(dout, x, weight, eps, groups_shape, axes, param_shape):
    """``(dx, dweight, dbias)`` of :func:`_affine_norm`; the parameter gradients sum
    over `axes` into `param_shape`."""
    if dout.shape != x.shape:
        raise ValueError(f"dout must have the shape of x {x.shape}, got {dout.shape}")
    if not x.size:
        return empty_like(x), np.zeros(param_shape, x.dtype), np.zeros(param_shape, x.dtype)
    xhat, rstd = _normalize(x, groups_shape, eps)
    grad = dout if weight is None else dout * weight
    dx = _normalize_backward(grad, xhat, rstd, groups_shape)
    return dx, np.sum(dout * xhat, axis=axes), np.sum(dout, axis=axes)


# Docstring sections of group_norm and layer_norm and their backwards.
_NORM_OUT = """
eps : float
    Added to the (biased) variance.

Returns
-------
out : ndarray, shape and dtype of `x`
"""


def _norm_grads(param_shape: str) -> str:
    """The Returns section of a normalisation's backward, parameters of `param_shape`."""
    return f"""
Returns
-------
dx : ndarray, shape of `x`
dweight, dbias : ndarray, shape {param_shape}
    Returned whether or not the forward call had them.
"""


def _norm_backward(dout, norm_args, *forward_args):
    """``(dx, dweight, dbias)`` of a normalisation whose operands
    ``norm_args(*forward_args, dout)`` validates (the bias does not enter them)."""
    dout = v.as_float_array(dout, "dout")
    x, weight, _, eps, *geometry = norm_args(*forward_args, dout)
    return _affine_norm_backward(dout, x, weight, eps, *geometry)


def _group_norm_args(x, num_groups, weight, bias, eps, dout=None):
    """Validated group_norm operands: ``(x, weight, bias, eps, groups_shape, axes,
    param_shape)``, weight and bias shaped to broadcast over x's channels."""
    x = v.as_float_array(x, "x")
    if x.ndim < 2 or min(x.shape[1:]) == 0:
        raise ValueError(
            f"x must be an array (N, C, ...) with C >= 1 and non-empty other dims, "
            f"got shape {x.shape}"
        )
    num_groups = v.positive_int(num_groups, "num_groups")
    c = x.shape[1]
    if c % num_groups:
        raise ValueError(f"num_groups={num_groups} must divide the channels C={c}")
    weight, bias = _optional_array(weight, "weight"), _optional_array(bias, "bias")
    eps = _norm_operands(x, weight, bias, (c,), eps, dout)
    view = (c,) + (1,) * (x.ndim - 2)
    weight, bias = (None if a is None else a.reshape(view) for a in (weight, bias))
    axes = (0,) + tuple(range(2, x.ndim))
    return x, weight, bias, eps, (x.shape[0], num_groups, -1), axes, (c,)


@fill_doc(norm_out=_NORM_OUT)
def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5) -> np.ndarray:
    """Group normalisation, as ``F.group_norm``.

    Parameters
    ----------
    x : array_like, shape (N, C, ...), float32 or float64
    num_groups : int
        Divides C; each sample's channels are split into this many groups,
        each normalised over its channels and all other axes.
    weight, bias : array_like, shape (C,), dtype of `x`, optional
        Per-channel scale and shift.
    {norm_out}
    """
    x, weight, bias, eps, groups_shape, _, _ = _group_norm_args(x, num_groups, weight, bias, eps)
    return _affine_norm(x, weight, bias, eps, groups_shape)


@fill_doc(norm_grads=_norm_grads("(C,)"))
def group_norm_backward(dout, x, num_groups, weight=None, eps=1e-5):
    """Gradients of :func:`group_norm` with respect to its input, weight and bias.

    Parameters
    ----------
    dout : array_like, shape and dtype of `x`
    x, num_groups, weight, eps
        The arguments of the forward call (the bias does not enter the gradients).

    {norm_grads}
    """
    return _norm_backward(dout, _group_norm_args, x, num_groups, weight, None, eps)


def _layer_norm_args(x, normalized_shape, weight, bias, eps, dout=None):
    """Validated layer_norm operands: ``(x, weight, bias, eps, groups_shape, axes,
    param_shape)``."""
    x = v.as_float_array(x, "x")
    if isinstance(normalized_shape, (tuple, list)):
        shape = v.shape_tuple(normalized_shape, "normalized_shape")
    else:
        shape = (v.positive_int(normalized_shape, "normalized_shape"),)
    if not shape or min(shape) < 1:
        raise ValueError(f"normalized_shape must be positive ints, got {normalized_shape!r}")
    if x.ndim < len(shape) or x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(
            f"x's last {len(shape)} dims must be normalized_shape={shape}, got shape {x.shape}"
        )
    weight, bias = _optional_array(weight, "weight"), _optional_array(bias, "bias")
    eps = _norm_operands(x, weight, bias, shape, eps, dout)
    axes = tuple(range(x.ndim - len(shape)))
    return x, weight, bias, eps, (-1, math.prod(shape)), axes, shape


@fill_doc(norm_out=_NORM_OUT)
def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5) -> np.ndarray:
    """Layer normalisation over the trailing axes, as ``F.layer_norm``.

    Parameters
    ----------
    x : array_like, shape (..., *normalized_shape), float32 or float64
    normalized_shape : int or tuple of ints
        The trailing dims normalised together.
    weight, bias : array_like, shape `normalized_shape`, dtype of `x`, optional
        Element-wise scale and shift.
    {norm_out}
    """
    x, weight, bias, eps, groups_shape, _, _ = _layer_norm_args(
        x, normalized_shape, weight, bias, eps)
    return _affine_norm(x, weight, bias, eps, groups_shape)


@fill_doc(norm_grads=_norm_grads("`normalized_shape`"))
def layer_norm_backward(dout, x, normalized_shape, weight=None, eps=1e-5):
    """Gradients of :func:`layer_norm` with respect to its input, weight and bias.

    Parameters
    ----------
    dout : array_like, shape and dtype of `x`
    x, normalized_shape, weight, eps
        The arguments of the forward call.

    {norm_grads}
    """
    return _norm_backward(dout, _layer_norm_args, x, normalized_shape, weight, None, eps)


# -- transposed convolution -------------------------------------------------
# conv_transpose2d is the input gradient of conv2d: per sample and group, a
# GEMM of the weight with the input gives the columns, and col2im sums them
# into the output. Its input gradient is a conv2d of dout with the same
# weight, its weight gradient conv2d's weight gradient with x and dout swapped.


class _Transposed(NamedTuple):
    """Geometry of a transposed convolution: output shape, the conv2d window that
    maps the output back onto the input, and whether that window's extent is
    larger than the input (output_padding >= stride)."""

    out_shape: tuple
    win: v.Window
    oversized: bool


def _conv_transpose_operands(x, weight, groups, stride, padding, output_padding, dilation,
                             dout=None):
    x = v.as_float_array(x, "x")
    v.check_nchw(x, "x")
    weight = v.as_float_array(weight, "weight")
    if weight.ndim != 4 or min(weight.shape) == 0:
        raise ValueError(
            "weight must be a non-empty 4-D array (C_in, F/groups, kh, kw), "
            f"got shape {weight.shape}"
        )
    groups = v.positive_int(groups, "groups")
    c = x.shape[1]
    if weight.shape[0] != c:
        raise ValueError(
            f"weight.shape[0] must be x's channels C_in={c}, got weight of shape {weight.shape}"
        )
    if c % groups:
        raise ValueError(f"groups={groups} must divide in_channels={c}")
    kh, kw = weight.shape[2:]
    sh, sw = v.pair(stride, "stride")
    ph, pw = v.pair(padding, "padding", minimum=0)
    oph, opw = v.pair(output_padding, "output_padding", minimum=0)
    dh, dw = v.pair(dilation, "dilation")
    if oph >= max(sh, dh) or opw >= max(sw, dw):
        raise ValueError(
            f"output_padding must be smaller than stride or dilation, got output_padding="
            f"{(oph, opw)} with stride={(sh, sw)} and dilation={(dh, dw)}"
        )
    n, _, h, w = x.shape
    out_h = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    out_w = (w - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(
            f"output would be empty: input (H, W)={(h, w)} with kernel {(kh, kw)}, "
            f"stride={(sh, sw)}, padding={(ph, pw)}, dilation={(dh, dw)} gives {(out_h, out_w)}"
        )
    out_shape = (n, weight.shape[1] * groups, out_h, out_w)
    win = v.conv_window(out_shape, (kh, kw), (sh, sw), (ph, pw), (dh, dw))
    v.check_same_dtype(x=x, weight=weight, dout=dout)
    return x, weight, groups, _Transposed(out_shape, win, (win.oh, win.ow) != (h, w))


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1) -> np.ndarray:
    """2-D transposed convolution, as ``F.conv_transpose2d``.

    The adjoint of :func:`conv2d` with the same weight and geometry (its
    input gradient), e.g. a learnable upsampling with ``stride=2``.

    Parameters
    ----------
    x : array_like, shape (N, C_in, H, W), float32 or float64
    weight : array_like, shape (C_in, F/groups, kh, kw), dtype of `x`
    bias : array_like, shape (F,), dtype of `x`, optional
    stride, padding, dilation : int or (int, int)
        Those of the conv2d this is the adjoint of; `padding` removes that
        many cells from each side of the full output.
    output_padding : int or (int, int)
        Cells added at the bottom/right (smaller than stride or dilation): picks
        one of the input sizes that a strided conv2d maps to the same size.
    groups : int
        Divides C_in.

    Returns
    -------
    out : ndarray, shape (N, F, oh, ow), dtype of `x`
        ``oh = (H - 1) * sh - 2 * ph + dh * (kh - 1) + output_padding_h + 1``.
    """
    x, weight, groups, geo = _conv_transpose_operands(
        x, weight, groups, stride, padding, output_padding, dilation)
    if bias is not None:
        bias = v.as_float_array(bias, "bias")
        if bias.shape != (geo.out_shape[1],):
            raise ValueError(f"bias must have shape ({geo.out_shape[1]},), got {bias.shape}")
        v.check_same_dtype(x=x, bias=bias)
    return _conv_transpose2d(x, weight, bias, geo, groups)


def _conv_transpose2d(x, weight, bias, geo: _Transposed, groups: int) -> np.ndarray:
    """:func:`conv_transpose2d` of validated operands and geometry: the input
    gradient of the conv2d of window ``geo.win`` whose output gradient is `x`."""
    # The conv's input: its shape and dtype are read, never its pages.
    canvas = empty(geo.out_shape, x.dtype)
    out = _conv2d_backward(_conv_output(x, geo), canvas, weight, geo.win, groups,
                           weight_grad=False)[0]
    if bias is not None:
        out += bias[:, None, None]
    return out


def _conv_output(x, geo: _Transposed) -> np.ndarray:
    """`x` as the output (gradient) of the conv2d of window ``geo.win``: where
    that window reaches past the input (output_padding >= stride), the conv's
    output is larger, and its cells beyond `x` are zeros."""
    if not geo.oversized:
        return x
    h, w = x.shape[2:]
    return pad(x, (0, geo.win.ow - w, 0, geo.win.oh - h))


def conv_transpose2d_backward(dout, x, weight, stride=1, padding=0, output_padding=0, groups=1,
                              dilation=1):
    """Gradients of :func:`conv_transpose2d` with respect to its input, weight and bias.

    Parameters
    ----------
    dout : array_like, shape (N, F, oh, ow), dtype of `x`
    x, weight, stride, padding, output_padding, groups, dilation
        The arguments of the forward call.

    Returns
    -------
    dx : ndarray, shape (N, C_in, H, W)
        ``conv2d(dout, weight, stride, padding, dilation, groups)``.
    dweight : ndarray, shape (C_in, F/groups, kh, kw)
    dbias : ndarray, shape (F,)
        Returned whether or not the forward call had a bias.
    """
    dout = v.as_float_array(dout, "dout")
    x, weight, groups, geo = _conv_transpose_operands(
        x, weight, groups, stride, padding, output_padding, dilation, dout)
    if dout.shape != geo.out_shape:
        raise ValueError(
            f"dout must have the conv_transpose2d output shape {geo.out_shape}, got {dout.shape}"
        )
    return _conv_transpose2d_backward(dout, x, weight, geo, groups)


def _conv_transpose2d_backward(dout, x, weight, geo: _Transposed, groups: int,
                               input_grad: bool = True):
    """:func:`conv_transpose2d_backward` of validated operands and geometry:
    dx is the conv2d of `dout`, dweight that conv2d's weight gradient. With
    ``input_grad=False`` the returned dx is None and is not computed."""
    dx = None
    if input_grad:
        h, w = x.shape[2:]
        dx = _conv2d(dout, weight, None, geo.win, groups)
        if geo.oversized:
            dx = np.ascontiguousarray(dx[:, :, :h, :w])
    _, dweight, _ = _conv2d_backward(_conv_output(x, geo), dout, weight, geo.win, groups,
                                     input_grad=False)
    return dx, dweight, dout.sum(axis=(0, 2, 3))

"""Fuzzing: every public call returns the twin's result or raises a clear error, and never crashes.

Hypothesis generates calls of every public function of ``fastcnn.functional``
and of the layers, losses and optimizers: random ranks and
shapes (zeros included; huge extents through zero-stride ``broadcast_to``
views, size-0 arrays and ``input_shape``/``output_size`` integers, so nothing
big is allocated), every dtype kind (ints, bool, complex, float16, object,
strings, byte-swapped), odd memory layouts (Fortran, channels-last,
negative strides, strided, read-only, unaligned, nested lists), NaN/inf
data, and geometry arguments of every type (0, negatives, floats, bools,
None, strings, tuples of the wrong length, NumPy scalars, 0-d arrays, values
up to 2**100).

A call is a JSON *spec*. One worker subprocess (this file run with
``--worker``) builds the arguments of each spec, runs the call under the
compiled backend and under ``use_backend("numpy")`` and answers with one JSON
line. A segfault or an abort kills only the worker: the test fails with the
spec and a one-line reproducer, and a fresh worker takes over.

The contract checked for each call (DESIGN.md, "Bad input gets a clear error"):

* both backends return, and the results are bitwise equal (NaN == NaN, signs
  of zeros included; same dtypes and shapes), or both raise the same type.
  Ops that multiply through BLAS or sum in another order (``_ROUNDING_OPS``)
  are equal to rounding; for the bilinear ones (conv2d, conv_transpose2d and
  their backwards) rounding is judged per element against the sum of the
  magnitudes of its terms, and where that sum overflows the dtype any
  non-finite result is accepted (the summation order decides between inf,
  -inf and NaN then; see ``_close``);
* the only exceptions are ValueError and TypeError with a message that names
  an argument; MemoryError only when some array of the call really is huge
  (a result, i.e. an output or a gradient, even of empty inputs; an input
  once made contiguous; or the im2col buffer of a convolution: >= 2**31
  elements). The cost model (``_cost``) that predicts these sizes is itself
  checked: every result of 2**12 elements or more must have been counted;
* inputs are never modified; the worker survives every call.

The NumPy twin materialises the padded input and every window and loops
over the kernel offsets in Python, so a huge padding or kernel is beyond it
even when the output is tiny. Such calls (estimated before they run), and
calls where the twin fails with MemoryError or NumPy's "array is too big",
are judged by a third, brute-force kernel set defined here instead: Python
loops over the output, index arithmetic in Python ints (no overflow), the
compiled kernels' summation order (so bitwise comparable). Calls that even
it cannot afford are skipped and counted. Calls whose arrays would hold
between 2**22 and 2**31 elements are skipped (slow, and they may or may not
fit in memory), and so are calls whose kernels would visit more than 2**32
window cells (valid, but hours of work).

The worker limits its own address space (Linux ``RLIMIT_AS``, 3 GiB) so that
a runaway allocation becomes a MemoryError instead of eating the machine;
``FASTCNN_FUZZ_RLIMIT_GB=0`` switches that off (sanitizer runs, see
tools/sanitize.sh). Huge extents are generated on Linux only.
``FASTCNN_FUZZ_TIMEOUT`` (seconds, default 120) bounds one call;
``FASTCNN_FUZZ_STDERR_DIR`` keeps the worker's stderr (sanitizer reports)
in that directory.

Running
-------
``HYPOTHESIS_PROFILE=ci pytest tests/test_fuzz.py``
    What CI runs: derandomized, about 18,200 calls (each under both
    backends), 4 minutes on 2 cores once the core passes (shrinking a
    failure takes longer).
``HYPOTHESIS_PROFILE=long pytest tests/test_fuzz.py``
    On demand: 33x more examples (about 600,000 calls; hours).
``FASTCNN_FUZZ_CALLS=200000 HYPOTHESIS_PROFILE=long pytest tests/test_fuzz.py``
    That many examples in all instead (each one call; the tests share them
    as ``WEIGHTS`` says), randomized like the long profile. About 50-75
    calls/s (the parent's Hypothesis draws are most of it): 100,000 calls
    took 32 minutes on 2 busy cores, so 200,000 take about an hour.
``python tests/test_fuzz.py --replay '<spec json>'``
    Runs one spec (as printed by a failure) in this process, e.g. under gdb.

When the module's tests end (also when ``-x`` stops them) a summary line
gives the calls made in all, per op (functional op, ``layer.<class>``,
``loss.<name>``, ``optim.<class>``), the calls per second and the worker's
crashes/hangs: ``Tally`` counts them in `Worker.run`.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import inspect
import json
import math
import numbers
import os
import pickle
import queue
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import numpy as np

GRAY_LO = 2**22  # elements; calls whose arrays fall between GRAY_LO and
GRAY_HI = 2**31  # GRAY_HI are skipped (slow, and may or may not fit in memory)
TWIN_MAX_LOOPS = 2**12  # the NumPy twin loops over kernel offsets in Python
# Window cells the compiled kernels visit (output cells x cells of a window
# inside the input): a pool of a million outputs over windows of a million
# cells is a valid call that takes hours, in PyTorch too. Such calls are
# skipped, like the gray zone above.
KERNEL_MAX_WORK = 2**32
HUGE_EXTENTS = sys.platform.startswith("linux")
# Results of at least this many elements must be counted by the cost model.
COST_CHECKED_FROM = 2**12
# NumPy's ValueErrors for arrays it cannot describe (the twin's padded copies).
NUMPY_SIZE_ERRORS = ("array is too big", "Maximum allowed dimension exceeded")


# ===========================================================================
# Part 1: building arguments from specs, running calls, comparing results.
# Used by the worker subprocess and by --replay; imports only NumPy and fastcnn.


class _Shape:
    """Stand-in for an array when specs are only inspected (never built)."""

    def __init__(self, recipe):
        self.shape = tuple(recipe["shape"])
        self.dtype = recipe["dtype"]
        self.recipe = recipe


def _values(rng, shape, dtype, fill, recipe):
    """Random contents of an array recipe (before its memory layout is applied)."""
    kind = dtype.kind
    if kind == "f":
        if fill == "zeros":
            v = np.zeros(shape)
        elif fill == "alt_zeros":  # -0.0, 0.0, -0.0, ...: which zero is the max?
            v = np.where(np.arange(math.prod(shape)).reshape(shape) % 2 == 0, -0.0, 0.0)
        elif fill == "ties":  # few distinct values: ties, and zeros of both signs
            v = rng.integers(-2, 3, shape).astype(float)
            v[(v == 0) & (rng.random(shape) < 0.5)] = -0.0
        else:
            v = rng.standard_normal(shape)
            if fill == "special":
                specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 5e-324, 3.0])
                pick = rng.random(shape) < 0.4
                v[pick] = rng.choice(specials, size=int(pick.sum()))
        with np.errstate(over="ignore"):
            return v.astype(dtype)
    if kind in "iu":
        native = dtype.newbyteorder("=")
        lo, hi = recipe.get("lo", -3 if kind == "i" else 0), recipe.get("hi", 10)
        v = rng.integers(lo, hi, size=shape, dtype=native)
        pokes = recipe.get("poke", [])
        if v.size and pokes:
            flat = v.reshape(-1)
            for value in pokes:
                flat[int(rng.integers(0, v.size))] = value
        return v.astype(dtype)
    if kind == "b":
        return rng.random(shape) < 0.5
    if kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if kind == "O":
        out = np.empty(shape, dtype=object)
        out.reshape(-1)[:] = [float(v) for v in rng.standard_normal(out.size)]
        return out
    if kind in "US":
        return rng.standard_normal(shape).round(2).astype(dtype)
    return np.zeros(shape, dtype=dtype)  # datetimes, void


def make_array(recipe):
    """Build the array described by `recipe` (see `array_specs`).

    With ``"magnitudes": true`` in a float recipe, the contents become their
    absolute values in float64 and the non-finite ones 0 (see `_compare`).
    """
    shape = tuple(recipe["shape"])
    dtype = np.dtype(recipe["dtype"])
    layout = recipe["layout"]
    rng = np.random.default_rng(recipe["seed"])
    magnitudes = recipe.get("magnitudes") and dtype.kind == "f"

    def values(shape):
        v = _values(rng, shape, dtype, recipe["fill"], recipe)
        return np.abs(np.where(np.isfinite(v), v, 0)).astype(np.float64) if magnitudes else v

    if magnitudes:
        dtype = np.dtype(np.float64)
    if layout == "empty":  # size 0, any extents
        return np.empty(shape, dtype=dtype)
    if layout == "broadcast":  # zero strides where an extent is large: nothing big is allocated
        base_shape = tuple(d if d <= 8 else 1 for d in shape)
        return np.broadcast_to(values(base_shape), shape)
    a = values(shape)
    if a.ndim == 0 and layout not in ("ro", "list"):
        return a
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "T" and a.ndim >= 2:  # channels-last memory, NCHW view
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 1, -1)), -1, 1)
    if layout == "neg":  # every axis negatively strided
        return np.flip(np.flip(a).copy())
    if layout == "strided" and a.ndim >= 1:
        buf = np.zeros(shape[:-1] + (2 * shape[-1],), dtype=dtype)
        buf[..., ::2] = a
        return buf[..., ::2]
    if layout == "ro":
        a.setflags(write=False)
        return a
    if layout == "unaligned" and dtype.itemsize > 1 and dtype.kind not in "OUSV":
        raw = np.zeros(a.nbytes + dtype.itemsize, dtype=np.uint8)
        out = raw[1 : 1 + a.nbytes].view(dtype).reshape(shape)
        out[...] = a
        return out
    if layout == "list":
        return a.tolist()
    return a


def decode(value, build=True, seen=None):
    """Turn a JSON spec value into the Python object it describes.

    With `build` false, arrays become `_Shape` stand-ins. Built arrays are
    appended to `seen` (if given) with a fingerprint of their contents.
    """
    if isinstance(value, list):
        return [decode(v, build, seen) for v in value]
    if not isinstance(value, dict):
        return value
    if "t" not in value:  # keyword arguments
        return {k: decode(v, build, seen) for k, v in value.items()}
    t = value["t"]
    if t == "tuple":
        return tuple(decode(v, build, seen) for v in value["v"])
    if t == "list":
        return [decode(v, build, seen) for v in value["v"]]
    if t == "np":
        return np.dtype(value["dtype"]).type(value["v"])
    if t == "nd":
        return np.array(value["v"], dtype=value["dtype"])
    if t == "array":
        if not build:
            return _Shape(value)
        try:
            obj = make_array(value)
        except Exception as exc:
            raise HarnessError(f"cannot build {value}: {exc!r}") from exc
        if seen is not None and isinstance(obj, np.ndarray):
            seen.append((obj, _fingerprint(obj)))
        return obj
    if t == "bytes":
        return value["v"].encode()
    if t == "object":
        return object()
    if t == "dict":
        return {"kernel_size": 2}
    raise ValueError(f"unknown spec value {value!r}")


def _arrays_in(obj, path="arg"):
    if isinstance(obj, np.ndarray):
        yield path, obj
    elif isinstance(obj, (tuple, list)):
        for i, v in enumerate(obj):
            yield from _arrays_in(v, f"{path}[{i}]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _arrays_in(v, f"{path}.{k}")


def _fingerprint(a):
    if a.size > 2**16:  # huge broadcast views: read-only, cannot change
        return None
    if a.dtype.kind == "O":
        # flat: the nested lists of an empty array with a huge extent would
        # not fit in the worker's address space
        return a.shape, pickle.dumps(a.reshape(-1).tolist())
    return a.dtype.str, a.shape, a.tobytes()


# Ops whose compiled kernels and twins agree to rounding only (reference.py
# says why): products through two BLAS libraries (conv2d, Dense), BatchNorm's
# and the loss's sums, tanh/exp against NumPy's vectorised ones; and any
# layer stack that holds one.
_ROUNDING_OPS = ("conv2d", "Conv2D", "conv_transpose2d", "ConvTranspose2D", "Dense", "BatchNorm",
                 "Tanh", "ELU", "SELU", "Sigmoid", "softmax_cross_entropy")


def _multiplies(spec) -> bool:
    return any(name in json.dumps(spec) for name in _ROUNDING_OPS)


def _close(a, b, bound=None):
    """Boolean mask of the float elements of `a` and `b` that differ by more
    than rounding: NaN and infinities where the other has the same, finite
    values within a relative 1e-5 (float32) or 1e-12 (float64) of the
    largest finite magnitude.

    `bound`, if given, holds for each element the sum of the magnitudes of
    the finite terms that it adds up (see `_compare`): the error of a sum
    is relative to that, not to the result, and where it nears the dtype's
    largest value a partial sum may overflow in one summation order and
    not in another (or overflow to -inf in one and meet +inf in another),
    so any non-finite result is as right as the other side's there.
    """
    a, b = np.asarray(a), np.asarray(b)
    finite = np.isfinite(a) & np.isfinite(b)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    tol = 1e-5 if a.dtype.itemsize == 4 else 1e-12
    scale = max(float(np.abs(a[finite]).max(initial=0)), float(np.abs(b[finite]).max(initial=0)), 1e-30)
    if bound is not None:
        bound = np.asarray(bound, dtype=np.float64)
        scale = np.maximum(scale, bound)
        # A float32 sum of n terms added in runs of r errs by up to about
        # (r + n / r) ulps of the terms' magnitudes (BLAS's and the direct
        # kernels' runs are some hundred long): 8e-5 of them covers 2**18
        # terms of one sign, as a plane of 512 x 512 outputs.
        tol *= 8 if a.dtype.itemsize == 4 else 1
        same |= ~finite & ~(bound < np.finfo(a.dtype).max / 2)
    with np.errstate(invalid="ignore", over="ignore"):
        near = finite & (np.abs(a.astype(np.float64) - b) <= tol * scale)
    return ~(same | near)


def _same(a, b, path="result", close=False, bound=None):
    """'' when `a` and `b` are bitwise the same (NaN == NaN), or with `close`
    the same to rounding (:func:`_close`, given the magnitude `bound` of the
    same structure if any), else a description."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)):
            return f"{path}: {type(a).__name__} vs {type(b).__name__}"
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"{path}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        if close and a.dtype.kind == "f":
            fits = isinstance(bound, np.ndarray) and bound.shape == a.shape
            bad = _close(a, b, bound if fits else None)
        elif a.dtype.kind in "fc":
            fa = np.ascontiguousarray(a).view(f"u{a.dtype.itemsize // (2 if a.dtype.kind == 'c' else 1)}")
            fb = np.ascontiguousarray(b).view(fa.dtype)
            na = np.isnan(np.ascontiguousarray(a).view(f"f{fa.dtype.itemsize}"))
            nb = np.isnan(np.ascontiguousarray(b).view(f"f{fb.dtype.itemsize}"))
            bad = (fa != fb) & ~(na & nb)
        else:
            bad = a != b
        if bad.any():
            where = tuple(int(i[0]) for i in np.nonzero(bad))
            return f"{path}: {int(bad.sum())} elements differ, first at {where}: {a[where]!r} vs {b[where]!r}"
        return ""
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} items"
        parts = bound if isinstance(bound, (tuple, list)) and len(bound) == len(a) else [None] * len(a)
        for i, (x, y, z) in enumerate(zip(a, b, parts)):
            why = _same(x, y, f"{path}[{i}]", close, z)
            if why:
                return why
        return ""
    if isinstance(a, dict) and isinstance(b, dict):
        if sorted(a) != sorted(b):
            return f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            why = _same(a[k], b[k], f"{path}.{k}", close,
                        bound.get(k) if isinstance(bound, dict) else None)
            if why:
                return why
        return ""
    if isinstance(a, float) and isinstance(b, float):
        if (math.isnan(a) and math.isnan(b)) or np.float64(a).tobytes() == np.float64(b).tobytes():
            return ""
        if close and not _close(np.float32(a), np.float32(b)).any():
            return ""
        return f"{path}: {a!r} vs {b!r}"
    return "" if type(a) is type(b) and a == b else f"{path}: {a!r} vs {b!r}"


# Functional ops whose every result element is a sum of products of input
# elements (plus a bias): run on the inputs' magnitudes, they give each
# element's sum of |terms|.
_BILINEAR_OPS = ("F.conv2d", "F.conv2d_backward", "F.conv_transpose2d", "F.conv_transpose2d_backward")


def _with_magnitudes(value):
    """`value` (a spec) with every array recipe asking for magnitudes (see `make_array`)."""
    if isinstance(value, list):
        return [_with_magnitudes(v) for v in value]
    if not isinstance(value, dict):
        return value
    value = {k: _with_magnitudes(v) for k, v in value.items()}
    if value.get("op") == "layer":  # magnitudes are float64: so are the layer's parameters
        value["ctor_kwargs"] = dict(value["ctor_kwargs"], dtype="<f8")
    return dict(value, magnitudes=True) if value.get("t") == "array" else value


def _compare(spec, a, b, oracle):
    """'' when results `a` and `b` of `spec` agree, else a description.

    Bitwise, or to rounding for the ops in `_ROUNDING_OPS`. Where the
    rounding rule fails for a bilinear op (conv2d, ...) or a batch norm
    (whose mean of 1e30, -1e30 and small values is any small value), the
    `oracle` backend runs the call again on the inputs' magnitudes: that
    bound decides what rounding and overflow can explain (:func:`_close`).
    """
    close = _multiplies(spec)
    why = _same(a, b, close=close)
    inner = spec
    while inner["op"] == "threads":
        inner = inner["call"]
    if why and close and (inner["op"] in _BILINEAR_OPS
                          or inner.get("cls", "").startswith("BatchNorm")):
        report, bound = run_once(_with_magnitudes(spec), oracle)
        if report["kind"] == "ok":
            why = _same(a, b, close=True, bound=bound)
    if (why.startswith("result.dx:") and inner.get("cls", "").startswith("BatchNorm")
            and decode(inner["training"]) is not False):
        bound = {"dx": np.full(a["dx"].shape, _batch_norm_dx_terms(inner, a))}
        why = _same(a, b, close=True, bound=bound)
    return why


def _batch_norm_dx_terms(spec, result) -> float:
    """The magnitude of the terms of a training batch norm's input gradient,
    ``weight * rstd * (dout - mean(dout) - xhat * mean(dout * xhat))``:
    at most ``3 * max|weight| * max|dout| / sqrt(min var + eps)``. Where
    dout is close to the input, they cancel to a gradient far smaller than
    themselves, which rounds differently in each summation order (a batch
    of 2 whose gradient is its input: 6e-5 from terms of 1); a magnitude
    run of the layer (:func:`_compare`) does not bound such terms."""
    layer = _make_layer(spec, [])
    x = np.asarray(decode(spec["x"]), dtype=np.float64)
    dout = decode(dict(spec["dout"], t="array", shape=list(result["out"].shape),
                       dtype=result["out"].dtype.str)) if spec["dout"].get("t") == "like" \
        else decode(spec["dout"])
    dout = np.asarray(dout, dtype=np.float64)
    if not (x.size and np.isfinite(x).all() and np.isfinite(dout).all()):
        return 0.0
    var = x.var(axis=(0,) + tuple(range(2, x.ndim)))
    weight = np.abs(result["params"].get("weight", np.ones(1))).max(initial=1.0)
    return float(3 * weight * np.abs(dout).max() / np.sqrt(var.min() + layer.eps))


class HarnessError(Exception):
    """A bug of this test module (not of fastcnn): a spec it cannot build."""


class _NoOracle(Exception):
    """The brute-force kernels would take too long for this call."""


# ---------------------------------------------------------------------------
# Brute-force kernel set: the third oracle (reference.py's contract and
# signatures; the compiled kernels' loop and summation order).

_BRUTE_BUDGET = 2**16


def _budget(n):
    if n > _BRUTE_BUDGET:
        raise _NoOracle(f"{n} iterations")


def _taps(start, step, k, size):
    """Kernel taps t in [0, k) with 0 <= start + t*step < size, as a range."""
    lo = 0 if start >= 0 else (-start + step - 1) // step
    hi = 0 if start >= size else (size - start + step - 1) // step
    lo = min(max(lo, 0), k)
    return range(lo, min(max(hi, lo), k))


def _b_im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, out):
    n_, c_, h, w = x.shape
    _budget(out.size)
    out[...] = 0
    for n in range(n_):
        for c in range(c_):
            for i in range(kh):
                for j in range(kw):
                    for oy in range(oh):
                        ih = oy * sh - ph + i * dh
                        for ox in range(ow):
                            iw = ox * sw - pw + j * dw
                            if 0 <= ih < h and 0 <= iw < w:
                                out[n, (c * kh + i) * kw + j, oy * ow + ox] = x[n, c, ih, iw]
    return out


def _b_col2im(cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, out):
    n_, c_, h, w = out.shape
    _budget(cols.size)
    out[...] = 0
    for n in range(n_):
        for c in range(c_):
            for i in range(kh):
                for j in range(kw):
                    for oy in range(oh):
                        ih = oy * sh - ph + i * dh
                        for ox in range(ow):
                            iw = ox * sw - pw + j * dw
                            if 0 <= ih < h and 0 <= iw < w:
                                out[n, c, ih, iw] += cols[n, (c * kh + i) * kw + j, oy * ow + ox]
    return out


def _b_max_pool2d(x, kh, kw, sh, sw, ph, pw, dh, dw, out, indices):
    n_, c_, h, w = x.shape
    oh, ow = out.shape[2:]
    _budget(out.size * min(kh, h) * min(kw, w))
    for n in range(n_):
        for c in range(c_):
            for oy in range(oh):
                ih0 = oy * sh - ph
                rows = _taps(ih0, dh, kh, h)
                for ox in range(ow):
                    iw0 = ox * sw - pw
                    cols = _taps(iw0, dw, kw, w)
                    best = x.dtype.type(-np.inf)
                    best_pos = (ih0 + rows.start * dh) * w + iw0 + cols.start * dw
                    for i in rows:
                        for j in cols:
                            v = x[n, c, ih0 + i * dh, iw0 + j * dw]
                            if v > best or v != v:
                                best, best_pos = v, (ih0 + i * dh) * w + iw0 + j * dw
                    out[n, c, oy, ox] = best
                    indices[n, c, oy, ox] = best_pos
    return out, indices


def _b_max_pool2d_backward(dout, indices, out):
    n_, c_, h, w = out.shape
    _budget(dout.size)
    out[...] = 0
    planes = out.reshape(n_, c_, h * w)
    for n in range(n_):
        for c in range(c_):
            for g, k in zip(dout[n, c].reshape(-1), indices[n, c].reshape(-1)):
                planes[n, c, k] += g
    return out


def _b_divisor(ih0, iw0, h, w, kh, kw, ph, pw, count_include_pad, divisor_override):
    if divisor_override:
        return divisor_override
    ih1, iw1 = min(ih0 + kh, h + ph), min(iw0 + kw, w + pw)
    if count_include_pad:
        return (ih1 - ih0) * (iw1 - iw0)
    return (min(ih1, h) - max(ih0, 0)) * (min(iw1, w) - max(iw0, 0))


def _b_avg_pool2d(x, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override, out):
    n_, c_, h, w = x.shape
    oh, ow = out.shape[2:]
    t = x.dtype.type
    _budget(out.size * min(kh, h) * min(kw, w))
    for n in range(n_):
        for c in range(c_):
            for oy in range(oh):
                ih0 = oy * sh - ph
                for ox in range(ow):
                    iw0 = ox * sw - pw
                    acc = t(0)
                    for ih in range(max(ih0, 0), min(ih0 + kh, h)):
                        for iw in range(max(iw0, 0), min(iw0 + kw, w)):
                            acc = acc + x[n, c, ih, iw]
                    div = _b_divisor(ih0, iw0, h, w, kh, kw, ph, pw, count_include_pad, divisor_override)
                    out[n, c, oy, ox] = acc / t(div)
    return out


def _b_avg_pool2d_backward(dout, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override, out):
    n_, c_, h, w = out.shape
    oh, ow = dout.shape[2:]
    t = dout.dtype.type
    _budget(dout.size * min(kh, h) * min(kw, w))
    out[...] = 0
    for n in range(n_):
        for c in range(c_):
            for oy in range(oh):
                ih0 = oy * sh - ph
                for ox in range(ow):
                    iw0 = ox * sw - pw
                    div = _b_divisor(ih0, iw0, h, w, kh, kw, ph, pw, count_include_pad, divisor_override)
                    g = dout[n, c, oy, ox] / t(div)
                    for ih in range(max(ih0, 0), min(ih0 + kh, h)):
                        for iw in range(max(iw0, 0), min(iw0 + kw, w)):
                            out[n, c, ih, iw] += g
    return out


def _b_conv2d_forward(x, weight, bias, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, groups, activation,
                      negative_slope, out):
    n, c = x.shape[:2]
    f, kg = weight.shape
    cols = _b_im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, np.empty((n, c * kh * kw, oh * ow), x.dtype))
    y = np.einsum("gfk,ngkl->ngfl", weight.reshape(groups, f // groups, kg), cols.reshape(n, groups, kg, -1))
    out[...] = y.reshape(out.shape) + (bias.reshape(f, 1, 1) if bias.size else 0)
    if activation:
        out[...] = (np.where(out <= 0, 0, out) if activation == 1
                    else np.where(out > 0, out, out * x.dtype.type(negative_slope)))
    return out


def _b_conv2d_backward(dout, x, weight, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, groups, chunk,
                       activation, negative_slope, dx, dweight_parts, dbias_parts):
    n, c = x.shape[:2]
    f, kg = weight.shape
    cols = _b_im2col(x, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, np.empty((n, c * kh * kw, oh * ow), x.dtype))
    g = dout.reshape(n, groups, f // groups, -1)
    cols = cols.reshape(n, groups, kg, -1)
    dweight_parts[...] = 0
    dweight_parts[0] = np.einsum("ngfl,ngkl->gfk", g, cols).reshape(f, kg)
    dbias_parts[...] = 0
    dbias_parts[0] = dout.reshape(n, f, -1).sum(axis=(0, 2))
    dcols = np.einsum("gfk,ngfl->ngkl", weight.reshape(groups, f // groups, kg), g)
    _b_col2im(dcols.reshape(n, c * kh * kw, -1), kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, dx)
    if activation:
        slope = 0 if activation == 1 else x.dtype.type(negative_slope)
        dx[...] = np.where(x > 0, dx, dx * slope if activation == 2 else 0)
    return dx


BRUTE_KERNELS = {
    "conv2d_forward": _b_conv2d_forward,
    "conv2d_backward": _b_conv2d_backward,
    "im2col": _b_im2col,
    "col2im": _b_col2im,
    "max_pool2d": _b_max_pool2d,
    "max_pool2d_backward": _b_max_pool2d_backward,
    "avg_pool2d": _b_avg_pool2d,
    "avg_pool2d_backward": _b_avg_pool2d_backward,
}


@contextlib.contextmanager
def _brute_backend():
    """Route fastcnn.functional's kernel calls to the brute-force set."""
    import fastcnn.functional as functional

    saved = functional.kernel
    functional.kernel = lambda name, **policy: BRUTE_KERNELS[name]
    try:
        yield
    finally:
        functional.kernel = saved


# ---------------------------------------------------------------------------
# Calls.


def _make_layer(spec, seen):
    import fastcnn.layers as layers

    cls = getattr(layers, spec["cls"])
    return cls(*decode(spec["ctor_args"], True, seen), **decode(spec["ctor_kwargs"], True, seen))


def _call(spec, seen):
    """Run one spec in the current backend; return its result (tuples/dicts of arrays)."""
    import fastcnn

    def d(value):
        return decode(value, True, seen)

    op = spec["op"]
    if op == "threads":
        fastcnn.set_num_threads(d(spec["n"]))
        return _call(spec["call"], seen)
    if op.startswith("F."):
        return getattr(fastcnn.functional, op[2:])(*d(spec["args"]), **d(spec["kwargs"]))
    if op.startswith("loss."):
        import fastcnn.losses as losses

        return getattr(losses, op[5:])(*d(spec["args"]))
    if op == "layer":
        layer = _make_layer(spec, seen)
        out = layer.forward(d(spec["x"]), d(spec["training"]))
        result = {"out": out}
        dout = spec["dout"]
        if dout is not None:
            if dout.get("t") == "like":  # an array of the output's shape
                dout = dict(dout, t="array", shape=list(out.shape))
                dout.setdefault("dtype", out.dtype.str)
            result["dx"] = layer.backward(d(dout))
            result["grads"] = {k: v.copy() for k, v in layer.grads.items()}
        result["params"] = {k: v.copy() for k, v in layer.params.items()}
        result["state"] = {k: v.copy() for k, v in layer.state.items()}
        return result
    if op.startswith("optim."):
        import fastcnn.optim as optim

        layer = _make_layer(spec, seen)
        # One set of gradients for every backend: this op judges the update
        # (the layers are fuzzed on their own), which can magnify a product's
        # rounding (RMSprop's centered square_avg - grad_avg**2 cancels).
        with fastcnn.use_backend("numpy"):
            out = layer.forward(d(spec["x"]))
            layer.backward(np.ones_like(out))
        opt = getattr(optim, op[6:])(layer, *d(spec["args"]), **d(spec["kwargs"]))
        for _ in range(2):
            opt.step()
        return {k: v.copy() for k, v in layer.params.items()}
    raise ValueError(f"unknown op {op!r}")


def _category(exc):
    for cls in (MemoryError, ValueError, TypeError):
        if isinstance(exc, cls):
            return cls.__name__
    return type(exc).__name__


def _dtype_problem(spec, result):
    """For functional ops: float results must have the (native) dtype of the first array argument."""
    if not spec["op"].startswith("F."):
        return ""
    expected = np.asarray(decode(spec["args"][0])).dtype.newbyteorder("=")
    for path, a in _arrays_in(result, "result"):
        want = np.dtype(np.int64) if a.dtype.kind in "iu" else expected
        if a.dtype != want:
            return f"{path} has dtype {a.dtype}, expected {want}"
    return ""


def run_once(spec, backend):
    """Run `spec` under `backend` ("cython", "numpy" or "brute"); return (report, result).

    The arguments are rebuilt for every backend from the same seeds, so one
    backend cannot see what another did to them.
    """
    import fastcnn

    seen = []
    result = None
    try:
        fastcnn.set_num_threads(spec.get("threads"))
        context = _brute_backend() if backend == "brute" else fastcnn.use_backend(backend)
        with warnings.catch_warnings(), context:
            warnings.simplefilter("ignore")  # NumPy's RuntimeWarnings on inf/NaN data are not failures
            result = _call(spec, seen)
        arrays = list(_arrays_in(result, "result"))
        report = {"kind": "ok", "desc": [f"{p}: {a.dtype}{a.shape}" for p, a in arrays],
                  "sizes": [a.size for _, a in arrays]}
    except _NoOracle as exc:
        report = {"kind": "no-oracle", "msg": str(exc)}
    except HarnessError as exc:
        report = {"kind": "harness-error", "msg": str(exc)}
    except Exception as exc:  # the parent judges it
        report = {
            "kind": "raise",
            "type": type(exc).__name__,
            "category": _category(exc),
            "msg": str(exc)[:2000],
        }
    finally:
        fastcnn.set_num_threads(None)
    report["modified"] = [
        f"array #{i} {a.dtype}{a.shape}"
        for i, (a, fp) in enumerate(seen)
        if fp is not None and _fingerprint(a) != fp
    ]
    return report, result


def evaluate(spec):
    """Run `spec` under the compiled backend and its twin; return a JSON-able report.

    The twin is the NumPy kernel set, or the brute-force one when the spec
    says so (``"twin": "brute"``: a geometry far beyond the NumPy twin) or when
    the NumPy twin fails where the compiled backend returned.
    """
    from fastcnn import _backend

    twin = spec.get("twin", "numpy")
    names = (["cython"] if _backend.compiled_available() else []) + [twin]
    reports, results = {}, {}
    for b in names:
        reports[b], results[b] = run_once(spec, b)
    rep = {"backends": reports, "twin": twin}
    first = reports[names[0]]
    if first["kind"] == "ok" and reports[twin]["kind"] == "ok":
        rep["mismatch"] = _compare(spec, results[names[0]], results[twin], twin)
    if twin == "numpy" and first["kind"] == "ok" and (reports[twin]["kind"] != "ok" or rep.get("mismatch")):
        reports["brute"], results["brute"] = run_once(spec, "brute")
        if reports["brute"]["kind"] == "ok":
            rep["brute_mismatch"] = _compare(spec, results[names[0]], results["brute"], "brute")
    for b in names:
        if reports[b]["kind"] == "ok":
            reports[b]["dtype_problem"] = _dtype_problem(spec, results[b])
    return rep


def _worker_main():
    """Answer one JSON report per JSON spec line on stdin, until EOF."""
    limit_gb = float(os.environ.get("FASTCNN_FUZZ_RLIMIT_GB", "3"))
    if limit_gb > 0 and sys.platform.startswith("linux"):
        import resource

        limit = int(limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    expected = os.environ.get("FASTCNN_FUZZ_EXPECT")
    import fastcnn

    if expected and os.path.dirname(os.path.abspath(fastcnn.__file__)) != expected:
        print(f"worker imported fastcnn from {fastcnn.__file__}, parent from {expected}", file=sys.stderr)
        return 3
    # Replies go to a private copy of stdout; anything printed by C code lands on stderr.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    replies.write(json.dumps({"ready": fastcnn.__file__}) + "\n")
    for line in sys.stdin:
        if line.strip():
            replies.write(json.dumps(evaluate(json.loads(line))) + "\n")
    return 0


# ===========================================================================
# Part 2: the tests (pytest + hypothesis), in the parent process.

if __name__ != "__main__":
    import pytest
    from hypothesis import HealthCheck, assume, given, settings
    from hypothesis import strategies as st

    import fastcnn
    from fastcnn import functional as F

    from fastcnn import layers as _layers
    from fastcnn import losses as _losses
    from fastcnn import optim as _optim


# Examples of each fuzz test, in units of the profile's max_examples: each
# functional op gets as many as the layers, losses and optimizers together.
WEIGHTS = {"functional op": 12, "layers": 8, "losses": 3, "optimizers": 3, "set_num_threads": 1}


def fuzz_settings(kind):
    """The loaded profile's settings with ``WEIGHTS[kind]`` times its max_examples;
    with FASTCNN_FUZZ_CALLS set, ``WEIGHTS[kind]`` shares of that many examples
    over all the fuzz tests instead (each example is one call)."""
    per_weight = settings.default.max_examples
    wanted = os.environ.get("FASTCNN_FUZZ_CALLS")
    if wanted:
        total = sum(WEIGHTS.values()) + WEIGHTS["functional op"] * (len(OP_SPECS) - 1)
        per_weight = -(-int(wanted) // total)
    return settings(
        max_examples=per_weight * WEIGHTS[kind],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
        deadline=None,
    )


# ---------------------------------------------------------------------------
# The worker, seen from the parent.


class WorkerDied(Exception):
    pass


class Tally:
    """What the worker was asked in this session, per op; printed when the module's tests end."""

    def __init__(self):
        self.calls = collections.Counter()
        self.unjudged = collections.Counter()  # no oracle could judge them (skipped)
        self.crashes = 0  # crashes and hangs of the worker
        self.first = self.last = None  # time.monotonic() of the first and last call

    @staticmethod
    def label(spec):
        op = spec["op"]
        if op == "threads":
            return "set_num_threads"
        return f"layer.{spec['cls']}" if op == "layer" else op.removeprefix("F.")

    def lines(self):
        total = sum(self.calls.values())
        seconds = (self.last - self.first) if total else 0.0
        rate = f" ({total / seconds:,.1f} calls/s)" if seconds > 0 else ""
        per_op = ", ".join(
            f"{name} {n:,}" + (f" ({self.unjudged[name]:,} unjudged)" if self.unjudged[name] else "")
            for name, n in sorted(self.calls.items())
        )
        return [
            f"test_fuzz: {total:,} calls run in the worker (each under both backends) in "
            f"{seconds:,.0f} s{rate}; {sum(self.unjudged.values()):,} of them without an oracle "
            f"(skipped); {self.crashes} worker crashes/hangs",
            f"test_fuzz calls per op: {per_op}",
        ]


TALLY = Tally()


class Worker:
    """One long-lived `--worker` subprocess; restarted after a crash."""

    def __init__(self):
        self.proc = None
        self.start()

    def start(self):
        self._release()
        package_dir = os.path.dirname(os.path.abspath(fastcnn.__file__))
        env = dict(os.environ)
        # The worker must import the very fastcnn under test (in-place build or installed wheel).
        env["PYTHONPATH"] = os.pathsep.join(
            [os.path.dirname(package_dir)] + [p for p in [env.get("PYTHONPATH")] if p]
        )
        env["FASTCNN_FUZZ_EXPECT"] = package_dir
        keep = os.environ.get("FASTCNN_FUZZ_STDERR_DIR")  # e.g. sanitizer reports, kept by tools/sanitize.sh
        if keep:
            self.stderr = open(os.path.join(keep, f"fuzz-worker-{os.getpid()}-{TALLY.crashes}.stderr"), "w+b")
        else:
            self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            text=True,
            bufsize=1,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()
        ready = self._get(timeout=120)
        if ready is None or "ready" not in ready:
            raise WorkerDied(f"worker did not start: {ready!r}; stderr:\n{self.stderr_tail()}")

    @staticmethod
    def _read(proc, lines):
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    def _get(self, timeout):
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            self.proc.wait()
            return {"timeout": timeout}
        return None if line is None else json.loads(line)

    def stderr_tail(self, size=4000):
        self.stderr.seek(0, os.SEEK_END)
        n = self.stderr.tell()
        self.stderr.seek(max(0, n - size))
        return self.stderr.read().decode("utf-8", "replace")

    def run(self, spec):
        TALLY.calls[Tally.label(spec)] += 1
        TALLY.first = TALLY.first or time.monotonic()
        text = json.dumps(spec)
        try:
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass
        reply = self._get(timeout=float(os.environ.get("FASTCNN_FUZZ_TIMEOUT", "120")))
        TALLY.last = time.monotonic()
        if reply is None or "timeout" in reply:
            rc = self.proc.wait()
            tail = self.stderr_tail()
            TALLY.crashes += 1
            self.start()
            what = f"timed out after {reply['timeout']} s" if reply else f"died with return code {rc}"
            raise WorkerDied(
                f"the worker {what} on this call (a crash or hang of fastcnn).\n"
                f"Reproduce: python tests/test_fuzz.py --replay '{text}'\n"
                f"worker stderr (tail):\n{tail}"
            )
        return reply

    def _release(self):
        if self.proc is not None:
            for f in (self.proc.stdin, self.proc.stdout, self.stderr):
                with contextlib.suppress(OSError):
                    f.close()

    def close(self):
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=120)
        self._release()
        return rc


_WORKER = None


def worker():
    global _WORKER
    if _WORKER is None:
        _WORKER = Worker()
    return _WORKER


# ---------------------------------------------------------------------------
# What a spec asks for, without building it: array sizes for the MemoryError
# rule and the gray-zone filter.


def _integer(v):
    """`v` as an int where fastcnn takes it as one (an int, a NumPy integer, a 0-d
    integer array), else None."""
    if isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "iu":
        v = v[()]
    if isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_)):
        return int(v)
    return None


def _int_pair(v):
    if _integer(v) is not None:
        return _integer(v), _integer(v)
    if isinstance(v, (tuple, list)) or (isinstance(v, np.ndarray) and v.ndim == 1):
        if len(v) != 2:
            return None
        pair = tuple(_integer(e) for e in v)
        if None not in pair:
            return pair
    return None


def _shape_of(v):
    return v.shape if isinstance(v, _Shape) else None


def _conv_len(size, k, s, pad_total, d):
    span = size + pad_total - d * (k - 1) - 1
    return span // s + 1 if span >= 0 and s > 0 else 0


def _pool_len(size, k, s, p, d, ceil_mode):
    span = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)
    if span < 0 or s <= 0:
        return 0
    out = span // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _conv_geometry(hw, kernel, stride, padding, dilation):
    """((oh, ow), (kh, kw), (total pad h, total pad w)) of a convolution, or None if invalid."""
    k, s, d = _int_pair(kernel), _int_pair(stride), _int_pair(dilation)
    if not (k and s and d) or min(k + s + d) < 1:
        return None
    if isinstance(padding, str) and padding == "valid":
        pads = (0, 0)
    elif isinstance(padding, str) and padding == "same":
        pads = (d[0] * (k[0] - 1), d[1] * (k[1] - 1))
    else:
        p = _int_pair(padding)
        if not p or min(p) < 0:
            return None
        pads = (2 * p[0], 2 * p[1])
    out = tuple(_conv_len(hw[a], k[a], s[a], pads[a], d[a]) for a in (0, 1))
    return out, k, tuple(pads[a] + k[a] * d[a] + s[a] for a in (0, 1))


def _pool_geometry(hw, kernel, stride, padding, dilation, ceil_mode):
    """As `_conv_geometry`, for a pool."""
    k = _int_pair(kernel)
    s = k if stride is None else _int_pair(stride)
    p, d = _int_pair(padding), _int_pair(dilation)
    if not (k and s and p and d) or min(k + s + d) < 1 or min(p) < 0:
        return None
    try:
        ceil = bool(ceil_mode)
    except Exception:
        return None
    out = tuple(_pool_len(hw[a], k[a], s[a], p[a], d[a], ceil) for a in (0, 1))
    return out, k, tuple(2 * p[a] + k[a] * d[a] + s[a] for a in (0, 1))


class Cost:
    """What a call would allocate and what the NumPy twin would do, in elements.

    ``arrays``: inputs made contiguous, outputs, the im2col buffer of a conv.
    ``twin``: the twin's padded copies and window copies; ``loops``: its
    Python-level loop count (one pass per kernel offset); ``work``: window
    cells the compiled kernels visit, at most. Unknown parts (invalid
    arguments) are simply missing.
    """

    def __init__(self):
        self.arrays, self.twin, self.loops, self.work = [], [], [], []

    def window_op(self, n, c, hw, geo, loops_over_offsets, windows_copied=False):
        (oh, ow), (kh, kw), (pad_h, pad_w) = geo
        self.twin.append(max(n * c, 1) * (hw[0] + pad_h) * (hw[1] + pad_w))
        self.work.append(n * c * oh * ow * min(kh, hw[0]) * min(kw, hw[1]))
        if windows_copied:
            self.twin.append(n * c * oh * ow * kh * kw)
        self.loops.append(kh * kw if loops_over_offsets else 1)


def _cost(spec):
    cost = Cost()

    def add_arrays(obj):
        for v in _walk(obj):
            if isinstance(v, _Shape):
                cost.arrays.append(math.prod(v.shape))

    op = spec["op"]
    if op == "threads":
        return _cost(spec["call"])
    if op.startswith("F."):
        args, kwargs = decode(spec["args"], False), decode(spec["kwargs"], False)
        add_arrays((args, kwargs))
        try:
            bound = inspect.signature(getattr(F, op[2:])).bind(*args, **kwargs)
        except TypeError:
            return cost
        bound.apply_defaults()
        if op[2:].replace("_backward", "") in _RESAMPLE_OPS:
            _resample_cost(op[2:], bound.arguments, cost)
        else:
            _op_cost(op[2:], bound.arguments, cost)
    elif op == "layer" or op.startswith("optim."):
        x = decode(spec["x"], False)
        add_arrays(x)
        _layer_cost(
            spec["cls"], decode(spec["ctor_args"], False), decode(spec["ctor_kwargs"], False), x, cost
        )
    else:
        add_arrays(decode(spec.get("args", []), False))
    return cost


def _walk(obj):
    if isinstance(obj, (tuple, list)):
        for v in obj:
            yield from _walk(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _walk(v)
    else:
        yield obj


def _op_cost(name, a, cost):
    if name in ("im2col", "conv2d", "conv2d_backward", "max_pool2d", "avg_pool2d"):
        x = _shape_of(a["x"])
        if x is None or len(x) != 4:
            return
        n, c, h, w = x
        if name.startswith("conv"):
            wshape = _shape_of(a["weight"])
            if wshape is None or len(wshape) != 4:
                return
            geo = _conv_geometry((h, w), wshape[2:], a["stride"], a["padding"], a["dilation"])
        elif name == "im2col":
            geo = _conv_geometry((h, w), a["kernel_size"], a["stride"], a["padding"], a["dilation"])
        else:
            geo = _pool_geometry(
                (h, w), a["kernel_size"], a["stride"], a["padding"], a.get("dilation", 1), a["ceil_mode"]
            )
        if geo is None:
            return
        (oh, ow), (kh, kw), _ = geo
        if name == "max_pool2d":
            cost.arrays.append(n * c * oh * ow)
            cost.window_op(n, c, (h, w), geo, False, windows_copied=True)
        elif name == "avg_pool2d":
            cost.arrays.append(n * c * oh * ow)
            cost.window_op(n, c, (h, w), geo, True)
        else:
            cost.arrays.append(n * c * kh * kw * oh * ow)
            cost.window_op(n, c, (h, w), geo, True)
            if name != "im2col":
                cost.arrays.append(n * wshape[0] * oh * ow)
    elif name == "col2im":
        size, k, cols = _int_pair(a["output_size"]), _int_pair(a["kernel_size"]), _shape_of(a["cols"])
        if size and cols is not None and len(cols) == 3 and k and min(k) > 0:
            n, c = cols[0], cols[1] // (k[0] * k[1])
            cost.arrays.append(n * c * size[0] * size[1])
            geo = _conv_geometry(size, k, a["stride"], a["padding"], a["dilation"])
            if geo:
                cost.window_op(n, c, size, geo, True)
    elif name == "group_norm_backward":
        x = _shape_of(a["x"])
        if x is not None and len(x) >= 2:
            cost.arrays.append(x[1])  # dweight, dbias: (C,) even for an empty batch
    elif name == "layer_norm_backward":
        shape = a["normalized_shape"]
        shape = shape if isinstance(shape, (tuple, list)) else (shape,)
        if all(_integer(d) is not None for d in shape):
            cost.arrays.append(math.prod(_integer(d) for d in shape))  # dweight, dbias
    elif name in ("max_pool2d_backward", "avg_pool2d_backward"):
        try:
            shape = tuple(int(v) for v in a["input_shape"])
        except Exception:
            return
        if len(shape) == 4 and min(shape) >= 0:
            cost.arrays.append(math.prod(shape))
            if name == "avg_pool2d_backward":
                geo = _pool_geometry(
                    shape[2:], a["kernel_size"], a["stride"], a["padding"], 1, a["ceil_mode"]
                )
                if geo:
                    cost.window_op(shape[0], shape[1], shape[2:], geo, True)


def _resample_cost(name, a, cost):
    """The outputs of the padding, resampling and unpooling ops (all that they
    allocate is at most a few times their inputs and outputs)."""
    if name == "conv_transpose2d_backward":
        _conv_transpose_cost(_shape_of(a["x"]), a, cost, backward=True)
        return
    if name.endswith("_backward"):
        try:
            shape = tuple(int(v) for v in a.get("input_shape", ()))
        except Exception:
            shape = ()
        if len(shape) == 4 and min(shape) >= 0:
            cost.arrays.append(math.prod(shape))
        return
    x = _shape_of(a.get("x"))
    if x is None or len(x) != 4:
        return
    n, c, h, w = x
    if name == "pad":
        amounts = a["pad"]
        if isinstance(amounts, (tuple, list)) and len(amounts) in (2, 4) and all(
            _integer(p) is not None for p in amounts
        ):
            left, right, top, bottom = (*map(_integer, amounts), 0, 0)[:4]
            cost.arrays.append(n * c * max(h + top + bottom, 0) * max(w + left + right, 0))
    elif name == "interpolate":
        size = _int_pair(a["size"])
        factors = a["scale_factor"]
        factors = factors if isinstance(factors, (tuple, list)) else (factors, factors)
        if size:
            cost.arrays.append(n * c * size[0] * size[1])
        elif len(factors) == 2 and all(_real(f) for f in factors):
            fh, fw = (float(f) for f in factors)
            if math.isfinite(fh * fw) and 0 < min(fh, fw) and max(h * fh, w * fw) < 2**62:
                cost.arrays.append(n * c * int(h * fh) * int(w * fw))  # as interpolate rounds
    elif name in ("adaptive_avg_pool2d", "adaptive_max_pool2d"):
        size = (None, None) if a["output_size"] is None else a["output_size"]
        if isinstance(size, (tuple, list)) and len(size) == 2 and None in size:
            # None keeps the input's extent on that side
            size = [hw if d is None else (_int_pair(d) or (None,))[0] for d, hw in zip(size, (h, w))]
        else:
            size = _int_pair(size)
        if size and None not in size:
            cost.arrays.append(n * c * size[0] * size[1])
    elif name == "max_unpool2d":
        k = _int_pair(a["kernel_size"])
        s = k if a["stride"] is None else _int_pair(a["stride"])
        if k and s:
            cost.arrays.append(n * c * (h * s[0] + k[0]) * (w * s[1] + k[1]))
    elif name == "conv_transpose2d":
        _conv_transpose_cost(x, a, cost, backward=False)


def _real(v):
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _conv_transpose_cost(x, a, cost, backward):
    """conv_transpose2d's output (at most ``H*sh + dh*kh`` high) and columns; its
    backward's columns are dout unfolded by the conv2d window, which reaches
    at most `dilation` cells past the input (output_padding < stride or dilation)."""
    weight, s, d = _shape_of(a["weight"]), _int_pair(a["stride"]), _int_pair(a["dilation"])
    if x is None or len(x) != 4 or weight is None or len(weight) != 4 or not (s and d):
        return
    n, _, h, w = x
    groups = a["groups"] if isinstance(a["groups"], int) and a["groups"] > 0 else 1
    f = weight[1] * groups
    if backward:
        cost.arrays.append(n * f * weight[2] * weight[3] * (h + d[0]) * (w + d[1]))
        return
    cost.arrays.append(n * f * (h * s[0] + d[0] * weight[2]) * (w * s[1] + d[1] * weight[3]))
    cost.arrays.append(n * f * weight[2] * weight[3] * h * w)  # the columns


_RESAMPLE_OPS = ("pad", "interpolate", "adaptive_avg_pool2d", "adaptive_max_pool2d",
                 "max_unpool2d", "conv_transpose2d")


def _layer_cost(cls, args, kwargs, x, cost):
    try:
        sig = inspect.signature(getattr(_layers, cls)).bind(*args, **kwargs)
    except (TypeError, AttributeError):
        return
    sig.apply_defaults()
    a = sig.arguments
    xs = _shape_of(x)
    ints = {k: _integer(v) for k, v in a.items() if _integer(v) is not None}
    if cls == "Conv2D":
        k = _int_pair(a["kernel_size"])
        if {"in_channels", "out_channels", "groups"} <= ints.keys() and k and ints["groups"] > 0:
            f = ints["out_channels"]
            cost.arrays.append(f * (ints["in_channels"] // ints["groups"]) * k[0] * k[1])
            if xs is not None and len(xs) == 4:
                weight = _Shape({"shape": [f, 1, *k], "dtype": "<f4"})
                _op_cost(
                    "conv2d",
                    {
                        "x": x,
                        "weight": weight,
                        "stride": a["stride"],
                        "padding": a["padding"],
                        "dilation": a["dilation"],
                    },
                    cost,
                )
    elif cls == "Dense" and {"in_features", "out_features"} <= ints.keys():
        cost.arrays.append(ints["in_features"] * ints["out_features"])
        if xs is not None and len(xs) == 2:
            cost.arrays.append(xs[0] * ints["out_features"])
    elif cls in ("MaxPool2D", "AvgPool2D") and xs is not None:
        _op_cost("max_pool2d" if cls == "MaxPool2D" else "avg_pool2d", {"x": x, "dilation": 1, **a}, cost)
    elif cls.startswith("BatchNorm") and "num_features" in ints:
        cost.arrays.append(ints["num_features"])
    elif cls == "ConvTranspose2D":
        k = _int_pair(a["kernel_size"])
        if {"in_channels", "out_channels", "groups"} <= ints.keys() and k and ints["groups"] > 0:
            shape = [ints["in_channels"], ints["out_channels"] // ints["groups"], *k]
            cost.arrays.append(math.prod(shape))
            weight = _Shape({"shape": shape, "dtype": "<f4"})
            for backward in (False, True):
                _conv_transpose_cost(xs, dict(a, weight=weight), cost, backward)
    elif cls == "GroupNorm" and "num_channels" in ints:
        cost.arrays.append(ints["num_channels"])
    elif cls == "LayerNorm":
        _op_cost("layer_norm_backward", a, cost)
    elif cls in ("Pad2D", "Upsample", "AdaptiveAvgPool2D", "AdaptiveMaxPool2D"):
        name = {"Pad2D": "pad", "Upsample": "interpolate"}.get(cls, "adaptive_avg_pool2d")
        _resample_cost(name, dict(a, x=x), cost)


# ---------------------------------------------------------------------------
# The contract.


def _param_names(spec):
    """Names an error message may cite: parameters of the called function(s)."""
    op = spec["op"]
    names = {"input", "output", "kernel", "window"}
    if op == "threads":
        return names | {"n", "threads"} | _param_names(spec["call"])
    if op.startswith("F."):
        names |= set(inspect.signature(getattr(F, op[2:])).parameters)
    elif op.startswith("loss."):
        names |= set(inspect.signature(getattr(_losses, op[5:])).parameters)
    else:
        names |= set(inspect.signature(getattr(_layers, spec["cls"])).parameters) | {"x", "dout", "training"}
        if op.startswith("optim."):
            names |= set(inspect.signature(getattr(_optim, op[6:])).parameters)
    return names


def _python_lists(spec) -> int:
    """About how many Python lists the "list" layouts of `spec` build: the
    harness's own memory, which the cost model does not see (an array of
    shape (2**29, 0) is empty, its list is 2**29 empty lists). A "like"
    array's shape is unknown here: that of the layer's input stands in."""
    def lists(shape):
        return math.prod(max(d, 1) for d in shape[:-1])

    count = 0
    for value in _walk_specs(spec):
        if value.get("layout") == "list":
            shape = value.get("shape") or spec.get("x", {}).get("shape") or []
            count += lists(shape)
    return count


def _walk_specs(obj):
    """Every dict in a JSON spec."""
    if isinstance(obj, dict):
        yield obj
        obj = list(obj.values())
    if isinstance(obj, list):
        for v in obj:
            yield from _walk_specs(v)


def check(spec, mentions=None):
    """Run `spec` in the worker and assert the contract; return the report."""
    assume(_python_lists(spec) <= GRAY_LO)
    cost = _cost(spec)
    assume(not any(GRAY_LO < s < GRAY_HI for s in cost.arrays))
    huge = any(s >= GRAY_HI for s in cost.arrays)  # fails on memory before any work
    assume(huge or not any(w > KERNEL_MAX_WORK for w in cost.work))
    if any(s > GRAY_LO for s in cost.twin) or any(n > TWIN_MAX_LOOPS for n in cost.loops):
        spec = dict(spec, twin="brute")  # far beyond what the NumPy twin can do
    text = json.dumps(spec)

    rep = worker().run(spec)

    repro = f"\nReproduce: python tests/test_fuzz.py --replay '{text}'\nreport: {json.dumps(rep)}"
    backends = rep["backends"]
    twin = rep["twin"]
    c, n = backends.get("cython"), backends[twin]
    names = [b for b in ("cython", twin) if b in backends]
    if twin == "brute" and n["kind"] == "no-oracle":  # nobody can tell: not a valid test case
        TALLY.unjudged[Tally.label(spec)] += 1
        assume(False)
    # The NumPy twin materialises the padded input and every window: past
    # NumPy's limits it fails where the compiled kernels need nothing; the
    # brute-force kernels judge the compiled result then.
    twin_out_of_room = (
        twin == "numpy"
        and c is not None
        and c["kind"] == "ok"
        and n["kind"] == "raise"
        and (n["category"] == "MemoryError" or any(m in n["msg"] for m in NUMPY_SIZE_ERRORS))
    )
    for b in names:
        r = backends[b]
        assert r["kind"] != "harness-error", f"test_fuzz could not build the call: {r['msg']}{repro}"
        assert not r["modified"], f"{b}: inputs modified: {r['modified']}{repro}"
        if r["kind"] == "raise" and not (b == twin and twin_out_of_room):
            allowed = ("ValueError", "TypeError") + (("MemoryError",) if huge else ())
            assert r["category"] in allowed, (
                f"{b} raised {r['type']}: {r['msg']!r}; allowed here: {allowed} "
                f"(largest arrays of this call: {sorted(cost.arrays)[-3:]} elements){repro}"
            )
            assert r["msg"].strip(), f"{b} raised {r['type']} with an empty message{repro}"
            if not huge:  # NumPy's own "array is too big" is fine for a huge array
                cited = _param_names(spec) if mentions is None else {mentions}
                assert any(name in r["msg"] for name in cited), (
                    f"{b}: the {r['type']} message {r['msg']!r} names none of {sorted(cited)}{repro}"
                )
        elif r["kind"] == "ok":
            assert not r.get("dtype_problem"), f"{b}: {r['dtype_problem']}{repro}"
            # The MemoryError rule and the gray zone rely on _cost counting
            # every result: a result it missed would turn a valid huge call
            # into a "MemoryError on small arrays" failure.
            biggest = max(r["sizes"], default=0)
            assert biggest <= max(COST_CHECKED_FROM, *cost.arrays), (
                f"test_fuzz's cost model misses a result of {biggest} elements ({b}: {r['desc']}); "
                f"it counted {sorted(cost.arrays)[-3:]}{repro}"
            )
    if c is None:
        return rep
    if c["kind"] == "ok" and n["kind"] == "ok":
        assert not rep["mismatch"], f"compiled and {twin} results differ: {rep['mismatch']}{repro}"
    elif twin_out_of_room:
        brute = backends.get("brute", {})
        if brute.get("kind") == "no-oracle":
            TALLY.unjudged[Tally.label(spec)] += 1
            assume(False)
        assert brute.get("kind") == "ok", (
            f"the NumPy twin failed ({n['msg']!r}) and so did the brute-force oracle "
            f"({brute.get('type', '')} {brute.get('msg', '')}){repro}"
        )
        assert not rep["brute_mismatch"], (
            f"compiled result differs from the brute-force oracle: {rep['brute_mismatch']}{repro}"
        )
    else:
        verdict = ""
        if "brute_mismatch" in rep:
            verdict = " (the brute-force oracle " + (
                f"disagrees with cython: {rep['brute_mismatch']})"
                if rep["brute_mismatch"]
                else "agrees with cython)"
            )
        assert c["kind"] == n["kind"] == "raise" and c["category"] == n["category"], (
            f"backends disagree: cython {c['kind']} {c.get('type', '')} {c.get('msg', c.get('desc'))!r}, "
            f"{twin} {n['kind']} {n.get('type', '')} {n.get('msg', n.get('desc'))!r}{verdict}{repro}"
        )
    return rep


# ---------------------------------------------------------------------------
# Spec building blocks.


def tup(*v):
    return {"t": "tuple", "v": list(v)}


def lst(*v):
    return {"t": "list", "v": list(v)}


def npv(dtype, v):
    return {"t": "np", "dtype": dtype, "v": v}


def nd(dtype, v):
    return {"t": "nd", "dtype": dtype, "v": v}


def arr(shape, dtype="<f4", layout="C", fill="normal", seed=0, **extra):
    return {
        "t": "array",
        "shape": list(shape),
        "dtype": dtype,
        "layout": layout,
        "fill": fill,
        "seed": seed,
        **extra,
    }


if __name__ != "__main__":
    seeds = st.integers(0, 2**32 - 1)

    def weighted(*choices):
        """One of several strategies, picked with the given integer weights.

        (``st.one_of`` would not do: it merges repeated branches, so listing a
        strategy several times does not make it more likely.)
        """
        total = sum(w for _, w in choices)

        @st.composite
        def pick(draw):
            r = draw(st.integers(0, total - 1))
            for strategy, w in choices:
                if r < w:
                    return draw(strategy)
                r -= w
            raise AssertionError("unreachable")

        return pick()

    HUGE = [
        2**15 + 1,
        2**20 + 1,
        2**31 - 1,
        2**31,
        2**32 + 1,
        2**40,
        2**62,
        2**63 - 1,
        2**63,
        2**64 + 1,
        2**100,
    ]
    huge_ints = st.sampled_from(HUGE if HUGE_EXTENTS else [2**15 + 1, 2**20 + 1])
    FLOATS = ["<f4", "<f8"]
    ODD_DTYPES = [
        ">f4",
        ">f8",
        "<f2",
        "|i1",
        "<i2",
        "<i4",
        "<i8",
        "|u1",
        "<u8",
        "|b1",
        "<c8",
        "<c16",
        "|O",
        "<U4",
        "<g",
        "<M8[s]",
        "|V8",
        ">i8",
    ]
    LAYOUTS = ["C"] * 8 + ["F", "T", "neg", "strided", "ro", "unaligned", "list"]
    FILLS = ["normal", "normal", "special", "ties", "zeros", "alt_zeros"]
    INT_SCALARS = ["int8", "uint8", "int16", "int32", "int64", "uint64", "intp"]
    HOSTILE = [
        0,
        -1,
        -3,
        True,
        False,
        None,
        2.0,
        1.5,
        float("nan"),
        float("inf"),
        "2",
        "same",
        "valid",
        "",
        {"t": "bytes", "v": "2"},
        {"t": "object"},
        {"t": "dict"},
        npv("float64", 2.0),
        npv("bool", True),
        npv("int64", -1),
        npv("float32", 2.0),
        nd("int64", 2),
        nd("float64", [2.0, 2.0]),
        nd("int64", [[1, 2], [3, 4]]),
        nd("int64", []),
        nd("bool", [True, True]),
        tup(),
        tup(1),
        tup(1, 2, 3),
        tup(tup(1, 1), 1),
        tup(None, 2),
        tup(2, "2"),
        lst(2, 2.5),
        tup(2, -1),
        tup(True, 2),
        lst(0, 1),
        -(2**63),
        -(2**100),
    ]
    hostile = st.sampled_from(HOSTILE)
    layouts_st = st.sampled_from(LAYOUTS)
    fills_st = st.sampled_from(FILLS)
    wrong_rank = st.lists(st.integers(0, 4), max_size=6).filter(lambda s: len(s) != 4)
    big_extents = st.sampled_from([2**20, 2**29, 2**31, 2**40])
    index_dtypes = weighted(
        (st.just("<i8"), 12),
        (st.sampled_from(["|i1", "<i2", "<i4", "|u1", "<u2", "<u4", "<u8", ">i8"]), 4),
        (st.sampled_from(["<f8", "|b1", "|O", "<c8"]), 1),
    )
    pokes_st = st.lists(st.integers(0, 7), min_size=1, max_size=2)

    @functools.cache
    def geom(lo, hi):
        """An int-or-pair argument: mostly valid in [lo, hi], sometimes hostile or huge."""
        v = st.integers(lo, hi)
        valid = st.one_of(
            v,
            st.tuples(v, v).map(lambda t: tup(*t)),
            st.tuples(v, v).map(lambda t: lst(*t)),
            st.tuples(st.sampled_from(INT_SCALARS), v).map(lambda t: npv(*t)),
            st.tuples(v, v).map(lambda t: nd("int64", list(t))),
        )
        huge = st.one_of(huge_ints, st.tuples(v, huge_ints).map(lambda t: tup(*t)))
        return weighted((valid, 20), (hostile, 1), (huge, 1))

    @functools.cache
    def flag():
        return weighted(
            (st.booleans(), 20),
            (st.sampled_from([npv("bool", True), 0, 1, None, "yes", nd("int64", [1, 0])]), 1),
        )

    @functools.cache
    def dtypes():
        """Mostly float32/float64, now and then any other dtype."""
        return weighted((st.sampled_from(FLOATS), 30), (st.sampled_from(ODD_DTYPES), 1))

    @st.composite
    def arrays(draw, shape, dtype=None):
        """An array recipe of `shape`; a huge shape becomes a broadcast or empty view."""
        shape = list(shape)
        dtype = dtype or draw(dtypes())
        for i in sorted(range(len(shape)), key=lambda i: -shape[i]):
            if math.prod(d for d in shape if d) * 16 < 2**60:
                break
            shape[i] = min(shape[i], 2**10)  # NumPy could not describe it
        if math.prod(shape) > 2**12 or max(shape, default=0) > 2**12:
            layout = "empty" if 0 in shape else "broadcast"
        else:
            layout = draw(layouts_st)
        return arr(shape, dtype, layout, draw(fills_st), draw(seeds))

    @functools.cache
    def dim(lo, hi, zero_odds=16):
        """An extent in [lo, hi], or 0 once in `zero_odds` draws."""
        return weighted((st.integers(lo, hi), zero_odds - 1), (st.just(0), 1))

    @st.composite
    def nchw(draw, c=None):
        """(N, C, H, W): small, with zeros; now and then a huge extent or a wrong rank."""
        r = draw(st.integers(0, 29))
        if r == 0:
            return draw(wrong_rank)
        shape = [
            draw(dim(1, 3)),
            draw(dim(1, 3, 32)) if c is None else c,
            draw(dim(1, 8, 32)),
            draw(dim(1, 8, 32)),
        ]
        if r == 1 and HUGE_EXTENTS:  # huge extents: zero-stride views or size 0
            shape[draw(st.integers(0, 3))] = draw(big_extents)
            if draw(st.booleans()):
                shape[0] = 0
        return shape

    @st.composite
    def indices_recipe(draw, shape, plane):
        dtype = draw(index_dtypes)
        info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
        lo, hi = 0, max(1, plane)
        if info is not None:
            hi = min(hi, int(info.max) + 1)
            lo = max(lo, int(info.min))
        pokes = []
        if draw(st.integers(0, 4)) == 0 and info is not None:
            candidates = [-1, plane, plane + 1, 2**31, 2**63 - 1, 2**64 - 1, -(2**63), -(2**31)]
            pokes = [v for v in (candidates[i] for i in draw(pokes_st)) if info.min <= v <= info.max]
        layout = draw(layouts_st)
        if math.prod(shape) > 2**12 or (math.prod(shape) == 0 and max(shape, default=0) > 2**12):
            shape = [0] + list(shape[1:])
            layout = "empty"
        return arr(shape, dtype, layout, "normal", draw(seeds), lo=lo, hi=hi, poke=pokes)

    @st.composite
    def shape_value(draw, shape):
        """`shape` as an input_shape/output_size argument, in one of the accepted spellings (or not)."""
        r = draw(st.integers(0, 7))
        if r == 0:
            return lst(*shape)
        if r == 1 and all(abs(v) < 2**63 for v in shape):
            return nd("int64", list(shape))
        if r == 2:
            return tup(*shape[:-1])
        if r == 3:
            return tup(*shape, 1)
        if r == 4:
            return draw(hostile)
        if r == 5:
            return tup(*[float(v) for v in shape])
        return tup(*shape)

    # -----------------------------------------------------------------------
    # One strategy per public op. Each mostly builds a consistent call (so the
    # kernels run), then perturbs one thing now and then.

    def call(op, args, kwargs, threads):
        return {"op": op, "args": args, "kwargs": kwargs, "threads": threads}

    def mostly(draw, value, other, odds=4):
        """`value`, or once in `odds` draws something from strategy `other`."""
        return draw(other) if draw(st.integers(0, odds - 1)) == 0 else value

    threads_st = st.sampled_from([None, None, 1, 2, 3, -1])
    any_shape = st.lists(st.integers(0, 4), max_size=5)
    paddings = weighted(
        (geom(0, 2), 12), (st.sampled_from(["same", "valid"]), 3), (st.sampled_from(["SAME", "full"]), 1)
    )
    divisors = st.one_of(st.integers(-1, 5), hostile, huge_ints, st.just(npv("int64", 3)))
    bad_groups = st.one_of(hostile, huge_ints, st.integers(-2, 4))
    keep = st.integers(0, 3)  # 0: leave the keyword out (its default applies)

    def optional(draw, kwargs, required=("kernel_size",)):
        return {k: v for k, v in kwargs.items() if k in required or draw(keep)}

    @st.composite
    def im2col_specs(draw):
        x = draw(arrays(draw(nchw())))
        kw = {
            "kernel_size": draw(geom(1, 4)),
            "stride": draw(geom(1, 3)),
            "padding": draw(paddings),
            "dilation": draw(geom(1, 2)),
        }
        return call("F.im2col", [x], optional(draw, kw), draw(threads_st))

    @st.composite
    def col2im_specs(draw):
        n, c = draw(dim(1, 3)), draw(st.integers(1, 3))
        h, w = draw(st.integers(1, 8)), draw(st.integers(1, 8))
        kh, kw_ = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        p, d = draw(st.integers(0, 2)), draw(st.integers(1, 2))
        if draw(st.integers(0, 9)) == 0 and HUGE_EXTENTS:  # a huge image from tiny columns
            big = draw(st.sampled_from([2**20, 2**31, 2**40, 2**62]))
            h, sh = big, big
        oh, ow = _conv_len(h, kh, sh, 2 * p, d), _conv_len(w, kw_, sw, 2 * p, d)
        length = mostly(draw, oh * ow, st.integers(0, 30), 12)
        rows = mostly(draw, c * kh * kw_, st.integers(0, 20), 12)
        cols = draw(arrays(mostly(draw, [n, rows, length], any_shape, 16)))
        kernel = mostly(draw, kh if kh == kw_ and draw(st.booleans()) else tup(kh, kw_), geom(1, 3), 10)
        size = mostly(draw, h if h == w and draw(st.booleans()) else tup(h, w), shape_value([h, w]), 10)
        kw = {
            "stride": mostly(draw, tup(sh, sw), geom(1, 3), 10),
            "padding": mostly(draw, p, geom(0, 2), 10),
            "dilation": mostly(draw, d, geom(1, 2), 10),
        }
        return call("F.col2im", [cols, size, kernel], kw, draw(threads_st))

    @st.composite
    def conv_parts(draw):
        xs = draw(nchw())
        groups = draw(st.sampled_from([1, 1, 1, 2, 3]))
        c = xs[1] if len(xs) == 4 and xs[1] <= 2**12 else 2
        if c % groups and draw(st.integers(0, 7)):
            groups = 1
        f = groups * draw(st.integers(1, 3))
        ws = mostly(draw, [f, c // groups, draw(st.integers(1, 3)), draw(st.integers(1, 3))], any_shape, 8)
        dtype = draw(dtypes())
        x = draw(arrays(xs, dtype))
        weight = draw(arrays(ws, mostly(draw, dtype, dtypes(), 8)))
        geometry = {
            "stride": draw(geom(1, 3)),
            "padding": draw(paddings),
            "dilation": draw(geom(1, 2)),
            "groups": mostly(draw, groups, bad_groups, 8),
        }
        return x, weight, f, dtype, optional(draw, geometry, ())

    @st.composite
    def conv2d_specs(draw):
        x, weight, f, dtype, geometry = draw(conv_parts())
        r = draw(st.integers(0, 11))
        if r < 3:
            bias = None
        elif r < 10:
            bias = draw(arrays([f], dtype))
        elif r == 10:
            bias = draw(arrays(draw(any_shape)))
        else:
            bias = draw(hostile)
        if draw(st.booleans()):
            return call("F.conv2d", [x, weight, bias], geometry, draw(threads_st))
        return call("F.conv2d", [x, weight], dict(geometry, bias=bias), draw(threads_st))

    @st.composite
    def conv2d_backward_specs(draw):
        x, weight, f, dtype, geometry = draw(conv_parts())
        xs, ws = x["shape"], weight["shape"]
        out_shape = [1, f, 1, 1]
        if len(xs) == 4 and len(ws) == 4:
            geo = _conv_geometry(
                xs[2:],
                ws[2:],
                decode(geometry.get("stride", 1), False),
                decode(geometry.get("padding", 0), False),
                decode(geometry.get("dilation", 1), False),
            )
            if geo:
                out_shape = [xs[0], ws[0], *geo[0]]
        dout = draw(arrays(mostly(draw, out_shape, any_shape, 8), mostly(draw, dtype, dtypes(), 8)))
        return call("F.conv2d_backward", [dout, x, weight], geometry, draw(threads_st))

    huge_windows = st.sampled_from([2**15, 2**20, 2**30, 2**39, 2**61] if HUGE_EXTENTS else [2**15])

    @st.composite
    def pool_geometry(draw, dilation=True):
        """kernel_size, stride, padding (mostly <= kernel // 2), dilation and ceil_mode."""
        k = draw(st.integers(1, 4))
        kw = {
            "kernel_size": mostly(draw, k if draw(st.booleans()) else tup(k, k), geom(1, 4)),
            "stride": mostly(draw, None, geom(1, 3), 2),
            "padding": mostly(draw, draw(st.integers(0, k // 2)), geom(0, 2), 3),
            "ceil_mode": draw(flag()),
        }
        if dilation:
            kw["dilation"] = draw(geom(1, 2))
        if draw(st.integers(0, 11)) == 0:  # a valid but huge window: tiny output
            p = draw(huge_windows)
            kw.update(kernel_size=2 * p + 1, padding=p, stride=draw(st.sampled_from([1, 2, 2 * p + 1])))
            kw.pop("dilation", None)
        return optional(draw, kw)

    @st.composite
    def max_pool2d_specs(draw):
        x = draw(arrays(draw(nchw())))
        kw = draw(pool_geometry())
        if draw(st.booleans()):
            kw["return_indices"] = draw(flag())
        return call("F.max_pool2d", [x], kw, draw(threads_st))

    @st.composite
    def max_pool2d_backward_specs(draw):
        xs = draw(nchw())
        if len(xs) != 4:
            xs = [1, 1, 2, 2]
        out_shape = [xs[0], xs[1], draw(st.integers(1, 5)), draw(st.integers(1, 5))]
        if math.prod(out_shape) > 2**12:
            out_shape[0] = 0
        dshape = mostly(draw, out_shape, any_shape, 8)
        dout = draw(arrays(dshape))
        indices = draw(indices_recipe(mostly(draw, dshape, any_shape, 8), xs[2] * xs[3]))
        size = mostly(draw, tup(*xs), shape_value(xs))
        return call("F.max_pool2d_backward", [dout, indices, size], {}, draw(threads_st))

    def avg_options(draw, kw):
        if draw(st.booleans()):
            kw["count_include_pad"] = draw(flag())
        if draw(keep) == 0:
            kw["divisor_override"] = draw(divisors)
        return kw

    @st.composite
    def avg_pool2d_specs(draw):
        x = draw(arrays(draw(nchw())))
        kw = avg_options(draw, draw(pool_geometry(dilation=False)))
        return call("F.avg_pool2d", [x], kw, draw(threads_st))

    @st.composite
    def avg_pool2d_backward_specs(draw):
        xs = draw(nchw())
        if len(xs) != 4:
            xs = [1, 1, 3, 3]
        kw = avg_options(draw, draw(pool_geometry(dilation=False)))
        geo = _pool_geometry(
            xs[2:],
            decode(kw["kernel_size"], False),
            decode(kw.get("stride"), False),
            decode(kw.get("padding", 0), False),
            1,
            decode(kw.get("ceil_mode", False), False),
        )
        out_shape = [xs[0], xs[1], *(geo[0] if geo else (1, 1))]
        if math.prod(out_shape) > 2**12:
            out_shape[0] = 0
        dout = draw(arrays(mostly(draw, out_shape, any_shape, 8)))
        size = mostly(draw, tup(*xs), shape_value(xs))
        args = [dout, size, kw.pop("kernel_size")]
        return call("F.avg_pool2d_backward", args, kw, draw(threads_st))

    # The ops beyond plain stacks: a consistent call most of the time, hostile
    # geometry now and then (their NumPy code is shared by both backends, so the
    # contract is mostly about clear errors and untouched inputs).

    amounts = weighted((st.integers(-3, 5), 20), (hostile, 1), (huge_ints, 1))

    @st.composite
    def pad_specs(draw, backward=False):
        xs = draw(nchw())
        n = draw(st.integers(2, 4)) if draw(st.integers(0, 9)) else draw(st.sampled_from([0, 1, 3, 5]))
        pad = weighted((st.lists(amounts, min_size=n, max_size=n).map(lambda v: tup(*v)), 20),
                       (hostile, 1))
        kw = {}
        if draw(keep):
            kw["mode"] = draw(weighted(
                (st.sampled_from(["constant", "reflect", "replicate", "circular"]), 20),
                (st.sampled_from(["edge", "", None, 1]), 1)))
        if backward:
            size = mostly(draw, tup(*xs), shape_value(xs))
            dout = draw(arrays(mostly(draw, xs[:2] + [draw(st.integers(1, 9)), 4], any_shape, 8)))
            return call("F.pad_backward", [dout, size, draw(pad)], kw, draw(threads_st))
        if draw(keep) == 0:
            kw["value"] = draw(weighted((st.floats(-2, 2), 10), (hostile, 1)))
        return call("F.pad", [draw(arrays(xs)), draw(pad)], kw, draw(threads_st))

    @st.composite
    def interpolate_specs(draw, backward=False):
        xs = draw(nchw())
        kw = {}
        if draw(st.booleans()):
            kw["size"] = draw(geom(1, 9))
        if draw(st.booleans()) or "size" not in kw:
            kw["scale_factor"] = draw(weighted(
                (st.floats(0.2, 3.0), 10), (st.sampled_from([2, 0.5, tup(2, 1.5)]), 3),
                (hostile, 1), (huge_ints, 1)))
        if draw(keep):
            kw["mode"] = draw(weighted((st.sampled_from(["nearest", "bilinear"]), 20),
                                       (st.sampled_from(["bicubic", None]), 1)))
        if draw(keep) == 0:
            kw["align_corners"] = draw(flag())
        if draw(keep) == 0:
            kw["recompute_scale_factor"] = draw(flag())
        if backward:
            dout = draw(arrays(mostly(draw, xs[:2] + [draw(st.integers(1, 9))] * 2, any_shape, 8)))
            size = mostly(draw, tup(*xs), shape_value(xs))
            return call("F.interpolate_backward", [dout, size], kw, draw(threads_st))
        return call("F.interpolate", [draw(arrays(xs))], kw, draw(threads_st))

    adaptive_sizes = weighted(
        (geom(1, 9), 12), (st.sampled_from([tup(None, 3), tup(2, None), None]), 2))

    @st.composite
    def adaptive_specs(draw, kind):
        kw = {}
        if kind == "max" and draw(st.booleans()):
            kw["return_indices"] = draw(flag())
        x = draw(arrays(draw(nchw())))
        return call(f"F.adaptive_{kind}_pool2d", [x, draw(adaptive_sizes)], kw, draw(threads_st))

    @st.composite
    def adaptive_avg_backward_specs(draw):
        xs = draw(nchw())
        dout = draw(arrays(mostly(draw, xs[:2] + [draw(st.integers(1, 6))] * 2, any_shape, 8)))
        size = mostly(draw, tup(*xs), shape_value(xs))
        return call("F.adaptive_avg_pool2d_backward", [dout, size], {}, draw(threads_st))

    @st.composite
    def adaptive_max_backward_specs(draw):
        spec = draw(max_pool2d_backward_specs())
        return dict(spec, op="F.adaptive_max_pool2d_backward")

    @st.composite
    def max_unpool2d_specs(draw, backward=False):
        xs = draw(nchw())
        k = draw(st.integers(1, 3))
        shape = xs if len(xs) == 4 else [1, 1, 2, 2]
        plane = (shape[2] * k) * (shape[3] * k)
        indices = draw(indices_recipe(mostly(draw, shape, any_shape, 8), plane))
        if backward:
            dout = draw(arrays(mostly(draw, shape[:2] + [shape[2] * k, shape[3] * k], any_shape, 8)))
            return call("F.max_unpool2d_backward", [dout, indices], {}, draw(threads_st))
        kw = optional(draw, {"stride": draw(geom(1, 3)), "padding": draw(geom(0, 1))}, ())
        if draw(keep) == 0:
            kw["output_size"] = mostly(draw, tup(shape[2] * k, shape[3] * k), shape_value(shape))
        x = draw(arrays(xs))
        return call("F.max_unpool2d", [x, indices, mostly(draw, k, geom(1, 3))], kw,
                    draw(threads_st))

    @st.composite
    def conv_transpose2d_specs(draw, backward=False):
        x, weight, f, dtype, geometry = draw(conv_parts())
        geometry.pop("padding", None)
        if draw(keep):
            geometry["padding"] = draw(geom(0, 2))
        if draw(keep) == 0:
            geometry["output_padding"] = draw(geom(0, 1))
        # conv_parts draws a conv2d weight (F, C/groups, kh, kw): read here as
        # (C_in, F/groups, kh, kw), it fits an input of F channels.
        xs = draw(nchw(c=weight["shape"][0] if isinstance(weight, dict) and "shape" in weight
                       and weight["shape"] else None))
        x = draw(arrays(xs, dtype))
        if backward:
            dout = draw(arrays(mostly(draw, xs[:1] + [3, 4, 4], any_shape, 4), dtype))
            return call("F.conv_transpose2d_backward", [dout, x, weight], geometry,
                        draw(threads_st))
        if draw(st.booleans()):
            geometry["bias"] = draw(arrays([draw(st.integers(0, 4))], dtype))
        return call("F.conv_transpose2d", [x, weight], geometry, draw(threads_st))

    @st.composite
    def norm_specs(draw, kind, backward=False):
        xs = draw(nchw())
        dtype = draw(dtypes())
        x = draw(arrays(xs, dtype))
        c = xs[1] if len(xs) == 4 else 2
        if kind == "group":
            shape_arg = mostly(draw, draw(st.sampled_from([1, max(c, 1)])), weighted(
                (st.integers(-1, 5), 4), (hostile, 1), (huge_ints, 1)))
            param_shape = [c]
        else:
            trailing = list(xs[-2:]) if len(xs) >= 2 else [2]
            shape_arg = mostly(draw, tup(*trailing), weighted(
                (st.integers(-1, 5), 4), (hostile, 1), (huge_ints, 1)))
            param_shape = trailing
        args = [x, shape_arg]
        kw = {}
        if draw(st.booleans()):
            kw["weight"] = draw(arrays(mostly(draw, param_shape, any_shape, 8),
                                       mostly(draw, dtype, dtypes(), 8)))
        if draw(keep) == 0:
            kw["eps"] = draw(weighted((st.floats(1e-6, 1e-2), 8), (hostile, 1)))
        if backward:
            dout = draw(arrays(mostly(draw, xs, any_shape, 8), dtype))
            return call(f"F.{kind}_norm_backward", [dout, *args], kw, draw(threads_st))
        if draw(st.booleans()):
            kw["bias"] = draw(arrays(mostly(draw, param_shape, any_shape, 8), dtype))
        return call(f"F.{kind}_norm", args, kw, draw(threads_st))

    OP_SPECS = {
        "pad": pad_specs(),
        "pad_backward": pad_specs(backward=True),
        "interpolate": interpolate_specs(),
        "interpolate_backward": interpolate_specs(backward=True),
        "adaptive_avg_pool2d": adaptive_specs("avg"),
        "adaptive_max_pool2d": adaptive_specs("max"),
        "adaptive_avg_pool2d_backward": adaptive_avg_backward_specs(),
        "adaptive_max_pool2d_backward": adaptive_max_backward_specs(),
        "max_unpool2d": max_unpool2d_specs(),
        "max_unpool2d_backward": max_unpool2d_specs(backward=True),
        "conv_transpose2d": conv_transpose2d_specs(),
        "conv_transpose2d_backward": conv_transpose2d_specs(backward=True),
        "group_norm": norm_specs("group"),
        "group_norm_backward": norm_specs("group", backward=True),
        "layer_norm": norm_specs("layer"),
        "layer_norm_backward": norm_specs("layer", backward=True),
        "im2col": im2col_specs(),
        "col2im": col2im_specs(),
        "conv2d": conv2d_specs(),
        "conv2d_backward": conv2d_backward_specs(),
        "max_pool2d": max_pool2d_specs(),
        "max_pool2d_backward": max_pool2d_backward_specs(),
        "avg_pool2d": avg_pool2d_specs(),
        "avg_pool2d_backward": avg_pool2d_backward_specs(),
    }


# ===========================================================================
# Tests.

if __name__ != "__main__":

    def test_every_public_op_is_fuzzed():
        assert set(OP_SPECS) == set(F.__all__), "a public op of fastcnn.functional has no fuzzer"

    @pytest.mark.parametrize("name", sorted(OP_SPECS))
    def test_fuzz_functional(name):
        @fuzz_settings("functional op")
        @given(OP_SPECS[name])
        def run(spec):
            check(spec)

        run()

    # -----------------------------------------------------------------------
    # Layers, losses, optimizers (once they exist).

    LAYER_INPUT = {  # layer class -> how to draw (ctor args, ctor kwargs, input shape)
        "Conv2D": "conv",
        "ConvTranspose2D": "conv",
        "MaxPool2D": "pool",
        "AvgPool2D": "pool",
        "GlobalAvgPool2D": "nchw",
        "Dense": "dense",
        "Flatten": "any",
        "BatchNorm1D": "bn1",
        "BatchNorm2D": "bn2",
        "Dropout": "any",
        "LeakyReLU": "any",
        "ELU": "any",
        "Softplus": "any",
        "Softmax": "any",
        "GroupNorm": "group",
        "LayerNorm": "layer",
        "Pad2D": "pad",
        "Upsample": "upsample",
        "AdaptiveAvgPool2D": "adaptive",
        "AdaptiveMaxPool2D": "adaptive",
    }  # others ("any"): none or hostile arguments (MaxUnpool2D's forward takes indices,
    # Residual a layer: their functional ops and containers are fuzzed elsewhere)

    @functools.cache
    def small_real(lo, hi):
        return weighted(
            (st.floats(lo, hi, allow_nan=False), 16),
            (st.integers(0, 2), 1),
            (
                st.sampled_from(
                    [-1.0, float("nan"), float("inf"), "0.1", None, True, npv("float32", 0.5), 2**70]
                ),
                1,
            ),
        )

    def layer_names():
        return sorted(n for n in getattr(_layers, "__all__", []) if n != "Layer")

    @st.composite
    def layer_specs(draw, names=None):
        cls = draw(st.sampled_from(names or layer_names()))
        dtype = draw(st.sampled_from(FLOATS))
        kind = LAYER_INPUT.get(cls, "any")
        args, kwargs = [], {}
        seed = draw(weighted((seeds, 20), (st.sampled_from([-1, "seed", 1.5]), 1)))
        xs = draw(nchw())
        if kind == "conv":
            c = xs[1] if len(xs) == 4 and xs[1] <= 2**12 else 2
            groups = draw(st.sampled_from([1, 1, 1, 2]))
            c_arg = c if draw(st.integers(0, 7)) else draw(st.one_of(st.integers(-1, 5), hostile, huge_ints))
            f = groups * draw(st.integers(1, 3))
            args = [
                c_arg,
                f if draw(st.integers(0, 7)) else draw(st.one_of(hostile, huge_ints)),
                draw(geom(1, 3)),
            ]
            kwargs = {
                "stride": draw(geom(1, 2)),
                "padding": draw(st.one_of(geom(0, 1), st.sampled_from(["same", "valid"]))),
                "dilation": draw(geom(1, 2)),
                "groups": groups,
                "bias": draw(flag()),
                "dtype": dtype,
                "rng": seed,
            }
            if cls == "ConvTranspose2D":
                kwargs["padding"] = draw(geom(0, 2))
                if draw(st.booleans()):
                    kwargs["output_padding"] = draw(geom(0, 1))
        elif kind == "group":
            c = xs[1] if len(xs) == 4 else 2
            odd = weighted((st.integers(-1, 5), 4), (hostile, 1), (huge_ints, 1))
            args = [mostly(draw, draw(st.sampled_from([1, max(c, 1)])), odd), mostly(draw, c, odd)]
            kwargs = {"eps": draw(small_real(1e-6, 1.0)), "affine": draw(flag()), "dtype": dtype}
        elif kind == "layer":
            trailing = xs[-draw(st.integers(1, 2)):] if xs else [2]
            odd = weighted((st.integers(-1, 5), 4), (hostile, 1), (huge_ints, 1))
            args = [mostly(draw, tup(*trailing), odd)]
            kwargs = {"eps": draw(small_real(1e-6, 1.0)), "elementwise_affine": draw(flag()), "dtype": dtype}
        elif kind == "pad":
            spec = draw(pad_specs())
            args = [spec["args"][1]]
            kwargs = {k: v for k, v in spec["kwargs"].items() if k in ("mode", "value")}
        elif kind == "upsample":
            kwargs = draw(interpolate_specs())["kwargs"]
            kwargs.pop("recompute_scale_factor", None)
        elif kind == "adaptive":
            args = [draw(adaptive_sizes)]
        elif kind == "pool":
            kwargs = draw(pool_geometry(dilation=cls == "MaxPool2D"))
            args = [kwargs.pop("kernel_size")]
            if cls == "AvgPool2D" and draw(st.booleans()):
                kwargs["count_include_pad"] = draw(flag())
        elif kind == "dense":
            xs = draw(weighted((st.lists(st.integers(1, 5), min_size=2, max_size=2), 10), (any_shape, 1)))
            fin = (
                xs[1]
                if len(xs) == 2 and draw(st.integers(0, 7))
                else draw(st.one_of(st.integers(-1, 5), hostile, huge_ints))
            )
            args = [fin, draw(weighted((st.integers(1, 4), 16), (hostile, 1), (huge_ints, 1)))]
            kwargs = {"bias": draw(flag()), "dtype": dtype, "rng": seed}
        elif kind in ("bn1", "bn2"):
            if kind == "bn1":
                xs = draw(st.lists(st.integers(1, 4), min_size=2, max_size=3))
            nf = (
                xs[1]
                if len(xs) >= 2 and draw(st.integers(0, 7))
                else draw(st.one_of(st.integers(-1, 4), hostile, huge_ints))
            )
            args = [nf]
            kwargs = {
                "eps": draw(small_real(1e-6, 1.0)),
                "momentum": draw(small_real(0.0, 1.0)),
                "dtype": dtype,
            }
        elif kind == "any":
            xs = mostly(draw, xs, any_shape, 5)
            extra = {
                "Dropout": {"p": small_real(0.0, 1.0), "rng": st.just(seed)},
                "LeakyReLU": {"negative_slope": small_real(-2.0, 2.0)},
                "ELU": {"alpha": small_real(0.0, 2.0)},
                "Softplus": {"beta": small_real(0.1, 3.0), "threshold": small_real(-5.0, 30.0)},
                "Softmax": {"axis": st.one_of(st.integers(-5, 4), hostile)},
            }.get(cls, {})
            kwargs = {k: draw(v) for k, v in extra.items() if draw(st.booleans()) or k == "rng"}
        if draw(st.integers(0, 9)) == 0:  # a wrong dtype argument
            if "dtype" in kwargs:
                kwargs["dtype"] = draw(st.sampled_from(["<f2", "int64", "float", "nonsense", None]))
        x = draw(arrays(xs, dtype if draw(st.integers(0, 7)) else None))
        r = draw(st.integers(0, 9))
        if r < 7:
            dout = {
                "t": "like",
                "layout": draw(st.sampled_from(LAYOUTS)),
                "fill": "normal",
                "seed": draw(seeds),
            }
        elif r == 7:
            dout = None
        else:
            dout = draw(arrays(draw(st.lists(st.integers(0, 4), max_size=5))))
        training = draw(
            weighted((st.booleans(), 20), (st.sampled_from([npv("bool", False), 1, None, "no"]), 1))
        )
        return {
            "op": "layer",
            "cls": cls,
            "ctor_args": args,
            "ctor_kwargs": kwargs,
            "x": x,
            "training": training,
            "dout": dout,
            "threads": draw(threads_st),
        }

    def test_fuzz_layers():
        @fuzz_settings("layers")
        @given(layer_specs())
        def run(spec):
            check(spec)

        run()

    @st.composite
    def loss_specs(draw):
        name = draw(st.sampled_from(sorted(getattr(_losses, "__all__", []))))
        n, k = draw(dim(1, 4)), draw(dim(1, 5))
        if name == "softmax_cross_entropy":
            logits = draw(
                arrays([n, k] if draw(st.integers(0, 7)) else draw(st.lists(st.integers(0, 4), max_size=4)))
            )
            lshape = [n] if draw(st.integers(0, 7)) else draw(st.lists(st.integers(0, 4), max_size=3))
            labels = draw(indices_recipe(lshape, k))
            return {"op": "loss." + name, "args": [logits, labels]}
        shape = draw(st.lists(st.integers(0, 4), max_size=4))
        dtype = draw(dtypes())
        other = shape if draw(st.integers(0, 7)) else draw(st.lists(st.integers(0, 4), max_size=4))
        return {
            "op": "loss." + name,
            "args": [
                draw(arrays(shape, dtype)),
                draw(arrays(other, dtype if draw(st.integers(0, 5)) else None)),
            ],
        }

    def test_fuzz_losses():
        @fuzz_settings("losses")
        @given(loss_specs())
        def run(spec):
            check(spec)

        run()

    @st.composite
    def optim_specs(draw):
        optimizers = [
            n for n in getattr(_optim, "__all__", [])
            if n != "Optimizer" and isinstance(getattr(_optim, n), type)
            and issubclass(getattr(_optim, n), _optim.Optimizer)
        ]  # the functions (gradient clipping) take no lr
        name = draw(st.sampled_from(sorted(optimizers)))
        params = inspect.signature(getattr(_optim, name)).parameters
        kwargs = {}
        for pname, p in params.items():
            if pname in ("self", "model") or not draw(st.booleans()):
                continue
            default = p.default
            if isinstance(default, bool):
                kwargs[pname] = draw(flag())
            elif isinstance(default, tuple):
                kwargs[pname] = draw(
                    weighted(
                        (st.tuples(small_real(0.0, 0.999), small_real(0.0, 0.999)).map(lambda t: tup(*t)), 8),
                        (hostile, 1),
                    )
                )
            else:
                kwargs[pname] = draw(small_real(0.0, 0.99))
        if params["lr"].default is inspect.Parameter.empty and "lr" not in kwargs:
            kwargs["lr"] = 0.1
        use_conv = draw(st.booleans())
        if use_conv:
            layer = {
                "cls": "Conv2D",
                "ctor_args": [2, 3, 2],
                "ctor_kwargs": {"rng": draw(seeds)},
                "x": arr([2, 2, 4, 4], seed=draw(seeds)),
            }
        else:
            layer = {
                "cls": "Dense",
                "ctor_args": [3, 2],
                "ctor_kwargs": {"rng": draw(seeds)},
                "x": arr([4, 3], seed=draw(seeds)),
            }
        return {"op": "optim." + name, **layer, "args": [], "kwargs": kwargs}

    def test_fuzz_optimizers():
        @fuzz_settings("optimizers")
        @given(optim_specs())
        def run(spec):
            check(spec)

        run()

    # -----------------------------------------------------------------------
    # Thread counts (fastcnn.set_num_threads), in the worker: a bad count must
    # not take the interpreter down.

    @fuzz_settings("set_num_threads")
    @given(
        st.one_of(
            st.integers(-8, 8), st.sampled_from([64, 1000, 40000, 2**31 - 1, 2**31, 2**63, -(2**63)]), hostile
        ),
        max_pool2d_specs(),
    )
    def test_fuzz_set_num_threads(n, inner):
        check({"op": "threads", "n": n, "call": inner})

    # -----------------------------------------------------------------------
    # Pinned cases: the reproducers of /work/BUGS.md (FUZZ-*) and hand-picked
    # extremes. Each must meet the same contract as the generated calls.

    _x44 = arr([1, 1, 4, 4], "<f4", "C", "normal", 7)
    _zeros_signed = arr([1, 1, 4, 4], "<f4", "C", "alt_zeros", 3)
    PINNED = {
        "FUZZ-1-im2col-stride-padding-2**62": call(
            "F.im2col", [_x44, 1], {"stride": 2**62, "padding": 2**62}, None
        ),
        "FUZZ-1-im2col-stride-2**63": call("F.im2col", [_x44, 2], {"stride": 2**63}, None),
        "FUZZ-1-col2im-2**62": call(
            "F.col2im", [arr([1, 1, 9]), 4, 1], {"stride": 2**62, "padding": 2**62}, None
        ),
        "FUZZ-1-conv2d-2**62": call(
            "F.conv2d", [_x44, arr([1, 1, 1, 1])], {"stride": 2**62, "padding": 2**62}, None
        ),
        "FUZZ-1-max_pool2d-dilation-2**70": call("F.max_pool2d", [_x44, 1], {"dilation": 2**70}, None),
        "FUZZ-1-avg_pool2d-stride-2**63": call("F.avg_pool2d", [_x44, 2], {"stride": 2**63}, None),
        "FUZZ-1-avg_pool2d-divisor-2**70": call("F.avg_pool2d", [_x44, 2], {"divisor_override": 2**70}, None),
        "FUZZ-2-max_pool2d-kernel-2**40": call(
            "F.max_pool2d", [_x44, 2**40 + 1], {"stride": 1, "padding": 2**39}, None
        ),
        "FUZZ-2-max_pool2d-empty-batch-2**29": call(
            "F.max_pool2d", [arr([0, 1, 2**29, 2**29], layout="empty"), 2], {}, None
        ),
        "FUZZ-3-set_num_threads-40000": {
            "op": "threads",
            "n": 40000,
            "call": call("F.max_pool2d", [arr([1, 64, 8, 8]), 2], {}, None),
        },
        "FUZZ-4-max_pool2d-signed-zeros": call("F.max_pool2d", [_zeros_signed, tup(1, 2)], {}, None),
        "FUZZ-5-kernel_size-0d-array": call("F.max_pool2d", [_x44, nd("int64", 2)], {}, None),
        "huge-input_shape": call(
            "F.max_pool2d_backward",
            [arr([1, 1, 1, 1]), arr([1, 1, 1, 1], "<i8", lo=0, hi=1), tup(1, 1, 2**40, 2**40)],
            {},
            None,
        ),
        "huge-output_size": call("F.col2im", [arr([1, 1, 1]), tup(2**40, 2**40), 1], {"stride": 2**40}, None),
        "huge-broadcast-input": call(
            "F.im2col", [arr([1, 1, 2**30, 2**30], layout="broadcast"), 3], {}, None
        ),
        "huge-broadcast-conv": call(
            "F.conv2d", [arr([2**40, 1, 1, 1], layout="broadcast"), arr([1, 1, 1, 1])], {}, None
        ),
        # Found by the long run (HYPOTHESIS_PROFILE=long) on 2026-12-01.
        "long-BatchNorm2D-empty-W": {
            "op": "layer", "cls": "BatchNorm2D", "ctor_args": [1],
            "ctor_kwargs": {"eps": 1.0, "momentum": 0.0, "dtype": "<f4"},
            "x": arr([1048576, 1, 1, 0], layout="empty"), "training": False,
            "dout": {"t": "like", "layout": "C", "fill": "normal", "seed": 0}, "threads": None,
        },
        # ... and at HEAD later that day: an empty batch of a huge image built
        # 2 GiB per-channel planes (MemoryError) for nothing.
        "long-BatchNorm2D-empty-batch-huge-plane": {
            "op": "layer", "cls": "BatchNorm2D", "ctor_args": [1],
            "ctor_kwargs": {"eps": 1.0, "momentum": 0.0, "dtype": "<f4"},
            "x": arr([0, 1, 536870912, 1], layout="empty"), "training": False,
            "dout": {"t": "like", "layout": "C", "fill": "normal", "seed": 0}, "threads": None,
        },
        # Found by the long run on 2026-12-06 (at 2**29 channels, now in the
        # gray zone): the parameter gradients of an empty batch are as large
        # as its channels / normalized_shape, however empty the inputs.
        "long-group_norm_backward-empty-batch-2**31-channels": call(
            "F.group_norm_backward",
            [arr([0, 2**31, 1, 1], layout="empty"), arr([0, 2**31, 1, 1], layout="empty"), 1], {}, None,
        ),
        "long-layer_norm_backward-empty-batch-2**31-normalized": call(
            "F.layer_norm_backward",
            [arr([0, 1, 2**31, 1], layout="empty"), arr([0, 1, 2**31, 1], layout="empty"), tup(2**31, 1)],
            {},
            None,
        ),
        # Found by the long run on 2026-12-06: float32 products of 1e30 and
        # 1e30 overflow; with fused multiply-adds the compiled GEMM's partial
        # sums reach -inf (or inf) where NumPy's sum +inf and -inf to NaN.
        "long-conv2d-overflow-order": call(
            "F.conv2d",
            [arr([3, 2, 7, 5], fill="special", seed=13), arr([1, 2, 1, 3], fill="special", seed=1013)],
            {},
            None,
        ),
        "long-conv2d_backward-overflow-order": call(
            "F.conv2d_backward",
            [
                arr([1, 1, 4, 2], fill="special", seed=5012),
                arr([1, 2, 4, 4], fill="special", seed=12),
                arr([1, 2, 1, 3], fill="special", seed=1012),
            ],
            {},
            None,
        ),
        # Found by a dev-profile run the same day: a NumPy scalar, not an array.
        "dev-Tanh-0d-special": {
            "op": "layer", "cls": "Tanh", "ctor_args": [], "ctor_kwargs": {},
            "x": arr([], fill="special", seed=14), "training": False,
            "dout": {"t": "like", "layout": "C", "fill": "normal", "seed": 0}, "threads": None,
        },
        "long-mse-0d-special": {
            "op": "loss.mse",
            "args": [arr([], fill="special", seed=0), arr([], fill="special", seed=0)],
        },
        # Found by the long run on 2026-12-06 (third run): the direct conv
        # kernels copied a 1x1 input once per column phase of a 2**31 - 1
        # stride (MemoryError); and RMSprop's centered update magnified the
        # two BLAS libraries' rounding of a conv's gradients.
        "long-conv2d-stride-2**31-1": call(
            "F.conv2d", [arr([1, 1, 1, 1]), arr([1, 1, 1, 1])], {"stride": 2**31 - 1, "bias": None},
            None,
        ),
        "long-conv2d_backward-stride-2**31-1": call(
            "F.conv2d_backward", [arr([1, 1, 1, 1]), arr([1, 1, 1, 1]), arr([1, 1, 1, 1])],
            {"stride": 2**31 - 1}, None,
        ),
        "long-RMSprop-centered-Conv2D": {
            "op": "optim.RMSprop", "cls": "Conv2D", "ctor_args": [2, 3, 2],
            "ctor_kwargs": {"rng": 0}, "x": arr([2, 2, 4, 4]), "args": [],
            "kwargs": {"alpha": 0.03125, "centered": True},
        },
        # ... and by the same day's rerun: "same" padding of a widely dilated
        # window (the direct kernels' scratch band again);
        "long-conv2d_backward-same-dilation-32769": call(
            "F.conv2d_backward", [arr([1, 1, 1, 1]), arr([1, 1, 1, 1]), arr([1, 1, 2, 2])],
            {"padding": "same", "dilation": 32769}, None,
        ),
        # the direct kernels' bias gradient of a 65539-wide plane of equal
        # values, summed in one run per lane, erred by 8e-5 (now in runs:
        # 1.1e-5, as a blocked sum of so many terms of one sign may);
        "long-conv2d_backward-long-plane": call(
            "F.conv2d_backward",
            [arr([1, 2, 1, 65539], layout="broadcast"), arr([1, 1, 1, 1]), arr([2, 1, 1, 1])],
            {"padding": tup(0, 32769)}, None,
        ),
        "long-conv2d_backward-long-plane-1-channel": call(
            "F.conv2d_backward",
            [arr([1, 1, 1, 65539], layout="broadcast"), arr([1, 1, 1, 1]), arr([1, 1, 1, 1])],
            {"padding": tup(0, 32769)}, None,
        ),
        # a batch norm's mean of 1e30, -1e30
        # and small values is any small value, depending on the summation order.
        "long-BatchNorm2D-cancelling-mean": {
            "op": "layer", "cls": "BatchNorm2D", "ctor_args": [1],
            "ctor_kwargs": {"eps": 1.0, "momentum": 1.0, "dtype": "<f4"},
            "x": arr([1, 1, 3, 3], fill="special", seed=3), "training": True,
            "dout": {"t": "like", "layout": "C", "fill": "normal", "seed": 0}, "threads": None,
        },
        # a batch of 2 whose output gradient is its input: the input gradient
        # (6e-5) is what is left of terms of 1, 3e-16 off in either order.
        "long-BatchNorm1D-cancelling-gradient": {
            "op": "layer", "cls": "BatchNorm1D", "ctor_args": [1],
            "ctor_kwargs": {"eps": 1e-06, "momentum": 0.0, "dtype": "<f8"},
            "x": arr([2, 1], "<f8", seed=0), "training": True,
            "dout": {"t": "like", "layout": "C", "fill": "normal", "seed": 0}, "threads": None,
        },
        "index-2**64-1": call(
            "F.max_pool2d_backward",
            [arr([1, 1, 2, 2]), arr([1, 1, 2, 2], "<u8", lo=0, hi=4, poke=[2**64 - 1]), tup(1, 1, 2, 2)],
            {},
            None,
        ),
    }
    MENTIONS = {"FUZZ-5-kernel_size-0d-array": "kernel_size"}

    @pytest.mark.parametrize("name", sorted(PINNED))
    def test_pinned_case(name):
        if ("2**" in name or name.startswith("huge")) and not HUGE_EXTENTS:
            # Elsewhere nothing caps the address space: a lazily granted 4 TiB could thrash.
            pytest.skip("huge extents are exercised on Linux only")
        spec = PINNED[name]

        @settings(max_examples=1, database=None, deadline=None)
        @given(st.just(spec))
        def run(spec):
            check(spec, MENTIONS.get(name))

        run()

    def test_close_forgives_order_only_where_sums_overflow():
        """_close accepts differing non-finite results only where the
        magnitudes of the summed terms reach the dtype's range."""
        inf, nan = np.inf, np.nan
        a = np.array([-inf, inf, nan, 1.0, 1.0, -inf], np.float32)
        b = np.array([nan, nan, -inf, 1.0 + 1e-3, 1.5, nan], np.float32)
        bound = np.array([1e60, 1e39, 1e39, 1e3, 1.0, 1e30])
        assert _close(a, b, bound).tolist() == [False, False, False, False, True, True]
        assert _close(a, b).tolist() == [True, True, True, True, True, True]
        # float64 has room for the same magnitudes: nothing is forgiven there.
        assert _close(a.astype(np.float64), b.astype(np.float64), bound)[:3].tolist() == [True] * 3

    @pytest.fixture(scope="module", autouse=True)
    def _summary(request):
        """When this module's tests end (also when -x stops them): the calls per op and in
        all, the rate, and the worker's crashes (the failures are pytest's own report)."""
        yield
        global _WORKER
        if _WORKER is not None:  # test_zz did not run (-x, -k): no stray worker, no unclosed files
            _WORKER.close()
            _WORKER = None
        if TALLY.calls:
            # (as capsys.disabled(): teardowns' output is captured too)
            with request.config.pluginmanager.getplugin("capturemanager").global_and_fixture_disabled():
                print("\n" + "\n".join(TALLY.lines()))

    def test_zz_worker_survived_and_exits_cleanly():
        """Runs last: the worker never crashed or hung, and exits with status 0."""
        assert TALLY.crashes == 0
        assert worker().close() == 0
        global _WORKER
        _WORKER = None


# ===========================================================================

if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(_worker_main())
    if sys.argv[1:2] == ["--replay"] and len(sys.argv) == 3:
        print(json.dumps(evaluate(json.loads(sys.argv[2])), indent=1))
        sys.exit(0)
    print(__doc__)
    sys.exit(2)

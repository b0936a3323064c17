"""Case generators shared by the core test suite.

Everything here is independent of fastcnn's own validation module: output
sizes are recomputed from the formulas in DESIGN.md, so a test that checks a
shape against these helpers checks fastcnn against the specification, not
against itself.

Hypothesis settings
-------------------
The profiles live in ``tests/conftest.py`` (``HYPOTHESIS_PROFILE``: ``dev``,
``ci`` = derandomized without a database, ``long``). Tests take their
settings from :func:`hsettings`, which inherits the loaded profile and only
raises the number of examples to what each test needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


def hsettings(max_examples: int) -> settings:
    """Settings for one test: the loaded profile, at least `max_examples`."""
    return settings(
        max_examples=max(max_examples, settings.default.max_examples),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


FLOAT_DTYPES = (np.float32, np.float64)

# ---------------------------------------------------------------------------
# Output sizes by counting windows one by one: an oracle independent of
# fastcnn's closed-form arithmetic (fastcnn._validation).


def conv_out(size: int, k: int, s: int, pad_total: int, d: int) -> int:
    """Output length of im2col/conv along one axis: windows inside the padded input."""
    padded = size + pad_total
    return sum(1 for start in range(0, padded, s) if start + d * (k - 1) < padded)


def pool_out(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """Output length of a pool along one axis, as PyTorch counts windows.

    A window lies inside the padded input; in ceil mode it may also hang over
    the right end by less than a stride, but must start inside the input or
    the left padding.
    """
    padded = size + 2 * p
    slack = s - 1 if ceil_mode else 0
    return sum(
        1
        for start in range(0, padded + slack, s)
        if start + d * (k - 1) < padded + slack and (not ceil_mode or start < size + p)
    )


def windows_hit_input(size: int, k: int, s: int, p: int, d: int, out: int) -> bool:
    """True if every pooling window along this axis holds at least one input cell."""
    for o in range(out):
        if not any(0 <= o * s - p + t * d < size for t in range(k)):
            return False
    return True


# ---------------------------------------------------------------------------
# Geometries.


@dataclass(frozen=True)
class Geometry:
    """A sliding-window problem: input (n, c, h, w) and the window parameters.

    ``ph``/``pw`` are symmetric paddings (top = bottom, left = right), as the
    public ops take them (conv ``"same"`` is exercised separately).
    """

    n: int
    c: int
    h: int
    w: int
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int = 1
    dw: int = 1
    ceil_mode: bool = False

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.h, self.w)

    @property
    def conv_oh(self) -> int:
        return conv_out(self.h, self.kh, self.sh, 2 * self.ph, self.dh)

    @property
    def conv_ow(self) -> int:
        return conv_out(self.w, self.kw, self.sw, 2 * self.pw, self.dw)

    @property
    def pool_oh(self) -> int:
        return pool_out(self.h, self.kh, self.sh, self.ph, self.dh, self.ceil_mode)

    @property
    def pool_ow(self) -> int:
        return pool_out(self.w, self.kw, self.sw, self.pw, self.dw, self.ceil_mode)

    @property
    def cols_shape(self) -> tuple[int, int, int]:
        return (self.n, self.c * self.kh * self.kw, self.conv_oh * self.conv_ow)

    @property
    def pool_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c, self.pool_oh, self.pool_ow)

    # keyword arguments of the public ops
    def conv_kwargs(self) -> dict:
        return dict(
            kernel_size=(self.kh, self.kw),
            stride=(self.sh, self.sw),
            padding=(self.ph, self.pw),
            dilation=(self.dh, self.dw),
        )

    def max_pool_kwargs(self) -> dict:
        return dict(self.conv_kwargs(), ceil_mode=self.ceil_mode)

    def avg_pool_kwargs(self) -> dict:
        assert self.dh == self.dw == 1
        return dict(
            kernel_size=(self.kh, self.kw),
            stride=(self.sh, self.sw),
            padding=(self.ph, self.pw),
            ceil_mode=self.ceil_mode,
        )

    # positional geometry of the kernel contract (CONTRACT.md)
    def conv_params(self) -> tuple[int, ...]:
        return (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.dh, self.dw,
                self.conv_oh, self.conv_ow)

    def pool_params(self) -> tuple[int, ...]:
        return (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw, self.dh, self.dw)

    def avg_params(self) -> tuple[int, ...]:
        return (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw)


def _axis(draw, max_k=4, max_s=4, max_d=3, max_p=3, pool=False, extra=6):
    """Draw (size, k, s, p, d) for one axis such that im2col has >= 1 window."""
    k = draw(st.integers(1, max_k))
    d = draw(st.integers(1, max_d)) if max_d > 1 else 1
    s = draw(st.integers(1, max_s))
    p = draw(st.integers(0, k // 2 if pool else max_p))
    reach = d * (k - 1) + 1
    smallest = max(1, reach - 2 * p)
    # offset 0 gives "kernel == padded input", a single window.
    size = smallest + draw(st.integers(0, extra))
    return size, k, s, p, d


@st.composite
def conv_geometries(draw, max_n=3, max_c=3, max_k=4, max_d=3, max_p=3, extra=6):
    """Geometries for im2col / col2im / conv (any padding, dilation, stride)."""
    n = draw(st.integers(1, max_n))
    c = draw(st.integers(1, max_c))
    h, kh, sh, ph, dh = _axis(draw, max_k=max_k, max_d=max_d, max_p=max_p, extra=extra)
    w, kw, sw, pw, dw = _axis(draw, max_k=max_k, max_d=max_d, max_p=max_p, extra=extra)
    g = Geometry(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw)
    assert g.conv_oh >= 1 and g.conv_ow >= 1
    return g


@st.composite
def pool_geometries(draw, dilation=True, max_n=3, max_c=3, max_k=4, extra=6):
    """Geometries valid for pooling: p <= k//2, non-empty output, every window
    holding an input cell; ceil_mode on or off (partial last windows)."""
    n = draw(st.integers(1, max_n))
    c = draw(st.integers(1, max_c))
    max_d = 3 if dilation else 1
    h, kh, sh, ph, dh = _axis(draw, max_k=max_k, max_d=max_d, pool=True, extra=extra)
    w, kw, sw, pw, dw = _axis(draw, max_k=max_k, max_d=max_d, pool=True, extra=extra)
    ceil_mode = draw(st.booleans())
    g = Geometry(n, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode)
    if g.pool_oh < 1 or g.pool_ow < 1:
        # ceil mode can only add windows; without it the input is too small:
        # grow it to fit one window.
        g = Geometry(n, c, h + kh * dh, w + kw * dw, kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode)
    hit = (windows_hit_input(g.h, kh, sh, ph, dh, g.pool_oh)
           and windows_hit_input(g.w, kw, sw, pw, dw, g.pool_ow))
    if not hit:
        # only dilation can do this; drop it on the offending problem
        g = Geometry(n, c, g.h, g.w, kh, kw, sh, sw, ph, pw, 1, 1, ceil_mode)
    assert g.pool_oh >= 1 and g.pool_ow >= 1
    assert windows_hit_input(g.h, g.kh, g.sh, g.ph, g.dh, g.pool_oh)
    assert windows_hit_input(g.w, g.kw, g.sw, g.pw, g.dw, g.pool_ow)
    return g


# ---------------------------------------------------------------------------
# Values.

VALUE_KINDS = ("normal", "ties", "special", "neg_inf", "nan", "zeros")


def make_values(rng: np.random.Generator, shape, dtype, kind: str = "normal") -> np.ndarray:
    """A C-contiguous array of `shape` and `dtype`.

    kind:
      normal   standard normal
      ties     small integers in [-2, 2] stored as floats: many exact ties
      special  like ties, with NaN, -inf and +inf sprinkled in
      neg_inf  like ties, with many -inf (windows made only of -inf)
      nan      like ties, with NaN (no infinities; safe for sums)
      zeros    -0.0, 0.0, -1.0 and 1.0: ties between zeros of opposite sign
    """
    dtype = np.dtype(dtype)
    if kind == "normal":
        return rng.standard_normal(shape).astype(dtype)
    if kind == "zeros":
        return rng.choice(np.array([-0.0, 0.0, -1.0, 1.0], dtype=dtype), size=shape)
    x = rng.integers(-2, 3, size=shape).astype(dtype)
    if kind == "ties":
        return x
    u = rng.random(shape)
    if kind == "special":
        x[u < 0.08] = np.nan
        x[(u >= 0.08) & (u < 0.16)] = -np.inf
        x[(u >= 0.16) & (u < 0.20)] = np.inf
    elif kind == "neg_inf":
        x[u < 0.6] = -np.inf
    elif kind == "nan":
        x[u < 0.1] = np.nan
    else:  # pragma: no cover - a typo in a test
        raise ValueError(kind)
    return x


# ---------------------------------------------------------------------------
# Memory layouts: the same values, stored oddly.

LAYOUTS = (
    "C",
    "fortran",
    "channels_last",
    "negative_strides",
    "readonly",
    "strided_slice",
    "byteswapped",
)


def with_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """Return an array equal to `x` (values and dtype kind) stored as `layout`.

    The result never shares memory with `x`, so a test can compare it with
    a pristine copy afterwards.
    """
    x = np.array(x, copy=True)
    if layout == "C":
        out = x
    elif layout == "fortran":
        out = np.asfortranarray(x)
    elif layout == "channels_last":
        # a transposed view (NHWC memory seen as NCHW); works for any rank
        perm = tuple(range(x.ndim))[:1] + tuple(range(2, x.ndim)) + (1,) if x.ndim >= 3 else tuple(
            reversed(range(x.ndim)))
        inv = tuple(np.argsort(perm))
        out = np.ascontiguousarray(x.transpose(perm)).transpose(inv)
    elif layout == "negative_strides":
        flip = (slice(None, None, -1),) * x.ndim
        out = np.ascontiguousarray(x[flip])[flip]
    elif layout == "readonly":
        out = x
        out.flags.writeable = False
    elif layout == "strided_slice":
        big_shape = x.shape[:-1] + (2 * x.shape[-1] + 1,) if x.ndim else ()
        big = np.full(big_shape, 99, dtype=x.dtype)
        big[..., 1::2] = x
        out = big[..., 1::2]
    elif layout == "byteswapped":
        out = x.astype(x.dtype.newbyteorder())
    else:  # pragma: no cover
        raise ValueError(layout)
    np.testing.assert_array_equal(out, x)
    return out

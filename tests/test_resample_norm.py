"""pad, interpolate, adaptive pools, max_unpool2d, group_norm, layer_norm and their layers:
PyTorch parity (forward, input and parameter gradients), gradcheck, bad input, inputs untouched."""

from __future__ import annotations

import numpy as np
import pytest

import fastcnn
from fastcnn import functional as F
from fastcnn.gradcheck import gradcheck
from fastcnn.layers import (
    AdaptiveAvgPool2D,
    AdaptiveMaxPool2D,
    GroupNorm,
    Layer,
    LayerNorm,
    MaxPool2D,
    MaxUnpool2D,
    Pad2D,
    Upsample,
)

DTYPES = [np.float32, np.float64]


def tol(dtype):
    return dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)


def data(shape, dtype=np.float64, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def torch_run(fn, *arrays):
    """``fn(*tensors)`` and the gradients of ``sum(out * dout)`` for a random dout."""
    torch = pytest.importorskip("torch")
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    dout = torch.from_numpy(data(tuple(out.shape), arrays[0].dtype, seed=1))
    out.backward(dout)
    return out.detach().numpy(), dout.numpy(), [t.grad.numpy() for t in tensors]


# ---------------------------------------------------------------------------
# pad

PAD_CASES = [
    ("constant", (1, 2, 3, 0)), ("constant", (-1, 2, 0, -2)), ("constant", (2, 1)),
    ("reflect", (1, 2, 3, 0)), ("reflect", (4, 6, 4, 0)), ("reflect", (-1, 2, 0, -2)),
    ("replicate", (3, 9, 1, 5)), ("replicate", (-2, 1, 2, -1)),
    ("circular", (1, 2, 3, 0)), ("circular", (7, 7, 5, 5)), ("circular", (-1, 2, 0, -2)),
    ("circular", (2, -3, -1, 1)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode, amounts", PAD_CASES)
def test_pad_matches_torch(dtype, mode, amounts):
    TF = pytest.importorskip("torch.nn.functional")
    x = data((2, 3, 5, 7), dtype)
    value = 0.5 if mode == "constant" else 0.0
    kw = dict(value=value) if mode == "constant" else {}
    expected, dout, (dx,) = torch_run(lambda t: TF.pad(t, amounts, mode=mode, **kw), x)
    out = F.pad(x, amounts, mode, value)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(F.pad_backward(dout, x.shape, amounts, mode), dx, **tol(dtype))
    layer = Pad2D(amounts, mode, value)
    np.testing.assert_array_equal(layer(x), expected)
    assert layer.output_shape(x.shape) == expected.shape


# ---------------------------------------------------------------------------
# interpolate

INTERP_CASES = [
    dict(size=(9, 4)), dict(size=(10, 14)), dict(size=3), dict(size=(5, 7)),
    dict(scale_factor=2), dict(scale_factor=1.7), dict(scale_factor=(2, 0.6)),
    dict(scale_factor=0.35), dict(scale_factor=1.7, recompute_scale_factor=True),
    # sizes that do not change: copied, whatever the factor says
    dict(scale_factor=1.1), dict(scale_factor=(1.1, 2)),
]
MODES = [("nearest", None), ("bilinear", None), ("bilinear", False), ("bilinear", True)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode, align_corners", MODES)
@pytest.mark.parametrize("options", INTERP_CASES, ids=str)
def test_interpolate_matches_torch(dtype, mode, align_corners, options):
    TF = pytest.importorskip("torch.nn.functional")
    x = data((2, 3, 5, 7), dtype)
    call = dict(mode=mode, align_corners=align_corners, **options)
    expected, dout, (dx,) = torch_run(lambda t: TF.interpolate(t, **call), x)
    out = F.interpolate(x, **call)
    assert out.shape == expected.shape and out.dtype == dtype
    np.testing.assert_allclose(out, expected, **tol(dtype))
    np.testing.assert_allclose(F.interpolate_backward(dout, x.shape, **call), dx, **tol(dtype))


def test_interpolate_places_samples_by_the_given_scale_factor():
    """With a fractional H * scale_factor, PyTorch places samples by 1/scale_factor
    unless recompute_scale_factor: the two give different outputs."""
    x = np.arange(10.0).reshape(1, 1, 1, 10)
    by_factor = F.interpolate(x, scale_factor=(1, 0.55))
    recomputed = F.interpolate(x, scale_factor=(1, 0.55), recompute_scale_factor=True)
    assert by_factor.shape == recomputed.shape == (1, 1, 1, 5)
    np.testing.assert_array_equal(by_factor[0, 0, 0], [0, 1, 3, 5, 7])
    np.testing.assert_array_equal(recomputed[0, 0, 0], [0, 2, 4, 6, 8])


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_interpolate_copies_an_axis_whose_size_does_not_change(mode):
    # PyTorch reads row i for output row i (a bilinear weight of 0 on the
    # same row): an inf stays in its row and column.
    TF = pytest.importorskip("torch.nn.functional")
    torch = pytest.importorskip("torch")
    x = data((1, 2, 5, 4))
    x[0, 1, 2, 1] = np.inf
    for options in (dict(scale_factor=(1.1, 1.9)), dict(size=(5, 9))):
        expected = TF.interpolate(torch.from_numpy(x), mode=mode, **options).numpy()
        out = F.interpolate(x, mode=mode, **options)
        np.testing.assert_allclose(out, expected, **tol(np.float64))
        assert np.isfinite(out[0, 1, [0, 1, 3, 4]]).all() and np.isfinite(out[0, 0]).all()


def test_upsample_layer_matches_torch():
    torch = pytest.importorskip("torch")
    x = data((2, 3, 4, 5), np.float32)
    for options in [dict(scale_factor=2), dict(size=(7, 3), mode="bilinear", align_corners=True)]:
        expected = torch.nn.Upsample(**options)(torch.from_numpy(x)).numpy()
        layer = Upsample(**options)
        np.testing.assert_allclose(layer(x), expected, rtol=1e-6, atol=1e-6)
        assert layer.output_shape(x.shape) == expected.shape


# ---------------------------------------------------------------------------
# adaptive pools

ADAPTIVE_SIZES = [(3, 4), (7, 10), (9, 13), (None, 3), 5, (2, None), 1, (7, 1)]


def with_ties_and_nan(dtype):
    x = data((2, 3, 7, 10), dtype)
    x[1, 1, :3, :3] = 1.0  # ties: the first maximum wins
    x[0, 0, 1, 1] = x[0, 0, 4, 5] = np.nan  # NaN propagates, the last one's index
    x[0, 2, 2, :] = -np.inf
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output_size", ADAPTIVE_SIZES, ids=str)
def test_adaptive_avg_pool_matches_torch(backend, dtype, output_size):
    TF = pytest.importorskip("torch.nn.functional")
    x = data((2, 3, 7, 10), dtype)
    expected, dout, (dx,) = torch_run(lambda t: TF.adaptive_avg_pool2d(t, output_size), x)
    np.testing.assert_allclose(F.adaptive_avg_pool2d(x, output_size), expected, **tol(dtype))
    np.testing.assert_allclose(F.adaptive_avg_pool2d_backward(dout, x.shape), dx, **tol(dtype))
    assert AdaptiveAvgPool2D(output_size).output_shape(x.shape) == expected.shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, output_size", [
    ((2, 3, 7, 10), (3, 4)), ((2, 3, 32, 32), 7), ((2, 2, 56, 56), 7), ((1, 2, 5, 3), (9, 11)),
    ((2, 3, 19, 23), (2, 3)), ((1, 3, 9, 9), (1, 4)), ((2, 2, 6, 8), (None, 3)),
], ids=str)
def test_adaptive_avg_pool_is_torch_bit_for_bit(backend, dtype, shape, output_size):
    # Both kernel sets sum each window in PyTorch's order and divide as it
    # does; the backward adds the shares in its order: the same bits (all
    # but a 1x1 output, which PyTorch computes as a mean: see above).
    torch = pytest.importorskip("torch")
    x = data(shape, dtype)
    tx = torch.from_numpy(x)
    out = torch.nn.functional.adaptive_avg_pool2d(tx, output_size)
    np.testing.assert_array_equal(F.adaptive_avg_pool2d(x, output_size), out.numpy())
    dout = data(tuple(out.shape), dtype, seed=1)
    dx = torch.ops.aten._adaptive_avg_pool2d_backward(torch.from_numpy(dout), tx)
    np.testing.assert_array_equal(F.adaptive_avg_pool2d_backward(dout, shape), dx.numpy())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output_size", ADAPTIVE_SIZES, ids=str)
def test_adaptive_max_pool_matches_torch_with_ties_and_nan(backend, dtype, output_size):
    torch = pytest.importorskip("torch")
    x = with_ties_and_nan(dtype)
    t_out, t_idx = torch.nn.functional.adaptive_max_pool2d(
        torch.from_numpy(x), output_size, return_indices=True)
    out, idx = F.adaptive_max_pool2d(x, output_size, return_indices=True)
    np.testing.assert_array_equal(out, t_out.numpy())
    np.testing.assert_array_equal(idx, t_idx.numpy())
    assert idx.dtype == np.int64
    x = data((2, 3, 7, 10), dtype)  # gradients: no ties, no NaN
    expected, dout, (dx,) = torch_run(
        lambda t: torch.nn.functional.adaptive_max_pool2d(t, output_size), x)
    _, idx = F.adaptive_max_pool2d(x, output_size, return_indices=True)
    np.testing.assert_array_equal(F.adaptive_max_pool2d_backward(dout, idx, x.shape), dx)
    layer = AdaptiveMaxPool2D(output_size)
    np.testing.assert_array_equal(layer(x), expected)
    np.testing.assert_array_equal(layer.indices, idx)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output_size", [(2, 3), (3, 2), 1, (1, 4)], ids=str)
def test_adaptive_pools_with_large_windows_match_torch(backend, dtype, output_size):
    """Windows of a hundred cells and more: ties, NaN and -inf too."""
    torch = pytest.importorskip("torch")
    x = data((2, 3, 19, 23), dtype)
    x[0, 0, 3:9, 2:7] = 2.5  # ties
    x[0, 1, 4, 4] = x[0, 1, 12, 20] = np.nan
    x[1, 2] = -np.inf
    tx = torch.from_numpy(x)
    t_out, t_idx = torch.nn.functional.adaptive_max_pool2d(tx, output_size, return_indices=True)
    out, idx = F.adaptive_max_pool2d(x, output_size, return_indices=True)
    np.testing.assert_array_equal(out, t_out.numpy())
    np.testing.assert_array_equal(idx, t_idx.numpy())
    x = data((2, 3, 19, 23), dtype)
    expected, dout, (dx,) = torch_run(lambda t: torch.nn.functional.adaptive_avg_pool2d(
        t, output_size), x)
    np.testing.assert_allclose(F.adaptive_avg_pool2d(x, output_size), expected, **tol(dtype))
    np.testing.assert_allclose(F.adaptive_avg_pool2d_backward(dout, x.shape), dx, **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_adaptive_max_pool_ties_between_zeros_and_columns_match_torch(backend, dtype):
    # -0.0 and 0.0 tie (the first one wins, with its sign); equal maxima in
    # several columns of a window: the first in row-major order, not the
    # first column's; NaN in several columns: the last in row-major order.
    torch = pytest.importorskip("torch")
    x = np.zeros((2, 2, 6, 8), dtype)
    x[0, 0, ::2, 1::3] = -0.0
    x[0, 1, 2, 0] = x[0, 1, 1, 3] = x[0, 1, 5, 2] = 3.0
    x[1, 0, 1, 2] = x[1, 0, 4, 0] = x[1, 0, 0, 3] = np.nan
    x[1, 1] = -np.inf
    x[1, 1, 5, 7] = np.nan
    for output_size in ((1, 1), (2, 2), (3, 5), (7, 9)):
        t_out, t_idx = torch.nn.functional.adaptive_max_pool2d(
            torch.from_numpy(x), output_size, return_indices=True)
        out, idx = F.adaptive_max_pool2d(x, output_size, return_indices=True)
        np.testing.assert_array_equal(out, t_out.numpy())
        np.testing.assert_array_equal(np.signbit(out), np.signbit(t_out.numpy()))
        np.testing.assert_array_equal(idx, t_idx.numpy())


# ---------------------------------------------------------------------------
# max_unpool2d

UNPOOL_CASES = [
    # H, W, kernel, stride, padding, ceil_mode, pass output_size
    (8, 8, 2, 2, 0, False, False),
    (7, 9, 2, 2, 0, False, True),
    (7, 9, 2, 2, 0, True, True),
    (7, 9, 3, 2, 1, True, True),
    (6, 7, 3, 1, 1, False, True),  # overlapping windows: repeated indices
    (5, 5, 2, 2, 0, True, False),  # ceil mode, default size 6x6 holds every index
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("h, w, k, s, p, ceil_mode, give_size", UNPOOL_CASES)
def test_max_unpool_matches_torch(dtype, h, w, k, s, p, ceil_mode, give_size):
    torch = pytest.importorskip("torch")
    x = data((2, 3, h, w), dtype)
    pooled, idx = F.max_pool2d(x, k, s, p, ceil_mode=ceil_mode, return_indices=True)
    size = (h, w) if give_size else None
    t_idx = torch.from_numpy(idx)
    expected, dout, (dx,) = torch_run(
        lambda t: torch.nn.functional.max_unpool2d(t, t_idx, k, s, p, output_size=size), pooled)
    np.testing.assert_array_equal(F.max_unpool2d(pooled, idx, k, s, p, size), expected)
    np.testing.assert_array_equal(F.max_unpool2d_backward(dout, idx), dx)
    layer = MaxUnpool2D(k, s, p)
    np.testing.assert_array_equal(layer(pooled, idx, size), expected)
    np.testing.assert_array_equal(layer.backward(dout), dx)


def test_unpool_after_odd_pool_needs_the_output_size():
    x = np.arange(63.0).reshape(1, 1, 7, 9)  # the last window's maximum is at 5*9 + 7
    pooled, idx = F.max_pool2d(x, 2, return_indices=True)
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 48\)"):
        F.max_unpool2d(pooled, idx, 2)
    assert F.max_unpool2d(pooled, idx, 2, output_size=x.shape).shape == x.shape


# ---------------------------------------------------------------------------
# group_norm and layer_norm

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, groups", [((3, 6, 5, 4), 3), ((1, 4, 3, 3), 4), ((2, 6, 7), 2),
                                           ((2, 5, 1, 1), 1), ((4, 6), 3)])
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_matches_torch(dtype, shape, groups, affine):
    TF = pytest.importorskip("torch.nn.functional")
    x = data(shape, dtype) * 3 + 1
    c = shape[1]
    params = [data((c,), dtype, 2), data((c,), dtype, 3)] if affine else []
    expected, dout, grads = torch_run(lambda t, *wb: TF.group_norm(t, groups, *wb), x, *params)
    np.testing.assert_allclose(F.group_norm(x, groups, *params), expected, **tol(dtype))
    dx, dweight, dbias = F.group_norm_backward(dout, x, groups, *params[:1])
    np.testing.assert_allclose(dx, grads[0], **tol(dtype))
    if affine:
        np.testing.assert_allclose(dweight, grads[1], **tol(dtype))
        np.testing.assert_allclose(dbias, grads[2], **tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, normalized", [((3, 6, 5, 4), (5, 4)), ((3, 6, 5, 4), (6, 5, 4)),
                                               ((2, 7), 7), ((2, 3, 5), [5]), ((1, 1, 1, 3), 3)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_torch(dtype, shape, normalized, affine):
    TF = pytest.importorskip("torch.nn.functional")
    x = data(shape, dtype) * 2 - 1
    nshape = (normalized,) if isinstance(normalized, int) else tuple(normalized)
    params = [data(nshape, dtype, 2), data(nshape, dtype, 3)] if affine else []
    expected, dout, grads = torch_run(lambda t, *wb: TF.layer_norm(t, nshape, *wb), x, *params)
    np.testing.assert_allclose(F.layer_norm(x, normalized, *params), expected, **tol(dtype))
    dx, dweight, dbias = F.layer_norm_backward(dout, x, normalized, *params[:1])
    np.testing.assert_allclose(dx, grads[0], **tol(dtype))
    if affine:
        np.testing.assert_allclose(dweight, grads[1], **tol(dtype))
        np.testing.assert_allclose(dbias, grads[2], **tol(dtype))


def test_norm_layers_match_torch_modules_and_default_init():
    torch = pytest.importorskip("torch")
    x = data((2, 6, 5, 3), np.float32)
    gn, t_gn = GroupNorm(3, 6), torch.nn.GroupNorm(3, 6)
    ln, t_ln = LayerNorm((5, 3)), torch.nn.LayerNorm((5, 3))
    for ours, theirs in [(gn, t_gn), (ln, t_ln)]:
        for name, value in ours.params.items():
            np.testing.assert_array_equal(value, getattr(theirs, name).detach().numpy())
            assert value.dtype == np.float32
        np.testing.assert_allclose(ours(x), theirs(torch.from_numpy(x)).detach().numpy(),
                                   rtol=1e-5, atol=1e-6)
    assert not GroupNorm(2, 4, affine=False).params
    assert not LayerNorm(4, elementwise_affine=False).params
    # Batch size 1 works (the reason to use them) and training mode does not matter.
    one = x[:1]
    np.testing.assert_array_equal(gn(one, training=True), gn(one, training=False))


# ---------------------------------------------------------------------------
# gradcheck of every new layer


class _Unpool(Layer):
    """MaxUnpool2D fed by fixed indices, so that gradcheck can drive it."""

    def __init__(self, indices, output_size):
        super().__init__()
        self.unpool = MaxUnpool2D(2)
        self._args = (indices, output_size)

    def forward(self, x, training=None):
        return self.unpool(x, *self._args)

    def backward(self, dout):
        return self.unpool.backward(dout)


def _affine(layer):
    rng = np.random.default_rng(4)
    for value in layer.params.values():
        value[...] = rng.standard_normal(value.shape)
    return layer


GRADCHECK_LAYERS = [
    ("groupnorm", lambda: _affine(GroupNorm(2, 4, dtype=np.float64)), (2, 4, 3, 3)),
    ("groupnorm-batch1", lambda: _affine(GroupNorm(4, 4, dtype=np.float64)), (1, 4, 2, 3)),
    ("layernorm", lambda: _affine(LayerNorm((3, 4), dtype=np.float64)), (2, 3, 3, 4)),
    ("pad-constant", lambda: Pad2D((1, -1, 2, 0), value=3.0), (2, 2, 3, 4)),
    ("pad-reflect", lambda: Pad2D((2, 1, 1, 2), "reflect"), (2, 2, 3, 4)),
    ("pad-replicate", lambda: Pad2D((3, 1, 0, 2), "replicate"), (2, 2, 3, 4)),
    ("pad-circular", lambda: Pad2D((3, 1, 2, 2), "circular"), (2, 2, 3, 4)),
    ("upsample-nearest", lambda: Upsample(scale_factor=1.6), (2, 2, 3, 4)),
    ("upsample-bilinear", lambda: Upsample(size=(5, 7), mode="bilinear"), (2, 2, 3, 4)),
    ("upsample-corners", lambda: Upsample(size=(2, 7), mode="bilinear", align_corners=True),
     (2, 2, 3, 4)),
    ("adaptive-avg", lambda: AdaptiveAvgPool2D((2, 3)), (2, 2, 5, 7)),
    ("adaptive-max", lambda: AdaptiveMaxPool2D((2, 3)), (2, 2, 5, 7)),
    ("unpool", lambda: _Unpool(F.max_pool2d(data((2, 2, 5, 5)), 2, return_indices=True)[1],
                               (5, 5)), (2, 2, 2, 2)),
]


@pytest.mark.parametrize("make, shape", [c[1:] for c in GRADCHECK_LAYERS],
                         ids=[c[0] for c in GRADCHECK_LAYERS])
def test_gradcheck(make, shape):
    report = gradcheck(make(), data(shape, seed=7), rtol=1e-5, atol=1e-7)
    assert report.passed, str(report)


# ---------------------------------------------------------------------------
# bad input, empty batch, inputs never modified

X = data((2, 3, 5, 7))
POOLED, IDX = F.max_pool2d(data((2, 3, 6, 6)), 2, return_indices=True)


def case(id, fn, exc, match):
    return pytest.param(fn, exc, match, id=id)


BAD = [
    case("pad-3d", lambda: F.pad(X[0], (1, 1, 1, 1)), ValueError, r"x\[None\]"),
    case("pad-int", lambda: F.pad(X, 1), ValueError, "pad must be a tuple"),
    case("pad-len3", lambda: F.pad(X, (1, 1, 1)), ValueError, "pad must be a tuple"),
    case("pad-float", lambda: F.pad(X, (1, 1.0, 1, 1)), TypeError, "pad"),
    case("pad-mode", lambda: F.pad(X, (1, 1, 1, 1), "mirror"), ValueError, "mode must be one of"),
    case("pad-reflect-2", lambda: F.pad(X, (1, 1), "reflect"), ValueError, "4 entries"),
    case("pad-reflect-limit", lambda: F.pad(X, (0, 0, 5, 0), "reflect"), ValueError,
         "less than the input size along H=5"),
    case("pad-circular-limit", lambda: F.pad(X, (8, 0, 0, 0), "circular"), ValueError,
         "wraps around once"),
    case("pad-empty", lambda: F.pad(X, (-4, -3, 0, 0)), ValueError, "nothing of input W=7"),
    case("pad-value", lambda: F.pad(X, (1, 1, 1, 1), value="0"), TypeError, "value"),
    case("pad-backward-shape", lambda: F.pad_backward(X, X.shape, (1, 1, 1, 1)), ValueError,
         "dout must have the pad output shape"),
    case("interp-both", lambda: F.interpolate(X, size=3, scale_factor=2), ValueError,
         "exactly one of size and scale_factor"),
    case("interp-none", lambda: F.interpolate(X), ValueError, "exactly one"),
    case("interp-mode", lambda: F.interpolate(X, size=3, mode="bicubic"), ValueError, "mode"),
    case("interp-align-nearest", lambda: F.interpolate(X, size=3, align_corners=True),
         ValueError, "align_corners can only be set with mode='bilinear'"),
    case("interp-align-type", lambda: F.interpolate(X, size=3, mode="bilinear",
                                                     align_corners=1), TypeError, "align_corners"),
    case("interp-size-0", lambda: F.interpolate(X, size=(0, 3)), ValueError, "size must be positive"),
    case("interp-size-float", lambda: F.interpolate(X, size=2.5), TypeError, "size"),
    case("interp-scale-neg", lambda: F.interpolate(X, scale_factor=-2), ValueError, "scale_factor"),
    case("interp-scale-3", lambda: F.interpolate(X, scale_factor=(1, 2, 3)), ValueError,
         "scale_factor"),
    case("interp-empty", lambda: F.interpolate(X, scale_factor=0.1), ValueError, "empty"),
    case("interp-recompute-size", lambda: F.interpolate(X, size=3, recompute_scale_factor=True),
         ValueError, "recompute_scale_factor"),
    case("adaptive-0", lambda: F.adaptive_avg_pool2d(X, 0), ValueError, "output_size must be positive"),
    case("adaptive-3", lambda: F.adaptive_max_pool2d(X, (1, 2, 3)), ValueError, "output_size"),
    case("adaptive-str", lambda: F.adaptive_avg_pool2d(X, "2"), TypeError, "output_size"),
    case("adaptive-3d", lambda: F.adaptive_max_pool2d(X[0], 2), ValueError, r"x\[None\]"),
    case("adaptive-indices", lambda: F.adaptive_max_pool2d(X, 2, return_indices=1), TypeError,
         "return_indices"),
    case("unpool-shape", lambda: F.max_unpool2d(POOLED, IDX[:1], 2), ValueError,
         "indices must have the shape of x"),
    case("unpool-dtype", lambda: F.max_unpool2d(POOLED, IDX.astype(float), 2), TypeError,
         "indices must have an integer dtype"),
    case("unpool-range", lambda: F.max_unpool2d(POOLED, IDX + 100, 2), ValueError,
         "indices must lie in"),
    case("unpool-negative", lambda: F.max_unpool2d(POOLED, IDX - 100, 2), ValueError,
         "indices must lie in"),
    case("unpool-size", lambda: F.max_unpool2d(POOLED, IDX, 2, output_size=(8, 6)), ValueError,
         r"output_size must be within \(4, 8\) along H"),
    case("unpool-size-len", lambda: F.max_unpool2d(POOLED, IDX, 2, output_size=(6,)), ValueError,
         "output_size"),
    case("unpool-backward", lambda: F.max_unpool2d_backward(X, IDX), ValueError, "indices"),
    case("gn-groups", lambda: F.group_norm(X, 2), ValueError, "num_groups=2 must divide"),
    case("gn-groups-0", lambda: F.group_norm(X, 0), ValueError, "num_groups"),
    case("gn-weight", lambda: F.group_norm(X, 3, np.ones(2)), ValueError, r"weight must have shape \(3,\)"),
    case("gn-dtype", lambda: F.group_norm(X, 3, np.ones(3, np.float32)), TypeError,
         "x and weight must have the same dtype"),
    case("gn-1d", lambda: F.group_norm(X[0, 0, 0], 1), ValueError, r"\(N, C, ...\)"),
    case("gn-eps", lambda: F.group_norm(X, 3, eps=0), ValueError, "eps"),
    case("ln-shape", lambda: F.layer_norm(X, (5,)), ValueError, r"normalized_shape=\(5,\)"),
    case("ln-bias", lambda: F.layer_norm(X, 7, None, np.ones(6)), ValueError,
         r"bias must have shape \(7,\)"),
    case("ln-int", lambda: F.layer_norm(X.astype(int), 7), TypeError, "float32 or float64"),
    case("ln-backward", lambda: F.layer_norm_backward(X[:1], X, 7), ValueError, "dout must have"),
    case("layer-gn", lambda: GroupNorm(4, 6), ValueError, "must divide num_channels"),
    case("layer-gn-input", lambda: GroupNorm(1, 4)(X), ValueError, "num_channels=4"),
    case("layer-ln", lambda: LayerNorm(0), ValueError, "normalized_shape"),
    case("layer-pad", lambda: Pad2D((1, 1), "reflect"), ValueError, "4 entries"),
    case("layer-upsample", lambda: Upsample(), ValueError, "exactly one"),
    case("layer-adaptive", lambda: AdaptiveAvgPool2D((1, -1)), ValueError, "output_size"),
    case("layer-unpool", lambda: MaxUnpool2D(0), ValueError, "kernel_size"),
]


@pytest.mark.parametrize("fn, exc, match", BAD)
def test_bad_input_raises_a_clear_error(fn, exc, match):
    with pytest.raises(exc, match=match):
        fn()


CALLS = {
    "pad": lambda x: F.pad(x, (1, 2, 0, 1), "reflect"),
    "pad_backward": lambda x: F.pad_backward(x, (2, 3, 3, 5), (1, 1, 0, 2), "circular"),
    "interpolate": lambda x: F.interpolate(x, scale_factor=1.5, mode="bilinear"),
    "interpolate_backward": lambda x: F.interpolate_backward(x, (2, 3, 3, 3), size=(5, 7)),
    "adaptive_avg": lambda x: F.adaptive_avg_pool2d(x, (2, 3)),
    "adaptive_avg_backward": lambda x: F.adaptive_avg_pool2d_backward(x, (2, 3, 8, 9)),
    "adaptive_max": lambda x: F.adaptive_max_pool2d(x, 3, return_indices=True),
    "unpool": lambda x: F.max_unpool2d(x, np.zeros(x.shape, np.int64), 2),
    "unpool_backward": lambda x: F.max_unpool2d_backward(x, np.zeros((2, 3, 2, 2), np.int64)),
    "group_norm": lambda x: F.group_norm(x, 3, np.ones(3), np.zeros(3)),
    "group_norm_backward": lambda x: F.group_norm_backward(x, x + 1, 3, np.ones(3)),
    "layer_norm": lambda x: F.layer_norm(x, (5, 7), np.ones((5, 7))),
    "layer_norm_backward": lambda x: F.layer_norm_backward(x, x * 2, 7, np.ones(7)),
}


@pytest.mark.parametrize("readonly", [False, True], ids=["writeable", "readonly"])
@pytest.mark.parametrize("name", list(CALLS))
def test_inputs_are_never_modified(name, readonly):
    x = X.copy()
    x.flags.writeable = not readonly
    CALLS[name](x)
    np.testing.assert_array_equal(x, X)


@pytest.mark.parametrize("name", ["pad", "interpolate", "adaptive_avg", "adaptive_max",
                                  "group_norm", "layer_norm"])
def test_empty_batch_gives_an_empty_result(name):
    out = CALLS[name](np.empty((0, 3, 5, 7)))
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape[0] == 0 and out.shape[1] == 3


@pytest.mark.parametrize("name", ["pad", "interpolate", "adaptive_avg"])
def test_non_contiguous_input_gives_the_same_result(name):
    x = np.asfortranarray(X)[:, :, :, ::-1]
    np.testing.assert_array_equal(CALLS[name](x), CALLS[name](np.ascontiguousarray(x)))


def test_also_exported_at_the_top_level():
    assert fastcnn.pad is F.pad and fastcnn.group_norm is F.group_norm
    assert fastcnn.Upsample is Upsample and fastcnn.MaxUnpool2D is MaxUnpool2D
    assert MaxPool2D(2)  # the pool whose indices MaxUnpool2D reads


def test_empty_batch_of_the_other_ops():
    x, idx = np.empty((0, 2, 3, 3)), np.empty((0, 2, 3, 3), np.int64)
    assert F.max_unpool2d(x, idx, 2).shape == (0, 2, 6, 6)
    assert F.max_unpool2d_backward(np.empty((0, 2, 6, 6)), idx).shape == (0, 2, 3, 3)
    assert F.pad_backward(np.empty((0, 2, 5, 5)), (0, 2, 3, 3), (1, 1, 1, 1)).shape == x.shape
    assert F.interpolate_backward(np.empty((0, 2, 6, 6)), x.shape, scale_factor=2).shape == x.shape
    assert F.adaptive_avg_pool2d_backward(np.empty((0, 2, 1, 1)), x.shape).shape == x.shape
    out, indices = F.adaptive_max_pool2d(x, (2, None), return_indices=True)
    assert out.shape == indices.shape == (0, 2, 2, 3)
    # Huge output sizes are refused by value, not attempted.
    with pytest.raises(ValueError, match="size must be at most"):
        F.interpolate(x, size=2**40)
    with pytest.raises(ValueError, match="pad amounts must be at most"):
        F.pad(x, (2**40, 0, 0, 0))

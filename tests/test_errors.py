"""The error contract of DESIGN.md, and the promise that inputs are left alone.

Every bad call must raise the documented exception type with a message that
names the offending argument (checked with ``pytest.raises(..., match=...)``),
on both backends (validation is shared, so the kernels never see bad input).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastcnn
from fastcnn import _backend
from fastcnn import functional as F
from fastcnn._validation import MAX_WINDOW_PARAM

BACKENDS = ("cython", "numpy") if _backend.compiled_available() else ("numpy",)


@pytest.fixture(params=BACKENDS)
def backend(request):
    with fastcnn.use_backend(request.param):
        yield request.param


def X(shape=(2, 3, 8, 8), dtype=np.float64):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


W = X((4, 3, 3, 3))
COLS = F.im2col(X(), 3)  # (2, 27, 36)
OUT, IDX = F.max_pool2d(X(), 2, return_indices=True)  # (2, 3, 4, 4)


def case(id, fn, exc, match):
    return pytest.param(fn, exc, match, id=id)


# ---------------------------------------------------------------------------
# Shapes and ranks

RANK_CASES = [
    case("im2col-3d", lambda: F.im2col(X((3, 8, 8)), 2), ValueError, r"x\[None\]"),
    case("conv2d-3d", lambda: F.conv2d(X((3, 8, 8)), W), ValueError, r"x\[None\]"),
    case("max_pool2d-3d", lambda: F.max_pool2d(X((3, 8, 8)), 2), ValueError, r"x\[None\]"),
    case("avg_pool2d-3d", lambda: F.avg_pool2d(X((3, 8, 8)), 2), ValueError, r"x\[None\]"),
    case("conv2d_backward-3d", lambda: F.conv2d_backward(X((2, 4, 6, 6)), X((3, 8, 8)), W),
         ValueError, r"x\[None\]"),
    case("max_pool2d_backward-3d-dout",
         lambda: F.max_pool2d_backward(OUT[0], IDX[0], (2, 3, 8, 8)), ValueError, r"dout"),
    case("avg_pool2d_backward-3d-dout",
         lambda: F.avg_pool2d_backward(OUT[0], (2, 3, 8, 8), 2), ValueError, r"dout"),
    case("im2col-2d", lambda: F.im2col(X((8, 8)), 2), ValueError, r"x .*4-D"),
    case("im2col-5d", lambda: F.im2col(X((1, 2, 3, 8, 8)), 2), ValueError, r"x .*4-D"),
    case("max_pool2d-0d", lambda: F.max_pool2d(np.float64(1.0), 1), ValueError, r"x .*4-D"),
    case("conv2d-weight-3d", lambda: F.conv2d(X(), W[0]), ValueError, r"weight"),
    case("conv2d-weight-5d", lambda: F.conv2d(X(), W[None]), ValueError, r"weight"),
    case("col2im-cols-2d", lambda: F.col2im(COLS[0], 8, 3), ValueError, r"cols"),
    case("col2im-cols-4d", lambda: F.col2im(COLS[None], 8, 3), ValueError, r"cols"),
    case("zero-channels", lambda: F.im2col(X((2, 0, 8, 8)), 2), ValueError, r"channel"),
    case("zero-channels-pool", lambda: F.max_pool2d(X((2, 0, 8, 8)), 2), ValueError, r"channel"),
    case("zero-height", lambda: F.avg_pool2d(X((2, 3, 0, 8)), 2), ValueError, r"x"),
    case("zero-width", lambda: F.conv2d(X((2, 3, 8, 0)), W), ValueError, r"x"),
    case("weight-empty", lambda: F.conv2d(X(), X((0, 3, 3, 3))), ValueError, r"weight"),
    case("channels-mismatch", lambda: F.conv2d(X(), X((4, 2, 3, 3))), ValueError, r"weight"),
    case("channels-mismatch-backward",
         lambda: F.conv2d_backward(X((2, 4, 6, 6)), X(), X((4, 2, 3, 3))), ValueError, r"weight"),
    case("groups-not-dividing-C", lambda: F.conv2d(X(), X((4, 1, 3, 3)), groups=2), ValueError,
         r"groups"),
    case("groups-not-dividing-F", lambda: F.conv2d(X((2, 4, 8, 8)), X((3, 2, 3, 3)), groups=2),
         ValueError, r"groups"),
    case("groups-zero", lambda: F.conv2d(X(), W, groups=0), ValueError, r"groups"),
    case("groups-negative", lambda: F.conv2d(X(), W, groups=-1), ValueError, r"groups"),
    case("bias-shape", lambda: F.conv2d(X(), W, np.ones(3)), ValueError, r"bias"),
    case("bias-2d", lambda: F.conv2d(X(), W, np.ones((4, 1))), ValueError, r"bias"),
    case("conv-dout-shape", lambda: F.conv2d_backward(X((2, 4, 5, 6)), X(), W), ValueError,
         r"dout"),
    case("avg-dout-shape", lambda: F.avg_pool2d_backward(X((2, 3, 4, 5)), (2, 3, 8, 8), 2),
         ValueError, r"dout"),
    case("avg-dout-channels", lambda: F.avg_pool2d_backward(X((2, 2, 4, 4)), (2, 3, 8, 8), 2),
         ValueError, r"dout"),
]


# ---------------------------------------------------------------------------
# Geometry arguments

def _geometry_cases():
    out = []
    for name in ("kernel_size", "stride", "dilation"):
        for bad in (0, -1, (2, 0), (-3, 1)):
            out.append(case(f"im2col-{name}={bad}",
                            lambda name=name, bad=bad: F.im2col(X(), **{"kernel_size": 2,
                                                                        name: bad}),
                            ValueError, name))
            out.append(case(f"max_pool2d-{name}={bad}",
                            lambda name=name, bad=bad: F.max_pool2d(X(), **{"kernel_size": 2,
                                                                            name: bad}),
                            ValueError, name))
        for bad in (True, 2.0, "3", None if name == "kernel_size" else 1.5, (2, 2.5),
                    np.float64(2)):
            out.append(case(f"im2col-{name}={bad!r}",
                            lambda name=name, bad=bad: F.im2col(X(), **{"kernel_size": 2,
                                                                        name: bad}),
                            TypeError, name))
        for bad in ((1, 2, 3), (), (2,), [2, 2, 2]):
            out.append(case(f"im2col-{name}-len{len(bad)}",
                            lambda name=name, bad=bad: F.im2col(X(), **{"kernel_size": 2,
                                                                        name: bad}),
                            ValueError, name))
    for name in ("kernel_size", "stride"):
        for bad in (0, -2, (1, 0)):
            out.append(case(f"avg_pool2d-{name}={bad}",
                            lambda name=name, bad=bad: F.avg_pool2d(X(), **{"kernel_size": 2,
                                                                            name: bad}),
                            ValueError, name))
        out.append(case(f"avg_pool2d-{name}-float",
                        lambda name=name: F.avg_pool2d(X(), **{"kernel_size": 2, name: 2.0}),
                        TypeError, name))
    for bad in (0, -1, (1, 0)):
        out.append(case(f"conv2d-stride={bad}", lambda bad=bad: F.conv2d(X(), W, stride=bad),
                        ValueError, "stride"))
        out.append(case(f"conv2d-dilation={bad}",
                        lambda bad=bad: F.conv2d(X(), W, dilation=bad), ValueError, "dilation"))
        out.append(case(f"col2im-kernel_size={bad}",
                        lambda bad=bad: F.col2im(COLS, 8, bad), ValueError, "kernel_size"))
    for bad in (-1, (0, -1)):
        out += [
            case(f"im2col-padding={bad}", lambda bad=bad: F.im2col(X(), 2, padding=bad),
                 ValueError, "padding"),
            case(f"conv2d-padding={bad}", lambda bad=bad: F.conv2d(X(), W, padding=bad),
                 ValueError, "padding"),
            case(f"max_pool2d-padding={bad}", lambda bad=bad: F.max_pool2d(X(), 2, padding=bad),
                 ValueError, "padding"),
            case(f"avg_pool2d-padding={bad}", lambda bad=bad: F.avg_pool2d(X(), 2, padding=bad),
                 ValueError, "padding"),
            case(f"col2im-padding={bad}", lambda bad=bad: F.col2im(COLS, 8, 3, padding=bad),
                 ValueError, "padding"),
        ]
    # Above MAX_WINDOW_PARAM: a clear error, never an int64 overflow in a kernel.
    for name in ("kernel_size", "stride", "padding", "dilation"):
        out.append(case(f"im2col-{name}-above-max",
                        lambda name=name: F.im2col(X(), **{"kernel_size": 2,
                                                           name: (1, MAX_WINDOW_PARAM + 1)}),
                        ValueError, f"{name} must be at most"))
    out += [
        case("max_pool-stride-2**63", lambda: F.max_pool2d(X(), 2, stride=2**63), ValueError,
             "stride"),
        case("conv2d-padding-float", lambda: F.conv2d(X(), W, padding=1.0), TypeError,
             "padding"),
        case("conv2d-padding-bad-string", lambda: F.conv2d(X(), W, padding="full"), ValueError,
             "padding"),
        case("conv2d-same-with-stride", lambda: F.conv2d(X(), W, padding="same", stride=2),
             ValueError, "stride"),
        case("max_pool-padding-over-half", lambda: F.max_pool2d(X(), 3, padding=2), ValueError,
             "padding"),
        case("max_pool-padding-over-half-pair",
             lambda: F.max_pool2d(X(), (2, 4), padding=(2, 1)), ValueError, "padding"),
        case("max_pool-padding-kernel1", lambda: F.max_pool2d(X(), 1, padding=1), ValueError,
             "padding"),
        case("avg_pool-padding-over-half", lambda: F.avg_pool2d(X(), (4, 3), padding=(1, 2)),
             ValueError, "padding"),
        case("avg_pool_backward-padding-over-half",
             lambda: F.avg_pool2d_backward(X((2, 3, 4, 4)), (2, 3, 8, 8), 2, padding=2),
             ValueError, "padding"),
        case("im2col-empty-output", lambda: F.im2col(X(), 9), ValueError, "kernel_size"),
        case("im2col-empty-output-dilation", lambda: F.im2col(X(), 3, dilation=4), ValueError,
             "dilation|kernel_size"),
        case("conv2d-kernel-larger-than-input", lambda: F.conv2d(X((1, 3, 2, 8)), W), ValueError,
             "kernel_size|weight"),
        case("max_pool-empty-output", lambda: F.max_pool2d(X((1, 1, 2, 8)), 3), ValueError,
             "kernel_size"),
        case("avg_pool-empty-output", lambda: F.avg_pool2d(X((1, 1, 8, 1)), (1, 2)), ValueError,
             "kernel_size"),
        # A dilated window can fall entirely into the padding: taps at -1 and +1 of an
        # input of height 1 (kernel 2, padding 1, dilation 2) hold no input cell.
        case("max_pool-window-without-input",
             lambda: F.max_pool2d(X((1, 1, 1, 5)), (2, 1), stride=1, padding=(1, 0),
                                  dilation=(2, 1)),
             ValueError, "dilation"),
        case("max_pool-window-without-input-W",
             lambda: F.max_pool2d(X((1, 1, 4, 2)), (1, 2), stride=1, padding=(0, 1),
                                  dilation=(1, 3), ceil_mode=True),
             ValueError, "dilation"),
        case("divisor_override-zero", lambda: F.avg_pool2d(X(), 2, divisor_override=0),
             ValueError, "divisor_override"),
        case("divisor_override-above-max",
             lambda: F.avg_pool2d(X(), 2, divisor_override=MAX_WINDOW_PARAM + 1),
             ValueError, "divisor_override"),
        case("divisor_override-negative", lambda: F.avg_pool2d(X(), 2, divisor_override=-2),
             ValueError, "divisor_override"),
        case("divisor_override-zero-backward",
             lambda: F.avg_pool2d_backward(X((2, 3, 4, 4)), (2, 3, 8, 8), 2, divisor_override=0),
             ValueError, "divisor_override"),
    ]
    return out


GEOMETRY_CASES = _geometry_cases()

# Non-integer types given where an int is expected: TypeError, like kernel_size.
PARAM_TYPE_CASES = [
    case("ceil_mode-str", lambda: F.max_pool2d(X(), 2, ceil_mode="False"), TypeError,
         "ceil_mode"),
    case("ceil_mode-int", lambda: F.avg_pool2d(X(), 2, ceil_mode=1), TypeError, "ceil_mode"),
    case("return_indices-none", lambda: F.max_pool2d(X(), 2, return_indices=None), TypeError,
         "return_indices"),
    case("count_include_pad-str", lambda: F.avg_pool2d(X(), 2, count_include_pad="yes"),
         TypeError, "count_include_pad"),
    case("groups-float", lambda: F.conv2d(X(), W, groups=1.0), TypeError, "groups"),
    case("groups-bool", lambda: F.conv2d(X(), W, groups=True), TypeError, "groups"),
    case("groups-str", lambda: F.conv2d(X(), W, groups="1"), TypeError, "groups"),
    case("divisor_override-float", lambda: F.avg_pool2d(X(), 2, divisor_override=2.0),
         TypeError, "divisor_override"),
    case("divisor_override-bool", lambda: F.avg_pool2d(X(), 2, divisor_override=True),
         TypeError, "divisor_override"),
]


# ---------------------------------------------------------------------------
# col2im

COL2IM_CASES = [
    case("output_size-zero", lambda: F.col2im(COLS, 0, 3), ValueError, "output_size"),
    case("output_size-negative", lambda: F.col2im(COLS, (8, -8), 3), ValueError, "output_size"),
    case("output_size-len3", lambda: F.col2im(COLS, (8, 8, 8), 3), ValueError, "output_size"),
    case("output_size-float", lambda: F.col2im(COLS, 8.0, 3), TypeError, "output_size"),
    case("output_size-str", lambda: F.col2im(COLS, "8", 3), TypeError, "output_size"),
    case("output_size-inconsistent-L", lambda: F.col2im(COLS, 9, 3), ValueError, r"cols"),
    case("output_size-too-small", lambda: F.col2im(COLS, 2, 3), ValueError,
         r"output_size|kernel_size"),
    case("cols-rows-not-multiple", lambda: F.col2im(COLS[:, :26], 8, 3), ValueError, r"cols"),
    case("cols-zero-rows", lambda: F.col2im(COLS[:, :0], 8, 3), ValueError, r"cols"),
    case("cols-wrong-L", lambda: F.col2im(COLS[:, :, :35], 8, 3), ValueError, r"cols"),
    case("cols-wrong-kernel", lambda: F.col2im(COLS, 8, 2), ValueError, r"cols"),
]


# ---------------------------------------------------------------------------
# max_pool2d_backward

MPB_CASES = [
    case("indices-negative", lambda: F.max_pool2d_backward(OUT, np.where(IDX == 0, -1, IDX),
                                                           (2, 3, 8, 8)),
         ValueError, "indices"),
    case("indices-too-large", lambda: F.max_pool2d_backward(OUT, IDX + 64, (2, 3, 8, 8)),
         ValueError, "indices"),
    case("indices-equal-HW", lambda: F.max_pool2d_backward(OUT, np.full_like(IDX, 64),
                                                           (2, 3, 8, 8)),
         ValueError, "indices"),
    case("indices-beyond-smaller-input",
         lambda: F.max_pool2d_backward(OUT, IDX, (2, 3, 5, 5)), ValueError, "indices"),
    case("indices-huge-int64",
         lambda: F.max_pool2d_backward(OUT, np.full_like(IDX, 2**62), (2, 3, 8, 8)),
         ValueError, "indices"),
    case("indices-huge-uint64",
         lambda: F.max_pool2d_backward(OUT, np.full(IDX.shape, 2**64 - 1, np.uint64),
                                       (2, 3, 8, 8)),
         ValueError, "indices"),
    case("indices-shape", lambda: F.max_pool2d_backward(OUT, IDX[:, :, :3], (2, 3, 8, 8)),
         ValueError, "indices"),
    case("indices-3d", lambda: F.max_pool2d_backward(OUT, IDX[0], (2, 3, 8, 8)),
         ValueError, "indices"),
    case("dout-batch-vs-input_shape", lambda: F.max_pool2d_backward(OUT, IDX, (3, 3, 8, 8)),
         ValueError, "input_shape"),
    case("dout-channels-vs-input_shape",
         lambda: F.max_pool2d_backward(OUT, IDX, (2, 4, 8, 8)), ValueError, "input_shape"),
    case("input_shape-len3", lambda: F.max_pool2d_backward(OUT, IDX, (3, 8, 8)), ValueError,
         "input_shape"),
    case("input_shape-negative", lambda: F.max_pool2d_backward(OUT, IDX, (2, 3, -8, 8)),
         ValueError, "input_shape"),
    case("input_shape-zero-H", lambda: F.max_pool2d_backward(OUT, IDX, (2, 3, 0, 8)),
         ValueError, "input_shape"),
    case("input_shape-float", lambda: F.max_pool2d_backward(OUT, IDX, (2, 3, 8.0, 8)),
         TypeError, "input_shape"),
    case("input_shape-int", lambda: F.max_pool2d_backward(OUT, IDX, 8), TypeError,
         "input_shape"),
    case("indices-float", lambda: F.max_pool2d_backward(OUT, IDX.astype(np.float64),
                                                        (2, 3, 8, 8)),
         TypeError, "indices"),
    case("indices-bool", lambda: F.max_pool2d_backward(OUT, IDX > 3, (2, 3, 8, 8)),
         TypeError, "indices"),
    case("indices-object", lambda: F.max_pool2d_backward(OUT, IDX.astype(object),
                                                         (2, 3, 8, 8)),
         TypeError, "indices"),
    case("avg-input_shape-len5",
         lambda: F.avg_pool2d_backward(OUT, (1, 2, 3, 8, 8), 2), ValueError, "input_shape"),
]


@pytest.mark.parametrize("fn, exc, match",
                         RANK_CASES + GEOMETRY_CASES + COL2IM_CASES + MPB_CASES)
def test_bad_input_raises_a_clear_error(backend, fn, exc, match):
    assert fastcnn.get_backend() == backend
    with pytest.raises(exc, match=match):
        fn()


@pytest.mark.parametrize("fn, exc, match", PARAM_TYPE_CASES)
def test_non_integer_parameters_raise_type_error(backend, fn, exc, match):
    with pytest.raises(exc, match=match):
        fn()


@pytest.mark.parametrize("as_int", [np.int8, np.uint16, np.int64, np.array, lambda v: [v, v]],
                         ids=["int8", "uint16", "int64", "0-d-array", "list"])
def test_numpy_integers_are_ints(backend, as_int):
    # NumPy integer scalars and 0-d integer arrays (what x.shape arithmetic and
    # array indexing produce) are ints everywhere an int is accepted.
    x = X()
    expected = F.max_pool2d(x, 2, stride=1, padding=1, dilation=1, return_indices=True)
    got = F.max_pool2d(x, as_int(2), stride=as_int(1), padding=as_int(1), dilation=as_int(1),
                       return_indices=True)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b, strict=True)
    groups = as_int(1) if np.ndim(as_int(1)) == 0 else 1
    np.testing.assert_array_equal(F.conv2d(x, W, groups=groups), F.conv2d(x, W), strict=True)


# ---------------------------------------------------------------------------
# dtypes

BAD_DTYPES = [np.float16, np.int32, np.int64, np.uint8, np.bool_, np.complex64, np.complex128,
              object, np.longdouble]
SUPPORTED = r"float32.*float64"

ARRAY_ARGS = {
    "im2col-x": ("x", lambda a: F.im2col(a, 2), (2, 3, 8, 8)),
    "col2im-cols": ("cols", lambda a: F.col2im(a, 8, 3), COLS.shape),
    "conv2d-x": ("x", lambda a: F.conv2d(a, W), (2, 3, 8, 8)),
    "conv2d-weight": ("weight", lambda a: F.conv2d(X(), a), W.shape),
    "conv2d-bias": ("bias", lambda a: F.conv2d(X(), W, a), (4,)),
    "conv2d_backward-dout": ("dout", lambda a: F.conv2d_backward(a, X(), W), (2, 4, 6, 6)),
    "conv2d_backward-x": ("x", lambda a: F.conv2d_backward(X((2, 4, 6, 6)), a, W),
                          (2, 3, 8, 8)),
    "conv2d_backward-weight": ("weight", lambda a: F.conv2d_backward(X((2, 4, 6, 6)), X(), a),
                               W.shape),
    "max_pool2d-x": ("x", lambda a: F.max_pool2d(a, 2), (2, 3, 8, 8)),
    "max_pool2d_backward-dout": ("dout", lambda a: F.max_pool2d_backward(a, IDX, (2, 3, 8, 8)),
                                 OUT.shape),
    "avg_pool2d-x": ("x", lambda a: F.avg_pool2d(a, 2), (2, 3, 8, 8)),
    "avg_pool2d_backward-dout": ("dout", lambda a: F.avg_pool2d_backward(a, (2, 3, 8, 8), 2),
                                 OUT.shape),
}


@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("which", list(ARRAY_ARGS))
def test_unsupported_dtypes_raise_type_error(backend, which, dtype):
    if np.dtype(dtype) == np.dtype(np.float64):  # longdouble is float64 on some platforms
        pytest.skip("np.longdouble is float64 on this platform")
    name, fn, shape = ARRAY_ARGS[which]
    a = np.ones(shape, dtype=dtype)
    with pytest.raises(TypeError, match=SUPPORTED) as info:
        fn(a)
    assert name in str(info.value)


def test_non_array_inputs_raise_type_error(backend):
    with pytest.raises(TypeError, match="x"):
        F.max_pool2d([[["a"]]], 1)
    with pytest.raises(TypeError, match="x"):
        F.im2col(None, 1)


@pytest.mark.parametrize("first, second", [(np.float32, np.float64), (np.float64, np.float32)])
def test_mixed_float_dtypes_raise_type_error_naming_both(backend, first, second):
    a, b = np.dtype(first).name, np.dtype(second).name
    both = rf"(?s)(?=.*{a})(?=.*{b})"
    with pytest.raises(TypeError, match=both) as info:
        F.conv2d(X(dtype=first), W.astype(second))
    assert "x" in str(info.value) and "weight" in str(info.value)
    with pytest.raises(TypeError, match=both) as info:
        F.conv2d(X(dtype=first), W.astype(first), np.ones(4, second))
    assert "bias" in str(info.value)
    with pytest.raises(TypeError, match=both) as info:
        F.conv2d_backward(X((2, 4, 6, 6), second), X(dtype=first), W.astype(first))
    assert "dout" in str(info.value)
    with pytest.raises(TypeError, match=both):
        F.conv2d_backward(X((2, 4, 6, 6), first), X(dtype=first), W.astype(second))


@pytest.mark.parametrize("index_dtype", [np.int8, np.uint8, np.int16, np.uint16, np.int32,
                                         np.uint32, np.int64, np.uint64, np.intp, np.longlong])
def test_any_integer_index_dtype_is_accepted(backend, index_dtype):
    x = X((2, 3, 7, 9))  # H*W = 63 fits every integer dtype
    out, idx = F.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    expected = F.max_pool2d_backward(out, idx, x.shape)
    got = F.max_pool2d_backward(out, idx.astype(index_dtype), x.shape)
    np.testing.assert_array_equal(got, expected, strict=True)
    # and a list of ints works too
    got = F.max_pool2d_backward(out, idx.tolist(), x.shape)
    np.testing.assert_array_equal(got, expected, strict=True)


def test_errors_do_not_depend_on_the_backend():
    fn = lambda: F.max_pool2d(X(), 3, padding=2)  # noqa: E731
    messages = []
    for name in BACKENDS:
        with fastcnn.use_backend(name), pytest.raises(ValueError) as info:
            fn()
        messages.append(str(info.value))
    assert len(set(messages)) == 1


# ---------------------------------------------------------------------------
# Inputs are never modified; read-only inputs work; results are fresh arrays.

def _calls():
    x = X((2, 3, 7, 6))
    w = X((4, 3, 3, 2))
    b = X((4,))
    x8 = X((2, 4, 6, 6))
    w_dw = X((4, 1, 3, 3))
    dconv = X((2, 4, 7, 6))
    cols = X((2, 3 * 3 * 2, 4 * 4))
    out, idx = F.max_pool2d(x, 3, stride=2, padding=1, return_indices=True)
    dpool = X(out.shape)
    return {
        "im2col": (F.im2col, (x,), dict(kernel_size=(3, 2), stride=2, padding=1)),
        "im2col-1x1": (F.im2col, (x,), dict(kernel_size=1)),
        "col2im": (F.col2im, (cols,), dict(output_size=(7, 6), kernel_size=(3, 2), stride=2,
                                           padding=1)),
        "conv2d": (F.conv2d, (x, w, b), dict(padding="same")),
        "conv2d-1x1": (F.conv2d, (x, w[:, :, :1, :1]), {}),
        "conv2d-depthwise": (F.conv2d, (x8, w_dw), dict(groups=4, padding=1)),
        "conv2d_backward": (F.conv2d_backward, (dconv, x, w), dict(padding="same")),
        "max_pool2d": (F.max_pool2d, (x,), dict(kernel_size=3, stride=2, padding=1,
                                                return_indices=True)),
        "max_pool2d-1x1": (F.max_pool2d, (x,), dict(kernel_size=1)),
        "max_pool2d_backward": (F.max_pool2d_backward, (dpool, idx), dict(input_shape=x.shape)),
        "avg_pool2d": (F.avg_pool2d, (x,), dict(kernel_size=3, stride=2, padding=1)),
        "avg_pool2d-1x1": (F.avg_pool2d, (x,), dict(kernel_size=1)),
        "avg_pool2d_backward": (F.avg_pool2d_backward, (dpool,),
                                dict(input_shape=x.shape, kernel_size=3, stride=2, padding=1)),
    }


CALLS = _calls()


@pytest.mark.parametrize("readonly", [False, True], ids=["writeable", "readonly"])
@pytest.mark.parametrize("name", list(CALLS))
def test_inputs_are_never_modified(backend, name, readonly):
    fn, args, kwargs = CALLS[name]
    args = tuple(a.copy() for a in args)
    pristine = tuple(a.copy() for a in args)
    for a in args:
        a.flags.writeable = not readonly
    result = fn(*args, **kwargs)
    results = result if isinstance(result, tuple) else (result,)
    for a, p in zip(args, pristine):
        np.testing.assert_array_equal(a, p, strict=True)
    for r in results:
        # results are fresh, writeable arrays: writing to them cannot reach an input
        assert r.flags.writeable and r.flags.c_contiguous
        for a in args:
            assert not np.shares_memory(r, a)
    for r in results:
        r[...] = 0
    for a, p in zip(args, pristine):
        np.testing.assert_array_equal(a, p, strict=True)
    # the same result as from writeable inputs
    for a in args:
        a.flags.writeable = True
    again = fn(*args, **kwargs)
    again = again if isinstance(again, tuple) else (again,)
    fresh = fn(*pristine, **kwargs)
    fresh = fresh if isinstance(fresh, tuple) else (fresh,)
    for r, e in zip(again, fresh):
        np.testing.assert_array_equal(r, e, strict=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32])
def test_kernels_get_aligned_contiguous_arrays(dtype):
    # The kernels dereference typed pointers: an unaligned view (legal in
    # NumPy) must be copied by the validation, not passed through.
    from fastcnn._validation import as_float_array, as_indices

    itemsize = np.dtype(dtype).itemsize
    raw = np.zeros(24 * itemsize + 1, np.uint8)
    view = raw[1:].view(dtype).reshape(2, 3, 2, 2)
    assert not view.flags.aligned
    convert = as_indices if np.dtype(dtype).kind == "i" else as_float_array
    got = convert(view, "x")
    assert got.flags.aligned and got.flags.c_contiguous
    np.testing.assert_array_equal(got, view)

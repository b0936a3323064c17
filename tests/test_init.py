"""fastcnn.init: exact gains, fans and bounds as torch.nn.init; distributions by statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fastcnn import init
from fastcnn.layers import Conv2D, Dense

SHAPES = [(64, 32), (48, 6, 5, 3), (40, 30, 7)]


@pytest.mark.parametrize("nonlinearity, param", [
    ("linear", None), ("conv2d", None), ("conv_transpose2d", None), ("sigmoid", None),
    ("tanh", None), ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2),
    ("leaky_relu", 3), ("selu", None),
])
def test_gain_matches_torch(nonlinearity, param):
    torch = pytest.importorskip("torch")
    assert init.calculate_gain(nonlinearity, param) == torch.nn.init.calculate_gain(
        nonlinearity, param)


def torch_fans(shape):
    torch = pytest.importorskip("torch")
    return torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("nonlinearity, a", [("leaky_relu", 0), ("leaky_relu", math.sqrt(5)),
                                             ("relu", 0), ("tanh", 0)])
def test_kaiming_uniform_bound_and_spread(dtype, shape, mode, nonlinearity, a):
    fan_in, fan_out = torch_fans(shape)
    fan = fan_in if mode == "fan_in" else fan_out
    bound = math.sqrt(3) * init.calculate_gain(nonlinearity, a) / math.sqrt(fan)
    w = np.empty(shape, dtype)
    out = init.kaiming_uniform_(w, a=a, mode=mode, nonlinearity=nonlinearity, rng=0)
    assert out is w and w.dtype == dtype
    assert np.abs(w).max() <= bound
    # Uniform on [-b, b]: the extremes come within 2% of b, the std is b/sqrt(3).
    assert np.abs(w).max() > 0.98 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.08)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming_normal_std(shape, mode):
    fan_in, fan_out = torch_fans(shape)
    fan = fan_in if mode == "fan_in" else fan_out
    w = init.kaiming_normal_(np.empty(shape), mode=mode, nonlinearity="relu", rng=1)
    assert w.std() == pytest.approx(math.sqrt(2) / math.sqrt(fan), rel=0.08)
    assert abs(w.mean()) < 0.1 * w.std()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gain", [1.0, 2.5])
def test_xavier(shape, gain):
    fan_in, fan_out = torch_fans(shape)
    std = gain * math.sqrt(2 / (fan_in + fan_out))
    w = init.xavier_uniform_(np.empty(shape, np.float32), gain=gain, rng=2)
    assert np.abs(w).max() <= math.sqrt(3) * std
    assert w.std() == pytest.approx(std, rel=0.08)
    w = init.xavier_normal_(np.empty(shape), gain=gain, rng=3)
    assert w.std() == pytest.approx(std, rel=0.08)


def test_plain_fills():
    w = np.empty((200, 100))
    assert init.uniform_(w, -2, 3, rng=0) is w
    assert w.min() >= -2 and w.max() <= 3 and w.mean() == pytest.approx(0.5, abs=0.05)
    init.normal_(w, mean=1.5, std=0.5, rng=0)
    assert w.mean() == pytest.approx(1.5, abs=0.01) and w.std() == pytest.approx(0.5, rel=0.02)
    assert (init.constant_(w, 0.25) == 0.25).all()
    assert (init.zeros_(w) == 0).all() and (init.ones_(w) == 1).all()


def test_seeded_draws_repeat_and_views_are_filled_in_place():
    a = init.kaiming_uniform_(np.empty((8, 4)), rng=5)
    b = init.kaiming_uniform_(np.empty((8, 4)), rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    base = np.zeros((4, 6))
    init.ones_(base[:, ::2])
    assert base[:, ::2].all() and not base[:, 1::2].any()


def test_layer_default_init_is_kaiming_uniform_with_a_sqrt5():
    """The documented equivalence: Conv2D/Dense weights lie within the same bound."""
    conv = Conv2D(6, 8, 3, rng=0)
    bound = math.sqrt(3) * init.calculate_gain("leaky_relu", math.sqrt(5)) / math.sqrt(6 * 9)
    assert bound == pytest.approx(1 / math.sqrt(54))
    assert np.abs(conv.params["weight"]).max() <= bound
    w = init.kaiming_uniform_(np.empty_like(Dense(10, 3).params["weight"]), a=math.sqrt(5))
    assert np.abs(w).max() <= 1 / math.sqrt(10)


def test_empty_array_is_left_alone():
    w = np.empty((0, 3), np.float32)
    assert init.kaiming_normal_(w) is w


@pytest.mark.parametrize("call, error, match", [
    (lambda: init.zeros_([0.0, 1.0]), TypeError, "array must be a NumPy array"),
    (lambda: init.ones_(np.zeros(3, np.int64)), TypeError, "float32 or float64"),
    (lambda: init.ones_(np.zeros(3, np.float16)), TypeError, "float32 or float64"),
    (lambda: init.xavier_uniform_(np.zeros(3)), ValueError, "at least 2 dimensions"),
    (lambda: init.kaiming_uniform_(np.zeros((2, 2)), mode="fan"), ValueError, "mode"),
    (lambda: init.kaiming_uniform_(np.zeros((2, 2)), nonlinearity="gelu"), ValueError,
     "nonlinearity"),
    (lambda: init.kaiming_uniform_(np.zeros((2, 2)), a="0"), TypeError, "a must be a real"),
    (lambda: init.uniform_(np.zeros(2), 1, 0), ValueError, "a must be at most b"),
    (lambda: init.normal_(np.zeros(2), std=-1), ValueError, "std"),
    (lambda: init.constant_(np.zeros(2), None), TypeError, "val"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_read_only_array_is_refused_untouched():
    w = np.zeros((3, 3))
    w.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        init.ones_(w)
    assert not w.any()

"""Losses: values and gradients by hand, by finite differences and against PyTorch; bad input."""

from __future__ import annotations

import numpy as np
import pytest

from fastcnn.gradcheck import numerical_gradient
from fastcnn.losses import mse, softmax_cross_entropy


def test_cross_entropy_by_hand():
    # Uniform logits: loss log(K); gradient (1/K - onehot) / N.
    loss, dlogits = softmax_cross_entropy(np.zeros((2, 4)), np.array([1, 3]))
    assert loss == pytest.approx(np.log(4))
    expected = np.full((2, 4), 0.25)
    expected[[0, 1], [1, 3]] -= 1
    np.testing.assert_allclose(dlogits, expected / 2)
    # A confident right answer costs almost nothing, a confident wrong one its margin.
    loss, _ = softmax_cross_entropy(np.array([[50.0, 0.0], [0.0, 50.0]]), np.array([0, 0]))
    assert loss == pytest.approx(25.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_stable_for_huge_logits(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-3e4, 3e4, 3e4]], dtype)
    loss, dlogits = softmax_cross_entropy(logits, np.array([0, 2]))
    assert loss == pytest.approx(np.log(2) / 2)
    assert dlogits.dtype == dtype
    np.testing.assert_allclose(dlogits, [[0, 0, 0], [0, 0.25, -0.25]], atol=1e-7)


def test_cross_entropy_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 4))
    labels = rng.integers(0, 4, 5)
    _, dlogits = softmax_cross_entropy(logits, labels)
    numeric = numerical_gradient(lambda: softmax_cross_entropy(logits, labels)[0], logits)
    np.testing.assert_allclose(dlogits, numeric, rtol=1e-6, atol=1e-9)


def test_mse_by_hand_and_by_finite_differences():
    loss, dpred = mse(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 0.0], [3.0, 7.0]]))
    assert loss == pytest.approx((4 + 9) / 4)
    np.testing.assert_allclose(dpred, [[0, 1.0], [0, -1.5]])
    rng = np.random.default_rng(1)
    pred, target = rng.standard_normal((3, 2, 2)), rng.standard_normal((3, 2, 2))
    numeric = numerical_gradient(lambda: mse(pred, target)[0], pred)
    np.testing.assert_allclose(mse(pred, target)[1], numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_match_torch(dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    logits = (rng.standard_normal((7, 5)) * 5).astype(dtype)
    labels = rng.integers(0, 5, 7)
    tol = dict(rtol=1e-5, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-15)

    loss, dlogits = softmax_cross_entropy(logits, labels)
    t_logits = torch.from_numpy(logits.copy()).requires_grad_()
    t_loss = torch.nn.functional.cross_entropy(t_logits, torch.from_numpy(labels))
    t_loss.backward()
    np.testing.assert_allclose(loss, t_loss.item(), **tol)
    np.testing.assert_allclose(dlogits, t_logits.grad.numpy(), **tol)

    pred = rng.standard_normal((4, 3, 2)).astype(dtype)
    target = rng.standard_normal((4, 3, 2)).astype(dtype)
    loss, dpred = mse(pred, target)
    t_pred = torch.from_numpy(pred.copy()).requires_grad_()
    t_loss = torch.nn.MSELoss()(t_pred, torch.from_numpy(target))
    t_loss.backward()
    assert isinstance(loss, float) and dpred.dtype == dtype
    np.testing.assert_allclose(loss, t_loss.item(), **tol)
    np.testing.assert_allclose(dpred, t_pred.grad.numpy(), **tol)


def test_inputs_are_not_modified():
    logits = np.random.default_rng(3).standard_normal((3, 4))
    labels = np.array([0, 3, 1])
    target = np.zeros((3, 4))
    for arr in (logits, labels, target):
        arr.flags.writeable = False
    saved = logits.copy()
    softmax_cross_entropy(logits, labels)
    mse(logits, target)
    np.testing.assert_array_equal(logits, saved)


@pytest.mark.parametrize("logits, labels, error, match", [
    (np.zeros((2, 3)), np.array([0.0, 1.0]), TypeError, "integer"),
    (np.zeros((2, 3)), np.array([True, False]), TypeError, "integer"),
    (np.zeros((2, 3)), np.array([0, 3]), ValueError, r"\[0, 3\)"),
    (np.zeros((2, 3)), np.array([-1, 0]), ValueError, r"\[0, 3\)"),
    (np.zeros((2, 3)), np.array([[0, 1]]), ValueError, r"shape \(N,\) = \(2,\)"),
    (np.zeros((2, 3)), np.array([0, 1, 2]), ValueError, r"shape \(N,\)"),
    (np.zeros(3), np.array([0]), ValueError, r"\(N, K\)"),
    (np.zeros((0, 3)), np.zeros(0, np.int64), ValueError, "N, K >= 1"),
    (np.zeros((2, 3), np.int64), np.array([0, 1]), TypeError, "float32 or float64"),
])
def test_cross_entropy_bad_input(logits, labels, error, match):
    with pytest.raises(error, match=match):
        softmax_cross_entropy(logits, labels)


@pytest.mark.parametrize("pred, target, error, match", [
    (np.zeros((2, 3)), np.zeros((3, 2)), ValueError, "same shape"),
    (np.zeros((2, 3)), np.zeros(3), ValueError, "same shape"),
    (np.zeros((2, 3)), np.zeros((2, 3), np.float32), TypeError, "float64.*float32"),
    (np.zeros((0, 3)), np.zeros((0, 3)), ValueError, "empty"),
    (np.zeros((2, 3)), np.zeros((2, 3), np.int64), TypeError, "target"),
])
def test_mse_bad_input(pred, target, error, match):
    with pytest.raises(error, match=match):
        mse(pred, target)

"""Loss functions returning ``(loss, gradient with respect to the input)``."""

from __future__ import annotations

import numpy as np

from . import functional as F
from ._validation import as_float_array, check_same_dtype

__all__ = ["softmax_cross_entropy", "mse"]


def softmax_cross_entropy(logits, labels) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against integer class labels.

    Equal to ``torch.nn.functional.cross_entropy(logits, labels)``
    (``reduction='mean'``). Computed through the log-softmax shifted by the
    row maximum, so large logits neither overflow nor lose precision.

    Parameters
    ----------
    logits : array_like, shape (N, K), float32 or float64
        Unnormalised class scores, N >= 1.
    labels : array_like of int, shape (N,)
        Class indices in ``[0, K)``.

    Returns
    -------
    loss : float
    dlogits : ndarray, shape (N, K), dtype of `logits`
        ``(softmax(logits) - onehot(labels)) / N``.

    Raises
    ------
    TypeError
        If `labels` is not an integer array or `logits` not float32/float64.
    ValueError
        If the shapes do not fit, the batch is empty or a label is out of range.
    """
    logits = as_float_array(logits, "logits")
    if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(f"logits must have shape (N, K) with N, K >= 1, got {logits.shape}")
    n, k = logits.shape
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(
            f"labels must be an integer array of class indices, got dtype {labels.dtype}"
        )
    if labels.shape != (n,):
        raise ValueError(
            f"labels must have shape (N,) = ({n},) to match logits, got {labels.shape}"
        )
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(
            f"labels must lie in [0, K) = [0, {k}), got values in [{labels.min()}, {labels.max()}]"
        )
    loss, dlogits = F._softmax_cross_entropy(logits, labels)
    return float(loss), dlogits


def mse(pred, target) -> tuple[float, np.ndarray]:
    """Mean squared error over all elements, as ``torch.nn.MSELoss()``.

    Parameters
    ----------
    pred : array_like, any non-empty shape, float32 or float64
    target : array_like, shape and dtype of `pred`
        No broadcasting: a shape mismatch is an error.

    Returns
    -------
    loss : float
        ``mean((pred - target) ** 2)``.
    dpred : ndarray, shape and dtype of `pred`
        ``2 * (pred - target) / pred.size``.
    """
    pred = as_float_array(pred, "pred")
    target = as_float_array(target, "target")
    check_same_dtype(pred=pred, target=target)
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {pred.shape} and {target.shape}"
        )
    if pred.size == 0:
        raise ValueError(f"pred must not be empty, got shape {pred.shape}")
    # out= keeps a 0-d input's gradient an array (plain arithmetic on 0-d
    # arrays returns NumPy scalars).
    diff = np.subtract(pred, target, out=np.empty_like(pred))
    loss = float(np.mean(diff * diff))
    return loss, np.multiply(diff, 2.0 / pred.size, out=diff)

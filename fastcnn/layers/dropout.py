"""Dropout layers."""

from __future__ import annotations

import numpy as np

from .._buffers import empty, empty_like
from .._validation import real
from .base import Layer

__all__ = ["Dropout"]


class Dropout(Layer):
    """Inverted dropout, as ``torch.nn.Dropout``.

    Parameters
    ----------
    p : float, default 0.5
        Probability of DROPPING each element, in ``[0, 1]``. Kept elements are
        scaled by ``1 / (1 - p)`` in training; ``p=1`` drops everything.
    rng : numpy.random.Generator, int or None
        Source of the masks (``None``: fresh OS entropy), kept as ``self.rng``.

    Notes
    -----
    ``training=False`` returns the input unchanged. The backward applies the
    mask of the last forward.
    """

    def __init__(self, p=0.5, rng=None) -> None:
        super().__init__()
        self.p = real(p, "p", low=0, high=1)
        self.rng = np.random.default_rng(rng)

    def _forward(self, x, training):
        if not training:
            return x, None
        # p == 1 keeps nothing; the scale is then irrelevant, avoid 1/0.
        scale = 0.0 if self.p == 1 else 1.0 / (1.0 - self.p)
        draws = self.rng.random(out=empty(x.shape, np.float64))
        mask = np.greater_equal(draws, self.p, out=empty(x.shape, x.dtype))
        mask *= np.asarray(scale, dtype=x.dtype)
        return np.multiply(x, mask, out=empty_like(x)), mask

    def _backward(self, dout, mask):
        return dout if mask is None else np.multiply(dout, mask, out=empty_like(dout))

    def _extra_repr(self):
        return f"p={self.p}"

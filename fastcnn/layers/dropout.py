"""Dropout layers."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from .._buffers import empty_like
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
    mask of the last forward. Each training forward takes one integer from
    `rng`, which keys the draws of its mask's cells (a counter-based
    generator, SplitMix64: the same mask at every thread count).
    """

    def __init__(self, p=0.5, rng=None) -> None:
        super().__init__()
        self.p = real(p, "p", low=0, high=1)
        self.rng = np.random.default_rng(rng)

    def _forward(self, x, training):
        if not training:
            return x, None
        # one draw of the generator per call keys the mask's draws
        key = int(self.rng.integers(0, 2**64, dtype=np.uint64))
        return F._dropout(x, self.p, key)

    def _backward(self, dout, mask):
        return dout if mask is None else np.multiply(dout, mask, out=empty_like(dout))

    def _extra_repr(self):
        return f"p={self.p}"

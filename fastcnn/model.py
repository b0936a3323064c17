"""The model container's public home: :class:`Sequential` and :func:`named_layers`.

Both live in :mod:`fastcnn.layers.container`, beside the other layer families.
"""

from .layers.container import Sequential, named_layers

__all__ = ["Sequential", "named_layers"]

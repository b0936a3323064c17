"""Containers: a stack of layers (forward, backward, summary, and saving weights without pickle)."""

from __future__ import annotations

import os

import numpy as np

from .base import Layer

__all__ = ["Sequential", "named_layers"]


def named_layers(model, prefix: str = "") -> list[tuple[str, Layer]]:
    """List ``(prefix, layer)`` for every layer of `model`, in order.

    Parameters
    ----------
    model : Sequential, Layer, or list/tuple of those
    prefix : str
        Prepended to every prefix (used for nesting).

    Returns
    -------
    list of (str, Layer)
        The prefix of a layer is ``"i."`` for the i-th entry of a Sequential
        or list (``"i.j."`` when nested) and ``""`` for a bare layer, so that
        ``prefix + name`` gives keys such as ``"0.weight"``.
    """
    if isinstance(model, Layer):
        return [(prefix, model)]
    if isinstance(model, Sequential):
        items = model.layers
    elif isinstance(model, (list, tuple)):
        items = model
    else:
        raise TypeError(
            "model must be a Sequential, a Layer or a list of layers, "
            f"got {type(model).__name__}"
        )
    result = []
    for i, item in enumerate(items):
        result.extend(named_layers(item, f"{prefix}{i}."))
    return result


def _saved_arrays(model) -> dict[str, np.ndarray]:
    """Every parameter and state array of `model`, keyed like ``"0.weight"``."""
    arrays = {}
    for prefix, layer in named_layers(model):
        for name, value in {**layer.params, **layer.state}.items():
            arrays[prefix + name] = value
    return arrays


class Sequential:
    """Layers applied one after the other.

    Parameters
    ----------
    layers : iterable of Layer

    Attributes
    ----------
    layers : list of Layer

    Examples
    --------
    >>> import numpy as np
    >>> from fastcnn import Sequential
    >>> from fastcnn.layers import Conv2D, ReLU, Flatten, Dense
    >>> model = Sequential([Conv2D(1, 4, 3, rng=0), ReLU(), Flatten(), Dense(4 * 6 * 6, 10, rng=0)])
    >>> model(np.zeros((2, 1, 8, 8), np.float32)).shape
    (2, 10)
    """

    def __init__(self, layers) -> None:
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"layers[{i}] must be a fastcnn Layer, got {type(layer).__name__}"
                )

    def forward(self, x, training: bool = True) -> np.ndarray:
        """Run `x` through every layer; see :meth:`fastcnn.layers.Layer.forward`."""
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def __call__(self, x, training: bool = True) -> np.ndarray:
        return self.forward(x, training)

    def backward(self, dout) -> np.ndarray:
        """Back-propagate through every layer in reverse; fills each layer's ``grads``.

        Returns
        -------
        dx : ndarray
            Gradient with respect to the input of the last forward.
        """
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def summary(self, input_shape) -> str:
        """A table of the layers, their output shapes and parameter counts.

        Parameters
        ----------
        input_shape : tuple of int
            Full input shape, batch included, e.g. ``(1, 1, 28, 28)``.

        Returns
        -------
        str
            One row per layer and the total number of parameters.
        """
        rows = [("#", "Layer", "Output shape", "Params")]
        shape = tuple(input_shape)
        rows.append(("", "Input", str(shape), ""))
        for i, layer in enumerate(self.layers):
            shape = layer.output_shape(shape)
            rows.append((str(i), repr(layer), str(shape), f"{layer.num_params:,}"))
        widths = [max(len(row[k]) for row in rows) for k in range(4)]

        def line(row):
            return (
                f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  "
                f"{row[2]:<{widths[2]}}  {row[3]:>{widths[3]}}"
            ).rstrip()

        rule = "-" * (sum(widths) + 6)
        total = sum(layer.num_params for layer in self.layers)
        lines = [line(rows[0]), rule, *map(line, rows[1:]), rule, f"Total params: {total:,}"]
        return "\n".join(lines)

    def save(self, path) -> None:
        """Write every parameter and running statistic to an ``.npz`` file (no pickle).

        Parameters
        ----------
        path : str or os.PathLike
            Destination; NumPy appends ``.npz`` if missing. Keys are
            ``"<layer index>.<name>"``, e.g. ``"0.weight"``, ``"1.running_mean"``.
        """
        np.savez(os.fspath(path), **_saved_arrays(self))

    def load(self, path) -> None:
        """Copy the arrays of an ``.npz`` file written by :meth:`save` into the model.

        The whole file is checked against the architecture first, so a failed
        load leaves the model unchanged. Arrays are copied into the existing
        parameters in place (optimizers keep working).

        Raises
        ------
        ValueError
            On the first missing or unexpected key, shape or dtype mismatch,
            or if the file holds pickled objects.
        """
        path = os.fspath(path)
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"{path!r} is not an .npz archive written by Sequential.save")
        with archive:
            loaded = {key: archive[key] for key in archive.files}
        expected = _saved_arrays(self)
        for key, target in expected.items():
            if key not in loaded:
                raise ValueError(f"{path!r} does not match the model: missing key {key!r}")
            value = loaded[key]
            if value.shape != target.shape or value.dtype != target.dtype:
                raise ValueError(
                    f"{path!r} does not match the model: {key!r} has shape {value.shape} and "
                    f"dtype {value.dtype}, the model expects {target.shape} and {target.dtype}"
                )
        unexpected = [key for key in loaded if key not in expected]
        if unexpected:
            raise ValueError(f"{path!r} does not match the model: unexpected key {unexpected[0]!r}")
        for key, target in expected.items():
            target[...] = loaded[key]

    def __repr__(self) -> str:
        body = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({body}\n)"

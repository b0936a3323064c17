"""The bar chart of ``fastcnn bench --plot`` (needs matplotlib)."""

from __future__ import annotations

import importlib

import numpy as np

from .cases import KERNEL_NAMES
from .report import _rows

__all__ = ["plot"]


def _matplotlib_figure():
    try:
        return importlib.import_module("matplotlib.figure")
    except ImportError as exc:
        raise ImportError(
            "--plot needs matplotlib, which is not installed: pip install matplotlib "
            '(or pip install "fastcnn[bench]")'
        ) from exc


def plot(records, path: str) -> None:
    """Save a bar chart of the speed-ups over NumPy and PyTorch (kernel level and conv)."""
    figure_module = _matplotlib_figure()
    groups = sorted({(r["threads"], r["dtype"]) for r in records})
    fig = figure_module.Figure(figsize=(14, 3.6 * len(groups)), layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    for ax, (threads, dtype) in zip(axes, groups):
        labels, speedups = [], {"numpy": [], "torch": []}
        for (t, d, shape), rows in _rows(records).items():
            if (t, d) != (threads, dtype):
                continue
            for (op, level), by_impl in rows.items():
                cy = by_impl.get("cython")
                if cy is None or level == "op" and op in KERNEL_NAMES:
                    continue
                labels.append(f"{op}\n{shape}")
                for impl in speedups:
                    other = by_impl.get(impl)
                    speedups[impl].append(other["median_s"] / cy["median_s"] if other else np.nan)
        pos = np.arange(len(labels))
        for k, (impl, values) in enumerate(speedups.items()):
            ax.bar(pos + (k - 0.5) * 0.4, values, 0.4, label=f"{impl} time / cython time")
        ax.axhline(1, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xticks(pos, labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("speed-up of fastcnn (log)")
        ax.set_title(f"{threads} thread{'s' if threads != 1 else ''}, {dtype} (kernels: raw, preallocated)")
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)

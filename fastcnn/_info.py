"""What fastcnn runs on: backend, build, threads, NumPy and BLAS."""

from __future__ import annotations

import platform
import sys

import numpy as np

from . import _backend

__all__ = ["config", "show_config"]


def config() -> dict:
    """Return the configuration report as a dict (see :func:`show_config`)."""
    from threadpoolctl import threadpool_info

    from . import __version__

    blas = [
        {k: info.get(k) for k in ("internal_api", "version", "num_threads", "threading_layer")}
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]
    return {
        "fastcnn": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "backend": _backend.get_backend(),
        "build": _backend.build_info(),
        "num_threads": _backend.get_num_threads(),
        "blas": blas,
    }


def show_config(file=None) -> None:
    """Print the backend, how the kernels were built, thread count, NumPy and BLAS."""
    cfg = config()
    build = cfg["build"]
    if build["compiled"]:
        built = (f"compiled ({build['compiler']}), OpenMP {'on' if build['openmp'] else 'OFF'}, "
                 f"pooling SIMD {build['pool_simd']}")
    else:
        built = f"NOT compiled ({build['error']})"
    lines = [
        f"fastcnn      {cfg['fastcnn']}",
        f"python       {cfg['python']} on {cfg['platform']}",
        f"backend      {cfg['backend']}",
        f"kernels      {built}",
        f"threads      {cfg['num_threads']}",
        f"numpy        {cfg['numpy']}",
    ]
    for lib in cfg["blas"] or [{"internal_api": "none found"}]:
        details = ", ".join(f"{k}={lib[k]}" for k in ("version", "num_threads", "threading_layer") if lib.get(k) is not None)
        lines.append(f"blas         {lib['internal_api']}" + (f" ({details})" if details else ""))
    print("\n".join(lines), file=file or sys.stdout)

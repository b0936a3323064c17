"""What fastcnn runs on: backend, build, threads, NumPy, SciPy and their thread pools."""

from __future__ import annotations

import pathlib
import platform
import sys
import textwrap

import numpy as np

from . import _backend

__all__ = ["config", "show_config"]

# Wheels keep their shared libraries in NAME.libs (auditwheel, delvewheel),
# NAME/.dylibs (delocate) or NAME/lib (PyTorch): the package whose directory
# holds a library is the one that loaded it.
_PACKAGES = {"numpy": "NumPy", "scipy": "SciPy", "torch": "PyTorch", "sklearn": "scikit-learn"}

_POOL_KEYS = ("user_api", "internal_api", "prefix", "version", "threading_layer", "num_threads",
              "architecture", "filepath")  # fmt: skip


def _package_of(filepath: str | None) -> str | None:
    """The name of the Python package that shipped the library at `filepath`, if any."""
    for part in reversed(pathlib.PurePath(filepath or "").parts[:-1]):
        name = part.removesuffix(".libs")
        if name in _PACKAGES:
            return _PACKAGES[name]
    return None


def _threadpools() -> list[dict]:
    """The thread pools of the loaded BLAS and OpenMP libraries, with the package of each."""
    from threadpoolctl import threadpool_info

    pools = []
    for info in threadpool_info():
        pool = {k: info.get(k) for k in _POOL_KEYS}
        pool["package"] = _package_of(pool["filepath"])
        pools.append(pool)
    return pools


def _compiler_name(version: str) -> str:
    """The compiler from its ``__VERSION__`` macro, which only GCC leaves without its name."""
    if version[:1].isdigit():
        return f"GCC {version}"
    if version == "unknown":  # the build saw no __VERSION__ (MSVC defines none)
        return "an unknown compiler"
    return version


def _thread_policy(build: dict, num_threads: int) -> str:
    """Who runs how many threads, in one sentence (the policy of :mod:`fastcnn._backend`)."""
    numpy_blas = "the numpy backend holds NumPy's BLAS to one thread around its GEMMs"
    if not build["compiled"]:
        return f"the NumPy twins run on the calling thread; {numpy_blas}"
    if build["openmp"]:
        plural = "s" if num_threads != 1 else ""
        team = f"compiled kernels run {num_threads} OpenMP thread{plural} (fastcnn.set_num_threads)"
    else:
        team = "built without OpenMP, the compiled kernels run on the calling thread"
    return (
        f"{team}; the BLAS they call (SciPy's) runs one thread inside them; NumPy's BLAS is "
        f"not changed by them ({numpy_blas})"
    )


def config() -> dict:
    """Return the configuration report as a dict (see :func:`show_config`)."""
    import scipy

    from . import __version__

    build = _backend.build_info()
    if build["compiled"]:
        build["compiler_name"] = _compiler_name(build["compiler"])
    pools = _threadpools()
    num_threads = _backend.get_num_threads()
    return {
        "fastcnn": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "backend": _backend.get_backend(),
        "build": build,
        "num_threads": num_threads,
        "thread_policy": _thread_policy(build, num_threads),
        "blas": [p for p in pools if p["user_api"] == "blas"],
        "threadpools": pools,
    }


def _describe_pool(pool: dict) -> str:
    """``blas         NumPy's openblas 0.3.27 (libscipy_openblas, pthreads, ...) /path``."""
    owner = f"{pool['package']}'s " if pool["package"] else ""
    # threadpoolctl's internal_api of an OpenMP runtime is just "openmp".
    if pool["internal_api"] == pool["user_api"]:
        name, details = pool["prefix"], []
    else:
        name, details = pool["internal_api"], [pool["prefix"]]
    details += [pool["threading_layer"], pool["architecture"]]
    details.append(f"{pool['num_threads']} thread{'s' if pool['num_threads'] != 1 else ''}")
    return (
        f"{pool['user_api']:<13}{owner}{name} {pool['version'] or ''}".rstrip()
        + f" ({', '.join(d for d in details if d)}) {pool['filepath']}"
    )


def show_config(file=None) -> None:
    """Print the backend, how the kernels were built, the thread policy, and every thread pool.

    Each BLAS and OpenMP library is labelled with the package that loaded it
    (NumPy and SciPy each ship their own OpenBLAS).
    """
    cfg = config()
    build = cfg["build"]
    if build["compiled"]:
        built = (f"compiled by {build['compiler_name']}, OpenMP {'on' if build['openmp'] else 'OFF'}, "
                 f"pooling SIMD {build['pool_simd']}, "
                 f"builds for the CPU: {', '.join(build['simd_builds']) or 'none'}")  # fmt: skip
    else:
        built = f"NOT compiled ({build['error']})"
    lines = [
        f"fastcnn      {cfg['fastcnn']}",
        f"python       {cfg['python']} on {cfg['platform']}",
        f"backend      {cfg['backend']}",
        f"kernels      {built}",
        textwrap.fill(f"threads      {cfg['num_threads']}: {cfg['thread_policy']}", 100,
                      subsequent_indent=" " * 13),
        f"numpy        {cfg['numpy']}",
        f"scipy        {cfg['scipy']}",
    ]
    lines.extend(_describe_pool(pool) for pool in cfg["threadpools"])
    if not cfg["blas"]:
        lines.append("blas         none found")
    print("\n".join(lines), file=file or sys.stdout)

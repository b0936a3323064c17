"""The option types and help format shared by the ``fastcnn`` commands.

Every check of a command-line value is an argparse ``type=`` function here,
so a bad value stops the command before any work with argparse's one-line
usage error (``fastcnn demo: error: argument --lr: expected ...``) and exit
status 2, and an option that two commands share means the same in both.
"""

from __future__ import annotations

import argparse
import math
import os

from ._backend import MAX_THREADS, default_num_threads

__all__ = [
    "HelpFormatter",
    "positive_int",
    "seed",
    "positive_float",
    "thread_count",
    "thread_counts",
    "comma_list",
    "input_file",
    "output_file",
    "plot_file",
    "THREADS_HELP",
]

#: What ``--threads`` accepts, for the commands' help texts.
THREADS_HELP = (
    f"a positive count up to {MAX_THREADS} (4 per available CPU) or 'all' "
    "(the OpenMP default: every available CPU, or OMP_NUM_THREADS if set)"
)

# numpy.random.default_rng takes any non-negative int, scikit-learn's
# random_state only those below 2**32.
_MAX_SEED = 2**32 - 1

# Formats matplotlib lists but cannot write without outside tools: pgf
# measures text with a LaTeX installation.
_UNWRITABLE_FORMATS = frozenset({"pgf"})


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show every option's default, unless its help says it already or it is an on/off flag."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.default is False or "(default:" in text:
            return text
        return super()._get_help_string(action)


def _error(expected: str, text: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")


def _int(text: str, low: int, high: int | None, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise _error(expected, text) from None
    if value < low or high is not None and value > high:
        raise _error(expected, text)
    return value


def positive_int(text: str) -> int:
    """An int >= 1 (``--epochs``, ``--batch-size``, ``--repeats``)."""
    return _int(text, 1, None, "a positive int")


def seed(text: str) -> int:
    """A random seed: an int from 0 to 2**32 - 1."""
    return _int(text, 0, _MAX_SEED, f"an int from 0 to {_MAX_SEED}")


def positive_float(text: str) -> float:
    """A finite float > 0 (``--lr``, ``--budget``)."""
    try:
        value = float(text)
    except ValueError:
        raise _error("a positive finite float", text) from None
    if not (math.isfinite(value) and value > 0):
        raise _error("a positive finite float", text)
    return value


def thread_count(text: str) -> int:
    """``--threads``: a positive count up to :data:`fastcnn._backend.MAX_THREADS`, or ``all``.

    ``all`` is the default thread count of :func:`fastcnn.set_num_threads`.
    """
    if text.strip() == "all":
        return default_num_threads()
    return _int(text, 1, MAX_THREADS, f"a positive int up to {MAX_THREADS} or 'all'")


def thread_counts(text: str) -> list[int]:
    """A comma-separated list of :func:`thread_count` values, sorted, without repeats."""
    items = [t for t in text.split(",") if t.strip()]
    try:
        counts = {thread_count(t) for t in items}
    except argparse.ArgumentTypeError:
        counts = set()
    if not counts:
        raise _error(f"comma-separated thread counts, each a positive int up to {MAX_THREADS} or 'all'", text)
    return sorted(counts)


def comma_list(allowed):
    """A type that takes a comma-separated, non-empty subset of `allowed` and returns it as a list."""

    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items or any(t not in allowed for t in items):
            raise _error(f"a comma-separated subset of {','.join(allowed)}", text)
        return list(dict.fromkeys(items))

    return parse


def input_file(text: str) -> str:
    """The name of an existing, readable file."""
    if not os.path.isfile(text):
        raise _error("an existing file", text)
    if not os.access(text, os.R_OK):
        raise argparse.ArgumentTypeError(f"cannot read {text!r}: permission denied")
    return text


def output_file(text: str) -> str:
    """A file name whose directory exists and is writable (the file itself may exist)."""
    if not text:
        raise _error("a file name", text)
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"expected a file name, got the directory {text!r}")
    directory = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(directory):
        raise argparse.ArgumentTypeError(f"directory {directory!r} of {text!r} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"directory {directory!r} of {text!r} is not writable")
    return text


def _plot_formats() -> list[str]:
    """The file suffixes matplotlib can write (without importing pyplot)."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise argparse.ArgumentTypeError(
            "plotting needs matplotlib, which is not installed: pip install matplotlib"
        ) from None
    return sorted(set(FigureCanvasBase.get_supported_filetypes()) - _UNWRITABLE_FORMATS)


def plot_file(text: str) -> str:
    """An :func:`output_file` whose suffix names a format matplotlib writes (``.png``, ``.pdf``, ...)."""
    formats = _plot_formats()
    suffix = os.path.splitext(text)[1].lower().lstrip(".")
    if suffix not in formats:
        raise _error(f"a file name ending in one of {', '.join('.' + f for f in formats)}", text)
    return output_file(text)

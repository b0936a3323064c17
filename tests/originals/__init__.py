"""The code fastcnn's drop-ins replace, re-implemented in pure NumPy.

Written for the tests and ``benchmarks/dropins.py`` from the recorded
behaviour of the three projects (signatures, layouts, dtypes and bugs of
CS231n assignment 2, hipsternet and ML-From-Scratch), in the originals'
style: fancy-indexing im2col, ``np.add.at`` col2im, argmax pooling. Each is
a package laid out like the project, with relative imports, so that a test
can copy it, change the one line the README tells users to change, and
import both versions side by side (:func:`load_copy`).

Compiled parts of the originals (CS231n's ``im2col_cython.pyx``) are NumPy
stand-ins here that loop over kernel offsets; timings against them
approximate the course's Cython rather than reproduce it.
"""

from __future__ import annotations

import importlib
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: The README's one-line change for each project, as ``load_copy`` edits:
#: ``(file, line as published, line with fastcnn)``. For ML-From-Scratch the
#: change adds the drop-in's import after the project's own.
SWAPS = {
    "cs231n": ("layer_utils.py", "from .fast_layers import *  # noqa: F403",
               "from fastcnn.compat.cs231n import *  # noqa: F403"),
    "hipsternet": ("neuralnet.py", "from . import layer as l",
                   "import fastcnn.compat.hipsternet as l"),
    "mlfromscratch": ("examples.py", "from .layers import AveragePooling2D, Conv2D, MaxPooling2D",
                      "from .layers import AveragePooling2D, Conv2D, MaxPooling2D\n"
                      "from fastcnn.compat.mlfromscratch import "
                      "Conv2D, MaxPooling2D, AveragePooling2D"),
}

#: The module of each project that builds its networks.
NETWORKS = {"cs231n": "classifiers.cnn", "hipsternet": "neuralnet", "mlfromscratch": "examples"}


def load_copy(project: str, name: str, directory: Path, edits=()):
    """Import a copy of the package `project` under the top-level name `name`.

    Parameters
    ----------
    project : str
        "cs231n", "hipsternet" or "mlfromscratch".
    name : str
        Top-level name of the copy (must not be imported yet).
    directory : Path
        Where to put it (it is added to ``sys.path``).
    edits : sequence of (str, str, str)
        ``(relative file, old line, new line)``: each `old line` must occur
        exactly once in that file.

    Returns
    -------
    module
        The imported package; its submodules import lazily as usual. The
        caller removes ``directory`` from ``sys.path`` and ``name*`` from
        ``sys.modules`` (see the tests' fixture).
    """
    target = directory / name
    shutil.copytree(HERE / project, target, ignore=shutil.ignore_patterns("__pycache__"))
    for relative, old, new in edits:
        path = target / relative
        text = path.read_text()
        if text.count(old) != 1:
            raise ValueError(f"{old!r} must occur once in {relative}, found {text.count(old)}")
        path.write_text(text.replace(old, new))
    sys.path.insert(0, str(directory))
    importlib.invalidate_caches()
    return importlib.import_module(name)

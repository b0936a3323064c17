"""Every ```python block of README.md runs, in order, as a reader would run them.

The blocks share one namespace (later examples use what earlier ones
defined, as the README reads) and run in a temporary directory. A block that
reads a file the user brings (``mnist.npz``) gets a small stand-in.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import fastcnn
from fastcnn import _backend

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of every fenced block tagged ``python``."""
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```$", text, flags=re.M | re.S):
        blocks.append((text.count("\n", 0, match.start()) + 2, match.group(1)))
    return blocks


def test_the_readme_has_the_examples_it_promises():
    code = "\n".join(block for _, block in python_blocks(README.read_text()))
    assert "class ConvBNReLU(Layer):" in code and "def backward(self, dout):" in code
    assert ".predict(" in code and "Residual(" in code


@pytest.fixture
def restore_global_settings():
    """The README sets the thread count and could switch backends: undo both."""
    backend = fastcnn.get_backend()
    with _backend.use_num_threads(None):  # restores the previous setting, default or not
        yield
    fastcnn.set_backend(backend)


def test_readme_python_blocks_run(tmp_path, monkeypatch, restore_global_settings):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez("mnist.npz",  # the Keras-style file the README converts
             x_train=rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), y_train=np.arange(20) % 10,
             x_test=rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), y_test=np.arange(10) % 10)
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 6
    namespace = {"__name__": "readme"}
    for line, code in blocks:
        exec(compile(code, f"{README}:{line}", "exec"), namespace)
    assert namespace["logits"].shape == (1000, 10)
    assert namespace["report"].passed, str(namespace["report"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "mnist-fastcnn.npz", "mnist.npz", "model.npz", "resnet.npz",
    ]

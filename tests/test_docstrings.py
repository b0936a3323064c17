"""Shared docstring sections (fastcnn._docstrings) end up complete in every public docstring."""

import importlib
import inspect
import pkgutil
import re

import pytest

import fastcnn
from fastcnn._docstrings import fill_doc


def test_fill_doc_puts_each_section_at_the_placeholders_indentation():
    @fill_doc(params="a : int\n    The first.\nb : float", out="\nReturns\n-------\nint\n")
    def f(a, b):
        """Summary.

        Parameters
        ----------
        {params}
            More about b.

        {out}
        """

    lines = inspect.getdoc(f).splitlines()
    assert lines == ["Summary.", "", "Parameters", "----------", "a : int", "    The first.",
                     "b : float", "    More about b.", "", "Returns", "-------", "int"]


def test_fill_doc_refuses_a_placeholder_without_a_section():
    with pytest.raises(KeyError, match="missing"):
        @fill_doc(present="x")
        def f():
            """{missing}"""


def test_fill_doc_leaves_a_missing_docstring_alone():
    def f():
        pass

    assert fill_doc(anything="x")(f).__doc__ is None


def _public_objects():
    for info in pkgutil.walk_packages(fastcnn.__path__, "fastcnn."):
        if "_kernels" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and \
                    getattr(obj, "__module__", "") == module.__name__:
                yield f"{module.__name__}.{name}", obj
                if inspect.isclass(obj):
                    for attr, member in vars(obj).items():
                        if inspect.isfunction(member):
                            yield f"{module.__name__}.{name}.{attr}", member


def test_no_docstring_keeps_a_placeholder():
    placeholder = re.compile(r"^\s*\{\w+\}\s*$", re.MULTILINE)
    left = [name for name, obj in _public_objects() if placeholder.search(obj.__doc__ or "")]
    assert not left

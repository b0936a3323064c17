"""Docstring sections that several functions or classes share, put in by a decorator.

A docstring names a shared section by a line that holds only ``{name}``;
:func:`fill_doc` replaces that line with the section, indented as the line
was, so that ``help()`` shows complete NumPy-style documentation while the
text lives in one place.
"""

from __future__ import annotations

import re
import textwrap

_PLACEHOLDER = re.compile(r"^([ \t]*)\{(\w+)\}[ \t]*$", re.MULTILINE)


def fill_doc(**sections: str):
    """Decorator: put `sections` into the docstring of a function or class.

    Parameters
    ----------
    **sections : str
        Text by name; its first line starts at column 0 and later lines keep
        their indentation relative to it (a leading newline and any common
        indentation are removed).

    Returns
    -------
    callable
        Takes the object, replaces each line ``{name}`` of its docstring with
        section `name`, and returns the object. A placeholder without a
        section is a KeyError when the module is imported; a docstring
        stripped by ``python -OO`` stays None.
    """
    texts = {name: textwrap.dedent(text).strip("\n") for name, text in sections.items()}

    def fill(obj):
        if obj.__doc__:
            obj.__doc__ = _PLACEHOLDER.sub(
                lambda m: textwrap.indent(texts[m[2]], m[1]), obj.__doc__
            )
        return obj

    return fill

"""Drop-in replacements for the array functions of popular NumPy CNN code.

Each module keeps the original's names, signatures, layouts and dtypes and
runs convolution and pooling on fastcnn's kernels; its docstring gives the
one line to change and where it differs from the original (only where the
original is wrong or fails).

- :mod:`fastcnn.compat.cs231n`: the ``fast_layers``, ``im2col`` and
  ``im2col_cython`` functions of Stanford's CS231n assignment 2.
- :mod:`fastcnn.compat.hipsternet`: every function of hipsternet's
  ``layer.py`` and ``im2col.py``.
- :mod:`fastcnn.compat.mlfromscratch`: ML-From-Scratch's ``Conv2D``,
  ``MaxPooling2D``, ``AveragePooling2D`` and im2col helpers.
"""

"""Drop-in replacements for the array functions of popular NumPy CNN code.

- :mod:`fastcnn.compat.cs231n`: the ``fast_layers`` / ``layer_utils`` functions
  of Stanford's CS231n assignments (``conv_forward_fast`` and friends).
"""

"""hipsternet's ``im2col.py``: CS231n's, with ``int(...)`` sizes, the same functions."""

from originals.cs231n.im2col import col2im_indices, get_im2col_indices, im2col_indices  # noqa: F401

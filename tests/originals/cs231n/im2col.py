"""The course's ``im2col.py``: fancy-indexing im2col and ``np.add.at`` col2im.

As published it computes ``out_height`` with ``/`` and fails on Python 3;
this uses ``//`` (exact under the asserts), as the fix the course intends.
The second assert compares W with the field HEIGHT, as the original does.
"""

import numpy as np


def get_im2col_indices(x_shape, field_height, field_width, padding=1, stride=1):
    N, C, H, W = x_shape
    assert (H + 2 * padding - field_height) % stride == 0
    assert (W + 2 * padding - field_height) % stride == 0  # sic
    out_h = (H + 2 * padding - field_height) // stride + 1
    out_w = (W + 2 * padding - field_width) // stride + 1
    rows = np.arange(C * field_height * field_width)
    cell_i = (rows // field_width) % field_height
    cell_j = rows % field_width
    positions = np.arange(out_h * out_w)
    i = cell_i.reshape(-1, 1) + stride * (positions // out_w).reshape(1, -1)
    j = cell_j.reshape(-1, 1) + stride * (positions % out_w).reshape(1, -1)
    k = (rows // (field_height * field_width)).reshape(-1, 1)
    return k.astype(np.int64), i.astype(np.int64), j.astype(np.int64)


def im2col_indices(x, field_height, field_width, padding=1, stride=1):
    p = padding
    x_padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), mode="constant")
    k, i, j = get_im2col_indices(x.shape, field_height, field_width, padding, stride)
    cols = x_padded[:, k, i, j]
    return cols.transpose(1, 2, 0).reshape(x.shape[1] * field_height * field_width, -1)


def col2im_indices(cols, x_shape, field_height=3, field_width=3, padding=1, stride=1):
    N, C, H, W = x_shape
    x_padded = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=cols.dtype)
    k, i, j = get_im2col_indices(x_shape, field_height, field_width, padding, stride)
    cols_by_image = cols.reshape(C * field_height * field_width, -1, N).transpose(2, 0, 1)
    np.add.at(x_padded, (slice(None), k, i, j), cols_by_image)
    if padding == 0:
        return x_padded
    return x_padded[:, :, padding:-padding, padding:-padding]

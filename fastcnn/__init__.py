"""fastcnn: fast, correct CNN layers for NumPy.

Compiled (Cython, OpenMP) kernels with pure-NumPy twins, and the semantics of
``torch.nn.functional``. See ``fastcnn.functional`` for the operations,
``fastcnn.show_config()`` for how this copy was built.
"""

__version__ = "0.1.0"

from . import functional, reference
from ._backend import get_backend, get_num_threads, set_backend, set_num_threads, use_backend
from ._info import show_config
from .functional import (
    avg_pool2d,
    avg_pool2d_backward,
    col2im,
    conv2d,
    conv2d_backward,
    im2col,
    max_pool2d,
    max_pool2d_backward,
)

__all__ = [
    "functional",
    "reference",
    "get_backend",
    "set_backend",
    "use_backend",
    "get_num_threads",
    "set_num_threads",
    "show_config",
    "im2col",
    "col2im",
    "conv2d",
    "conv2d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
]

"""fastcnn: fast, correct CNN layers for NumPy.

Compiled (Cython, OpenMP) kernels with pure-NumPy twins, and the semantics of
``torch.nn.functional``. The operations are in :mod:`fastcnn.functional`, the
layers in :mod:`fastcnn.layers` (both also here), the model container is
:class:`Sequential`; :mod:`fastcnn.losses`, :mod:`fastcnn.optim`,
:mod:`fastcnn.init`, :mod:`fastcnn.gradcheck` and the drop-ins of :mod:`fastcnn.compat` (for
CS231n, hipsternet and ML-From-Scratch code) complete the set.
``fastcnn.show_config()`` says how this copy was built.
"""

__version__ = "0.1.0"

from . import functional, gradcheck, init, layers, losses, optim, reference
from ._backend import get_backend, get_num_threads, set_backend, set_num_threads, use_backend
from ._info import show_config
from .functional import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    adaptive_max_pool2d,
    adaptive_max_pool2d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    col2im,
    conv2d,
    conv2d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    group_norm,
    group_norm_backward,
    im2col,
    interpolate,
    interpolate_backward,
    layer_norm,
    layer_norm_backward,
    max_pool2d,
    max_pool2d_backward,
    max_unpool2d,
    max_unpool2d_backward,
    pad,
    pad_backward,
)
from .layers import (
    ELU,
    SELU,
    AdaptiveAvgPool2D,
    AdaptiveMaxPool2D,
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    ConvTranspose2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    GroupNorm,
    Identity,
    LayerNorm,
    LeakyReLU,
    MaxPool2D,
    MaxUnpool2D,
    Pad2D,
    ReLU,
    Residual,
    Sigmoid,
    Softmax,
    Softplus,
    Tanh,
    Upsample,
)
from .model import Sequential

__all__ = [
    "functional",
    "reference",
    "layers",
    "losses",
    "optim",
    "gradcheck",
    "init",
    "get_backend",
    "set_backend",
    "use_backend",
    "get_num_threads",
    "set_num_threads",
    "show_config",
    *functional.__all__,
    *(name for name in layers.__all__ if name != "Layer"),
    "Sequential",
]

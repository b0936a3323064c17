"""``fastcnn bench``: time every kernel, op and a training step against NumPy and PyTorch.

Like ``bottleneck.bench()``, this ships in the package so that anyone can see
what fastcnn buys on their own machine. It prints the versions first, then a
summary (per benchmark, the time ratios over the compiled kernels, their
geometric mean over shapes and dtypes; ``--verbose`` prints every row as it
is measured instead), and can write the raw numbers (``--json``) and a bar
chart of the speed-ups (``--plot``).

What is timed, for each thread count, dtype and shape (:data:`SHAPES`):

* every kernel of :data:`fastcnn.bench.cases.KERNEL_NAMES` twice: the raw kernel
  on validated arrays with preallocated outputs (level ``kernel``: no
  validation, no allocation) and the public op of :mod:`fastcnn.functional`
  (level ``op``: what a user pays);
* ``conv2d`` (forward) and ``conv2d_fwd_bwd`` (``conv2d`` + ``conv2d_backward``);
* ``train_step``: one step of the ``fastcnn demo`` network (forward, softmax
  cross-entropy, backward, Adam step), float32 only;
* ``copy``: ``np.copyto`` and ``Tensor.copy_`` of the input, the memory
  bandwidth the memory-bound kernels are measured against.

Implementations: ``cython`` (the compiled kernels), ``numpy`` (the NumPy twin
of :mod:`fastcnn.reference`) and ``torch`` (PyTorch CPU, when importable),
all at the same thread count (:func:`fastcnn.set_num_threads`,
``torch.set_num_threads`` and ``threadpoolctl`` for NumPy's BLAS). At the
``kernel`` level PyTorch runs its ATen kernels with ``out=`` tensors
(``aten::im2col.out``, ``aten::max_pool2d_with_indices_backward.grad_input``,
...); at the ``op`` level it runs the public ``torch.nn.functional`` call (for
the two pooling backwards, the ATen function autograd itself calls, without
building a graph). conv2d backward in PyTorch is ``torch.autograd.grad`` on a
fresh forward.

Method: one process; every implementation is warmed up (and its result
checked against the compiled one) before timing; then the repeats are
interleaved round-robin over the implementations, starting with a different
one each repeat, so that a noisy moment hits all of them. A sample is the
mean of ``number`` back-to-back calls (calibrated so a sample lasts at least
``min_sample`` seconds), timed with :func:`time.perf_counter` and the garbage
collector off. Reported: the median sample, its min and its interquartile
range. Slow implementations get fewer repeats (``budget`` seconds each, never
fewer than ``min_repeats``).

Modules, by role: :mod:`.cases` (the shapes, what is timed and how each case
is built), :mod:`.timing` (the timer, repeats and medians), :mod:`.runner`
(:func:`bench`), :mod:`.report` (environment, table, JSON), :mod:`.plot`
(the chart) and :mod:`.cli` (``fastcnn bench``'s options).
"""

from .cases import IMPLEMENTATIONS, OPS, SHAPES, Shape
from .cli import add_arguments, run
from .plot import plot
from .report import format_summary, format_table
from .runner import bench

__all__ = [
    "SHAPES",
    "OPS",
    "IMPLEMENTATIONS",
    "Shape",
    "add_arguments",
    "run",
    "bench",
    "format_table",
    "format_summary",
    "plot",
]

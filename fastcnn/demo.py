"""``fastcnn demo``: train a small network on a real image data set, with a progress bar.

``--model cnn`` (the default) is a plain CNN trained with Adam; ``--model
resnet`` a small ResNet (basic blocks with BatchNorm and strided 1x1
shortcuts, global average pooling) trained with AdamW and a cosine
learning-rate schedule; ``--model autoencoder`` a convolutional autoencoder
(transposed-convolution decoder) trained to reconstruct its input.
By default the data are scikit-learn's bundled handwritten digits (1797
images of 8x8 pixels, no download), split 80/20 stratified by ``--seed``.
``--data file.npz`` trains on your own arrays instead. Needs the ``demo``
extra (scikit-learn, tqdm, matplotlib): ``pip install "fastcnn[demo]"``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import math
import sys
import time

import numpy as np

from ._backend import BACKENDS, get_backend, get_num_threads, use_backend, use_num_threads
from ._cli_args import (
    THREADS_HELP,
    input_file,
    plot_file,
    positive_float,
    positive_int,
    seed,
    thread_count,
)
from .layers import (
    BatchNorm2D,
    Conv2D,
    ConvTranspose2D,
    Dense,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    ReLU,
    Residual,
    Sigmoid,
)
from .losses import mse, softmax_cross_entropy
from .lr_scheduler import CosineAnnealingLR
from .model import Sequential
from .optim import Adam, AdamW

__all__ = ["add_arguments", "run", "build_model", "build_resnet", "build_autoencoder"]

#: Per model: the default epochs and learning rate, and what trains it.
MODELS = {
    "cnn": dict(epochs=12, lr=3e-3, about="plain CNN, Adam"),
    "resnet": dict(epochs=10, lr=3e-3, about="ResNet, AdamW + cosine schedule"),
    "autoencoder": dict(epochs=15, lr=3e-3, about="conv autoencoder, Adam, MSE"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to `parser` (called by ``fastcnn demo``)."""
    parser.add_argument(
        "--data", metavar="FILE.npz", type=input_file,
        help="train on x_train (N,C,H,W) or (N,H,W) float/uint8, y_train int, x_test, y_test "
        "(default: scikit-learn's digits)",
    )  # fmt: skip
    parser.add_argument(
        "--model", choices=tuple(MODELS), default="cnn",
        help="; ".join(f"{name}: {spec['about']}" for name, spec in MODELS.items()),
    )  # fmt: skip
    parser.add_argument(
        "--epochs", type=positive_int,
        help="passes over the training set (default: "
        + ", ".join(f"{spec['epochs']} for {name}" for name, spec in MODELS.items()) + ")",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=positive_int, default=32, help="images per step")
    parser.add_argument(
        "--lr", type=positive_float,
        help=f"(peak) learning rate (default: {MODELS['cnn']['lr']:g} for every model)",
    )  # fmt: skip
    parser.add_argument("--seed", type=seed, default=0, help="seed of the split, init and shuffling")
    parser.add_argument("--backend", choices=BACKENDS, help="kernel set (default: the active one)")
    parser.add_argument(
        "--threads", type=thread_count, default="all", metavar="N",
        help=f"threads of the compiled kernels: {THREADS_HELP}",
    )  # fmt: skip
    parser.add_argument(
        "--plot", metavar="FILE.png", type=plot_file,
        help="save loss/accuracy curves (autoencoder: inputs beside their reconstructions), "
        "in the format of the suffix (default: no plot)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bars, only the result")


class _DemoError(Exception):
    """A problem to report in one line, without a traceback, and the exit status it gets.

    2 (the default): bad data or a missing dependency, the run could not
    start; 1: the run failed on the way.
    """

    def __init__(self, message: str, status: int = 2):
        super().__init__(message)
        self.status = status


_DISTRIBUTIONS = {"sklearn": "scikit-learn"}


def _require(module: str, purpose: str):
    """Import an optional dependency, or explain how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        raise _DemoError(
            f"{purpose} needs {_DISTRIBUTIONS.get(top, top)}, which is not installed: "
            'pip install "fastcnn[demo]"'
        ) from exc


def _as_images(x, name: str) -> np.ndarray:
    """``(N, C, H, W)`` float32 from float or uint8 (scaled to [0, 1]) ``(N, [C,] H, W)``."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4 or min(x.shape[:2]) < 1 or min(x.shape[2:]) < 4:
        raise _DemoError(
            f"{name} must be (N, C, H, W) or (N, H, W) with N, C >= 1 and H, W >= 4, got {x.shape}"
        )
    if x.dtype == np.uint8:
        return x.astype(np.float32) / 255
    if x.dtype.kind != "f":
        raise _DemoError(f"{name} must be float or uint8, got dtype {x.dtype}")
    if not np.isfinite(x).all():
        raise _DemoError(f"{name} holds NaN or infinite values")
    return x.astype(np.float32)


def _as_labels(y, n: int, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype.kind not in "iu" or y.shape != (n,) or y.min() < 0:
        raise _DemoError(f"{name} must be {n} non-negative integer labels, got {y.dtype} {y.shape}")
    return y.astype(np.int64)


def _load_data(args):
    """``(x_train, y_train, x_test, y_test)`` from ``--data`` or the digits."""
    if args.data:
        try:
            archive = np.load(args.data, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise _DemoError(f"cannot read --data {args.data!r}: {exc}") from exc
        keys = ("x_train", "y_train", "x_test", "y_test")
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise _DemoError(f"--data must be an .npz archive with {', '.join(keys)}")
        with archive:
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise _DemoError(f"--data {args.data!r} lacks {', '.join(missing)}")
            x_train = _as_images(archive["x_train"], "x_train")
            x_test = _as_images(archive["x_test"], "x_test")
            y_train = _as_labels(archive["y_train"], len(x_train), "y_train")
            y_test = _as_labels(archive["y_test"], len(x_test), "y_test")
        if x_train.shape[1:] != x_test.shape[1:]:
            raise _DemoError(
                f"x_train and x_test images differ: {x_train.shape} and {x_test.shape}"
            )
        return x_train, y_train, x_test, y_test
    datasets = _require("sklearn.datasets", "the digits data set")
    model_selection = _require("sklearn.model_selection", "the digits data set")
    digits = datasets.load_digits()
    # Pixels are 0..16.
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    x_train, x_test, y_train, y_test = model_selection.train_test_split(
        x, digits.target, test_size=0.2, stratify=digits.target, random_state=args.seed
    )
    return x_train, y_train, x_test, y_test


def build_model(in_channels: int, image_size: tuple[int, int], n_classes: int, rng) -> Sequential:
    """The demo's CNN: (Conv 3x3 - BatchNorm - ReLU - MaxPool 2) x 2, then Dense.

    Parameters
    ----------
    in_channels : int
    image_size : (int, int)
        ``(H, W)`` of the input, at least 4x4.
    n_classes : int
    rng : numpy.random.Generator or int
        Source of the initial weights.

    Returns
    -------
    Sequential
        Maps ``(N, in_channels, H, W)`` float32 to ``(N, n_classes)`` logits.
    """
    rng = np.random.default_rng(rng)
    features = [
        Conv2D(in_channels, 16, 3, padding=1, rng=rng),
        BatchNorm2D(16),
        ReLU(),
        MaxPool2D(2),
        Conv2D(16, 32, 3, padding=1, rng=rng),
        BatchNorm2D(32),
        ReLU(),
        MaxPool2D(2),
        Flatten(),
    ]
    shape = (1, in_channels, *image_size)
    for layer in features:
        shape = layer.output_shape(shape)
    return Sequential([*features, Dense(shape[1], n_classes, rng=rng)])


def _basic_block(in_channels: int, out_channels: int, stride: int, rng) -> Sequential:
    """ResNet's basic block: two 3x3 convolutions with BatchNorm around a skip
    connection (a strided 1x1 convolution where the shape changes), then ReLU."""
    body = Sequential([
        Conv2D(in_channels, out_channels, 3, stride, padding=1, bias=False, rng=rng),
        BatchNorm2D(out_channels),
        ReLU(),
        Conv2D(out_channels, out_channels, 3, padding=1, bias=False, rng=rng),
        BatchNorm2D(out_channels),
    ])  # fmt: skip
    shortcut = None
    if stride != 1 or in_channels != out_channels:
        shortcut = Sequential([
            Conv2D(in_channels, out_channels, 1, stride, bias=False, rng=rng),
            BatchNorm2D(out_channels),
        ])  # fmt: skip
    return Sequential([Residual(body, shortcut), ReLU()])


def build_resnet(in_channels: int, n_classes: int, rng, widths=(16, 32, 64)) -> Sequential:
    """A small ResNet: a 3x3 stem, one basic block per stage (the later stages halve
    the image with stride 2), global average pooling and a Dense classifier.

    Parameters
    ----------
    in_channels, n_classes : int
    rng : numpy.random.Generator or int
    widths : tuple of int
        Channels of each stage.

    Returns
    -------
    Sequential
        Maps ``(N, in_channels, H, W)`` float32 to ``(N, n_classes)`` logits,
        for any H, W.
    """
    rng = np.random.default_rng(rng)
    layers = [Conv2D(in_channels, widths[0], 3, padding=1, bias=False, rng=rng),
              BatchNorm2D(widths[0]), ReLU()]
    for i, width in enumerate(widths):
        layers.append(_basic_block(widths[max(i - 1, 0)], width, 1 if i == 0 else 2, rng))
    return Sequential([*layers, GlobalAvgPool2D(), Dense(widths[-1], n_classes, rng=rng)])


def build_autoencoder(in_channels: int, rng) -> Sequential:
    """A convolutional autoencoder: two (Conv 3x3 - ReLU - MaxPool 2) stages down to a
    quarter of the size, two stride-2 transposed convolutions back up, and a sigmoid.

    Parameters
    ----------
    in_channels : int
    rng : numpy.random.Generator or int

    Returns
    -------
    Sequential
        Maps ``(N, in_channels, H, W)`` with H, W divisible by 4 to the same
        shape, values in (0, 1).
    """
    rng = np.random.default_rng(rng)
    return Sequential([
        Conv2D(in_channels, 16, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
        Conv2D(16, 32, 3, padding=1, rng=rng), ReLU(), MaxPool2D(2),
        ConvTranspose2D(32, 16, 2, stride=2, rng=rng), ReLU(),
        ConvTranspose2D(16, in_channels, 2, stride=2, rng=rng), Sigmoid(),
    ])  # fmt: skip


def _accuracy(model: Sequential, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    correct = 0
    for start in range(0, len(x), batch_size):
        logits = model.forward(x[start : start + batch_size], training=False)
        correct += int(np.sum(logits.argmax(axis=1) == y[start : start + batch_size]))
    return correct / len(x)


def _train(model, data, args, tqdm) -> dict:
    """Train with Adam; return per-epoch history (loss, train/test accuracy, seconds).

    Raises
    ------
    _DemoError
        With status 1, as soon as the loss of a step is NaN or infinite.
    """
    x_train, y_train, x_test, y_test = data
    scheduler = None
    if args.model == "resnet":
        optimizer = AdamW(model, lr=args.lr, weight_decay=5e-4)
        # Annealed per step, to zero at the last one.
        steps = args.epochs * -(-len(x_train) // args.batch_size)
        scheduler = CosineAnnealingLR(optimizer, T_max=steps)
    else:
        optimizer = Adam(model, lr=args.lr)
    rng = np.random.default_rng(args.seed)
    if args.model == "autoencoder":
        history = {"loss": [], "test_loss": [], "seconds": []}
        postfix = ("loss", "test_loss")
    else:
        history = {"loss": [], "train_acc": [], "test_acc": [], "seconds": []}
        postfix = ("loss", "train_acc", "test_acc")
    for epoch in range(args.epochs):
        order = rng.permutation(len(x_train))
        with tqdm(
            total=len(x_train),
            desc=f"epoch {epoch + 1}/{args.epochs}",
            unit="img",
            disable=args.quiet,
            file=sys.stderr,
        ) as bar:
            _train_epoch(model, (optimizer, scheduler), data, order, args, bar, history)
            bar.set_postfix(**{
                key.replace("train_", ""): (f"{history[key][-1]:.4f}" if "loss" in key
                                            else f"{history[key][-1]:.2%}")
                for key in postfix
            })  # fmt: skip
    return history


def _train_epoch(model, optimizers, data, order, args, bar, history) -> None:
    """One pass over the training set in the order `order`; appends to `history`.

    `optimizers` is ``(optimizer, scheduler or None)``; the scheduler steps
    after every batch. The autoencoder learns to reproduce its input (MSE).
    """
    optimizer, scheduler = optimizers
    x_train, y_train, x_test, y_test = data
    reconstruct = args.model == "autoencoder"
    epoch = len(history["loss"]) + 1
    steps = -(-len(order) // args.batch_size)
    total_loss = correct = seen = 0
    start = time.perf_counter()
    # Overflow shows up as a non-finite loss, checked at every step below with
    # a message that says where and what to do; NumPy's warnings would only
    # repeat it, in the middle of the progress bar.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for step, begin in enumerate(range(0, len(order), args.batch_size), 1):
            batch = order[begin : begin + args.batch_size]
            logits = model.forward(x_train[batch])
            if reconstruct:
                loss, dlogits = mse(logits, x_train[batch])
            else:
                loss, dlogits = softmax_cross_entropy(logits, y_train[batch])
            if not math.isfinite(loss):
                raise _DemoError(
                    f"training diverged: the loss is {loss} at epoch {epoch}, step {step} of "
                    f"{steps}; try a lower --lr (this run used --lr {args.lr:g})",
                    status=1,
                )
            model.backward(dlogits, input_grad=False)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total_loss += loss * len(batch)
            seen += len(batch)
            bar.update(len(batch))
            # tqdm redraws at most every 0.1 s; a forced redraw per batch would
            # cost more than a step of the small default network.
            if reconstruct:
                bar.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)
            else:
                correct += int(np.sum(logits.argmax(axis=1) == y_train[batch]))
                bar.set_postfix(
                    loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.2%}", refresh=False
                )
        history["seconds"].append(time.perf_counter() - start)
        history["loss"].append(total_loss / seen)
        if reconstruct:
            history["test_loss"].append(mse(model.predict(x_test), x_test)[0])
        else:
            history["train_acc"].append(correct / seen)
            history["test_acc"].append(_accuracy(model, x_test, y_test, 256))


def _plot(history: dict, path: str) -> None:
    figure_module = _require("matplotlib.figure", "--plot")
    fig = figure_module.Figure(figsize=(9, 3.5), layout="constrained")
    epochs = np.arange(1, len(history["loss"]) + 1)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, history["loss"], marker="o")
    ax_loss.set(xlabel="epoch", ylabel="training loss", yscale="log", title="Loss")
    ax_acc.plot(epochs, history["train_acc"], marker="o", label="train")
    ax_acc.plot(epochs, history["test_acc"], marker="o", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy")
    ax_acc.legend()
    fig.savefig(path, dpi=120)


def _plot_reconstructions(model, x_test: np.ndarray, path: str, count: int = 16) -> None:
    """Save `count` test images, each beside its reconstruction (first channel)."""
    figure_module = _require("matplotlib.figure", "--plot")
    images = x_test[:count]
    recon = model.predict(images)
    cols = 4  # pairs per row
    rows = -(-len(images) // cols)
    fig = figure_module.Figure(figsize=(2.2 * cols, 1.2 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, 2 * cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, (image, out) in enumerate(zip(images, recon)):
        left, right = axes[i // cols, 2 * (i % cols)], axes[i // cols, 2 * (i % cols) + 1]
        left.imshow(image[0], cmap="gray", vmin=0, vmax=1)
        right.imshow(out[0], cmap="gray", vmin=0, vmax=1)
        if i < cols:
            left.set_title("input", fontsize=9)
            right.set_title("output", fontsize=9)
    fig.savefig(path, dpi=120)


def run(args) -> int:
    """Train and evaluate the demo CNN as `args` (from :func:`add_arguments`) asks.

    The option values were checked by their argparse types; the thread
    count and backend are restored afterwards.

    Returns
    -------
    int
        0 on success; 2 if a dependency is missing or the data are invalid;
        1 if the training loss became NaN or infinite or the plot could not
        be written (the reason is printed to stderr).
    """
    defaults = MODELS[args.model]
    args = argparse.Namespace(**{
        **vars(args),
        "epochs": args.epochs or defaults["epochs"],
        "lr": args.lr or defaults["lr"],
    })  # fmt: skip
    try:
        tqdm = _require("tqdm", "the progress bar").tqdm
        data = _load_data(args)
        with contextlib.ExitStack() as stack:
            stack.enter_context(use_num_threads(args.threads))
            if args.backend:
                try:
                    stack.enter_context(use_backend(args.backend))
                except ImportError as exc:
                    raise _DemoError(f"--backend {args.backend}: {exc}") from exc
            x_train, y_train, x_test, y_test = data
            n_classes = int(max(y_train.max(), y_test.max())) + 1
            if args.model == "resnet":
                model = build_resnet(x_train.shape[1], n_classes, args.seed)
            elif args.model == "autoencoder":
                if x_train.shape[2] % 4 or x_train.shape[3] % 4:
                    raise _DemoError(
                        "--model autoencoder needs images whose height and width are "
                        f"multiples of 4, got {x_train.shape[2:]}"
                    )
                model = build_autoencoder(x_train.shape[1], args.seed)
            else:
                model = build_model(x_train.shape[1], x_train.shape[2:], n_classes, args.seed)
            history = _train(model, data, args, tqdm)
            backend_name, threads = get_backend(), get_num_threads()
        if args.plot:
            try:
                if args.model == "autoencoder":
                    _plot_reconstructions(model, x_test, args.plot)
                else:
                    _plot(history, args.plot)
            except OSError as exc:
                raise _DemoError(f"cannot write --plot {args.plot!r}: {exc}", status=1) from exc
    except _DemoError as exc:
        print(f"fastcnn demo: error: {exc}", file=sys.stderr)
        return exc.status
    per_epoch = float(np.mean(history["seconds"]))
    if args.model == "autoencoder":
        result = (f"test reconstruction MSE: {history['test_loss'][-1]:.5f} "
                  f"(after the first epoch: {history['test_loss'][0]:.5f})")
    else:
        test_acc = history["test_acc"][-1]
        result = f"test accuracy: {test_acc:.2%} ({round(test_acc * len(y_test))}/{len(y_test)})"
    print(
        f"{result} after {args.epochs} epoch{'s' if args.epochs != 1 else ''}; "
        f"{per_epoch:.2f} s per epoch on {len(x_train)} images "
        f"(backend {backend_name}, "
        f"{threads} thread{'s' if threads != 1 else ''})"
    )
    if args.plot:
        saved = "reconstructions" if args.model == "autoencoder" else "curves"
        print(f"{saved} saved to {args.plot}")
    return 0

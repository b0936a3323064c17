"""The public names of DESIGN.md are where the contract puts them; the command line's
shared options, help, version and ``fastcnn info``."""

import importlib
import os
import re

import pytest

import fastcnn
from fastcnn import _backend

FUNCTIONAL = ["im2col", "col2im", "conv2d", "conv2d_backward", "max_pool2d",
              "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward"]
LAYERS = ["Conv2D", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "Dense", "Flatten", "ReLU",
          "LeakyReLU", "Sigmoid", "Tanh", "ELU", "SELU", "Softplus", "Softmax", "BatchNorm1D",
          "BatchNorm2D", "Dropout"]
ELSEWHERE = {
    "fastcnn": ["Sequential", "get_backend", "set_backend", "use_backend", "get_num_threads",
                "set_num_threads", "show_config", "reference"],
    "fastcnn.losses": ["softmax_cross_entropy", "mse"],
    "fastcnn.optim": ["SGD", "Adagrad", "Adadelta", "RMSprop", "Adam"],
    "fastcnn.gradcheck": ["gradcheck"],
    "fastcnn.compat.cs231n": [
        f"{op}_{kind}" for op in ("conv_forward", "conv_backward", "max_pool_forward",
                                  "max_pool_backward") for kind in ("fast", "naive")
    ] + ["conv_forward_im2col", "max_pool_forward_reshape", "conv_relu_pool_forward",
         "conv_relu_pool_backward", "conv_relu_forward", "conv_relu_backward",
         "get_im2col_indices", "im2col_indices", "col2im_indices", "im2col_cython",
         "col2im_cython", "col2im_6d_cython"],
    "fastcnn.compat.hipsternet": [
        f"{layer}_{way}" for layer in ("conv", "maxpool", "avgpool", "fc", "relu", "lrelu",
                                       "sigmoid", "tanh", "dropout", "bn")
        for way in ("forward", "backward")
    ] + ["get_im2col_indices", "im2col_indices", "col2im_indices"],
    "fastcnn.compat.mlfromscratch": ["determine_padding", "get_im2col_indices", "image_to_column",
                                     "column_to_image", "Conv2D", "MaxPooling2D",
                                     "AveragePooling2D"],
    "fastcnn.reference": ["im2col", "col2im", "max_pool2d", "max_pool2d_backward",
                          "avg_pool2d", "avg_pool2d_backward"],
}


@pytest.mark.parametrize("name", FUNCTIONAL)
def test_functional_ops_are_reexported(name):
    assert getattr(fastcnn, name) is getattr(fastcnn.functional, name)


@pytest.mark.parametrize("name", LAYERS)
def test_layers_are_reexported(name):
    assert getattr(fastcnn, name) is getattr(fastcnn.layers, name)


@pytest.mark.parametrize("module, name", [(m, n) for m, names in ELSEWHERE.items() for n in names])
def test_other_public_names(module, name):
    assert callable(getattr(importlib.import_module(module), name)) or module == "fastcnn"
    assert hasattr(importlib.import_module(module), name)


def test_all_lists_only_what_exists():
    for name in fastcnn.__all__:
        assert hasattr(fastcnn, name), name
    assert set(FUNCTIONAL + LAYERS + ["Sequential"]) <= set(fastcnn.__all__)


# The command line (``fastcnn ...``): options shared by its commands, help, version, info.


def _command_line(argv, capsys) -> tuple[int, str, str]:
    """``fastcnn ARGV`` in this process: (exit status, stdout, stderr)."""
    from fastcnn.cli import main

    try:
        status = main(argv)
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def test_version(capsys):
    assert _command_line(["--version"], capsys) == (0, f"fastcnn {fastcnn.__version__}\n", "")


def _option_blocks(help_text: str) -> dict[str, str]:
    """``{"--name": "its help, on one line"}`` for the options of `help_text` that take a value."""
    blocks, current = {}, None
    for line in help_text.splitlines():
        match = re.match(r"  (?:-\w, )?(--[\w-]+)(?: ([A-Z{]\S*))?", line)
        if match:
            current = match.group(1) if match.group(2) else None
            if current:
                blocks[current] = line
        elif current and line.startswith("    "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return blocks


@pytest.mark.parametrize("command, options", [
    ("bench", {"--kernels", "--shapes", "--dtypes", "--threads", "--impls", "--repeats", "--budget",
               "--json", "--plot"}),
    ("demo", {"--data", "--model", "--epochs", "--batch-size", "--lr", "--seed", "--backend",
              "--threads", "--plot"}),
])  # fmt: skip
def test_every_help_shows_the_defaults(capsys, command, options):
    status, out, _ = _command_line([command, "--help"], capsys)
    assert status == 0
    blocks = _option_blocks(out)
    assert set(blocks) == options
    for name, text in blocks.items():
        assert re.search(r"\(default: [^)]+\)$", text), text


@pytest.mark.parametrize("command", ["bench", "demo"])
@pytest.mark.parametrize("value", ["0", "-2", "9999", str(_backend.MAX_THREADS + 1), "two", ""])
def test_threads_is_checked_alike_in_every_command(capsys, command, value):
    status, out, err = _command_line([command, "--threads", value], capsys)
    assert status == 2 and out == ""
    assert re.fullmatch(
        rf"fastcnn {command}: error: argument --threads: expected (comma-separated thread counts, "
        rf"each )?a positive int up to {_backend.MAX_THREADS} or 'all', got '{value}'",
        err.splitlines()[-1],
    ), err


@pytest.mark.parametrize("command, value, parsed", [
    ("demo", "all", lambda n: n), ("demo", "1", lambda n: 1),
    ("bench", "all", lambda n: [n]), ("bench", "1,all", lambda n: sorted({1, n})),
    ("bench", "2,1,2", lambda n: [1, 2]),
])  # fmt: skip
def test_threads_all_is_the_default_thread_count(command, value, parsed):
    from fastcnn.cli import _build_parser

    argv = [command, "--threads", value]
    args = _build_parser(argv).parse_args(argv)
    assert args.threads == parsed(_backend.default_num_threads())


def _blas_owner(filepath: str) -> str | None:
    """NumPy or SciPy if their wheel shipped the library at `filepath` (in NAME/ or NAME.libs/)."""
    import numpy
    import scipy

    for label, module in (("NumPy", numpy), ("SciPy", scipy)):
        root = os.path.dirname(module.__file__)
        if filepath.startswith((root + os.sep, root + ".libs" + os.sep)):
            return label
    return None


def test_info_labels_each_blas_names_the_compiler_and_states_the_thread_policy(capsys):
    from threadpoolctl import threadpool_info

    with _backend.use_num_threads(1):
        status, out, _ = _command_line(["info"], capsys)
    assert status == 0
    lines = out.splitlines()
    blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
    owners = {p["filepath"]: _blas_owner(p["filepath"]) for p in blas}
    if not any(owners.values()):
        pytest.skip("NumPy's and SciPy's BLAS are not bundled with them here (a shared BLAS)")
    for path, owner in owners.items():
        (line,) = [line for line in lines if line.endswith(" " + path)]
        assert line.startswith("blas         " + (f"{owner}'s " if owner else ""))
        assert owner or not re.match(r"blas +(NumPy|SciPy)'s", line)
    build = _backend.build_info()
    kernels = next(line for line in lines if line.startswith("kernels "))
    if build["compiled"]:
        # GCC's __VERSION__ is the bare version number; other compilers name themselves.
        name = f"GCC {build['compiler']}" if build["compiler"][:1].isdigit() else build["compiler"]
        assert kernels.startswith(f"kernels      compiled by {name}, OpenMP ")
    threads = " ".join(out[out.index("threads "):out.index("\nnumpy ")].split())
    if build.get("openmp"):
        assert threads == (
            "threads 1: compiled kernels run 1 OpenMP thread (fastcnn.set_num_threads); the BLAS they "
            "call (SciPy's) runs one thread inside them; NumPy's BLAS is not changed by them (the "
            "numpy backend holds NumPy's BLAS to one thread around its GEMMs)"
        )


@pytest.mark.parametrize("build, policy", [
    (dict(compiled=True, openmp=True), "compiled kernels run 3 OpenMP threads (fastcnn.set_num_threads)"),
    (dict(compiled=True, openmp=False), "built without OpenMP, the compiled kernels run on the calling thread"),
    (dict(compiled=False), "the NumPy twins run on the calling thread"),
])  # fmt: skip
def test_thread_policy_follows_the_build(build, policy):
    from fastcnn._info import _thread_policy

    assert _thread_policy(build, 3).startswith(policy)


@pytest.mark.parametrize("version, name", [
    ("12.2.0", "GCC 12.2.0"),
    ("4.8.5 20150623 (Red Hat 4.8.5-44)", "GCC 4.8.5 20150623 (Red Hat 4.8.5-44)"),
    ("Ubuntu Clang 18.1.3 (1ubuntu1)", "Ubuntu Clang 18.1.3 (1ubuntu1)"),
    ("Apple LLVM 15.0.0 (clang-1500.3.9.4)", "Apple LLVM 15.0.0 (clang-1500.3.9.4)"),
    ("unknown", "an unknown compiler"),
])  # fmt: skip
def test_compiler_is_named(version, name):
    from fastcnn._info import _compiler_name

    assert _compiler_name(version) == name

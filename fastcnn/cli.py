"""The ``fastcnn`` command: ``info``, ``bench`` and ``demo``.

A bad option value stops a command before it starts any work, with
argparse's usage error and exit status 2 (the checks are in
:mod:`fastcnn._cli_args`); a command that fails while it runs prints one
``fastcnn COMMAND: error: ...`` line and exits with the status its ``run``
returns; none of them shows a traceback for either.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ._cli_args import HelpFormatter

# Subcommand -> (module, help). bench and demo import heavy optional
# packages, so their modules are only imported when chosen.
_COMMANDS = {
    "info": ("fastcnn._info", "show backend, build, threads, NumPy and BLAS"),
    "bench": ("fastcnn.bench", "time the kernels and layers: compiled vs NumPy vs PyTorch"),
    "demo": ("fastcnn.demo", "train a small CNN on a real image data set"),
}

#: The exit status of a run stopped by Ctrl-C, as a shell reports SIGINT.
_INTERRUPTED = 130


def _build_parser(argv) -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="fastcnn", description="Fast, correct CNN layers for NumPy.", formatter_class=HelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"fastcnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{info,bench,demo}")
    chosen = next((a for a in argv if a in _COMMANDS), None)
    for name, (module, help_text) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        if name == chosen and name != "info":
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv=None) -> int:
    """Run ``fastcnn ARGV``; return the exit status (argparse exits with 2 on a bad option)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "info":
            from ._info import show_config

            show_config()
            return 0
        return importlib.import_module(_COMMANDS[args.command][0]).run(args)
    except KeyboardInterrupt:
        print(f"fastcnn {args.command}: interrupted", file=sys.stderr)
        return _INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

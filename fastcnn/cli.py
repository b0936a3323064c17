"""The ``fastcnn`` command: ``info``, ``bench`` and ``demo``."""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand -> (module, help). bench and demo import heavy optional
# packages, so their modules are only imported when chosen.
_COMMANDS = {
    "info": ("fastcnn._info", "show backend, build, threads, NumPy and BLAS"),
    "bench": ("fastcnn.bench", "time the kernels and layers: compiled vs NumPy vs PyTorch"),
    "demo": ("fastcnn.demo", "train a small CNN on a real image data set"),
}


def _build_parser(argv) -> tuple[argparse.ArgumentParser, str | None]:
    parser = argparse.ArgumentParser(prog="fastcnn", description="Fast, correct CNN layers for NumPy.")
    sub = parser.add_subparsers(dest="command", metavar="{info,bench,demo}")
    chosen = next((a for a in argv if a in _COMMANDS), None)
    for name, (module, help_text) in _COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen and name != "info":
            importlib.import_module(module).add_arguments(p)
    return parser, chosen


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, _ = _build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "info":
        from ._info import show_config

        show_config()
        return 0
    return importlib.import_module(_COMMANDS[args.command][0]).run(args)


if __name__ == "__main__":
    sys.exit(main())

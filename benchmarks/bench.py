"""Benchmark fastcnn: the same as ``fastcnn bench`` (see benchmarks/README.md).

    python benchmarks/bench.py [--quick] [--json FILE] [--plot FILE.png] ...

Uses the installed fastcnn; if none is importable, the checkout this script
lives in (after ``python setup.py build_ext --inplace``).
"""

import argparse
import os
import sys

try:
    import fastcnn  # noqa: F401
except ImportError:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastcnn import bench  # noqa: E402
from fastcnn._cli_args import HelpFormatter  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="benchmarks/bench.py",
        description="time the kernels and layers: compiled vs NumPy vs PyTorch (= fastcnn bench)",
        formatter_class=HelpFormatter,
    )
    bench.add_arguments(parser)
    return bench.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

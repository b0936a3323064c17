#!/usr/bin/env bash
# CI: build the bounds-checked variant of the compiled kernels (FASTCNN_DEBUG=1:
# Cython boundscheck, wraparound and initializedcheck on, -O0 -g) in a fresh
# venv from a scratch copy of the repository, prove that the checks are in,
# and run the test suite against that build from outside the source tree.
# An out-of-bounds access that the optimized build would make silently is an
# IndexError here, which the suite reports as a failure.
#
#   .ci/debug-tests.sh [pytest arguments]
#
# By default the tests that reach the compiled kernels: those of memory use,
# saving, schedules, documentation, the demo's training and the benchmark
# command run no kernel path that the others miss, and take long at -O0.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS

echo "== scratch copy of $root"
mkdir "$work/src"
(cd "$root" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) | tar -C "$work/src" -xf -

echo "== fresh venv, FASTCNN_DEBUG=1 pip install .[test]"
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
FASTCNN_DEBUG=1 "$py" -m pip install --quiet --no-cache-dir "$work/src[test]"

echo "== the installed kernels are the bounds-checked build"
cd "$work"
"$py" - <<'PY'
import numpy as np
import fastcnn
from fastcnn import _backend

assert fastcnn.get_backend() == "cython", fastcnn.get_backend()
kernel, _ = _backend.pair_of("max_pool2d_backward")
dout = np.ones((1, 1, 2, 2))                       # one (n, c) plane ...
indices = np.zeros((1, 1, 2, 2), dtype=np.int64)
out = np.empty((2, 1, 3, 3))                       # ... the kernel walks two
try:
    kernel(dout, indices, out, 1)
except IndexError as exc:
    print("bounds check active:", exc)
else:
    raise SystemExit("FASTCNN_DEBUG=1 build has no bounds checks (out-of-bounds read went unnoticed)")
print("fastcnn from", fastcnn.__file__)
PY

echo "== test suite against the debug build"
cp -r "$work/src/tests" "$work/tests"
cp "$work/src/README.md" "$work/"  # tests/test_readme.py runs its examples
if [ $# -eq 0 ]; then
    set -- "$work/tests"
    for name in leaks save_load lr_scheduler docstrings readme demo bench init; do
        set -- "$@" --ignore "$work/tests/test_$name.py"
    done
fi
HYPOTHESIS_PROFILE=${HYPOTHESIS_PROFILE:-ci} "$py" -m pytest -q -p no:cacheprovider \
    -c "$work/src/pyproject.toml" --rootdir "$work" "$@"
echo "== debug build tests passed in $((SECONDS - start)) s"

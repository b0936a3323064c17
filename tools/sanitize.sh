#!/usr/bin/env bash
# Build the compiled kernels with AddressSanitizer + UndefinedBehaviorSanitizer
# in a scratch copy of the repository and run the whole test suite against them.
#
#   tools/sanitize.sh [pytest arguments]        e.g. tools/sanitize.sh -x tests/test_fuzz.py
#
# Environment:
#   PYTHON      interpreter to build the venv from (default: python3)
#   VENV        reuse this venv instead of creating one (it needs numpy, scipy,
#               threadpoolctl, Cython, setuptools and the test extra's packages)
#   SANITIZERS  default "address,undefined" (passed to setup.py as FASTCNN_SANITIZE)
#   KEEP=1      keep the scratch directory (printed at the end)
#
# How the run is set up, and why:
# * The interpreter itself is not instrumented, so the ASan runtime must be the
#   first library loaded: LD_PRELOAD="$(gcc -print-file-name=libasan.so)"
#   (followed by libstdc++, see below)
#   (the extension is linked with gcc's -fsanitize=...; for clang use
#   "$(clang -print-file-name=libclang_rt.asan-x86_64.so)").
# * ASAN_OPTIONS=detect_leaks=0: CPython does not free everything at exit, so
#   LeakSanitizer would only report the interpreter (tests/test_leaks.py covers
#   leaks). allocator_may_return_null=1 and max_allocation_size_mb=4096: a
#   request that is too big returns NULL (NumPy raises MemoryError) instead of
#   ASan aborting; the fuzzers rely on that for their huge shapes.
# * PYTHONMALLOC=malloc: Python objects come from malloc rather than pymalloc's
#   arenas, so ASan sees overruns of Python-allocated memory too.
# * FASTCNN_FUZZ_RLIMIT_GB=0: the fuzz worker must not cap its address space
#   (ASan reserves terabytes of shadow memory).
# * Reports go to stderr: pytest runs with -s and its output is kept, and the
#   fuzz worker's stderr is kept (FASTCNN_FUZZ_STDERR_DIR). (log_path is not
#   used: with gcc's separate libubsan it does not apply to UBSan reports.)
#   They are searched at the end and any report fails the run. UBSan continues
#   after a report (halt_on_error=0), so one run lists them all.
# * CPython's CFLAGS include -fwrapv, and the extension inherits them: signed
#   integer overflow wraps (defined behaviour), so UBSan cannot flag it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
SANITIZERS=${SANITIZERS:-address,undefined}
work=$(mktemp -d /tmp/fastcnn-sanitize.XXXXXX)
cleanup() { if [ "${KEEP:-0}" = 1 ]; then echo "scratch kept: $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT

echo "== scratch copy of $root (tracked and untracked files, no build products)"
mkdir "$work/src"
(cd "$root" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) | tar -C "$work/src" -xf -

if [ -n "${VENV:-}" ]; then
    py="$VENV/bin/python"
else
    echo "== venv"
    "$PYTHON" -m venv "$work/venv"
    py="$work/venv/bin/python"
    "$py" -m pip install --quiet --upgrade pip
    "$py" -m pip install --quiet --upgrade numpy scipy threadpoolctl "Cython>=3" "setuptools>=77" pytest hypothesis scikit-learn tqdm matplotlib
fi

echo "== build with -fsanitize=$SANITIZERS"
cd "$work/src"
FASTCNN_SANITIZE="$SANITIZERS" "$py" setup.py build_ext --inplace > "$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
for so in fastcnn/_kernels/*.so; do
    # not grep -q: it exits at the first match, ldd then dies of SIGPIPE, and pipefail fails the test
    ldd "$so" | grep libasan > /dev/null || { echo "$so is not linked against libasan" >&2; exit 1; }
done

mkdir "$work/reports"
# libstdc++ too: ASan intercepts __cxa_throw, and without the real one loaded
# at start-up its interceptor aborts at the first C++ exception of another
# extension (matplotlib's ft2font throws one on import).
preload="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
echo "== test suite (LD_PRELOAD=$preload)"
set +e
env LD_PRELOAD="$preload" \
    ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:max_allocation_size_mb=4096" \
    UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=0" \
    PYTHONMALLOC=malloc FASTCNN_FUZZ_RLIMIT_GB=0 FASTCNN_FUZZ_STDERR_DIR="$work/reports" \
    HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-ci}" \
    "$py" -m pytest -q -s -p no:cacheprovider "${@:-tests}" 2>&1 | tee "$work/reports/pytest.out"
status=${PIPESTATUS[0]}
set -e

echo "== sanitizer reports (from pytest's output and the fuzz workers' stderr)"
# "WARNING: AddressSanitizer failed to allocate" is the expected NULL of a huge
# request (allocator_may_return_null=1): not a finding.
pattern='ERROR: AddressSanitizer|runtime error:|AddressSanitizer: CHECK failed|ERROR: LeakSanitizer'
if grep -l -E "$pattern" "$work"/reports/* > "$work/found" 2>/dev/null; then
    while read -r f; do
        echo "--- $f"
        grep -A 12 -E "$pattern" "$f" | head -200
    done < "$work/found"
    echo "distinct reports:"
    grep -h -o -E "(ERROR: AddressSanitizer: [a-z-]+|[^ ]+:[0-9]+:[0-9]+: runtime error: [^0-9]*)" "$work"/reports/* \
        | sort | uniq -c | sort -rn
    echo "sanitizers reported problems (above)" >&2
    [ "$status" = 0 ] && status=1
else
    echo "none"
fi
echo "pytest/sanitize status: $status"
exit "$status"

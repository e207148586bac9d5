#!/usr/bin/env bash
# Run aioev's tests against an AddressSanitizer build of the extension.
#
#   bash scripts/asan.sh [PYTEST ARGS...]
#
# Builds aioev (AIOEV_DEBUG=1 AIOEV_ASAN=1: -O0 -g3, asserts on,
# -fsanitize=address) in a scratch copy of the work tree, so nothing lands
# in the source tree, then runs there with libasan preloaded (CPython is
# not ASan-built) and PYTHONMALLOC=malloc (so ASan sees Python's objects):
#
#   1. the pytest suite (tests/, without its CPython-runner wrapper);
#   2. the CPython test_asyncio runner (tests/cpython/run.py); its child
#      processes inherit the same environment.
#
# Leak detection is off (the interpreter itself "leaks" at exit). An ASan
# report aborts the process that hit it; reports are printed after each
# stage, and any report fails the run.
# Knobs (environment):
#   PYTHON=python3           interpreter to build and test with
#   AIOEV_ASAN_KEEP=1        keep the scratch copy (its path is printed)
#   AIOEV_ASAN_SKIP_CPYTHON=1  skip stage 2
#   ASAN_OPTIONS=...         added to the defaults below
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PY=${PYTHON:-python3}

LIBASAN=$(gcc -print-file-name=libasan.so 2>/dev/null)
if [ -z "$LIBASAN" ] || [ ! -e "$LIBASAN" ]; then
    echo "error: libasan.so not found (gcc -print-file-name=libasan.so)" >&2
    exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/aioev-asan.XXXXXX")
if [ -z "${AIOEV_ASAN_KEEP:-}" ]; then
    trap 'rm -rf "$WORK"' EXIT
else
    echo "scratch copy kept in $WORK"
fi

# The work tree as it is (tracked and untracked files, not ignored ones).
git -C "$ROOT" ls-files -z -co --exclude-standard |
    tar -C "$ROOT" --null -T - -cf - | tar -C "$WORK" -xf - || exit 2
# no prebuilt extension from the source tree may shadow the ASan build
rm -f "$WORK"/aioev/_core.*.so

echo "==> building aioev with AddressSanitizer ($("$PY" -V 2>&1))"
(cd "$WORK" && AIOEV_DEBUG=1 AIOEV_ASAN=1 "$PY" -W ignore setup.py -q \
    build_ext --inplace) || { echo "error: build failed" >&2; exit 2; }

export LD_PRELOAD="$LIBASAN${LD_PRELOAD:+:$LD_PRELOAD}"
# Reports go to files (the CPython runner keeps only the tail of a child's
# output), shown after each stage.
mkdir -p "$WORK/asan-logs"
export ASAN_OPTIONS="detect_leaks=0:print_legend=0:log_path=$WORK/asan-logs/asan${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export PYTHONMALLOC=malloc
# The scratch copy's aioev first, ahead of any installed (editable) one;
# the CPython runner's children inherit it.
export PYTHONPATH="$WORK${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
export PYTHONUNBUFFERED=1
unset PYTHONASYNCIODEBUG

# show_reports: print the ASan reports written since the last call.
NREPORTS=0
show_reports() {
    local f
    for f in "$WORK"/asan-logs/asan.*; do
        case $f in *.seen) continue ;; esac
        [ -e "$f" ] || continue
        echo "---- ASan report ($(basename "$f")) ----"
        cat "$f"
        mv "$f" "$f.seen"
        NREPORTS=$((NREPORTS + 1))
    done
}

rc=0
echo "==> pytest under ASan"
(cd "$WORK" && AIOEV_SKIP_CPYTHON_SUITE=1 "$PY" -m pytest -q tests \
    -p no:cacheprovider "$@") || rc=1
show_reports

if [ -z "${AIOEV_ASAN_SKIP_CPYTHON:-}" ]; then
    echo "==> CPython test_asyncio runner under ASan"
    (cd "$WORK" && "$PY" tests/cpython/run.py --network) || rc=1
    show_reports
fi

[ "$NREPORTS" = 0 ] || rc=1
if [ "$rc" = 0 ]; then
    echo "ASan run: OK"
else
    echo "ASan run: FAILED"
fi
exit "$rc"

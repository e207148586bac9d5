#!/bin/sh
# Flat perf profile of one micro-benchmark on one loop.
#
#   sh benchmarks/profile.sh BENCH [LOOP] [N]
#   sh benchmarks/profile.sh sleep0 aioev
#   sh benchmarks/profile.sh queue uvloop 100000
#
# BENCH is a name from `python benchmarks/micro.py --list`; LOOP is asyncio,
# uvloop or aioev (default aioev). Prints the top symbols by self time
# (C level: libpython, the extension, libev, kernel). Needs perf (Debian:
# linux-perf) and permission to use it (root, or perf_event_paranoid <= 1).
set -e
BENCH=${1:?usage: profile.sh BENCH [LOOP] [N]}
LOOP=${2:-aioev}
N=${3:-}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
OUT=${TMPDIR:-/tmp}/aioev-perf-$BENCH-$LOOP.data
if [ -z "$N" ]; then
    N=$("$PY" -c "import sys; sys.path.insert(0, '$HERE'); import micro; print(micro.BENCHES['$BENCH'][1] * 2)")
fi
perf record -q -F 2999 -o "$OUT" "$PY" "$HERE/micro.py" --worker "$BENCH" "$LOOP" --n "$N" --inner 3
perf report -i "$OUT" --no-children --sort dso,symbol -g none --percent-limit 0.7 --stdio 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -${TOP:-40}
echo "(perf data: $OUT)"

#!/usr/bin/env bash
# Set up and run aioev's whole test suite; this is what CI runs (.ci/run).
#
#   bash scripts/test.sh
#
# On a fresh Debian machine (root, or sudo) it first installs what is
# missing: libev-dev, a C compiler, the default python3's headers and venv
# support, and python3-dbg (Debian's debug CPython) for the leak check.
# Then, each stage timed and reported at the end:
#
#   1. default python3: virtualenv .venv, `pip install -e .`, the pytest
#      suite (tests/) and the CPython test_asyncio runner
#      (tests/cpython/run.py);
#   2. every other CPython 3.10+ that pyenv knows (one per X.Y, not the
#      default's X.Y, not free-threaded): virtualenv .venv-X.Y, build aioev
#      there, the CPython runner, and the pytest suite;
#   3. the reference-leak check (tests/leakcheck/refleak.py) under
#      python3-dbg, with aioev built for it (AIOEV_DEBUG=1) in .venv-dbg/.
#
# It exits non-zero if any stage fails; pytest collecting no test (exit 5)
# is a failure.  Knobs (environment):
#   PYTHON=python3            the default interpreter
#   AIOEV_EXTRA_PYTHONS=...   interpreters for stage 2 instead of pyenv's
#                             (space-separated paths; "none" skips stage 2)
#   AIOEV_EXTRA_PYTEST=0      stage 2 runs only the CPython runner
#   AIOEV_SKIP_REFLEAK=1      skip stage 3 (reported as SKIP)
#   AIOEV_DEBUG_PYTHON=...    debug interpreter for stage 3 (python3-dbg)
#   AIOEV_TEST_BUDGET=570     seconds for the whole run; a stage gets at most
#                             what is left, and optional stages are skipped
#                             once less than AIOEV_TEST_RESERVE=150 is left
# Extra arguments are passed to every pytest run (e.g. -x, -k name).
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
. scripts/_common.sh

PY=${PYTHON:-python3}
DBG_PY=${AIOEV_DEBUG_PYTHON:-python3-dbg}
BUDGET=${AIOEV_TEST_BUDGET:-570}
RESERVE=${AIOEV_TEST_RESERVE:-150}
EXTRA_PYTEST=${AIOEV_EXTRA_PYTEST:-1}
PYTEST_ARGS=("$@")
T_START=$(now)
LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/aioev-test.XXXXXX")
trap 'rm -rf "$LOGDIR"' EXIT

# Python's own output unbuffered, so the CI log interleaves correctly.
export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1
export PIP_DISABLE_PIP_VERSION_CHECK=1
unset PYTHONASYNCIODEBUG

# ------------------------------------------------------------------ stages

S_NAME=(); S_STATUS=(); S_SECS=(); S_NOTE=()

record() {  # record NAME STATUS SECONDS NOTE
    S_NAME+=("$1"); S_STATUS+=("$2"); S_SECS+=("$3"); S_NOTE+=("$4")
    local colour=$_G
    [ "$2" = FAIL ] && colour=$_R
    [ "$2" = SKIP ] && colour=$_Y
    printf '%s--- %s: %s (%ss)%s%s\n' "$colour" "$1" "$2" "$3" \
        "${4:+ - $4}" "$_N"
}

elapsed() { echo $(( $(now) - T_START )); }

# stage NAME LIMIT KIND CMD...: run CMD with a time limit of LIMIT seconds
# (cut to what is left of the budget) and record the outcome.  KIND is
# "pytest" (exit 5, no tests, is a failure) or "cmd".
stage() {
    local name=$1 limit=$2 kind=$3; shift 3
    local left=$(( BUDGET - $(elapsed) ))
    if [ "$left" -lt 15 ]; then
        record "$name" FAIL 0 "not run: the ${BUDGET}s budget is spent"
        return 1
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    printf '\n%s==> [%s] %s%s (limit %ss)\n' "$_B" \
        "$(date +%H:%M:%S)" "$name" "$_N" "$limit"
    local t0 rc note=
    t0=$(now)
    # The stage runs in a fresh bash (functions exported below), in the
    # process group of timeout(1), which ends all of it on a time-out.
    local log=$LOGDIR/stage.log
    timeout -k 10 "$limit" bash -c '. scripts/_common.sh; "$@"' _ "$@" \
        </dev/null 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    local secs=$(( $(now) - t0 )) counts
    counts=$(summary_of "$log")
    if [ "$rc" = 0 ]; then
        record "$name" PASS "$secs" "$counts"
        return 0
    fi
    case $rc in
        124|137) note="timed out after ${limit}s" ;;
        *) note="exit $rc" ;;
    esac
    if [ "$kind" = pytest ] && [ "$rc" = 5 ]; then
        note="exit 5: pytest collected no tests"
    fi
    record "$name" FAIL "$secs" "$note${counts:+; $counts}"
    return 1
}

# summary_of LOG: the one-line result a stage printed, for the summary:
# pytest's closing line, the CPython runner's SUMMARY, refleak's growth.
summary_of() {
    local line
    line=$(grep -E '^SUMMARY \[' "$1" | tail -n 1)
    if [ -n "$line" ]; then
        echo "${line#*]: }"
        return
    fi
    line=$(grep -E 'growth over [0-9]+ measured rounds' "$1" | tail -n 1)
    if [ -n "$line" ]; then
        echo "${line#*growth over }"
        return
    fi
    grep -E '^=* *[0-9]+ (passed|failed|errors?|skipped|deselected)' "$1" |
        tail -n 1 | sed -E 's/^=+ *//; s/ *=+$//'
}

# optional NAME: true when there is time for an optional stage; otherwise
# records it as skipped.
optional() {
    local left=$(( BUDGET - $(elapsed) ))
    if [ "$left" -lt "$RESERVE" ]; then
        record "$1" SKIP 0 "only ${left}s of the budget left"
        return 1
    fi
    return 0
}

# build_in_venv PYTHON VENV: create (or reuse) VENV, install the build
# tools, pytest and aiohttp (tests/test_aiohttp.py), then aioev, editable:
# each interpreter's extension lands in aioev/ under its own tag
# (_core.cpython-312-x86_64-linux-gnu.so, ...).
build_in_venv() {
    make_venv "$1" "$2" || return 1
    # (pip's notes about this machine's extra local indexes are noise.)
    bash -c 'set -e
        "$1/bin/python" -m pip install -q "setuptools>=64" wheel pytest \
            aiohttp
        "$1/bin/python" -m pip install -q --no-build-isolation -e .
        "$1/bin/python" -c "import aioev, aioev._core as c, sys
print(\"built\", c.__file__, \"for\", sys.version.split()[0])"' _ "$2" \
        2> >(grep -v "is ignored: it is neither a file nor a dir" >&2)
}

# run_pytest VENV [PYTEST ARGS]: the pytest suite, without its wrapper of
# the CPython runner (tests/test_cpython_suite.py): that runs as a stage of
# its own (run_cpython_tests), timed apart and not twice.
run_pytest() {
    local venv=$1; shift
    AIOEV_SKIP_CPYTHON_SUITE=1 AIOEV_REQUIRE_AIOHTTP=1 \
        "$venv/bin/python" -m pytest -q "$@"
}

run_cpython_tests() {  # run_cpython_tests VENV
    if [ ! -f tests/cpython/run.py ]; then
        echo "tests/cpython/run.py is missing" >&2
        return 1
    fi
    "$1/bin/python" tests/cpython/run.py --network
}

# build_debug: aioev for the debug interpreter, in .venv-dbg/site (no
# editable install: nothing of it lands in the source tree).
build_debug() {
    local py=$DBG_PY
    if ! "$py" -c 'import setuptools, sys
sys.exit(int(setuptools.__version__.split(".")[0]) < 61)' 2>/dev/null; then
        # No (recent enough) setuptools: bring one into a venv of its own.
        make_venv "$DBG_PY" .venv-dbg || return 1
        .venv-dbg/bin/python -m pip install -q "setuptools>=64" wheel \
            2> >(grep -v "is ignored: it is neither a file nor a dir" >&2) ||
            return 1
        py=.venv-dbg/bin/python
    fi
    mkdir -p .venv-dbg
    AIOEV_DEBUG=1 "$py" -W ignore setup.py -q build \
        --build-base .venv-dbg/build --build-lib .venv-dbg/site || return 1
    # (from .venv-dbg: the source tree's aioev/ must not shadow the build)
    (cd .venv-dbg && PYTHONPATH=site "$DBG_PY" -c 'import aioev._core as c, sys
print("built", c.__file__, "for", sys.version.split()[0], "(debug)")')
}

run_refleak() {
    PYTHONPATH=$ROOT/.venv-dbg/site "$DBG_PY" tests/leakcheck/refleak.py \
        --require-debug
}

# CPython's suite on the debug interpreter: its refcount tests run there,
# and CPython's own asserts watch our reference and GC handling. Run from
# .venv-dbg so the source tree's release build cannot shadow the debug one.
run_cpython_dbg() {
    (cd "$ROOT/.venv-dbg" && PYTHONPATH=$ROOT/.venv-dbg/site "$DBG_PY" \
        "$ROOT/tests/cpython/run.py" --network)
}

export ROOT DBG_PY
export -f build_in_venv run_pytest run_cpython_tests build_debug run_refleak \
    run_cpython_dbg

# ------------------------------------------------------------------- setup

say "aioev test run in $ROOT ($(date -u '+%Y-%m-%d %H:%M:%S UTC'), \
$(nproc 2>/dev/null || echo '?') cores, CI=${CI:-})"

command -v "$PY" >/dev/null 2>&1 || apt_install python3 python3-venv \
    python3-dev
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "aioev needs Python 3.10+; $PY is $("$PY" -V 2>&1)"
ensure_build_deps "$PY"
# The CPython runner needs the interpreter's own test package; Debian's
# python3 ships it apart, as libpython3.X-testsuite.
if ! "$PY" -c 'import test.test_asyncio' 2>/dev/null; then
    case $("$PY" -c 'import sys; print(sys.prefix)') in
        /usr) apt_install "lib$(_debian_pkg_for "$PY" testsuite)" ;;
        *) warn "$PY has no test.test_asyncio: the CPython runner will fail" ;;
    esac
fi
if [ -z "${AIOEV_SKIP_REFLEAK:-}" ]; then
    if ! command -v "$DBG_PY" >/dev/null 2>&1; then
        [ "$DBG_PY" = python3-dbg ] ||
            die "AIOEV_DEBUG_PYTHON=$DBG_PY not found"
        apt_install python3-dbg python3-dev
    fi
    "$DBG_PY" -c 'import sys; sys.exit(not hasattr(sys, "gettotalrefcount"))' \
        ||
        die "$DBG_PY is not a debug build of CPython"
    # Its headers (Debian: libpython3.X-dbg, pulled in by python3-dbg) and
    # setuptools to run setup.py with (else build_debug makes a venv).
    dbg_pkgs=()
    "$DBG_PY" -c 'import sysconfig, os, sys
sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"],
                                         "Python.h")))' 2>/dev/null ||
        dbg_pkgs+=(python3-dbg python3-dev)
    "$DBG_PY" -c 'import setuptools' 2>/dev/null ||
        dbg_pkgs+=(python3-setuptools)
    "$DBG_PY" -c 'import test.test_asyncio' 2>/dev/null ||
        dbg_pkgs+=("lib$(_debian_pkg_for "$DBG_PY" testsuite)")
    if [ ${#dbg_pkgs[@]} -gt 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt_install "${dbg_pkgs[@]}"
    fi
fi
say "default python: $(command -v "$PY") ($("$PY" -V 2>&1)); libev $(
    awk '/define EV_VERSION_MAJOR/{ma=$3} /define EV_VERSION_MINOR/{mi=$3}
         END{print ma "." mi}' "${LIBEV_PREFIX:-/usr}/include/ev.h" \
    2>/dev/null)"
record setup PASS "$(elapsed)" ""

# ------------------------------------------- stage 1: the default python3

DEF_VER=$("$PY" -c 'import sys; print(sys.version.split()[0])')
DEF_XY=${DEF_VER%.*}
if stage "build $DEF_VER (.venv)" 300 cmd build_in_venv "$PY" .venv; then
    stage "pytest $DEF_VER" 300 pytest run_pytest .venv "${PYTEST_ARGS[@]}"
    stage "cpython tests $DEF_VER" 300 cmd run_cpython_tests .venv
else
    record "pytest $DEF_VER" FAIL 0 "not run: build failed"
    record "cpython tests $DEF_VER" FAIL 0 "not run: build failed"
fi

# ------------------------------------------- stage 2: other CPythons 3.10+

# candidates: interpreter paths, from AIOEV_EXTRA_PYTHONS or pyenv.
candidates() {
    if [ -n "${AIOEV_EXTRA_PYTHONS+x}" ]; then
        local p
        for p in $AIOEV_EXTRA_PYTHONS; do
            [ "$p" = none ] || command -v "$p" || true
        done
        return
    fi
    local root vers=
    if command -v pyenv >/dev/null 2>&1; then
        root=$(pyenv root 2>/dev/null)
        vers=$(pyenv versions --bare --skip-aliases 2>/dev/null ||
               pyenv versions --bare 2>/dev/null)
    else
        root=${PYENV_ROOT:-$HOME/.pyenv}
        [ -d "$root/versions" ] && vers=$(ls "$root/versions")
    fi
    local v
    for v in $vers; do
        case $v in */envs/*) continue ;; esac
        [ -x "$root/versions/$v/bin/python" ] &&
            echo "$root/versions/$v/bin/python"
    done
}

declare -A EXTRA=()      # X.Y -> interpreter (the last one listed wins)
declare -a EXTRA_ORDER=()
while IFS= read -r cand; do
    [ -n "$cand" ] || continue
    info=$("$cand" -c 'import sys, sysconfig
ok = (sys.implementation.name == "cpython" and sys.version_info >= (3, 10)
      and not sysconfig.get_config_var("Py_GIL_DISABLED"))
print(int(ok), "%d.%d" % sys.version_info[:2])' 2>/dev/null) || continue
    read -r ok xy <<<"$info"
    [ "$ok" = 1 ] && [ "$xy" != "$DEF_XY" ] || continue
    [ -n "${EXTRA[$xy]:-}" ] || EXTRA_ORDER+=("$xy")
    EXTRA[$xy]=$cand
done < <(candidates)

if [ ${#EXTRA_ORDER[@]} -eq 0 ]; then
    say "no other CPython 3.10+ to test (none found, or AIOEV_EXTRA_PYTHONS)"
else
    say "other CPythons: $(for xy in "${EXTRA_ORDER[@]}"; do
        printf '%s ' "${EXTRA[$xy]}"; done)"
fi
for xy in "${EXTRA_ORDER[@]}"; do
    py=${EXTRA[$xy]}
    ver=$("$py" -c 'import sys; print(sys.version.split()[0])')
    venv=.venv-$xy
    if ! stage "build $ver ($venv)" 240 cmd build_in_venv "$py" "$venv"; then
        record "cpython tests $ver" FAIL 0 "not run: build failed"
        continue
    fi
    stage "cpython tests $ver" 240 cmd run_cpython_tests "$venv"
    if [ "$EXTRA_PYTEST" = 1 ] && optional "pytest $ver"; then
        stage "pytest $ver" 240 pytest run_pytest "$venv" "${PYTEST_ARGS[@]}"
    fi
done

# ------------------------------- stage 3: reference leaks under python3-dbg

if [ -n "${AIOEV_SKIP_REFLEAK:-}" ]; then
    record "refleak ($DBG_PY)" SKIP 0 "AIOEV_SKIP_REFLEAK is set"
elif stage "build for $DBG_PY (.venv-dbg)" 240 cmd build_debug; then
    stage "refleak ($DBG_PY)" 180 cmd run_refleak
    stage "cpython tests ($DBG_PY)" 240 cmd run_cpython_dbg
else
    record "refleak ($DBG_PY)" FAIL 0 "not run: build failed"
fi

# ----------------------------------------------------------------- summary

TOTAL=$(elapsed)
nfail=0; npass=0; nskip=0
printf '\n%s==================== aioev test summary ====================%s\n' \
    "$_B" "$_N"
for i in "${!S_NAME[@]}"; do
    case ${S_STATUS[$i]} in
        PASS) c=$_G; npass=$((npass + 1)) ;;
        FAIL) c=$_R; nfail=$((nfail + 1)) ;;
        *)    c=$_Y; nskip=$((nskip + 1)) ;;
    esac
    printf '  %s%-4s%s %5ss  %s%s\n' "$c" "${S_STATUS[$i]}" "$_N" \
        "${S_SECS[$i]}" "${S_NAME[$i]}" "${S_NOTE[$i]:+  (${S_NOTE[$i]})}"
done
printf 'stages: %d ok, %d failed, %d skipped; total %dm%02ds\n' \
    "$npass" "$nfail" "$nskip" $((TOTAL / 60)) $((TOTAL % 60))
if [ "$nfail" -gt 0 ]; then
    printf '%sFAILED%s\n' "$_R" "$_N"
    exit 1
fi
printf '%sOK%s\n' "$_G" "$_N"
exit 0

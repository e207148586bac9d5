#!/usr/bin/env bash
# Quick start: from a fresh checkout to an asyncio program running on aioev.
#
#   bash scripts/quickstart.sh
#
# 1. installs libev-dev (and a compiler / Python headers / venv support if
#    missing) with apt-get, only when they are not already there;
# 2. creates the virtualenv .venv with python3 (or $PYTHON);
# 3. pip installs aioev into it (`pip install .`);
# 4. runs examples/hello.py, a small asyncio program, on the aioev loop.
#
# Afterwards: `. .venv/bin/activate` and `python -m aioev your_script.py`.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/_common.sh

PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

command -v "$PY" >/dev/null 2>&1 || {
    if command -v apt-get >/dev/null 2>&1; then
        apt_install python3 python3-venv python3-dev
    else
        die "no $PY found; install Python 3.10 or newer"
    fi
}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "aioev needs Python 3.10 or newer; $PY is $("$PY" -V 2>&1)"

say "checking build dependencies (libev, C compiler, Python headers)"
ensure_build_deps "$PY"

make_venv "$PY" "$VENV" || die "virtualenv creation failed"

say "pip install . (building the C extension)"
"$VENV/bin/python" -m pip install -q . ||
    die "pip install . failed (see the compiler output above)"

say "running examples/hello.py on aioev"
# Run from outside the source tree so the installed package is the one used.
(cd examples && "../$VENV/bin/python" hello.py) ||
    die "examples/hello.py failed"

say "done: aioev is installed in $VENV"
echo "    . $VENV/bin/activate && python -m aioev examples/hello.py"
echo "    bash scripts/test.sh    # the whole test suite"

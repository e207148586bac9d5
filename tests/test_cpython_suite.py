"""Run CPython's own test_asyncio suites against aioev (tests/cpython/run.py).

Takes about a minute.  Marked ``slow``: deselect with ``-m "not slow"``, or
set AIOEV_SKIP_CPYTHON_SUITE=1.  Extra runner options can be passed through
AIOEV_CPYTHON_SUITE_ARGS (e.g. "--strict" or "--module test_tasks").
"""

import faulthandler
import os
import shlex
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "cpython", "run.py")


def _have_cpython_tests():
    try:
        import test.test_asyncio  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(bool(os.environ.get("AIOEV_SKIP_CPYTHON_SUITE")),
                    reason="AIOEV_SKIP_CPYTHON_SUITE is set")
@pytest.mark.skipif(not _have_cpython_tests(),
                    reason="this Python has no test.test_asyncio package")
def test_cpython_asyncio_suite():
    # The runner has its own per-test and per-module timeouts; pytest's
    # faulthandler_timeout would only dump a spurious traceback meanwhile.
    faulthandler.cancel_dump_traceback_later()
    cmd = [sys.executable, RUNNER]
    cmd += shlex.split(os.environ.get("AIOEV_CPYTHON_SUITE_ARGS", ""))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=1800)
    out = proc.stdout
    print(out)
    summary = [line for line in out.splitlines()
               if line.startswith("SUMMARY")]
    # Shown by pytest with -rA / -s, and in the failure message.
    sys.stderr.write("\n".join(summary) + "\n")
    assert proc.returncode == 0, (
        "CPython test_asyncio suite failed (exit %d):\n%s"
        % (proc.returncode, "\n".join(out.splitlines()[-60:])))

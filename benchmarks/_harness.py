"""Plumbing shared by the benchmark scripts; not a benchmark itself.

micro.py and echo.py measure different things, but take aioev, describe
the machine, summarise samples and print tables the same way.  Keeping
that here means a fix to, say, the snapshot or the median/spread reaches
both result files at once.  echo_server.py takes import_aioev() from here
too, so the echo servers and the micro workers load the same aioev.

The scripts are run by path (``python benchmarks/micro.py``), which puts
this folder first on sys.path: that is how they import this module.
"""

import contextlib
import datetime
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")

# One colour per loop in every chart, so the charts read alike.
LOOP_COLORS = {"asyncio": "#9e9e9e", "uvloop": "#4c72b0", "rloop": "#8172b2",
               "aioev": "#dd8452"}


# --------------------------------------------------------------------------
# aioev as built now
# --------------------------------------------------------------------------

def import_aioev():
    """Import aioev as installed; failing that, from a build in this tree."""
    try:
        import aioev
        return aioev
    except ImportError as first:
        if ROOT in sys.path:
            raise
        sys.path.insert(0, ROOT)
        for mod in [m for m in sys.modules if m == "aioev"
                    or m.startswith("aioev.")]:
            del sys.modules[mod]
        try:
            import aioev
            return aioev
        except ImportError:
            sys.path.remove(ROOT)
            raise first


def snapshot_aioev(dest):
    """Copy the aioev package that imports now (with its built _core) to
    dest/aioev, so that a rebuild during the run does not mix builds.
    Returns the environment that makes a child process import the copy, or
    None when there was nothing to copy."""
    # Imported here, not at the top: the micro workers import this module
    # and need neither shutil nor tempfile.
    import shutil
    # A fresh interpreter finds the package as the benchmark processes will,
    # not as this one (which may have imported something else) did.
    code = ("import sys; sys.path.insert(1, %r); import _harness; "
            "print(_harness.import_aioev().__path__[0])" % ROOT)
    src = subprocess.run([sys.executable, "-c", code], cwd=HERE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         text=True).stdout.strip()
    if not src or not os.path.isdir(src):
        return None
    shutil.copytree(src, os.path.join(dest, "aioev"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = dict(os.environ)
    env["PYTHONPATH"] = dest + (os.pathsep + env["PYTHONPATH"]
                                if env.get("PYTHONPATH") else "")
    return env


@contextlib.contextmanager
def aioev_snapshot(wanted):
    """With wanted, snapshot aioev into a temporary folder for the length of
    the block and yield the environment for the child processes (None if
    the copy failed: they use the live package).  Without, yield None:
    children inherit ours."""
    if not wanted:
        yield None
        return
    import shutil
    import tempfile
    snapdir = tempfile.mkdtemp(prefix="aioev-snap-")
    try:
        env = snapshot_aioev(snapdir)
        print("aioev snapshot: %s" % (snapdir if env else
                                      "failed, using the live package"))
        yield env
    finally:
        shutil.rmtree(snapdir, ignore_errors=True)


# --------------------------------------------------------------------------
# Where and when a run happened
# --------------------------------------------------------------------------

def host_meta(machine=False):
    """The head of a results file's meta: date, Python, platform, CPU.
    micro.json has always named the architecture too (machine=True) and
    echo.json has not; each keeps the keys, in the order, it had."""
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc)
                .strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }
    if machine:
        meta["machine"] = platform.machine()
    meta["cpu"] = cpu_model()
    meta["ncpu"] = os.cpu_count()
    return meta


def git_rev():
    """`git describe` of the tree the scripts are in, or None."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"],
                              cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True,
                              timeout=10).stdout.strip() or None
    except Exception:
        return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def loop_versions(infos, loops):
    """Like "asyncio 3.11.7, aioev 0.1.0": the loops of infos, in loops'
    order (a loop that never ran has no info and is left out)."""
    return ", ".join("%s %s" % (ln, infos[ln].get("version", "?"))
                     for ln in loops if ln in infos)


# --------------------------------------------------------------------------
# Rounds and summaries
# --------------------------------------------------------------------------

def rotated(seq, k):
    """seq rotated left by k: rounds start with a different loop each time,
    so no loop always runs first (or right after another one)."""
    k %= len(seq)
    return seq[k:] + seq[:k]


def summarize(samples):
    """Median, range and spread (median absolute deviation, in percent of
    the median) of the samples; None values (no measurement) are dropped,
    and no sample at all gives None."""
    samples = [s for s in samples if s is not None]
    if not samples:
        return None
    med = statistics.median(samples)
    mad = statistics.median([abs(s - med) for s in samples])
    return {"median": med, "min": min(samples), "max": max(samples),
            "mad_pct": 100.0 * mad / med if med else 0.0,
            "samples": samples}


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------

def ratio_text(r):
    return "%.2fx" % r if r is not None else "-"


def text_table(header, body, left=1):
    """A plain-text table for stdout: the first `left` columns are labels,
    left-aligned; the others are numbers, right-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths)))
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep] + [line(b) for b in body])


def rst_table(header, body):
    """The same table as a reStructuredText simple table."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    border = " ".join("=" * w for w in widths)

    def line(cells):
        return " ".join(str(c).ljust(w)
                        for c, w in zip(cells, widths)).rstrip()
    return "\n".join([border, line(header), border]
                     + [line(b) for b in body] + [border])


def show_path(path):
    """path relative to the working directory when it is below it: shorter
    "wrote ..." lines."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None (said on stdout) when
    matplotlib is not importable: a chart is optional, the numbers are
    not."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:
        print("(no chart: matplotlib not importable: %s)" % e)
        return None
    return plt

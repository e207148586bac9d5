#!/usr/bin/env python3
"""Echo benchmark: asyncio vs uvloop vs rloop vs aioev, against plain C.

Usage::

    python benchmarks/echo.py                  # full run (~5 min on 2 cores)
    python benchmarks/echo.py --quick          # ~1 min smoke run
    python benchmarks/echo.py --snapshot       # bench a private copy of aioev
    python benchmarks/echo.py --styles protocol --sizes 1024 --rounds 5
    python benchmarks/echo.py --replot         # redo echo.rst, echo.png and
                                               # ECHO_SECTION.rst from
                                               # results/echo.json

What runs:

* An echo server (``echo_server.py``) in four styles -- sock_*, streams,
  Protocol, BufferedProtocol -- on each loop, and a plain C echo server on
  libev (``echo_server_libev.c``), the ceiling.
* A closed-loop load generator in C (``echo_client.c``): 32 connections,
  each sends one message (1 KiB, 10 KiB or 100 KiB) and waits for the whole
  echo before sending the next.  It warms up, then measures for a fixed
  window and reads the server's CPU time (utime + stime of the whole
  process, /proc/PID/stat) at the exact start and end of the window.
  Both C programs are built with ``cc`` into ``benchmarks/bin/`` when
  missing or older than their source.
* Every cell (loop, style, size) gets a fresh server process.  Rounds are
  interleaved (each round runs every cell, loop order rotated from round to
  round); each cell reports the MEDIAN over rounds.

Two numbers per cell: round trips per second (wall clock, what the client
saw) and the server's CPU microseconds per round trip, the main metric: on
a shared 2-core machine it is far less noisy than throughput.

Outputs: tables on stdout, ``benchmarks/results/echo.json`` (every
sample), ``benchmarks/results/echo.rst``, ``benchmarks/echo.png`` and the
results part of ``benchmarks/ECHO_SECTION.rst``.  ``--quick`` writes
``*_quick`` files only (no chart, no doc update).
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

from _harness import (HERE, LOOP_COLORS, RESULTS, ROOT, aioev_snapshot,
                      git_rev, host_meta, loop_versions, pyplot, ratio_text,
                      rotated, rst_table, show_path, summarize, text_table)

BIN = os.path.join(HERE, "bin")
CLIENT = os.path.join(BIN, "echo_client")
CSERVER = os.path.join(BIN, "echo_server_libev")
SECTION = os.path.join(HERE, "ECHO_SECTION.rst")

LOOPS = ("asyncio", "uvloop", "rloop", "aioev")
STYLES = ("sockets", "streams", "protocol", "bufferedprotocol")
SIZES = (1024, 10 * 1024, 100 * 1024)
C = "libev-c"           # the plain C server's key in the results

STYLE_LABEL = {"sockets": "sock_*", "streams": "streams",
               "protocol": "Protocol", "bufferedprotocol": "BufferedProtocol"}

# aioev targets, on server CPU per round trip (medians):
#   at least X times less than uvloop, per style, in every size;
#   within Y times the plain C server, per (style, size).
TARGET_VS_UVLOOP = {"sockets": 2.0, "streams": 1.3,
                    "protocol": 1.0, "bufferedprotocol": 1.0}
TARGET_VS_C = {("protocol", 1024): 1.1, ("bufferedprotocol", 1024): 1.1}


def size_label(n):
    return "%d KiB" % (n // 1024) if n % 1024 == 0 else "%d B" % n


# --------------------------------------------------------------------------
# Building the C programs
# --------------------------------------------------------------------------

def build(cc=None):
    """Build bin/echo_client and bin/echo_server_libev when missing or
    stale.  Returns {name: error or None}."""
    cc = cc or os.environ.get("CC") or "cc"
    os.makedirs(BIN, exist_ok=True)
    out = {}
    for exe, src, libs in ((CLIENT, "echo_client.c", []),
                           (CSERVER, "echo_server_libev.c", ["-lev"])):
        src = os.path.join(HERE, src)
        name = os.path.basename(exe)
        if (os.path.exists(exe)
                and os.path.getmtime(exe) >= os.path.getmtime(src)):
            out[name] = None
            continue
        cmd = [cc, "-O2", "-o", exe, src] + libs
        print("building: %s" % " ".join(show_path(x) for x in cmd), flush=True)
        p = subprocess.run(cmd, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if p.returncode:
            msg = (p.stdout.strip().splitlines() or ["cc failed"])
            err = next((m for m in msg if "error" in m), msg[-1])
            out[name] = "build failed: %s" % err.strip()
            print("  " + p.stdout.strip().replace("\n", "\n  "))
        else:
            out[name] = None
    return out


# --------------------------------------------------------------------------
# One cell
# --------------------------------------------------------------------------

SERVER_ENV = None   # set by --snapshot


def _read_ready(proc, timeout):
    """First stdout line of proc, or None if it exits/times out first."""
    box = []
    th = threading.Thread(target=lambda: box.append(proc.stdout.readline()),
                          daemon=True)
    th.start()
    th.join(timeout)
    return box[0] if box and box[0] else None


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for f in (proc.stdout,):
        try:
            f.close()
        except Exception:
            pass


def pin_cpus(args):
    """(server cpu, client cpu), or (None, None) for no pinning.

    "shared" (the default) puts the server and the load generator on the
    same CPU.  They then take turns: the load generator fills all the
    connections, the server answers the whole batch, and each process's
    CPU time is its own work.  With one CPU each ("split"), both run flat
    out in step and each one's CPU per round trip drifts to the slower
    side's (whichever is the bottleneck pays less per message, the other
    polls with small batches), and copies between two vCPUs flip between
    a fast and a ~2.5x slower mode as the host moves them: the C server
    itself measured 20 or 56 us per 100 KiB round trip from one run to
    the next, every server 7.1 to 7.5 us at 1 KiB in the slow mode.
    Shared, the same cells repeat within ~2%, and the load generator runs
    as SCHED_BATCH so that its wake-ups do not preempt the server in the
    middle of a batch (see echo_client.c)."""
    if args.pin == "none" or not hasattr(os, "sched_getaffinity"):
        return None, None
    cpus = sorted(os.sched_getaffinity(0))
    if args.pin == "split" and len(cpus) >= 2:
        return cpus[0], cpus[1]
    return cpus[0], cpus[0]


def _pinned(cmd, cpu):
    if cpu is None:
        return cmd
    ts = shutil.which("taskset")
    return [ts, "-c", str(cpu)] + cmd if ts else cmd


def _pin_after(proc, cpu):
    # without taskset: pin the process right after exec (before a Python
    # server has started any thread)
    if cpu is not None and not shutil.which("taskset"):
        try:
            os.sched_setaffinity(proc.pid, {cpu})
        except OSError:
            pass


def run_cell(loop, style, size, args):
    """Run one measurement; returns a dict with either the numbers, or
    "na" (cannot run: not installed / not implemented) or "error"."""
    out = {"loop": loop, "style": style, "size": size}
    if loop == C:
        cmd = [CSERVER]
    else:
        cmd = [sys.executable, os.path.join(HERE, "echo_server.py"),
               "--loop", loop, "--style", style]
    upath = None
    if args.unix:
        upath = os.path.join(tempfile.gettempdir(),
                             "aioev-echo-%d.sock" % os.getpid())
        cmd += ["--unix", upath]
    else:
        cmd += ["--port", "0"]
    scpu, ccpu = pin_cpus(args)
    errf = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(_pinned(cmd, scpu), stdout=subprocess.PIPE,
                            stderr=errf, text=True, cwd=ROOT, env=SERVER_ENV)
    _pin_after(proc, scpu)
    try:
        line = _read_ready(proc, 20)
        if not line or not line.startswith("READY"):
            _stop(proc)
            errf.seek(0)
            err = errf.read().strip().splitlines()
            last = err[-1] if err else ("timeout waiting for READY"
                                        if proc.returncode is None or line
                                        else "exit %s" % proc.returncode)
            if "NotImplementedError" in last:
                out["na"] = "not implemented"
            elif last.startswith("not available"):
                out["na"] = "not available"
            else:
                out["error"] = "server: " + last
            out["detail"] = last[:300]
            return out
        info = json.loads(line[5:].strip() or "{}")
        out["info"] = info
        ccmd = [CLIENT, "--conns", str(args.conns), "--size", str(size),
                "--warmup", str(args.warmup), "--duration",
                str(args.duration), "--pid", str(proc.pid),
                "--stall", str(args.stall)]
        if scpu is not None and scpu == ccpu:
            ccmd += ["--batch", "1"]
        ccmd += (["--unix", upath] if upath
                 else ["--port", str(info["port"])])
        try:
            cp = subprocess.Popen(_pinned(ccmd, ccpu),
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
            _pin_after(cp, ccpu)
            cout, cerr = cp.communicate(timeout=args.warmup + args.duration
                                        + args.stall + 20)
        except subprocess.TimeoutExpired:
            cp.kill()
            cp.communicate()
            out["error"] = "client timeout"
            return out
        alive = proc.poll() is None
        try:
            res = json.loads(cout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            res = {"ok": False, "error": "client exit %s: %s"
                   % (cp.returncode, cerr.strip()[-200:])}
        if not res.get("ok"):
            out["error"] = res.get("error", "client failed")
            if not alive:
                errf.seek(0)
                err = errf.read().strip().splitlines()
                out["error"] += "; server died: %s" % (err[-1] if err
                                                       else proc.returncode)
            return out
        if "server_cpu_s" not in res:
            out["error"] = "could not read /proc/%d/stat" % proc.pid
            return out
        rts = res["roundtrips"]
        out["roundtrips"] = rts
        out["seconds"] = res["seconds"]
        out["rt_per_sec"] = res["rt_per_sec"]
        out["server_cpu_s"] = res["server_cpu_s"]
        out["client_cpu_s"] = res["client_cpu_s"]
        out["server_us_per_rt"] = 1e6 * res["server_cpu_s"] / rts if rts \
            else None
        out["client_us_per_rt"] = 1e6 * res["client_cpu_s"] / rts if rts \
            else None
        if not rts:
            out["error"] = "no round trip in the measured window"
        return out
    finally:
        _stop(proc)
        errf.close()
        if upath:
            try:
                os.unlink(upath)
            except OSError:
                pass


# --------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------

def summarize_cell(results):
    """results: run_cell() outputs of one cell over the rounds."""
    good = [r for r in results if "rt_per_sec" in r and "error" not in r]
    if good:
        return {"cpu_us": summarize([r["server_us_per_rt"] for r in good]),
                "rt_per_sec": summarize([r["rt_per_sec"] for r in good]),
                "client_cpu_us": summarize([r["client_us_per_rt"]
                                            for r in good]),
                "runs": len(good),
                "errors": [r["error"] for r in results if "error" in r]}
    for r in results:
        if "na" in r:
            return {"na": r["na"], "detail": r.get("detail")}
    errs = [r["error"] for r in results if "error" in r]
    return {"error": errs[0] if errs else "not run"}


def med(cell, key="cpu_us"):
    return ((cell or {}).get(key) or {}).get("median")


def build_rows(styles, sizes, loops, cells):
    rows = []
    for style in styles:
        for size in sizes:
            row = {"style": style, "size": size,
                   "label": "%s %s" % (STYLE_LABEL[style], size_label(size)),
                   "loops": {ln: cells.get((ln, style, size)) for ln in loops},
                   "c": cells.get((C, None, size))}
            a, u = med(row["loops"].get("aioev")), med(row["loops"].get(
                "uvloop"))
            c = med(row["c"])
            row["aioev_vs_uvloop"] = u / a if a and u else None
            row["aioev_vs_c"] = a / c if a and c else None
            row["uvloop_vs_c"] = u / c if u and c else None
            ra = med(row["loops"].get("aioev"), "rt_per_sec")
            ru = med(row["loops"].get("uvloop"), "rt_per_sec")
            row["aioev_vs_uvloop_rtps"] = ra / ru if ra and ru else None
            tu = TARGET_VS_UVLOOP[style]
            tc = TARGET_VS_C.get((style, size))
            row["target_vs_uvloop"] = tu
            row["target_vs_c"] = tc
            checks = []
            if row["aioev_vs_uvloop"] is not None:
                checks.append(row["aioev_vs_uvloop"] >= tu)
            if tc is not None and row["aioev_vs_c"] is not None:
                checks.append(row["aioev_vs_c"] <= tc)
            needed = 1 + (tc is not None)
            if len(checks) < needed:
                row["status"] = "n/a"
            else:
                row["status"] = "PASS" if all(checks) else "MISS"
            rows.append(row)
    return rows


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------

def fmt_num(x):
    if x is None:
        return "-"
    if x >= 1e6:
        return "%.2fM" % (x / 1e6)
    if x >= 1e4:
        return "%.1fk" % (x / 1e3)
    if x >= 1e3:
        return "%.2fk" % (x / 1e3)
    return "%.0f" % x


def fmt_us(x):
    if x is None:
        return "-"
    return "%.0f" % x if x >= 100 else "%.1f" % x if x >= 10 else "%.2f" % x


def cell_text(cell, key, with_spread):
    if not cell:
        return "-"
    if "na" in cell:
        return "n/a (%s)" % cell["na"]
    if "error" in cell:
        return "error"
    s = cell.get(key)
    if not s:
        return "-"
    t = (fmt_us if key == "cpu_us" else fmt_num)(s["median"])
    if with_spread and len(s["samples"]) > 1:
        t += " ±%.0f%%" % s["mad_pct"]
    return t


def target_text(row):
    t = ">= %.1fx uvloop" % row["target_vs_uvloop"]
    if row["target_vs_c"]:
        t += ", <= %.1fx C" % row["target_vs_c"]
    return t


def cpu_table(rows, loops, with_spread=True):
    header = (["style", "size"] + ["%s" % ln for ln in loops] + ["C libev"]
              + ["aioev vs uvloop", "aioev / C", "uvloop / C", "target",
                 "status"])
    body = []
    for r in rows:
        body.append([STYLE_LABEL[r["style"]], size_label(r["size"])]
                    + [cell_text(r["loops"].get(ln), "cpu_us", with_spread)
                       for ln in loops]
                    + [cell_text(r["c"], "cpu_us", with_spread)]
                    + [ratio_text(r["aioev_vs_uvloop"]),
                       ratio_text(r["aioev_vs_c"]),
                       ratio_text(r["uvloop_vs_c"]), target_text(r),
                       r["status"]])
    return header, body


def rtps_table(rows, loops, with_spread=True):
    header = (["style", "size"] + list(loops) + ["C libev",
                                                 "aioev / uvloop"])
    body = []
    for r in rows:
        body.append([STYLE_LABEL[r["style"]], size_label(r["size"])]
                    + [cell_text(r["loops"].get(ln), "rt_per_sec",
                                 with_spread) for ln in loops]
                    + [cell_text(r["c"], "rt_per_sec", with_spread),
                       ratio_text(r["aioev_vs_uvloop_rtps"])])
    return header, body


def meta_line(meta):
    vers = loop_versions(meta.get("loops") or {},
                         list(meta.get("loop_order", [])) + [C])
    pin = {"shared": "; server and load generator on one CPU",
           "split": "; server and load generator on a CPU each"}.get(
               meta.get("pin", "split"), "")
    return ("%d connections, %s%s; %d interleaved round%s of %g s "
            "measured after %g s warm-up; Python %s; %s (%s cores); %s"
            % (meta["conns"], "Unix socket" if meta.get("unix")
               else "TCP over 127.0.0.1", pin, meta["rounds"],
               "s" if meta["rounds"] != 1 else "", meta["duration"],
               meta["warmup"], meta["python"], meta["cpu"], meta["ncpu"],
               vers))


def rst_text(rows, loops, meta):
    h1, b1 = cpu_table(rows, loops, with_spread=False)
    h2, b2 = rtps_table(rows, loops, with_spread=False)
    return ("Server CPU time per round trip, microseconds (lower is "
            "better); median over rounds. \"aioev vs uvloop\" is uvloop's "
            "CPU per round trip divided by aioev's (higher is better); "
            "\"aioev / C\" and \"uvloop / C\" divide by the plain C "
            "server's (lower is better).\n\n"
            + rst_table(h1, b1) + "\n\n"
            "Round trips per second (wall clock, as the load generator saw "
            "them; higher is better); median over rounds.\n\n"
            + rst_table(h2, b2) + "\n\n"
            + meta_line(meta) + "; git %s; %s.\n"
            % (meta.get("git") or "?", meta["date"]))


def write_rst(path, rows, loops, meta):
    with open(path, "w") as f:
        f.write(".. generated by benchmarks/echo.py on %s\n\n"
                % meta["date"])
        f.write(rst_text(rows, loops, meta))


BEGIN = ".. BEGIN GENERATED RESULTS (benchmarks/echo.py)"
END = ".. END GENERATED RESULTS"


def summary_lines(rows):
    tally = {}
    for r in rows:
        tally.setdefault(r["status"], []).append(r["label"])
    out = []
    for st in ("PASS", "MISS", "n/a"):
        if tally.get(st):
            out.append("* **%s** (%d of %d): %s" % (
                st, len(tally[st]), len(rows), ", ".join(tally[st])))
    return out


def update_section(rows, loops, meta, png_ok):
    """Replace the generated part of ECHO_SECTION.rst (between BEGIN and
    END markers); the hand-written text around it stays."""
    if not os.path.exists(SECTION):
        return False
    with open(SECTION) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        return False
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    body = [BEGIN, "", "Run of %s (``python benchmarks/echo.py%s``), git "
            "``%s``: %s." % (meta["date"],
                             " --snapshot" if meta.get("snapshot") else "",
                             meta.get("git") or "?", meta_line(meta)), ""]
    body.append(rst_text(rows, loops, meta).rsplit("\n\n", 1)[0])
    body += ["", "Against the targets (aioev):", ""] + summary_lines(rows)
    if png_ok:
        body += ["", ".. image:: benchmarks/echo.png",
                 "   :alt: server CPU per round trip and round trips per "
                 "second, per style and size, for each loop, with the "
                 "plain C server as a dashed line"]
    body += ["", END]
    with open(SECTION, "w") as f:
        f.write(head + "\n".join(body) + tail)
    return True


# --------------------------------------------------------------------------
# Chart
# --------------------------------------------------------------------------

def write_chart(rows, loops, sizes, styles, path, meta):
    """Two rows of panels, one column per message size: top, server CPU
    microseconds per round trip (lower is better); bottom, round trips per
    second (higher is better).  Grouped bars per style, one per loop; the
    plain C server is the dashed line.  Bars that are n/a are marked."""
    plt = pyplot()
    if plt is None:
        return False
    from matplotlib.lines import Line2D
    byk = {(r["style"], r["size"]): r for r in rows}
    fig, axes = plt.subplots(2, len(sizes), figsize=(5.2 * len(sizes), 9),
                             squeeze=False)
    w = 0.8 / len(loops)
    for col, size in enumerate(sizes):
        for rowi, (key, ylabel) in enumerate(
                (("cpu_us", "server CPU µs per round trip"),
                 ("rt_per_sec", "round trips per second"))):
            ax = axes[rowi][col]
            cval = None
            vals_all = []
            for i, ln in enumerate(loops):
                xs, vals, marks = [], [], []
                for k, style in enumerate(styles):
                    r = byk.get((style, size))
                    cell = r["loops"].get(ln) if r else None
                    v = med(cell, key)
                    cval = med(r["c"], key) if r else cval
                    xs.append(k + (i - (len(loops) - 1) / 2) * w)
                    vals.append(v or 0)
                    marks.append(None if v else
                                 ("n/a" if cell and "na" in cell else
                                  "err" if cell and "error" in cell
                                  else None))
                vals_all += [v for v in vals if v]
                ax.bar(xs, vals, w, color=LOOP_COLORS.get(ln),
                       label=ln, edgecolor="white", linewidth=0.5)
                for x, v, m in zip(xs, vals, marks):
                    if m:
                        ax.text(x, 0, m, rotation=90, ha="center",
                                va="bottom", fontsize=7, color="#555555")
                # label aioev bars with the ratio to uvloop
                if ln == "aioev":
                    for k, style in enumerate(styles):
                        r = byk.get((style, size))
                        rr = r and r.get("aioev_vs_uvloop")
                        if rr and vals[k]:
                            ax.text(xs[k], vals[k], "%.2fx" % (
                                rr if key == "cpu_us" else
                                r["aioev_vs_uvloop_rtps"] or 0),
                                ha="center", va="bottom", fontsize=7,
                                fontweight="bold")
            # Keep outliers from flattening the rest: cap the axis at 3x
            # the largest uvloop / C value and write the clipped value.
            ref = [med((byk.get((s, size)) or {}).get("loops", {}).get(
                "uvloop"), key) for s in styles] + [cval]
            ref = [v for v in ref if v]
            top = max(vals_all + [cval or 0]) if vals_all or cval else 1
            if ref and key == "cpu_us" and top > 3 * max(ref):
                top = 3 * max(ref)
                for patch in ax.patches:
                    if patch.get_height() > top:
                        ax.text(patch.get_x() + patch.get_width() / 2,
                                top * 0.97, fmt_us(patch.get_height()),
                                rotation=90, ha="center", va="top",
                                fontsize=7, color="white")
            ax.set_ylim(0, top * 1.12)
            if cval:
                ax.axhline(cval, color="black", linestyle="dashed",
                           linewidth=1.2)
            ax.set_xticks(range(len(styles)))
            ax.set_xticklabels([STYLE_LABEL[s] for s in styles],
                               fontsize=8.5)
            ax.set_title("%s messages: %s" % (size_label(size),
                                              "CPU per round trip"
                                              if key == "cpu_us"
                                              else "throughput"),
                         fontsize=10)
            if col == 0:
                ax.set_ylabel(ylabel + (" (lower is better)"
                                        if key == "cpu_us"
                                        else " (higher is better)"))
            ax.grid(axis="y", alpha=0.3)
            ax.set_axisbelow(True)
    handles = [Line2D([], [], color=LOOP_COLORS.get(ln), linewidth=8,
                      label=ln) for ln in loops]
    handles.append(Line2D([], [], color="black", linestyle="dashed",
                          label="plain C server (libev)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles),
               fontsize=9)
    detail = "%s; git %s; %s" % (meta_line(meta).split(", ", 1)[1],
                                 meta.get("git") or "?", meta["date"])
    fig.suptitle("Echo server, %d connections, closed loop: server CPU per "
                 "round trip (top; aioev bars labelled with uvloop / aioev) "
                 "and round trips per second (bottom)\n%s"
                 % (meta["conns"], "\n".join(textwrap.wrap(detail, 200))),
                 fontsize=9.5)
    fig.tight_layout(rect=(0, 0.04, 1, 0.95))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

def output_paths(outdir, quick, unix):
    suffix = ("_unix" if unix else "") + ("_quick" if quick else "")
    return (os.path.join(outdir, "echo%s.json" % suffix),
            os.path.join(outdir, "echo%s.rst" % suffix))


def report(rows, loops, sizes, styles, meta, outdir, quick, no_chart,
           jpath=None, data=None):
    h1, b1 = cpu_table(rows, loops)
    h2, b2 = rtps_table(rows, loops)
    print()
    print("Server CPU µs per round trip, median (±MAD%%) over %d rounds; "
          "targets are on this table" % meta["rounds"])
    print(text_table(h1, b1, left=2))
    print()
    print("Round trips per second, median (±MAD%%) over %d rounds"
          % meta["rounds"])
    print(text_table(h2, b2, left=2))
    print()
    print(meta_line(meta))
    cli = [med(c, "client_cpu_us") for r in rows
           for c in list(r["loops"].values()) + [r["c"]]]
    srv = [med(c) for r in rows for c in list(r["loops"].values()) + [r["c"]]]
    pairs = [(a, b) for a, b in zip(cli, srv) if a and b]
    if pairs:
        worst = max(a / b for a, b in pairs)
        print("load generator CPU per round trip / server's: median %.2f, "
              "max %.2f" % (statistics.median([a / b for a, b in pairs]),
                            worst))
    for line in summary_lines(rows):
        print(line.replace("**", ""))
    os.makedirs(outdir, exist_ok=True)
    jp, rp = output_paths(outdir, quick, meta.get("unix"))
    if data is not None:
        with open(jpath or jp, "w") as f:
            json.dump(data, f, indent=1)
        print("wrote %s" % show_path(jpath or jp))
    if jpath:
        rp = os.path.splitext(jpath)[0] + ".rst"
    write_rst(rp, rows, loops, meta)
    print("wrote %s" % show_path(rp))
    png_ok = False
    # The published chart and README section come from full runs only: a
    # run over a subset (styles, sizes, loops) must not replace them.
    full = (tuple(styles) == STYLES and tuple(sizes) == SIZES
            and set(loops) == set(LOOPS))
    if not full and not quick:
        print("(a subset run: echo.png and ECHO_SECTION.rst left as they "
              "are)")
    if not quick and not no_chart and full:
        png = os.path.join(HERE, "echo%s.png" % ("_unix" if meta.get("unix")
                                                 else ""))
        png_ok = write_chart(rows, loops, sizes, styles, png, meta)
        if png_ok:
            print("wrote %s" % show_path(png))
    if full and not quick and not meta.get("unix") and update_section(
            rows, loops, meta, png_ok or os.path.exists(
                os.path.join(HERE, "echo.png"))):
        print("updated %s" % show_path(SECTION))


def replot(jpath, no_chart=False):
    with open(jpath) as f:
        data = json.load(f)
    meta, rows = data["meta"], data["rows"]
    for r in rows:   # JSON keys are strings; sizes are ints
        r["size"] = int(r["size"])
    loops = meta["loop_order"]
    print("replotting %s" % show_path(jpath))
    report(rows, loops, meta["sizes"], meta["styles"], meta,
           os.path.dirname(jpath), meta.get("quick"), no_chart, jpath=jpath)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (~1 min): 1 round, 0.25 s warm-up, "
                         "0.5 s windows; *_quick outputs, no chart")
    ap.add_argument("--rounds", type=int, default=None,
                    help="interleaved rounds (default 3; quick 1)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds of warm-up per cell (default 0.5; "
                         "quick 0.25)")
    ap.add_argument("--duration", type=float, default=None,
                    help="measured seconds per cell (default 1.25; "
                         "quick 0.5)")
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)),
                    help="message sizes in bytes (default 1024,10240,102400)")
    ap.add_argument("--styles", default=",".join(STYLES))
    ap.add_argument("--loops", default=",".join(LOOPS),
                    help="subset of %s (the C server always runs)"
                         % ",".join(LOOPS))
    ap.add_argument("--no-c", action="store_true",
                    help="skip the plain C server")
    ap.add_argument("--unix", action="store_true",
                    help="Unix socket instead of TCP on 127.0.0.1 "
                         "(outputs echo_unix.*)")
    ap.add_argument("--pin", choices=("shared", "split", "none"),
                    default="shared",
                    help="CPU placement of the server and the load "
                         "generator: both on one CPU (shared, the "
                         "default), one CPU each (split), or none")
    ap.add_argument("--stall", type=float, default=5.0,
                    help="seconds without a round trip before a cell is "
                         "an error (default 5)")
    ap.add_argument("--snapshot", action="store_true",
                    help="benchmark a private copy of the aioev package as "
                         "built now, immune to rebuilds during the run")
    ap.add_argument("--no-chart", action="store_true")
    ap.add_argument("--outdir", default=None,
                    help="where echo.json/echo.rst go "
                         "(default benchmarks/results)")
    ap.add_argument("--replot", nargs="?", const="", metavar="JSON",
                    help="run nothing: rebuild echo.rst, echo.png and "
                         "ECHO_SECTION.rst from a saved echo.json")
    args = ap.parse_args(argv)

    if args.replot is not None:
        return replot(args.replot or os.path.join(args.outdir or RESULTS,
                                                  "echo.json"),
                      args.no_chart)

    args.rounds = args.rounds or (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (
        0.25 if args.quick else 0.5)
    args.duration = args.duration or (0.5 if args.quick else 1.25)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    styles = [s for s in args.styles.split(",") if s]
    loops = [ln for ln in args.loops.split(",") if ln]
    for s in styles:
        if s not in STYLES:
            ap.error("unknown style %r" % s)
    for ln in loops:
        if ln not in LOOPS:
            ap.error("unknown loop %r" % ln)

    built = build()
    if built["echo_client"]:
        print("cannot build the load generator: %s" % built["echo_client"])
        return 2
    c_error = built["echo_server_libev"]

    global SERVER_ENV
    with aioev_snapshot(args.snapshot and "aioev" in loops) as env:
        SERVER_ENV = env
        return _drive(args, sizes, styles, loops, c_error)


def _drive(args, sizes, styles, loops, c_error):
    ncells = len(sizes) * (len(styles) * len(loops) + (not args.no_c))
    print("%d cells x %d rounds, ~%.1f s each: about %.0f s at most"
          % (ncells, args.rounds, args.warmup + args.duration + 0.4,
             ncells * args.rounds * (args.warmup + args.duration + 0.4)),
          flush=True)
    results = {}        # (loop, style, size) -> [run_cell() dicts]
    skip = {}           # (loop, style) -> n/a reason: not retried
    infos = {}
    builds = set()
    start = time.monotonic()
    for rnd in range(args.rounds):
        order = rotated(loops, rnd)
        for size in sizes:
            plan = [(ln, st) for st in styles for ln in order]
            if not args.no_c:
                # the C ceiling goes first or last, alternately
                plan.insert(0 if rnd % 2 == 0 else len(plan), (C, None))
            for ln, st in plan:
                key = (ln, st, size)
                if ln == C and c_error:
                    results.setdefault(key, []).append(
                        {"na": "not built", "detail": c_error})
                    continue
                if (ln, st) in skip:
                    results.setdefault(key, []).append(dict(skip[(ln, st)]))
                    continue
                r = run_cell(ln, st, size, args)
                results.setdefault(key, []).append(r)
                if "info" in r:
                    infos.setdefault(ln, r["info"])
                    if r["info"].get("core_mtime"):
                        builds.add(r["info"]["core_mtime"])
                name = "%s/%s/%s" % (ln, st or "-", size_label(size))
                if "na" in r:
                    skip[(ln, st)] = {"na": r["na"],
                                      "detail": r.get("detail")}
                    print("  %-34s n/a (%s): %s" % (name, r["na"],
                                                    r.get("detail", "")[:90]))
                elif "error" in r:
                    print("  %-34s ERROR %s" % (name, r["error"][:100]))
                else:
                    print("  %-34s %9s rt/s  %7s µs/rt  (client %s µs/rt)"
                          % (name, fmt_num(r["rt_per_sec"]),
                             fmt_us(r["server_us_per_rt"]),
                             fmt_us(r["client_us_per_rt"])), flush=True)
        print("round %d/%d done (%.0f s)" % (rnd + 1, args.rounds,
                                             time.monotonic() - start),
              flush=True)
    elapsed = time.monotonic() - start
    if len(builds) > 1:
        print("WARNING: aioev._core was rebuilt during the run; the aioev "
              "numbers mix builds: run again (or use --snapshot)")

    cells = {k: summarize_cell(v) for k, v in results.items()}
    rows = build_rows(styles, sizes, loops, cells)
    meta = host_meta()
    meta.update({
        "rounds": args.rounds, "warmup": args.warmup,
        "duration": args.duration, "conns": args.conns,
        "sizes": sizes, "styles": styles, "loop_order": loops,
        "unix": args.unix, "quick": args.quick, "snapshot": args.snapshot,
        "loops": infos, "elapsed_s": round(elapsed, 1), "git": git_rev(),
        "clk_tck": os.sysconf("SC_CLK_TCK"),
        "pin": args.pin,
        "pinned": dict(zip(("server_cpu", "client_cpu"), pin_cpus(args))),
        "metric": "server utime+stime per round trip (/proc/PID/stat) and "
                  "round trips per second; medians over rounds",
        "targets": {"vs_uvloop": TARGET_VS_UVLOOP,
                    "vs_c": {"%s/%d" % k: v for k, v in TARGET_VS_C.items()}},
    })
    data = {"meta": meta, "rows": rows,
            "runs": [dict(r, key="%s/%s/%s" % k) for k, v in results.items()
                     for r in v]}
    print("total %.0f s" % elapsed)
    report(rows, loops, sizes, styles, meta, args.outdir or RESULTS,
           args.quick, args.no_chart, data=data)
    return 0


if __name__ == "__main__":
    sys.exit(main())

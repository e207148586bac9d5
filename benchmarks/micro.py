#!/usr/bin/env python3
"""Event-loop micro-benchmarks: stock asyncio vs uvloop vs aioev, one run.

Usage::

    python benchmarks/micro.py                 # full run (a few minutes)
    python benchmarks/micro.py --quick         # ~30 s smoke run
    python benchmarks/micro.py --rounds 9 --bench call_soon,sleep0
    python benchmarks/micro.py --list
    python benchmarks/micro.py --replot        # redo micro.rst + micro.png
                                               # from results/micro.json

How it measures:

* Every (benchmark, loop) measurement runs in a fresh interpreter
  (``micro.py --worker BENCH LOOP``) which prints one JSON object.
* Inside the worker: one warm-up pass at a fifth of the size, then
  ``--inner`` measured passes; the worker reports the fastest pass.
* Time is CPU time of the whole process (``time.process_time()``: user +
  system, all threads), not wall time: the machine is shared and noisy, and
  time spent blocked in epoll waiting for a timer is not loop overhead.
* Rounds are interleaved: each round runs every benchmark on every loop
  (loop order rotated from round to round), and the result per cell is the
  MEDIAN ops/sec over the rounds.  Ratios are ratios of medians.

Outputs: a plain-text table on stdout, ``benchmarks/results/micro.json``,
``benchmarks/results/micro.rst`` and (if matplotlib is importable)
``benchmarks/micro.png`` (top: each loop relative to asyncio; bottom:
aioev / uvloop against each row's target).  ``--quick`` writes ``*_quick`` files instead and
no chart, so a smoke run never overwrites real results.
"""

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import threading
import time

from _harness import (HERE, LOOP_COLORS, RESULTS, ROOT, aioev_snapshot,
                      git_rev, host_meta, import_aioev, loop_versions,
                      pyplot, ratio_text, rotated, rst_table, show_path,
                      summarize, text_table)

LOOPS = ("asyncio", "uvloop", "aioev")

cpu = time.process_time


# --------------------------------------------------------------------------
# Benchmarks.  Each takes (loop, n), runs n operations on the loop and
# returns the CPU seconds spent in the measured part (setup excluded).
# --------------------------------------------------------------------------

def bench_call_soon(loop, n):
    """Chain of n callbacks, each scheduling the next with call_soon:
    one loop iteration per callback (iteration overhead)."""
    call_soon = loop.call_soon
    count = 0

    def cb():
        nonlocal count
        count += 1
        if count < n:
            call_soon(cb)
        else:
            loop.stop()

    t0 = cpu()
    call_soon(cb)
    loop.run_forever()
    t1 = cpu()
    assert count == n, (count, n)
    return t1 - t0


def bench_call_soon_fd(loop, n):
    """The call_soon chain with one idle socket registered with add_reader,
    so the loop has an fd to poll every iteration, as in any program
    doing I/O."""
    import socket
    a, b = socket.socketpair()
    loop.add_reader(a.fileno(), lambda: None)
    try:
        return bench_call_soon(loop, n)
    finally:
        loop.remove_reader(a.fileno())
        a.close()
        b.close()


BATCH = 1000


def bench_call_soon_batch(loop, n):
    """n callbacks posted in batches of 1000 per iteration with call_soon
    (ready-queue throughput: scheduling + dispatch)."""
    call_soon = loop.call_soon
    count = 0
    batches = max(1, n // BATCH)
    done = 0

    def cb():
        nonlocal count
        count += 1

    def driver():
        nonlocal done
        if done == batches:
            loop.stop()
            return
        done += 1
        for _ in range(BATCH):
            call_soon(cb)
        call_soon(driver)

    t0 = cpu()
    call_soon(driver)
    loop.run_forever()
    t1 = cpu()
    assert count == batches * BATCH, (count, batches)
    return t1 - t0


def bench_timers(loop, n):
    """n call_later timers in batches of 1000, each with a random delay in
    [0, 1 ms); the next batch is armed when the previous one has fired.
    CPU time only, so the sub-millisecond sleeps in epoll do not count."""
    import random
    rnd = random.Random(12345)
    batches = max(1, n // BATCH)
    delays = [rnd.random() * 0.001 for _ in range(BATCH)]
    call_later = loop.call_later
    count = 0
    pending = 0
    done = 0

    def fire():
        nonlocal count, pending
        count += 1
        pending -= 1
        if pending == 0:
            arm()

    def arm():
        nonlocal pending, done
        if done == batches:
            loop.stop()
            return
        done += 1
        pending = BATCH
        for d in delays:
            call_later(d, fire)

    t0 = cpu()
    loop.call_soon(arm)
    loop.run_forever()
    t1 = cpu()
    assert count == batches * BATCH, (count, batches)
    return t1 - t0


def bench_future(loop, n):
    """In a coroutine: f = loop.create_future(); loop.call_soon(f.set_result,
    i); await f -- n times."""
    create_future = loop.create_future
    call_soon = loop.call_soon

    async def main():
        total = 0
        for i in range(n):
            f = create_future()
            call_soon(f.set_result, i)
            total += await f
        return total

    t0 = cpu()
    r = loop.run_until_complete(main())
    t1 = cpu()
    assert r == n * (n - 1) // 2
    return t1 - t0


def bench_sleep0(loop, n):
    """`await asyncio.sleep(0)` n times in one task."""
    import asyncio
    sleep = asyncio.sleep

    async def main():
        for _ in range(n):
            await sleep(0)
        return n

    t0 = cpu()
    r = loop.run_until_complete(main())
    t1 = cpu()
    assert r == n
    return t1 - t0


GATHER = 100


def bench_gather(loop, n):
    """n trivial coroutines run as tasks, gathered 100 at a time with
    asyncio.gather (task creation, scheduling, completion, gather)."""
    import asyncio
    gather = asyncio.gather
    batches = max(1, n // GATHER)

    async def noop(i):
        return i

    async def main():
        total = 0
        for _ in range(batches):
            res = await gather(*[noop(i) for i in range(GATHER)])
            total += len(res)
        return total

    t0 = cpu()
    r = loop.run_until_complete(main())
    t1 = cpu()
    assert r == batches * GATHER
    return t1 - t0


def bench_queue(loop, n):
    """Ping-pong over two asyncio.Queue(maxsize=1) between two tasks; one op
    is one round trip (put, get, put back, get)."""
    import asyncio

    async def main():
        q1 = asyncio.Queue(maxsize=1)
        q2 = asyncio.Queue(maxsize=1)

        async def ponger():
            for _ in range(n):
                x = await q1.get()
                await q2.put(x)

        t = asyncio.ensure_future(ponger())
        total = 0
        for i in range(n):
            await q1.put(i)
            total += await q2.get()
        await t
        return total

    t0 = cpu()
    r = loop.run_until_complete(main())
    t1 = cpu()
    assert r == n * (n - 1) // 2
    return t1 - t0


def bench_threadsafe(loop, n):
    """Another thread posts n callbacks with call_soon_threadsafe as fast as
    it can; the loop counts them and stops at n.  CPU time of the whole
    process (both threads)."""
    cs_ts = loop.call_soon_threadsafe
    count = 0

    def cb():
        nonlocal count
        count += 1
        if count == n:
            loop.stop()

    def poster():
        for _ in range(n):
            cs_ts(cb)

    th = threading.Thread(target=poster)
    t0 = cpu()
    th.start()
    loop.run_forever()
    th.join()
    t1 = cpu()
    assert count == n, (count, n)
    return t1 - t0


# name -> (function, default n, target aioev/uvloop ratio, label)
BENCHES = {
    "call_soon":       (bench_call_soon,       200_000, 2.0,
                        "call_soon chain"),
    "call_soon_fd":    (bench_call_soon_fd,    200_000, 2.0,
                        "call_soon chain, 1 fd"),
    "call_soon_batch": (bench_call_soon_batch, 500_000, 2.0,
                        "call_soon batch x1000"),
    "timers":          (bench_timers,          200_000, 2.0,
                        "call_later timers"),
    "future":          (bench_future,          100_000, 2.0,
                        "future create/set/await"),
    "sleep0":          (bench_sleep0,          100_000, 2.0,
                        "await sleep(0)"),
    "gather":          (bench_gather,          100_000, 1.5,
                        "task create + gather"),
    "queue":           (bench_queue,            50_000, 1.5,
                        "Queue(1) ping-pong"),
    "threadsafe":      (bench_threadsafe,      100_000, 1.5,
                        "call_soon_threadsafe"),
}


# --------------------------------------------------------------------------
# Loop factories (worker side)
# --------------------------------------------------------------------------

def make_loop(name):
    """Return (loop, info dict)."""
    if name == "asyncio":
        import asyncio
        loop = asyncio.SelectorEventLoop()
        info = {"version": platform.python_version(),
                "type": type(loop).__name__}
    elif name == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
        info = {"version": getattr(uvloop, "__version__", "?")}
    elif name == "aioev":
        aioev = import_aioev()
        if not hasattr(aioev, "new_event_loop"):
            raise ImportError("aioev at %s has no new_event_loop (not built?)"
                              % list(getattr(aioev, "__path__", [])))
        loop = aioev.new_event_loop()
        info = {"version": getattr(aioev, "__version__", "?"),
                "path": os.path.dirname(getattr(aioev, "__file__", "") or "")}
        core = sys.modules.get("aioev._core")
        if core is not None and getattr(core, "__file__", None):
            info["core_built"] = time.strftime(
                "%Y-%m-%d %H:%M:%S", time.localtime(
                    os.path.getmtime(core.__file__)))
    else:
        raise ValueError("unknown loop %r" % name)
    return loop, info


def worker(bench, loopname, n, inner):
    out = {"bench": bench, "loop": loopname, "n": n}
    try:
        loop, info = make_loop(loopname)
    except Exception as e:  # not installed / not built
        out["error"] = "not available: %s: %s" % (type(e).__name__, e)
        out["unavailable"] = True
        print(json.dumps(out))
        return 3
    out["info"] = info
    if bench == "probe":
        loop.close()
        print(json.dumps(out))
        return 0
    import asyncio
    try:
        asyncio.set_event_loop(loop)
    except Exception:
        pass  # run_until_complete sets the running loop anyway
    fn = BENCHES[bench][0]
    try:
        fn(loop, max(n // 5, 1000))          # warm-up
        times = []
        for _ in range(inner):
            gc.collect()
            times.append(fn(loop, n))
    except Exception as e:
        import traceback
        out["error"] = "%s: %s" % (type(e).__name__, e)
        out["traceback"] = traceback.format_exc()[-2000:]
        print(json.dumps(out))
        return 1
    finally:
        try:
            asyncio.set_event_loop(None)
        except Exception:
            pass
        try:
            loop.close()
        except Exception:
            pass
    best = min(times)
    out["times"] = times
    out["cpu"] = best
    out["ops_per_sec"] = n / best if best > 0 else float("inf")
    print(json.dumps(out))
    return 0


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

WORKER_ENV = None  # set by --snapshot


def run_worker(bench, loopname, n, inner, timeout):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", bench,
           loopname, "--n", str(n), "--inner", str(inner)]
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=timeout, cwd=ROOT, text=True,
                           env=WORKER_ENV)
    except subprocess.TimeoutExpired:
        return {"bench": bench, "loop": loopname, "n": n,
                "error": "timeout after %ss" % timeout}
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        err = (p.stderr.strip().splitlines() or ["no output"])[-1]
        return {"bench": bench, "loop": loopname, "n": n,
                "error": "exit %s: %s" % (p.returncode, err)}
    return json.loads(lines[-1])


def fmt_ops(x):
    if x is None:
        return "-"
    if x >= 1e6:
        return "%.2fM" % (x / 1e6)
    if x >= 1e3:
        return "%.1fk" % (x / 1e3)
    return "%.0f" % x


def build_rows(benches, loops, cells, errors):
    rows = []
    for b in benches:
        target, label = BENCHES[b][2], BENCHES[b][3]
        row = {"bench": b, "label": label, "target": target, "loops": {}}
        for ln in loops:
            s = summarize(cells[b][ln])
            row["loops"][ln] = s
            if s is None and errors.get((b, ln)):
                row["loops"][ln] = {"error": errors[(b, ln)]}
        med = {ln: (row["loops"][ln] or {}).get("median") for ln in loops}
        a, u, s = med.get("aioev"), med.get("uvloop"), med.get("asyncio")
        row["aioev_vs_uvloop"] = a / u if a and u else None
        row["aioev_vs_asyncio"] = a / s if a and s else None
        row["uvloop_vs_asyncio"] = u / s if u and s else None
        if row["aioev_vs_uvloop"] is None:
            row["status"] = "n/a"
        else:
            row["status"] = ("PASS" if row["aioev_vs_uvloop"] >= target
                             else "MISS")
        rows.append(row)
    return rows


def cell_text(cell, loopname, unavailable, with_spread=True):
    if loopname in unavailable:
        return "not available"
    if not cell:
        return "-"
    if "error" in cell:
        return "error"
    t = fmt_ops(cell["median"])
    if with_spread:
        t += " ±%.0f%%" % cell["mad_pct"]
    return t


def table_rows(rows, loops, unavailable, with_spread=True):
    header = (["benchmark"] + ["%s ops/s" % ln for ln in loops]
              + ["aioev/uvloop", "aioev/asyncio", "target", "status"])
    body = []
    for r in rows:
        body.append([r["label"]]
                    + [cell_text(r["loops"][ln], ln, unavailable, with_spread)
                       for ln in loops]
                    + [ratio_text(r["aioev_vs_uvloop"]),
                       ratio_text(r["aioev_vs_asyncio"]),
                       ">= %.1fx" % r["target"], r["status"]])
    return header, body


def write_chart(rows, loops, path, meta):
    """Two panels: top, every loop's speed relative to stock asyncio; bottom,
    aioev / uvloop per benchmark against that benchmark's target."""
    plt = pyplot()
    if plt is None:
        return False
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    shown = [ln for ln in loops
             if any((r["loops"].get(ln) or {}).get("median") for r in rows)]
    if "asyncio" not in shown:
        print("(no chart: no asyncio baseline)")
        return False
    labels = [r["label"] for r in rows]
    xs0 = list(range(len(rows)))
    has_uv = any(r.get("aioev_vs_uvloop") for r in rows)
    fig, axes = plt.subplots(
        2 if has_uv else 1, 1, figsize=(12, 9 if has_uv else 5.2),
        sharex=True, squeeze=False,
        gridspec_kw={"height_ratios": [1.15, 1]} if has_uv else None)
    ax = axes[0][0]

    # Top: speed relative to asyncio, one bar per loop.
    w = 0.8 / len(shown)
    top = 1.0
    for i, ln in enumerate(shown):
        vals = []
        for r in rows:
            base = (r["loops"].get("asyncio") or {}).get("median")
            v = (r["loops"].get(ln) or {}).get("median")
            vals.append(v / base if v and base else 0)
        top = max([top] + vals)
        xs = [k + (i - (len(shown) - 1) / 2) * w for k in xs0]
        bars = ax.bar(xs, vals, w, label=ln, color=LOOP_COLORS.get(ln),
                      edgecolor="white", linewidth=0.5)
        if ln == "asyncio":
            continue  # always 1.0: the baseline line says it
        for bar, v in zip(bars, vals):
            if v:
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(),
                        "%.1f" % v, ha="center", va="bottom", fontsize=8)
    ax.axhline(1.0, color="black", linewidth=0.7)
    ax.set_ylim(0, top * 1.12)
    ax.set_ylabel("x faster than asyncio")
    ax.set_title("Speed relative to stock asyncio (higher is better)",
                 fontsize=11)
    ax.legend(loc="best", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)

    # Bottom: aioev / uvloop with each row's target.
    if has_uv:
        ax2 = axes[1][0]
        ratios = [r.get("aioev_vs_uvloop") or 0 for r in rows]
        okc, missc = "#55a868", "#c44e52"
        cols = [okc if r.get("status") == "PASS" else missc for r in rows]
        bars = ax2.bar(xs0, ratios, 0.6, color=cols, edgecolor="white")
        ymax = max(ratios + [r["target"] for r in rows]) * 1.15
        ax2.set_ylim(0, ymax)
        for k, (bar, r) in enumerate(zip(bars, rows)):
            if not r.get("aioev_vs_uvloop"):
                continue
            # Above the bar; lifted above the target line when the bar ends
            # just under it, so the label never sits on the dashed line.
            h, t = bar.get_height(), r["target"]
            y = t if 0 <= t - h < 0.09 * ymax else h
            ax2.text(bar.get_x() + bar.get_width() / 2, y + 0.01 * ymax,
                     "%.2fx" % r["aioev_vs_uvloop"], ha="center",
                     va="bottom", fontsize=9.5, fontweight="bold")
            ax2.hlines(r["target"], k - 0.42, k + 0.42, colors="black",
                       linestyles="dashed", linewidth=1.4)
        ax2.axhline(1.0, color="#4c72b0", linewidth=1.0)
        ax2.set_ylabel("aioev / uvloop")
        ax2.set_title("aioev relative to uvloop, against the target",
                      fontsize=11)
        ax2.legend(handles=[
            Patch(color=okc, label="meets target"),
            Patch(color=missc, label="misses target"),
            Line2D([], [], color="black", linestyle="dashed",
                   label="target (2x or 1.5x)"),
            Line2D([], [], color="#4c72b0", label="uvloop = 1")],
            loc="best", fontsize=9)
        ax2.grid(axis="y", alpha=0.3)
        ax2.set_axisbelow(True)
    last = axes[-1][0]
    last.set_xticks(xs0)
    last.set_xticklabels(labels, rotation=20, ha="right", fontsize=9.5)
    vers = ", ".join("%s %s" % (ln, (meta.get("loops") or {}).get(ln, {})
                                .get("version", "?")) for ln in shown)
    fig.suptitle("Event-loop micro-benchmarks: median ops per CPU-second, "
                 "%d interleaved rounds\n%s; %s (%s cores); git %s; %s"
                 % (meta["rounds"], vers, meta.get("cpu", "?"),
                    meta.get("ncpu", "?"), meta.get("git") or "?",
                    meta.get("date", "")), fontsize=10.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_rst(rpath, rows, loops, unavailable, meta):
    infos = meta.get("loops") or {}
    rh, rb = table_rows(rows, loops, unavailable, with_spread=False)
    with open(rpath, "w") as f:
        f.write(".. generated by benchmarks/micro.py on %s\n\n"
                % meta["date"])
        f.write(rst_table(rh, rb) + "\n\n")
        f.write("Median operations per CPU-second over %d interleaved "
                "rounds; Python %s; %s (%s cores); %s.\n"
                % (meta["rounds"], meta["python"], meta["cpu"], meta["ncpu"],
                   loop_versions(infos, loops)))


def replot(jpath, no_chart=False):
    """Rebuild micro.rst (next to the JSON) and benchmarks/micro.png from a
    saved micro.json, without running anything."""
    with open(jpath) as f:
        data = json.load(f)
    meta, rows = data["meta"], data["rows"]
    loops = meta.get("loop_order") or (list(rows[0]["loops"]) if rows
                                       else list(LOOPS))
    unavailable = meta.get("unavailable") or {}
    header, body = table_rows(rows, loops, unavailable)
    print("Median ops per CPU-second over %d interleaved rounds "
          "(±MAD%%), Python %s, %s; %s, git %s (replotted from %s)"
          % (meta["rounds"], meta["python"], meta["cpu"], meta["date"],
             meta.get("git"), show_path(jpath)))
    print(text_table(header, body))
    base = os.path.splitext(jpath)[0]
    rpath = base + ".rst"
    write_rst(rpath, rows, loops, unavailable, meta)
    print("wrote %s" % show_path(rpath))
    if not meta.get("quick") and not no_chart:
        png = os.path.join(HERE, "micro.png")
        if write_chart(rows, loops, png, meta):
            print("wrote %s" % show_path(png))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", nargs=2, metavar=("BENCH", "LOOP"),
                    help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (well under 30 s): 3 rounds, sizes / 5, "
                         "writes *_quick outputs, no chart")
    ap.add_argument("--rounds", type=int, default=None,
                    help="interleaved rounds per cell (default 7; quick 3)")
    ap.add_argument("--inner", type=int, default=None,
                    help="measured passes per worker, best kept "
                         "(default 3; quick 1)")
    ap.add_argument("--scale", type=float, default=None,
                    help="multiply every benchmark size (default 1; quick 0.2)")
    ap.add_argument("--bench", default=",".join(BENCHES),
                    help="comma-separated subset (default: all)")
    ap.add_argument("--loops", default=",".join(LOOPS),
                    help="comma-separated subset of %s" % ",".join(LOOPS))
    ap.add_argument("--timeout", type=float, default=120,
                    help="seconds before a worker is killed (default 120)")
    ap.add_argument("--snapshot", action="store_true",
                    help="benchmark a private copy of the aioev package as "
                         "built now, immune to rebuilds during the run")
    ap.add_argument("--no-chart", action="store_true")
    ap.add_argument("--outdir", default=None,
                    help="where micro.json/micro.rst go "
                         "(default benchmarks/results)")
    ap.add_argument("--list", action="store_true",
                    help="list benchmarks and exit")
    ap.add_argument("--replot", nargs="?", const="", metavar="JSON",
                    help="run nothing: rebuild micro.rst and micro.png from "
                         "a saved micro.json (default "
                         "benchmarks/results/micro.json)")
    args = ap.parse_args(argv)

    if args.worker:
        bench, loopname = args.worker
        return worker(bench, loopname, args.n or 1000, args.inner or 1)

    if args.replot is not None:
        return replot(args.replot or os.path.join(args.outdir or RESULTS,
                                                  "micro.json"),
                      args.no_chart)

    if args.list:
        for name, (fn, n, target, label) in BENCHES.items():
            print("%-16s n=%-8d target %.1fx  %s" % (name, n, target,
                                                   fn.__doc__.split("\n")[0]))
        return 0

    rounds = args.rounds or (3 if args.quick else 7)
    inner = args.inner or (1 if args.quick else 3)
    scale = args.scale or (0.2 if args.quick else 1.0)
    benches = [b for b in args.bench.split(",") if b]
    loops = [ln for ln in args.loops.split(",") if ln]
    for b in benches:
        if b not in BENCHES:
            ap.error("unknown benchmark %r (see --list)" % b)
    for ln in loops:
        if ln not in LOOPS:
            ap.error("unknown loop %r" % ln)
    sizes = {b: max(BATCH, int(BENCHES[b][1] * scale)) for b in benches}

    global WORKER_ENV
    with aioev_snapshot(args.snapshot and "aioev" in loops) as env:
        WORKER_ENV = env
        return _drive(args, benches, loops, rounds, inner, scale, sizes)


def _drive(args, benches, loops, rounds, inner, scale, sizes):
    # Probe each loop once: skip cleanly what is not importable.
    infos, unavailable = {}, {}
    for ln in loops:
        r = run_worker("probe", ln, 0, 1, args.timeout)
        if "error" in r:
            unavailable[ln] = r["error"]
            print("%-8s %s" % (ln, r["error"]))
        else:
            infos[ln] = r.get("info", {})
            print("%-8s %s" % (ln, " ".join("%s=%s" % kv
                                            for kv in infos[ln].items())))
    active = [ln for ln in loops if ln not in unavailable]
    if not active:
        print("no loop available")
        return 2

    cells = {b: {ln: [] for ln in loops} for b in benches}
    errors = {}
    builds = {}  # aioev._core mtime -> samples: catches a rebuild mid-run
    start = time.monotonic()
    for rnd in range(rounds):
        order = rotated(active, rnd)
        for b in benches:
            for ln in order:
                if errors.get((b, ln), "").startswith("timeout"):
                    continue  # don't burn time on a hanging cell again
                r = run_worker(b, ln, sizes[b], inner, args.timeout)
                if "error" in r:
                    errors[(b, ln)] = r["error"]
                    print("  round %d %s/%s: ERROR %s" % (rnd + 1, b, ln,
                                                          r["error"]))
                    if r.get("traceback") and rnd == 0:
                        print("    " + r["traceback"].strip()
                              .replace("\n", "\n    "))
                else:
                    cells[b][ln].append(r["ops_per_sec"])
                    built = (r.get("info") or {}).get("core_built")
                    if built:
                        builds.setdefault(built, 0)
                        builds[built] += 1
        print("round %d/%d done (%.0fs)" % (rnd + 1, rounds,
                                            time.monotonic() - start),
              flush=True)

    elapsed = time.monotonic() - start
    rows = build_rows(benches, loops, cells, errors)
    if len(builds) > 1:
        print("WARNING: aioev._core was rebuilt during the run (%s); "
              "the aioev numbers mix builds, run again"
              % ", ".join("%s: %d samples" % kv for kv in sorted(builds.items())))
    meta = host_meta(machine=True)
    meta.update({
        "rounds": rounds, "inner": inner, "scale": scale,
        "sizes": sizes, "quick": args.quick,
        "loops": infos, "unavailable": unavailable, "loop_order": loops,
        "elapsed_s": round(elapsed, 1),
        "git": git_rev(),
        "aioev_core_builds": builds,
        "metric": "ops per CPU second (time.process_time), median of rounds",
    })

    header, body = table_rows(rows, loops, unavailable)
    print()
    print("Median ops per CPU-second over %d interleaved rounds "
          "(±MAD%%), Python %s, %s" % (rounds, meta["python"], meta["cpu"]))
    print(text_table(header, body))
    print("total %.0fs" % elapsed)

    outdir = args.outdir or RESULTS
    os.makedirs(outdir, exist_ok=True)
    suffix = "_quick" if args.quick else ""
    jpath = os.path.join(outdir, "micro%s.json" % suffix)
    with open(jpath, "w") as f:
        json.dump({"meta": meta, "rows": rows,
                   "errors": {"%s/%s" % k: v for k, v in errors.items()}},
                  f, indent=2)
    rpath = os.path.join(outdir, "micro%s.rst" % suffix)
    write_rst(rpath, rows, loops, unavailable, meta)
    print("wrote %s\nwrote %s" % (show_path(jpath), show_path(rpath)))
    if not args.quick and not args.no_chart:
        png = os.path.join(HERE, "micro.png")
        if write_chart(rows, loops, png, meta):
            print("wrote %s" % show_path(png))
    return 0


if __name__ == "__main__":
    sys.exit(main())

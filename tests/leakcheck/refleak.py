"""Reference-leak check for aioev's C core.

Run it under a debug build of CPython (one with sys.gettotalrefcount),
with aioev built for that interpreter:

    python3-dbg setup.py build --build-base .venv-dbg/build \\
        --build-lib .venv-dbg/site
    PYTHONPATH=.venv-dbg/site python3-dbg tests/leakcheck/refleak.py

scripts/test.sh does exactly that.  Each round drives an aioev loop
through futures (resolved, failed, cancelled, awaited), tasks and gather,
timers (call_later / call_at, some cancelled), task cancellation with a
message, call_soon with arguments and contexts, call_soon_threadsafe
from this thread and from a worker thread, sock_* operations (done at
once, waiting, cancelled, dropped) and a stream connection to a server.  After some warm-up rounds the
total reference count (sys.gettotalrefcount) and the number of objects
the GC tracks (len(gc.get_objects())) are read, then again after each
chunk of rounds.  A leak shows as growth in every chunk; the check fails
if every chunk grows by more than the slack, or if the total growth is
more than --max-per-round per round.

Outside a debug build it says so and exits 0, unless --require-debug is
given (scripts/test.sh gives it), in which case it exits 2.
"""

import argparse
import asyncio
import contextvars
import gc
import os
import queue
import socket
import sys
import sysconfig
import threading
import time

VAR = contextvars.ContextVar("refleak_var", default=None)
SOCKS = []        # a connected socket pair for the reader/writer part
NET = {}          # sock_* pair, and the port of a stream echo server
REPORTS = [0]     # contexts the loop gave to its exception handler


class Boom(Exception):
    pass


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=10_000,
                   help="measured rounds (default 10000)")
    p.add_argument("--chunks", type=int, default=5,
                   help="measure after each of this many chunks (default 5)")
    p.add_argument("--warmup", type=int, default=1_000,
                   help="rounds before the baseline (default 1000)")
    p.add_argument("--slack", type=int, default=20,
                   help="growth per chunk taken as noise (default 20)")
    p.add_argument("--max-per-round", type=float, default=0.05,
                   help="largest total growth per round allowed "
                        "(default 0.05)")
    p.add_argument("--require-debug", action="store_true",
                   help="fail instead of skipping on a release build")
    return p.parse_args(argv)


def check_interpreter(require_debug):
    if hasattr(sys, "gettotalrefcount"):
        return
    msg = ("refleak: this Python (%s) is not a debug build "
           "(no sys.gettotalrefcount); run it with python3-dbg or another "
           "--with-pydebug build" % sys.executable)
    if require_debug:
        print(msg + ".  FAILED", file=sys.stderr)
        sys.exit(2)
    print(msg + ".  Skipped.")
    sys.exit(0)


def check_extension(core):
    """The extension must be built for this (debug) interpreter.

    Debian's debug Python also loads release-built extensions, whose
    Py_INCREF/Py_DECREF don't update the total reference count; a check
    run against one of those would measure nothing.
    """
    path = getattr(core, "__file__", "") or ""
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    print("refleak: aioev._core from %s" % path)
    if suffix and not path.endswith(suffix):
        print("refleak: aioev._core is not built for this interpreter "
              "(expected a file ending in %s); build it with this Python "
              "first.  FAILED" % suffix, file=sys.stderr)
        sys.exit(2)


# ---------------------------------------------------------------- one round

class Worker:
    """A thread that resolves futures through call_soon_threadsafe."""

    def __init__(self, loop):
        self.loop = loop
        self.jobs = queue.SimpleQueue()
        self.thread = threading.Thread(target=self.run, name="refleak-worker",
                                       daemon=True)
        self.thread.start()

    def run(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            fut, value = job
            self.loop.call_soon_threadsafe(fut.set_result, value)

    def submit(self, fut, value):
        self.jobs.put((fut, value))

    def stop(self):
        self.jobs.put(None)
        self.thread.join()


def _cb(acc, *args):
    acc.append(args)


def _cb_ctx(acc):
    acc.append(VAR.get())


def _raise_in_callback(i):
    raise Boom("in callback %d" % i)


async def _returns(x):
    await asyncio.sleep(0)
    return x


async def _raises(x):
    await asyncio.sleep(0)
    raise Boom(x)


async def _sleeps_forever():
    await asyncio.sleep(3600)


async def _echo_stream(reader, writer):
    while data := await reader.read(4096):
        writer.write(data)
        await writer.drain()
    writer.close()


async def _net_part(loop, i):
    """sock_* done at once and waiting (one cancelled, one closed, one
    dropped), a sendall that has to wait, and a stream connection to a
    server (the C accept loop and the transport's StreamReader path)."""
    a, b = NET["pair"]
    await loop.sock_sendall(b, b"now")
    assert await loop.sock_recv(a, 16) == b"now"
    loop.call_soon(b.send, b"later")
    assert await loop.sock_recv(a, 16) == b"later"
    buf = bytearray(8)
    loop.call_soon(b.send, b"into")
    assert await loop.sock_recv_into(a, buf) == 4
    try:
        await asyncio.wait_for(loop.sock_recv(a, 16), 0.0001)
    except asyncio.TimeoutError:
        pass
    coro = loop.sock_recv(a, 16)
    coro.send(None)
    coro.close()
    coro = loop.sock_recv(a, 16)
    coro.send(None)
    del coro
    big = b"x" * (256 * 1024)   # more than the socket buffers take

    async def drain_peer():
        got = 0
        while got < len(big):
            got += len(await loop.sock_recv(a, 65536))
    t = loop.create_task(drain_peer())
    await loop.sock_sendall(b, big)
    await t

    r, w = await asyncio.open_connection("127.0.0.1", NET["port"])
    msg = b"ping %d" % i
    w.write(msg)
    await w.drain()
    assert await r.readexactly(len(msg)) == msg
    # the C read(): waiting, timed out, closed while waiting, at once
    w.write(msg)
    assert await r.read(len(msg)) == msg
    try:
        await asyncio.wait_for(r.read(16), 0.0001)
    except asyncio.TimeoutError:
        pass
    coro = r.read(16)
    coro.send(None)
    coro.close()
    w.write(msg + msg)
    assert await r.readexactly(len(msg)) == msg
    assert await r.read(len(msg)) == msg   # most likely buffered by now
    w.close()
    await w.wait_closed()


async def _start_net(loop):
    NET["pair"] = socket.socketpair()
    for sock in NET["pair"]:
        sock.setblocking(False)
    NET["server"] = await asyncio.start_server(_echo_stream, "127.0.0.1", 0)
    NET["port"] = NET["server"].sockets[0].getsockname()[1]


async def _stop_net():
    NET["server"].close()
    await NET["server"].wait_closed()
    for sock in NET["pair"]:
        sock.close()


async def one_round(loop, worker, i):
    acc = []

    # Futures resolved by call_soon (with args), then awaited.
    fut = loop.create_future()
    loop.call_soon(fut.set_result, ("value", i))
    assert (await fut) == ("value", i)

    # A done callback added and one removed.
    fut = loop.create_future()
    fut.add_done_callback(lambda f: acc.append(f.result()))
    cb = lambda f: acc.append("removed")  # noqa: E731
    fut.add_done_callback(cb)
    fut.remove_done_callback(cb)
    fut.set_result(i)
    await asyncio.sleep(0)

    # Exceptions set, awaited, and retrieved.
    fut = loop.create_future()
    fut.set_exception(Boom(i))
    try:
        await fut
    except Boom as exc:
        assert exc.args == (i,)
    fut = loop.create_future()
    loop.call_soon(fut.set_exception, ValueError("v%d" % i))
    await asyncio.sleep(0)
    assert isinstance(fut.exception(), ValueError)

    # A future cancelled with a message.
    fut = loop.create_future()
    fut.cancel("fut-msg-%d" % i)
    try:
        await fut
    except asyncio.CancelledError:
        pass

    # Tasks: created, gathered, one failing.
    tasks = [loop.create_task(_returns(j)) for j in range(3)]
    tasks.append(loop.create_task(_raises(i)))
    res = await asyncio.gather(*tasks, return_exceptions=True)
    assert res[:3] == [0, 1, 2] and isinstance(res[3], Boom)
    assert (await asyncio.gather(_returns(1), _returns(2))) == [1, 2]

    # A task cancelled with a message while it sleeps.
    t = loop.create_task(_sleeps_forever())
    await asyncio.sleep(0)
    t.cancel("task-msg-%d" % i)
    try:
        await t
    except asyncio.CancelledError:
        pass
    assert t.cancelled()

    # A task that fails; its exception retrieved from the task.
    t = loop.create_task(_raises(i))
    await asyncio.wait([t])
    assert isinstance(t.exception(), Boom)

    # Timers: call_later (some cancelled), call_at, a zero-delay timer
    # resolving a future, and a timeout through wait_for.
    h1 = loop.call_later(3600, _cb, acc, "never")
    h2 = loop.call_later(0, _cb, acc, "later", i)
    h3 = loop.call_at(loop.time() + 3600, _cb, acc, "never")
    h1.cancel()
    if i % 2:
        h3.cancel()
    fut = loop.create_future()
    loop.call_later(0.0, fut.set_result, i)
    await fut
    h3.cancel()
    del h1, h2, h3
    try:
        await asyncio.wait_for(loop.create_future(), 0)
    except asyncio.TimeoutError:
        pass

    # call_soon with a context, and a handle cancelled before it runs.
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, i)
    loop.call_soon(_cb_ctx, acc, context=ctx)
    loop.call_soon(_cb, acc, "never").cancel()

    # call_soon_threadsafe from this thread and from the worker thread.
    fut = loop.create_future()
    loop.call_soon_threadsafe(fut.set_result, i)
    await fut
    fut = loop.create_future()
    worker.submit(fut, i)
    assert (await fut) == i

    # A reader callback on a socket: add_reader, data arrives, remove_reader
    # (and a writer that is added and removed at once).
    rsock, wsock = SOCKS
    fut = loop.create_future()

    def on_readable(f, sock):
        data = sock.recv(16)
        if not f.done():
            f.set_result(data)

    loop.add_reader(rsock.fileno(), on_readable, fut, rsock)
    wsock.send(b"x")
    assert (await fut) == b"x"
    assert loop.remove_reader(rsock.fileno())
    loop.add_writer(wsock.fileno(), _cb, acc, "writable")
    loop.remove_writer(wsock.fileno())

    # Errors reported to the exception handler: a callback that raises, and
    # a future and a task whose exceptions are never retrieved.
    loop.call_soon(_raise_in_callback, i)
    fut = loop.create_future()
    fut.set_exception(Boom("never retrieved %d" % i))
    del fut
    t = loop.create_task(_raises(i))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    del t

    await _net_part(loop, i)

    await asyncio.sleep(0)
    assert ("never",) not in acc and ("removed" not in acc), acc
    return len(acc)


def run_rounds(loop, worker, start, n):
    # One run_until_complete per round: run/stop are exercised too.
    for i in range(start, start + n):
        loop.run_until_complete(one_round(loop, worker, i))


def quiet_handler(loop, context):
    """Count what the loop reports instead of logging it."""
    REPORTS[0] += 1


# ---------------------------------------------------------------- measuring

def snapshot():
    # A few passes: the first can free objects whose finalizers free more.
    for _ in range(3):
        gc.collect()
    return sys.gettotalrefcount(), len(gc.get_objects())


def main(argv=None):
    args = parse_args(argv)
    check_interpreter(args.require_debug)

    import aioev
    import aioev._core as core
    check_extension(core)

    loop = aioev.new_event_loop()
    asyncio.set_event_loop(loop)
    print("refleak: %s, loop %s.%s"
          % (sys.version.split()[0] + (" (debug build)"),
             type(loop).__module__, type(loop).__qualname__))
    loop.set_exception_handler(quiet_handler)
    SOCKS[:] = socket.socketpair()
    for sock in SOCKS:
        sock.setblocking(False)
    loop.run_until_complete(_start_net(loop))
    worker = Worker(loop)
    rounds_per_chunk = max(1, args.rounds // args.chunks)
    t0 = time.monotonic()
    try:
        run_rounds(loop, worker, 0, args.warmup)
        base_refs, base_objs = snapshot()
        print("refleak: %d warm-up rounds; baseline: %d refs, %d gc objects"
              % (args.warmup, base_refs, base_objs))
        print("  %6s %8s %14s %10s %12s %8s"
              % ("chunk", "rounds", "total refs", "d refs", "gc objects",
                 "d objs"))
        prev_refs, prev_objs = base_refs, base_objs
        # Preallocated: growing a list between snapshots would count.
        d_refs, d_objs = [0] * args.chunks, [0] * args.chunks
        done = args.warmup
        for c in range(args.chunks):
            run_rounds(loop, worker, done, rounds_per_chunk)
            done += rounds_per_chunk
            refs, objs = snapshot()
            d_refs[c] = refs - prev_refs
            d_objs[c] = objs - prev_objs
            print("  %6d %8d %14d %+10d %12d %+8d"
                  % (c + 1, rounds_per_chunk, refs, d_refs[c], objs,
                     d_objs[c]))
            prev_refs, prev_objs = refs, objs
    finally:
        worker.stop()
        for sock in SOCKS:
            sock.close()
        loop.run_until_complete(_stop_net())
        loop.close()
        asyncio.set_event_loop(None)

    measured = rounds_per_chunk * args.chunks
    total_refs, total_objs = prev_refs - base_refs, prev_objs - base_objs
    print("refleak: %d rounds in %.1f s; growth over %d measured rounds: "
          "%+d refs (%+.4f/round), %+d gc objects (%+.4f/round)"
          % (args.warmup + measured, time.monotonic() - t0, measured,
             total_refs, total_refs / measured, total_objs,
             total_objs / measured))

    rounds = args.warmup + measured
    print("refleak: the loop reported %d errors to its exception handler "
          "(%.2f per round; 3 expected)" % (REPORTS[0], REPORTS[0] / rounds))

    failures = []
    if REPORTS[0] < 3 * rounds:
        failures.append("expected 3 errors per round reported to the "
                        "exception handler, got %d in %d rounds"
                        % (REPORTS[0], rounds))
    for name, deltas, total in (("references", d_refs, total_refs),
                                ("gc objects", d_objs, total_objs)):
        if all(d > args.slack for d in deltas):
            failures.append("LEAK: %s grew in every chunk (%s)"
                            % (name, ", ".join("%+d" % d for d in deltas)))
        elif total > args.max_per_round * measured:
            failures.append("LEAK: %s grew by %+d over %d rounds (more "
                            "than %.2f per round)" % (name, total, measured,
                                                      args.max_per_round))
    if failures:
        for f in failures:
            print("refleak: " + f)
        print("refleak: FAILED")
        return 1
    print("refleak: OK, no leak found")
    return 0


if __name__ == "__main__":
    # Don't let a stray PYTHONASYNCIODEBUG change what is measured.
    os.environ.pop("PYTHONASYNCIODEBUG", None)
    sys.exit(main())

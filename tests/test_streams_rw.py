"""StreamReader.read(), StreamWriter.write() and drain() over real connections.

aioev may run these three methods in C when a connection carries asyncio's
own StreamReaderProtocol (start_server / open_connection and their Unix
forms).  Every test runs on stdlib asyncio and on aioev (the ``loop``
fixture), over TCP and Unix sockets and on both ends of the connection
(the reader/writer given to client_connected_cb, and open_connection's), so
the C must do exactly what asyncio's Python methods do, quirks included.
"""

import array
import asyncio
import gc
import os
import random
import shutil
import socket
import sys
import tempfile
import time
import warnings

import pytest

from test_streams_net import TIMEOUT, _close_pair, run, stream_echo_handler

DEFAULT_LIMIT = 2 ** 16


@pytest.fixture(params=["tcp", "unix"])
def kind(request):
    return request.param


@pytest.fixture(params=["server", "client"])
def side(request):
    return request.param


class Pair:
    """Both ends of one stream connection."""

    def __init__(self, server, sr, sw, cr, cw, tmpdir):
        self.server, self.sr, self.sw, self.cr, self.cw = \
            server, sr, sw, cr, cw
        self.tmpdir = tmpdir

    def ends(self, side):
        """(reader, writer) of the side under test, then the peer's."""
        if side == "server":
            return self.sr, self.sw, self.cr, self.cw
        return self.cr, self.cw, self.sr, self.sw

    async def close(self):
        await _close_pair(self.server, self.sw, self.cw)
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


async def serve_and_connect(kind, on_client, limit):
    """start_server + open_connection (or the Unix forms), both ends built
    with ``limit``: (server, reader, writer, tmpdir or None)."""
    tmpdir = None
    if kind == "tcp":
        server = await asyncio.start_server(on_client, "127.0.0.1", 0,
                                            limit=limit)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port, limit=limit)
    else:
        tmpdir = tempfile.mkdtemp(prefix="aioev-rw-")
        path = os.path.join(tmpdir, "s")
        server = await asyncio.start_unix_server(on_client, path,
                                                 limit=limit)
        r, w = await asyncio.open_unix_connection(path, limit=limit)
    return server, r, w, tmpdir


async def open_pair(kind="tcp", limit=DEFAULT_LIMIT):
    """A connection and both its ends, see serve_and_connect()."""
    got = asyncio.get_running_loop().create_future()

    def on_client(reader, writer):
        got.set_result((reader, writer))
    server, cr, cw, tmpdir = await serve_and_connect(kind, on_client, limit)
    sr, sw = await got
    return Pair(server, sr, sw, cr, cw, tmpdir)


async def until(predicate, timeout=TIMEOUT):
    """Let the loop run until predicate() is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.001)


def buffered(reader):
    return len(reader._buffer)


def shrink_socket_buffers(writer, peer_writer):
    """Small kernel buffers, so the transport's own write buffer fills."""
    writer.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
    peer_writer.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)


async def write_until_paused(writer, payload):
    """Write payload at once; check the protocol is now paused."""
    writer.write(payload)
    high = writer.transport.get_write_buffer_limits()[1]
    assert writer.transport.get_write_buffer_size() > high
    assert writer._protocol._paused


def payload_of(size, seed=0):
    return random.Random(seed).randbytes(size)


# ---------------------------------------------------------------------------
# read(n)


def test_read_buffered_data_without_suspending(loop, kind, side):
    """With data buffered, read(n) returns at once (no trip through the
    loop) at most n bytes, keeping the rest for the next read; EOF behind
    the data changes nothing until the data is gone."""
    async def main():
        p = await open_pair(kind)
        r, w, pr, pw = p.ends(side)
        pw.write(b"0123456789")
        await until(lambda: buffered(r) == 10)
        ran = []
        loop.call_soon(ran.append, 1)
        assert await r.read(3) == b"012"
        assert await r.read(4) == b"3456"
        assert await r.read(100) == b"789"     # what there is, no waiting
        assert ran == []
        assert buffered(r) == 0
        pw.write(b"end")
        pw.write_eof()
        await until(lambda: r._eof)
        assert await r.read(2) == b"en"        # EOF with data: data first
        assert not r.at_eof()
        assert await r.read(5) == b"d"
        assert r.at_eof()
        assert await r.read(5) == b""
        await p.close()
    run(loop, main())


def test_read_waits_for_data_then_eof(loop, kind, side):
    """An empty buffer makes read(n) wait for the next data, or for EOF
    (b'')."""
    async def main():
        p = await open_pair(kind)
        r, w, pr, pw = p.ends(side)
        task = asyncio.ensure_future(r.read(100))
        await asyncio.sleep(0.02)
        assert not task.done()
        pw.write(b"abc")
        assert await task == b"abc"
        task = asyncio.ensure_future(r.read(100))
        await asyncio.sleep(0.02)
        assert not task.done()
        pw.write_eof()
        assert await task == b""
        assert r.at_eof()
        assert await r.read(100) == b""        # read after EOF
        assert await r.read() == b""
        await p.close()
    run(loop, main())


def test_read_zero(loop, kind, side):
    """read(0) is b'' at once: empty buffer, data buffered (kept), at EOF;
    but asyncio checks the reader's exception before n == 0."""
    async def main():
        p = await open_pair(kind)
        r, w, pr, pw = p.ends(side)
        ran = []
        loop.call_soon(ran.append, 1)
        assert await r.read(0) == b""
        assert ran == []
        pw.write(b"xy")
        await until(lambda: buffered(r) == 2)
        assert await r.read(0) == b""
        assert buffered(r) == 2
        assert await r.read(2) == b"xy"
        pw.write_eof()
        await until(lambda: r._eof)
        assert await r.read(0) == b""
        assert await r.read(5) == b""
        exc = ValueError("boom")
        r.set_exception(exc)
        with pytest.raises(ValueError) as info:
            await r.read(0)
        assert info.value is exc
        await p.close()
    run(loop, main())


@pytest.mark.parametrize("n", [-1, -7, "default"])
def test_read_all_until_eof(loop, kind, side, n):
    """read() / read(-1) / any negative n gathers everything up to EOF, in
    limit-sized pieces, resuming the paused transport as it goes."""
    data = payload_of(300_000, seed=1)

    async def main():
        p = await open_pair(kind, limit=1000)
        r, w, pr, pw = p.ends(side)

        async def produce():
            for i in range(0, len(data), 7000):
                pw.write(data[i:i + 7000])
                await pw.drain()
                if i % 70000 == 0:
                    await asyncio.sleep(0.001)
            pw.write_eof()
        producer = asyncio.ensure_future(produce())
        got = await (r.read() if n == "default" else r.read(n))
        await producer
        assert got == data
        assert r.at_eof()
        assert await r.read(-1) == b""
        assert await r.read(10) == b""
        await p.close()
    run(loop, main())


def test_read_size_argument_types(loop, side):
    """asyncio's read() only compares n with 0 and slices with it: bools
    and huge ints work, floats equal to 0 or negative work, other non-ints
    raise TypeError and leave the buffer alone."""
    class Index:
        def __index__(self):
            return 2

    async def main():
        p = await open_pair()
        r, w, pr, pw = p.ends(side)
        pw.write(b"abcdefgh")
        await until(lambda: buffered(r) == 8)
        assert await r.read(True) == b"a"
        assert await r.read(False) == b""
        assert await r.read(0.0) == b""
        for bad in (2.0, "2", None, Index()):
            with pytest.raises(TypeError):
                await r.read(bad)
            assert buffered(r) == 7
        assert await r.read(2 ** 100) == b"bcdefgh"
        pw.write(b"tail")
        pw.write_eof()
        assert await r.read(-1.0) == b"tail"
        assert await r.read(-2 ** 100) == b""
        await p.close()
    run(loop, main())


# ---------------------------------------------------------------------------
# read() and the reader's exception


def test_read_raises_the_readers_exception(loop, side):
    """Once set_exception() is called, read raises that exception (the
    same object), even with data buffered, which stays there; an exception
    class is raised as an instance of it."""
    async def main():
        p = await open_pair()
        r, w, pr, pw = p.ends(side)
        pw.write(b"kept")
        await until(lambda: buffered(r) == 4)
        exc = ValueError("set")
        r.set_exception(exc)
        for n in (5, 1, -1):
            with pytest.raises(ValueError) as info:
                await r.read(n)
            assert info.value is exc
        assert buffered(r) == 4
        try:
            raise KeyError("outer")
        except KeyError as outer:
            with pytest.raises(ValueError) as info:
                await r.read(5)
            assert info.value.__context__ is outer   # an ordinary raise
        r.set_exception(LookupError)
        with pytest.raises(LookupError) as info:
            await r.read(5)
        assert type(info.value) is LookupError
        await p.close()
    run(loop, main())


def test_read_raises_exception_set_while_waiting(loop, side):
    """set_exception() wakes a waiting read() with the exception; read(-1)
    loses what it had gathered so far."""
    async def main():
        p = await open_pair()
        r, w, pr, pw = p.ends(side)
        task = asyncio.ensure_future(r.read(5))
        await asyncio.sleep(0.01)
        exc = ValueError("while waiting")
        loop.call_soon(r.set_exception, exc)
        with pytest.raises(ValueError) as info:
            await task
        assert info.value is exc
        await p.close()

        p = await open_pair(limit=4)
        r, w, pr, pw = p.ends(side)
        pw.write(b"partial data")
        await until(lambda: buffered(r) == 12)
        task = asyncio.ensure_future(r.read(-1))
        await until(lambda: buffered(r) == 0 and r._waiter is not None)
        exc = ValueError("during read(-1)")
        r.set_exception(exc)
        with pytest.raises(ValueError) as info:
            await task
        assert info.value is exc
        await p.close()
    run(loop, main())


def test_read_after_peer_reset(loop, kind, side):
    """The peer closing with unread data resets the connection: a waiting
    read() raises ConnectionResetError, later reads and drain() raise the
    same object, the reader's exception()."""
    async def main():
        p = await open_pair(kind)
        r, w, pr, pw = p.ends(side)
        pw.transport.pause_reading()
        w.write(b"never read")   # stays in the peer's kernel buffer
        await asyncio.sleep(0.02)
        task = asyncio.ensure_future(r.read(10))
        await asyncio.sleep(0.01)
        pw.transport.abort()
        with pytest.raises(ConnectionResetError) as info:
            await task
        exc = info.value
        assert r.exception() is exc
        with pytest.raises(ConnectionResetError) as info:
            await r.read(10)
        assert info.value is exc
        with pytest.raises(ConnectionResetError) as info:
            await w.drain()
        assert info.value is exc
        await p.close()
    run(loop, main())


# ---------------------------------------------------------------------------
# read() and waiting: concurrency, cancellation, the coroutine object


def test_read_while_another_read_waits(loop, side):
    """Only one coroutine may wait for data: read() next to a waiting read
    (or readline) raises RuntimeError, and the Python read methods see a
    waiting read() too."""
    async def main():
        p = await open_pair()
        r, w, pr, pw = p.ends(side)
        first = asyncio.ensure_future(r.read(10))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match=(
                r"^read\(\) called while another coroutine is already "
                r"waiting for incoming data$")):
            await r.read(10)
        with pytest.raises(RuntimeError, match="already waiting"):
            await r.readline()
        with pytest.raises(RuntimeError, match=r"^readexactly\(\) called"):
            await r.readexactly(3)
        assert not first.done()
        pw.write(b"data")
        assert await first == b"data"

        other = asyncio.ensure_future(r.readline())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError, match=r"^read\(\) called while"):
            await r.read(10)
        pw.write(b"line\n")
        assert await other == b"line\n"
        await p.close()
    run(loop, main())


def test_read_woken_after_another_read_took_the_data(loop, side):
    """asyncio quirk: a read() woken by data that another (non-waiting)
    read() takes before it runs returns b'', not waiting again."""
    async def main():
        p = await open_pair()
        r, w, pr, pw = p.ends(side)
        first = asyncio.ensure_future(r.read(10))
        await asyncio.sleep(0)
        r.feed_data(b"abc")                    # wakes first, later
        assert await r.read(10) == b"abc"      # no wait: takes it all
        assert await first == b""
        assert not r.at_eof()
        pw.write(b"more")
        assert await r.read(10) == b"more"
        await p.close()
    run(loop, main())


def test_read_cancelled_keeps_later_data(loop, kind, side):
    """A cancelled read() (cancel, wait_for timeout, or cancel after the data
    woke it) leaves no waiter behind and loses no data."""
    async def main():
        p = await open_pair(kind)
        r, w, pr, pw = p.ends(side)
        task = asyncio.ensure_future(r.read(10))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        pw.write(b"late")
        assert await r.read(10) == b"late"

        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(r.read(10), 0.02)
        pw.write(b"later")
        assert await r.read(10) == b"later"

        task = asyncio.ensure_future(r.read(10))
        await asyncio.sleep(0)
        r.feed_data(b"xyz")          # the waiter is done ...
        task.cancel()                # ... and the task cancelled anyway
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await r.read(10) == b"xyz"
        await p.close()
    run(loop, main())


def test_read_coroutine_in_tasks(loop, side):
    """read() gives a coroutine: create_task, ensure_future, wait_for and
    gather take it."""
    async def main():
        p = await open_pair()
        r, w, pr, pw = p.ends(side)
        coro = r.read(1)
        assert asyncio.iscoroutine(coro)
        coro.close()
        task = asyncio.create_task(r.read(3))
        pw.write(b"abc")
        assert await task == b"abc"
        fut = asyncio.ensure_future(r.read(3))
        pw.write(b"def")
        assert await fut == b"def"
        pw.write(b"ghi")
        assert await asyncio.wait_for(r.read(3), TIMEOUT) == b"ghi"
        pw.write(b"jkl")
        assert await asyncio.gather(r.read(3)) == [b"jkl"]
        await p.close()
    run(loop, main())


def test_read_coroutine_never_awaited(loop, side):
    """A read() coroutine closed or dropped before it ran leaves no waiter
    behind and takes no data."""
    async def main():
        p = await open_pair()
        r, w, pr, pw = p.ends(side)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            coro = r.read(5)
            coro.close()                   # closing it never warns
            del coro
            gc.collect()
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            coro = r.read(5)
            del coro
            gc.collect()
        pw.write(b"hello")
        assert await r.read(5) == b"hello"

        pw.write(b"buffered")
        await until(lambda: buffered(r) == 8)
        coro = r.read(3)
        coro.close()                       # it never ran: nothing taken
        assert buffered(r) == 8
        assert await r.read(100) == b"buffered"
        await p.close()
    run(loop, main())


def test_read_coroutine_dropped_warns_never_awaited(loop, side):
    """asyncio's read() is a coroutine function: dropping the coroutine
    unawaited emits exactly one RuntimeWarning "coroutine
    'StreamReader.read' was never awaited"."""
    async def main():
        p = await open_pair()
        r, w, pr, pw = p.ends(side)
        try:
            coro = r.read(5)
            with pytest.warns(RuntimeWarning,
                              match="was never awaited") as rec:
                del coro
                gc.collect()
            assert len(rec) == 1
        finally:
            await p.close()
    run(loop, main())


def test_read_coroutine_closed_or_thrown_into_while_waiting(loop, side):
    """Driving read() by hand: close() or throw() while it waits clears the
    waiter (asyncio's finally), so later reads work."""
    async def main():
        p = await open_pair()
        r, w, pr, pw = p.ends(side)
        coro = r.read(5)
        coro.send(None)                     # now waiting for data
        assert r._waiter is not None
        coro.close()
        assert r._waiter is None

        coro = r.read(5)
        coro.send(None)
        with pytest.raises(KeyError):
            coro.throw(KeyError("thrown"))
        assert r._waiter is None

        pw.write(b"fine")
        assert await r.read(5) == b"fine"
        await p.close()
    run(loop, main())


def test_read_coroutine_checks_state_when_awaited(loop, side):
    """A read() coroutine does nothing until awaited: it returns what is
    buffered then, raises an exception set since, and checks for another
    waiter only then."""
    async def main():
        p = await open_pair()
        r, w, pr, pw = p.ends(side)
        coro = r.read(100)
        pw.write(b"early")
        await until(lambda: buffered(r) == 5)
        pw.write(b"more")
        await until(lambda: buffered(r) == 9)
        assert await coro == b"earlymore"

        first = asyncio.ensure_future(r.read(10))
        await asyncio.sleep(0)
        coro = r.read(10)            # made while first waits: no error yet
        pw.write(b"x")
        assert await first == b"x"
        pw.write(b"y")
        assert await coro == b"y"

        coro = r.read(100)
        pw.write(b"zz")
        await until(lambda: buffered(r) == 2)
        exc = ValueError("set after the coroutine was made")
        r.set_exception(exc)
        with pytest.raises(ValueError) as info:
            await coro
        assert info.value is exc
        await p.close()
    run(loop, main())


# ---------------------------------------------------------------------------
# Flow control on the reading side


def test_read_flow_control_pause_and_resume(loop, kind, side):
    """The transport pauses once the buffer holds more than 2 * limit bytes
    and read() resumes it once it holds limit bytes or fewer."""
    limit = 1024
    data = payload_of(2 * limit + 1, seed=2)

    async def main():
        p = await open_pair(kind, limit=limit)
        r, w, pr, pw = p.ends(side)
        t = w.transport
        pw.write(data[:2 * limit])
        await until(lambda: buffered(r) == 2 * limit)
        await asyncio.sleep(0.01)
        assert t.is_reading()                 # 2 * limit: not past it
        pw.write(data[2 * limit:])
        await until(lambda: buffered(r) == 2 * limit + 1)
        assert not t.is_reading()
        got = await r.read(limit)             # leaves limit + 1
        assert not t.is_reading()
        got += await r.read(1)                # leaves limit
        assert t.is_reading()
        got += await r.read(10 * limit)
        assert got == data
        await p.close()
    run(loop, main())


def test_read_flow_control_bulk_intact(loop, kind, side):
    """Megabytes through a small limit: the transport pauses and resumes
    many times and every byte arrives, in order."""
    data = payload_of(3 * 1024 * 1024, seed=3)

    async def main():
        p = await open_pair(kind, limit=4096)
        r, w, pr, pw = p.ends(side)
        rng = random.Random(4)

        async def produce():
            i = 0
            while i < len(data):
                n = rng.randint(1, 100_000)
                pw.write(data[i:i + n])
                i += n
                await pw.drain()
            pw.write_eof()
        producer = asyncio.ensure_future(produce())
        chunks = []
        paused_seen = 0
        while True:
            if not w.transport.is_reading():
                paused_seen += 1
            n = rng.randint(1, 20_000)
            chunk = await r.read(n)
            assert len(chunk) <= n
            if not chunk:
                break
            chunks.append(chunk)
        await producer
        assert paused_seen
        assert b"".join(chunks) == data
        await p.close()
    run(loop, main())


def test_read_interleaved_with_other_read_methods(loop, kind, side):
    """read() mixed with readexactly(), readline(), readuntil() and async
    iteration on one reader: nothing lost, nothing reordered."""
    rng = random.Random(5)
    alphabet = b"abcdefghij|"
    lines = []
    for _ in range(3000):
        body = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        lines.append(body + b"\n")
    data = b"".join(lines)

    async def main():
        p = await open_pair(kind, limit=2048)
        r, w, pr, pw = p.ends(side)

        async def produce():
            i = 0
            while i < len(data):
                n = rng.randint(1, 5000)
                pw.write(data[i:i + n])
                i += n
                await pw.drain()
                if rng.random() < 0.2:
                    await asyncio.sleep(0)
            pw.write_eof()
        producer = asyncio.ensure_future(produce())
        got = bytearray()
        ops = random.Random(6)
        while len(got) < len(data) // 2:
            op = ops.randrange(4)
            try:
                if op == 0:
                    got += await r.read(ops.randint(1, 300))
                elif op == 1:
                    got += await r.readexactly(ops.randint(0, 300))
                elif op == 2:
                    got += await r.readline()
                else:
                    got += await r.readuntil(b"|")
            except asyncio.IncompleteReadError as exc:
                got += exc.partial
        async for line in r:
            got += line
            if ops.random() < 0.3:
                got += await r.read(ops.randint(1, 50))
        await producer
        assert bytes(got) == data
        assert await r.read() == b""
        await p.close()
    run(loop, main())


def test_read_cuts_then_other_methods_and_feeds(loop, kind, side):
    """read(n) taking the front of a large buffer, then readexactly(),
    readuntil() and more data arriving, on the same buffer: each sees
    exactly the bytes left, in order (aioev advances the buffer's start
    where bytearray would copy the rest to a new block)."""
    data = payload_of(150_000, seed=3).replace(b"\n", b"x")
    data = data[:100_000] + b"\n" + data[100_001:]

    async def main():
        p = await open_pair(kind, limit=2 ** 20)
        r, w, pr, pw = p.ends(side)
        pw.write(data[:120_000])
        await until(lambda: buffered(r) == 120_000)
        got = [await r.read(65_536)]
        assert bytes(r._buffer) == data[65_536:120_000]
        got.append(await r.readexactly(1_000))
        got.append(await r.readuntil(b"\n"))
        assert bytes(r._buffer) == data[100_001:120_000]
        pw.write(data[120_000:])
        await until(lambda: buffered(r) == 50_000 - 1)
        got.append(await r.read(10))
        got.append(await r.read(100_000))
        assert buffered(r) == 0
        pw.write(b"tail")
        got.append(await r.read(100))
        await p.close()
        return got
    got = run(loop, main())
    assert [len(g) for g in got] == [65_536, 1_000, 33_465, 10, 49_989, 4]
    assert b"".join(got) == data + b"tail"


def test_read_with_the_buffer_exported(loop, kind, side):
    """A memoryview held on the reader's buffer: read() raises BufferError
    (asyncio's del of the buffer's front cannot resize it), taking part or
    all of it, and the data stays; released, read() gets it all."""
    async def main():
        p = await open_pair(kind)
        r, w, pr, pw = p.ends(side)
        pw.write(b"0123456789" * 1000)
        await until(lambda: buffered(r) == 10_000)
        view = memoryview(r._buffer)
        errors = []
        for n in (10, 10_000, 50_000):
            try:
                await r.read(n)
            except BufferError as exc:
                errors.append(str(exc))
        assert buffered(r) == 10_000
        view.release()
        got = await r.read(4_000) + await r.read(10_000)
        await p.close()
        return errors, got
    errors, got = run(loop, main())
    assert len(errors) == 3
    assert all("exports" in e for e in errors), errors
    assert got == b"0123456789" * 1000


def test_small_message_after_large_ones_takes_a_small_buffer(loop, kind,
                                                            side):
    """Large messages read whole, then a small one that waits in the
    buffer: the buffer holds about its size, not a block a large message
    left (aioev keeps emptied buffers' blocks for later large ones)."""
    big = payload_of(200_000, seed=5)

    async def main():
        p = await open_pair(kind, limit=2 ** 20)
        r, w, pr, pw = p.ends(side)
        for _ in range(3):
            pw.write(big)
            got = bytearray()
            while len(got) < len(big):
                got += await r.read(2 ** 20)
            assert got == big
        pw.write(b"y" * 1_000)
        await until(lambda: buffered(r) == 1_000)
        size = sys.getsizeof(r._buffer)
        assert await r.read(5_000) == b"y" * 1_000
        await p.close()
        return size
    assert run(loop, main()) < 16_384


def test_many_connections_large_messages_at_once(loop, kind):
    """40 connections at a time each echoing 15 messages of 20 KB to
    300 KB through read()/write()/drain(): the readers' buffers grow and
    empty at the same time (aioev passes their memory blocks from one
    to the next), and every byte comes back to its own connection."""
    rng = random.Random(21)
    pool = rng.randbytes(600_000)
    plans = [[rng.randint(20_000, 300_000) for _ in range(15)]
             for _ in range(40)]
    echoed = []

    async def main():
        server, r0, w0, tmpdir = await serve_and_connect(
            kind, stream_echo_handler, 2 ** 16)
        w0.close()
        await w0.wait_closed()
        address = server.sockets[0].getsockname()

        async def client(i, sizes):
            if kind == "tcp":
                r, w = await asyncio.open_connection(*address[:2])
            else:
                r, w = await asyncio.open_unix_connection(address)
            for j, size in enumerate(sizes):
                start = (i * 7919 + j * 104_729) % (len(pool) - size)
                chunk = pool[start:start + size]
                w.write(chunk)
                await w.drain()
                got = bytearray()
                while len(got) < size:
                    piece = await r.read(65_536)
                    assert piece, "EOF in the middle of an echo"
                    got += piece
                assert got == chunk, (i, j)
                echoed.append(size)
            w.close()
            await w.wait_closed()
        await asyncio.gather(*(client(i, sizes)
                               for i, sizes in enumerate(plans)))
        assert sorted(echoed) == sorted(sum(plans, []))
        server.close()
        await server.wait_closed()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    run(loop, main(), timeout=60)


# ---------------------------------------------------------------------------
# write()


def test_write_bytes_like(loop, kind, side):
    """write() takes bytes, bytearray and memoryview (slices too); b'' is
    a no-op; a bytearray changed after write() does not change what was
    sent."""
    async def main():
        p = await open_pair(kind)
        r, w, pr, pw = p.ends(side)
        assert w.write(b"ab") is None
        w.write(bytearray(b"cd"))
        w.write(memoryview(b"xefx")[1:3])
        w.write(memoryview(bytearray(b"gh")))
        w.write(b"")
        w.write(bytearray())
        ba = bytearray(b"ij")
        w.write(ba)
        ba[:] = b"ZZ"
        w.writelines([b"k", bytearray(b"l"), memoryview(b"m")])
        await w.drain()
        w.write_eof()
        assert await pr.read() == b"abcdefghijklm"
        await p.close()
    run(loop, main())


def test_write_rejects_non_bytes(loop, side):
    """write() raises TypeError for a str and other non bytes-like objects
    (an array.array too: asyncio checks the type), and the connection goes
    on working."""
    async def main():
        p = await open_pair()
        r, w, pr, pw = p.ends(side)
        msg = ("bytes, bytearray, or memoryview object" if
               sys.version_info >= (3, 14) else "bytes-like object")
        with pytest.raises(TypeError, match=f"{msg}, not 'str'"):
            w.write("text")
        for bad in (None, 1, array.array("b", b"xy"), [b"a"]):
            with pytest.raises(TypeError):
                w.write(bad)
        w.write(b"ok")
        assert await pr.read(10) == b"ok"
        await p.close()
    run(loop, main())


def test_write_after_close(loop, kind, side, caplog):
    """After close() (nothing pending), write() drops the data silently and
    the transport logs a warning from the fifth dropped write on; the type
    check still comes first."""
    async def main():
        p = await open_pair(kind)
        r, w, pr, pw = p.ends(side)
        w.write(b"sent")
        w.close()
        with caplog.at_level("WARNING", logger="asyncio"):
            for _ in range(7):
                assert w.write(b"dropped") is None
            with pytest.raises(TypeError):
                w.write("text")
        assert await pr.read() == b"sent"
        warned = [rec for rec in caplog.records
                  if rec.getMessage() == "socket.send() raised exception."]
        assert len(warned) == 3
        await p.close()
    run(loop, main())


def test_write_after_close_with_data_pending(loop, kind, side):
    """While close() waits to flush the buffer, write() still appends: the
    peer gets that data too (asyncio's transport checks conn_lost, not
    closing)."""
    data = payload_of(1024 * 1024, seed=7)

    async def main():
        p = await open_pair(kind)
        r, w, pr, pw = p.ends(side)
        shrink_socket_buffers(w, pw)
        w.write(data)
        assert w.transport.get_write_buffer_size() > 0
        w.close()
        w.write(b"TAIL")
        assert await pr.read() == data + b"TAIL"
        await p.close()
    run(loop, main())


def test_write_after_write_eof(loop, kind, side):
    """After write_eof(), write() raises RuntimeError, even for b''; a str
    is still a TypeError first."""
    async def main():
        p = await open_pair(kind)
        r, w, pr, pw = p.ends(side)
        w.write(b"last")
        w.write_eof()
        with pytest.raises(RuntimeError,
                           match=r"Cannot call write\(\) after write_eof\(\)"):
            w.write(b"x")
        with pytest.raises(RuntimeError):
            w.write(b"")
        with pytest.raises(TypeError):
            w.write("text")
        assert await pr.read() == b"last"
        await p.close()
    run(loop, main())


# ---------------------------------------------------------------------------
# drain()


def test_drain_not_paused_returns_without_suspending(loop, kind, side):
    """drain() with the protocol not paused finishes without a trip through
    the loop."""
    async def main():
        p = await open_pair(kind)
        r, w, pr, pw = p.ends(side)
        ran = []
        loop.call_soon(ran.append, 1)
        assert await w.drain() is None
        w.write(b"x" * 1000)
        assert await w.drain() is None
        assert ran == []
        assert await pr.readexactly(1000) == b"x" * 1000
        await p.close()
    run(loop, main())


def test_drain_blocks_until_peer_reads(loop, kind, side):
    """With the write buffer past the high-water mark, every drain() waits
    until the peer reads enough to resume writing."""
    data = payload_of(1024 * 1024, seed=8)

    async def main():
        p = await open_pair(kind)
        r, w, pr, pw = p.ends(side)
        shrink_socket_buffers(w, pw)
        await write_until_paused(w, data)
        d1 = asyncio.ensure_future(w.drain())
        d2 = asyncio.ensure_future(w.drain())
        await asyncio.sleep(0.05)
        assert not d1.done() and not d2.done()
        got = await pr.readexactly(len(data))
        assert await d1 is None
        assert await d2 is None
        assert got == data
        assert not w._protocol._paused
        await p.close()
    run(loop, main())


def test_drain_checks_state_when_awaited(loop, side):
    """A drain() coroutine looks at the flow-control state when awaited,
    not when made: pausing our own reading does not matter, a pause that
    began since does."""
    data = payload_of(1024 * 1024, seed=9)

    async def main():
        p = await open_pair()
        r, w, pr, pw = p.ends(side)
        shrink_socket_buffers(w, pw)
        d = w.drain()
        w.transport.pause_reading()
        assert await d is None
        w.transport.resume_reading()

        d = w.drain()                   # not paused yet
        await write_until_paused(w, data)
        task = asyncio.ensure_future(d)
        await asyncio.sleep(0.05)
        assert not task.done()
        assert await pr.readexactly(len(data)) == data
        assert await task is None

        await write_until_paused(w, data)
        d = w.drain()                   # paused now
        assert await pr.readexactly(len(data)) == data
        await until(lambda: not w._protocol._paused)
        ran = []
        loop.call_soon(ran.append, 1)
        assert await d is None          # resumed since: returns at once
        assert ran == []
        await p.close()
    run(loop, main())


def test_drain_cancelled_leaves_writer_usable(loop, kind, side):
    """Cancelling a task blocked in drain() raises CancelledError there;
    writes and drains go on working and no data is lost."""
    data = payload_of(1024 * 1024, seed=10)

    async def main():
        p = await open_pair(kind)
        r, w, pr, pw = p.ends(side)
        shrink_socket_buffers(w, pw)
        await write_until_paused(w, data)
        task = asyncio.ensure_future(w.drain())
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(w.drain(), 0.02)
        w.write(b"more")
        again = asyncio.ensure_future(w.drain())
        got = await pr.readexactly(len(data) + 4)
        assert await again is None
        assert got == data + b"more"
        await p.close()
    run(loop, main())


def test_drain_raises_the_readers_exception(loop, side):
    """drain() first raises the exception set on the writer's reader (the
    same object), paused or not."""
    async def main():
        p = await open_pair()
        r, w, pr, pw = p.ends(side)
        exc = ValueError("reader failed")
        r.set_exception(exc)
        for _ in range(2):
            with pytest.raises(ValueError) as info:
                await w.drain()
            assert info.value is exc
        await p.close()
    run(loop, main())


def test_drain_blocked_when_peer_resets(loop, kind, side):
    """A drain() waiting when the peer resets the connection raises the
    connection error, the same object the reader then raises."""
    data = payload_of(1024 * 1024, seed=11)

    async def main():
        p = await open_pair(kind)
        r, w, pr, pw = p.ends(side)
        shrink_socket_buffers(w, pw)
        await write_until_paused(w, data)
        task = asyncio.ensure_future(w.drain())
        await asyncio.sleep(0.02)
        pw.transport.abort()     # unread data in its kernel buffer: reset
        with pytest.raises(ConnectionError) as info:
            await task
        exc = info.value
        assert r.exception() is exc
        with pytest.raises(ConnectionError) as info:
            await w.drain()
        assert info.value is exc
        with pytest.raises(ConnectionError) as info:
            await r.read(10)
        assert info.value is exc
        await p.close()
    run(loop, main())


def test_drain_on_closing_transport(loop, kind, side):
    """writer.close(); await drain(): drain yields once to the loop, sees
    connection_lost and raises ConnectionResetError('Connection lost'); and
    so does every later drain."""
    async def main():
        p = await open_pair(kind)
        r, w, pr, pw = p.ends(side)
        w.close()
        ran = []
        loop.call_soon(ran.append, 1)
        with pytest.raises(ConnectionResetError, match="^Connection lost$"):
            await w.drain()
        assert ran == [1]
        with pytest.raises(ConnectionResetError, match="^Connection lost$"):
            await w.drain()
        assert r.exception() is None
        await p.close()
    run(loop, main())


def test_drain_on_closing_transport_with_data_pending(loop, kind, side):
    """close() with the buffer past the high-water mark: drain() waits for
    the flush and returns None (resume_writing wakes it), then later
    drains raise ConnectionResetError."""
    data = payload_of(1024 * 1024, seed=12)

    async def main():
        p = await open_pair(kind)
        r, w, pr, pw = p.ends(side)
        shrink_socket_buffers(w, pw)
        await write_until_paused(w, data)
        w.close()
        task = asyncio.ensure_future(w.drain())
        await asyncio.sleep(0.02)
        assert not task.done()
        assert await pr.read() == data
        assert await task is None
        with pytest.raises(ConnectionResetError, match="^Connection lost$"):
            await w.drain()
        await p.close()
    run(loop, main())


def test_drain_blocked_when_transport_aborted(loop, kind, side):
    """abort() while drain() waits: connection_lost(None) wakes it with
    None (no error); the next drain raises ConnectionResetError."""
    data = payload_of(1024 * 1024, seed=13)

    async def main():
        p = await open_pair(kind)
        r, w, pr, pw = p.ends(side)
        shrink_socket_buffers(w, pw)
        await write_until_paused(w, data)
        task = asyncio.ensure_future(w.drain())
        await asyncio.sleep(0.02)
        w.transport.abort()
        assert await task is None
        with pytest.raises(ConnectionResetError, match="^Connection lost$"):
            await w.drain()
        await p.close()
    run(loop, main())


# ---------------------------------------------------------------------------
# Types, repr, patches and subclasses


def test_stream_types_and_repr(loop, kind, side):
    """The reader and writer are asyncio's StreamReader / StreamWriter (or
    subclasses), with asyncio's reprs, which show the reader's state (the
    waiter of a waiting read() included)."""
    async def main():
        p = await open_pair(kind, limit=1024)
        r, w, pr, pw = p.ends(side)
        t = w.transport
        assert isinstance(r, asyncio.StreamReader)
        assert isinstance(w, asyncio.StreamWriter)
        assert repr(r) == f"<StreamReader limit=1024 transport={t!r}>"
        assert repr(w) == f"<StreamWriter transport={t!r} reader={r!r}>"
        task = asyncio.ensure_future(r.read(10))
        await asyncio.sleep(0)
        assert r._waiter is not None
        assert repr(r) == (f"<StreamReader limit=1024 "
                           f"waiter={r._waiter!r} transport={t!r}>")
        pw.write(b"abc")
        assert await task == b"abc"
        pw.write(b"x" * 3000)
        await until(lambda: buffered(r) == 3000)
        assert repr(r) == (f"<StreamReader 3000 bytes limit=1024 "
                           f"transport={t!r} paused>")
        await p.close()
    run(loop, main())


def test_patched_read_write_drain_are_used(loop, kind, side, monkeypatch):
    """StreamReader.read, StreamWriter.write and StreamWriter.drain patched
    before the connection is made are what runs; read(-1) goes through
    self.read(limit) as asyncio's does."""
    calls = []
    orig_read = asyncio.StreamReader.read
    orig_write = asyncio.StreamWriter.write
    orig_drain = asyncio.StreamWriter.drain

    async def read(self, n=-1):
        calls.append(("read", n))
        return await orig_read(self, n)

    def write(self, data):
        calls.append(("write", bytes(data)))
        return orig_write(self, data)

    async def drain(self):
        calls.append(("drain",))
        return await orig_drain(self)
    monkeypatch.setattr(asyncio.StreamReader, "read", read)
    monkeypatch.setattr(asyncio.StreamWriter, "write", write)
    monkeypatch.setattr(asyncio.StreamWriter, "drain", drain)

    async def main():
        p = await open_pair(kind, limit=1000)
        r, w, pr, pw = p.ends(side)
        w.write(b"hi")
        await w.drain()
        assert calls == [("write", b"hi"), ("drain",)]
        del calls[:]
        assert await pr.readexactly(2) == b"hi"
        assert calls == []
        assert await r.read(0) == b""
        assert calls == [("read", 0)]
        del calls[:]
        pw.write(b"z" * 2500)
        pw.write_eof()
        del calls[:]
        assert await r.read() == b"z" * 2500
        assert calls[0] == ("read", -1)
        assert set(calls[1:]) == {("read", 1000)}
        assert len(calls) >= 5     # >= 3 pieces, then b'' at EOF
        await p.close()
    run(loop, main())


def test_reader_subclass_keeps_its_read(loop, kind):
    """StreamReader subclasses given through custom protocol factories keep
    their class and their own read(), on the server and client side."""
    seen = []

    class Upper(asyncio.StreamReader):
        async def read(self, n=-1):
            seen.append(n)
            return (await super().read(n)).upper()

    class Marked(asyncio.StreamReader):
        pass

    async def main():
        accepted = asyncio.Queue()
        classes = iter([Upper, Marked])

        def factory():
            return asyncio.StreamReaderProtocol(
                next(classes)(), lambda r, w: accepted.put_nowait((r, w)))
        tmpdir = None
        if kind == "tcp":
            server = await loop.create_server(factory, "127.0.0.1", 0)
            addr = ("127.0.0.1", server.sockets[0].getsockname()[1])
            cr, cw = await asyncio.open_connection(*addr)
        else:
            tmpdir = tempfile.mkdtemp(prefix="aioev-rw-")
            path = os.path.join(tmpdir, "s")
            server = await loop.create_unix_server(factory, path)
            cr, cw = await asyncio.open_unix_connection(path)
        sr, sw = await accepted.get()
        assert type(sr) is Upper
        assert isinstance(sw, asyncio.StreamWriter)
        cw.write(b"abc")
        assert await sr.read(10) == b"ABC"
        assert seen == [10]
        sw.write(b"reply")
        await sw.drain()
        assert await cr.read(10) == b"reply"
        cw.write(b"def")
        cw.write_eof()
        del seen[:]
        assert await sr.read() == b"DEF"
        assert seen[:2] == [-1, DEFAULT_LIMIT]
        cw.close()
        sw.close()

        # a second connection: Marked on the server side, Upper on the
        # client side through create_connection
        reader = Upper()

        def protocol():
            return asyncio.StreamReaderProtocol(reader)
        if kind == "tcp":
            transport, _ = await loop.create_connection(protocol, *addr)
        else:
            transport, _ = await loop.create_unix_connection(protocol, path)
        sr, sw = await accepted.get()
        assert type(sr) is Marked
        assert type(reader) is Upper
        transport.write(b"plain")
        assert await sr.read(10) == b"plain"
        del seen[:]
        sw.write(b"shout")
        assert await reader.read(10) == b"SHOUT"
        assert seen == [10]
        transport.close()
        sw.close()
        server.close()
        await server.wait_closed()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    run(loop, main())


# ---------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("limit", [DEFAULT_LIMIT, 1000])
def test_echo_round_trips(loop, kind, limit):
    """2,000 round trips of random sizes (1 to 200,000 bytes, log-uniform,
    with the sizes around the limits first) over one connection, both ends
    using read()/write()/drain(): every byte comes back in order."""
    rng = random.Random(14)
    pool = rng.randbytes(400_000)
    sizes = [1, 2, 3, limit - 1, limit, limit + 1, 2 * limit,
             2 * limit + 1, 65535, 65536, 65537, 200_000]
    while len(sizes) < 2000:
        sizes.append(min(200_000, int(2 ** rng.uniform(0, 17.61))))

    async def main():
        server, r, w, tmpdir = await serve_and_connect(
            kind, stream_echo_handler, limit)
        for size in sizes:
            start = rng.randrange(len(pool) - size + 1)
            chunk = pool[start:start + size]
            w.write(chunk)
            await w.drain()
            got = bytearray()
            while len(got) < size:
                piece = await r.read(rng.randint(1, 2 * size))
                assert piece, "EOF in the middle of an echo"
                got += piece
            assert len(got) == size
            assert got == chunk
        w.write_eof()
        assert await r.read() == b""
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    run(loop, main(), timeout=30)


def test_start_tls_read_write_drain_follow_the_new_transport(loop):
    """After writer.start_tls() the writer's transport is the TLS one:
    write() and drain() must use it, and read() gets the decrypted data."""
    if not hasattr(asyncio.StreamWriter, "start_tls"):
        pytest.skip("StreamWriter.start_tls is 3.11+")
    pytest.importorskip("ssl")
    test_utils = pytest.importorskip("test.test_asyncio.utils")
    server_ctx = test_utils.simple_server_sslcontext()
    client_ctx = test_utils.simple_client_sslcontext()
    data = payload_of(500_000, seed=15)
    done = []

    async def handler(reader, writer):
        assert await reader.read(8) == b"STARTTLS"
        plain = writer.transport
        writer.write(b"OK")
        await writer.drain()
        await writer.start_tls(server_ctx)
        assert writer.transport is not plain
        got = bytearray()
        while len(got) < len(data):
            chunk = await reader.read(100_000)
            assert chunk
            got += chunk
            writer.write(chunk)
            await writer.drain()
        done.append(bytes(got) == data)
        writer.close()

    async def main():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"STARTTLS")
        assert await r.readexactly(2) == b"OK"
        await w.start_tls(client_ctx)

        async def produce():
            for i in range(0, len(data), 50_000):
                w.write(data[i:i + 50_000])
                await w.drain()
        producer = asyncio.ensure_future(produce())
        echoed = await r.readexactly(len(data))
        await producer
        assert echoed == data
        w.close()
        try:
            await w.wait_closed()
        except (ConnectionError, OSError):
            pass
        server.close()
        await server.wait_closed()
    run(loop, main())
    assert done == [True]


# ---------------------------------------------------------------------------
# aioev's switch to its C methods


def test_awaiting_read_or_drain_twice_is_an_error(loop, kind, side):
    """A read() or drain() coroutine awaited a second time raises
    RuntimeError, as a coroutine does (the C ones included, done at once
    or after waiting)."""
    async def main():
        p = await open_pair(kind)
        r, w, pr, pw = p.ends(side)
        d = w.drain()
        assert await d is None
        with pytest.raises(RuntimeError, match="cannot reuse"):
            await d
        pw.write(b"abc")
        coro = r.read(10)
        assert await coro == b"abc"
        with pytest.raises(RuntimeError, match="cannot reuse"):
            await coro
        await p.close()
    run(loop, main())


def test_aioev_switches_exact_asyncio_streams(aioev_loop, kind):
    """On aioev, the reader of both ends and the writer start_server hands
    to its callback are switched to subclasses with read() / write() /
    drain() in C; open_connection's writer, made after the transport,
    stays asyncio's. All remain instances of asyncio's classes."""
    import aioev._core as core

    async def main():
        p = await open_pair(kind)
        assert type(p.sr) is core.StreamReader
        assert type(p.cr) is core.StreamReader
        assert type(p.sw) is core.StreamWriter
        assert type(p.cw) is asyncio.StreamWriter
        for obj in (p.sr, p.cr):
            assert isinstance(obj, asyncio.StreamReader)
        assert isinstance(p.sw, asyncio.StreamWriter)
        coro = p.sr.read(1)
        assert asyncio.iscoroutine(coro)
        coro.close()
        await p.close()
    run(aioev_loop, main())


def test_aioev_leaves_patched_classes_alone(aioev_loop, monkeypatch):
    """A patched read() keeps the reader asyncio's own class (the patch
    runs); a patched drain() does the same for the writer."""
    orig_read = asyncio.StreamReader.read
    orig_drain = asyncio.StreamWriter.drain

    async def read(self, n=-1):
        return await orig_read(self, n)

    async def drain(self):
        return await orig_drain(self)

    monkeypatch.setattr(asyncio.StreamReader, "read", read)
    monkeypatch.setattr(asyncio.StreamWriter, "drain", drain)

    async def main():
        p = await open_pair()
        assert type(p.sr) is asyncio.StreamReader
        assert type(p.cr) is asyncio.StreamReader
        assert type(p.sw) is asyncio.StreamWriter
        await p.close()
    run(aioev_loop, main())


# ---------------------------------------------------------------------------
# What finished read()/drain() awaitables hold


def test_done_read_and_drain_hold_no_connection(loop, side):
    # A finished coroutine holds nothing (its frame is cleared): done tasks
    # made of read() and drain(), still referenced, must not keep the
    # reader, writer, transport (and its socket) alive.
    import weakref

    async def main():
        pair = await open_pair()
        reader, writer, peer_r, peer_w = pair.ends(side)
        peer_w.write(b"hello")
        read_task = asyncio.ensure_future(reader.read(10))
        assert await read_task == b"hello"
        drain_task = asyncio.ensure_future(writer.drain())
        await drain_task
        refs = [weakref.ref(x) for x in (reader, writer, writer.transport)]
        await pair.close()
        del reader, writer, peer_r, peer_w, pair
        return read_task, drain_task, refs

    tasks = run(loop, main())
    gc.collect()
    assert all(t.done() for t in tasks[:2])
    assert [r() for r in tasks[2]] == [None, None, None]


def test_method_arguments_as_asyncio_takes_them(loop, side):
    # write(data=...) works; calls with arguments asyncio's methods do not
    # take fail with asyncio's own messages.
    async def main():
        pair = await open_pair()
        reader, writer, peer_r, peer_w = pair.ends(side)
        writer.write(data=b"kw")
        assert await peer_r.readexactly(2) == b"kw"
        peer_w.write(b"xy")
        assert await reader.read(n=1) == b"x"
        bad = [(writer.write, (), {}), (writer.write, (b"a", b"b"), {}),
               (writer.write, (), {"dat": b"a"}), (reader.read, (1, 2), {}),
               (reader.read, (), {"size": 1}), (writer.drain, (1,), {})]
        for meth, args, kw in bad:
            cls = (asyncio.StreamReader if meth.__self__ is reader
                   else asyncio.StreamWriter)
            orig = getattr(cls, meth.__name__)
            with pytest.raises(TypeError) as expected:
                orig(meth.__self__, *args, **kw)
            with pytest.raises(TypeError) as got:
                meth(*args, **kw)
            assert str(got.value) == str(expected.value)
        await pair.close()
    run(loop, main())

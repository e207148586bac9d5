"""loop.sock_* methods: sock_recv, sock_recv_into, sock_recvfrom,
sock_recvfrom_into, sock_sendall, sock_sendto, sock_connect, sock_accept and
sock_sendfile, on TCP (127.0.0.1), Unix sockets, socketpairs and UDP.

Each test runs on stdlib asyncio (the reference) and on aioev.  Every wait is
bounded (``run`` wraps the coroutine in ``wait_for``) so a loop that never
wakes up fails the test instead of hanging it.

Notes on asyncio's behaviour that the tests rely on (3.11 - 3.13):

* Blocking sockets are refused with ValueError("the socket must be
  non-blocking") only in debug mode; the tests that check it call
  ``loop.set_debug(True)``.  aioev refuses them always (aioev-only test).
* sock_sendfile: os.sendfile is tried first; a file without fileno()
  (io.BytesIO) or a descriptor os.sendfile refuses before sending anything
  (a pipe: ESPIPE) raises SendfileNotAvailableError with fallback=False and
  is sent with a read/sock_sendall loop with fallback=True (the default).
* A SSLSocket is refused with TypeError by every sock_* method.
"""

import asyncio
import errno
import gc
import io
import os
import re
import selectors
import shutil
import socket
import ssl
import struct
import sys
import tempfile
import warnings

import pytest

TIMEOUT = 5.0
HAS_UNIX = hasattr(socket, "AF_UNIX")
needs_unix = pytest.mark.skipif(not HAS_UNIX, reason="needs AF_UNIX")


def run(loop, coro, timeout=TIMEOUT):
    """Run coro on loop, failing (not hanging) after timeout seconds."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def nonblocking(*socks):
    for s in socks:
        s.setblocking(False)
    return socks


def fill_send_buffer(sock):
    """Write to non-blocking sock until the kernel refuses more.

    Returns the number of bytes written."""
    chunk = b"\0" * 65536
    total = 0
    while True:
        try:
            total += sock.send(chunk)
        except (BlockingIOError, InterruptedError):
            return total


def drain(sock):
    """Read everything available right now from non-blocking sock."""
    out = bytearray()
    while True:
        try:
            data = sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return bytes(out)
        if not data:
            return bytes(out)
        out += data


def reset(sock):
    """Close sock so that the peer gets a RST (not a FIN)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                    struct.pack("ii", 1, 0))
    sock.close()


def registered_for_reading(loop, fd):
    """True if fd still has a reader on the loop (removes it if so)."""
    return loop.remove_reader(fd)


def registered_for_writing(loop, fd):
    return loop.remove_writer(fd)


def watched_for_reading(loop, fd):
    """True if fd has a reader on the loop (leaves it in place)."""
    if hasattr(loop, "_fd_events"):         # aioev
        return bool(loop._fd_events(fd) & 1)
    try:
        key = loop._selector.get_key(fd)
    except KeyError:
        return False
    return bool(key.events & selectors.EVENT_READ)


# ---------------------------------------------------------------------------
# Fixtures.  They depend on ``loop`` so that they are torn down (sockets
# closed) before the loop fixture checks for leaked file descriptors.


class Closer:
    def __init__(self):
        self.items = []

    def __call__(self, *socks):
        self.items.extend(socks)
        return socks[0] if len(socks) == 1 else socks

    def close(self):
        for s in reversed(self.items):
            s.close()
        self.items.clear()


@pytest.fixture
def closing(loop):
    """closing(sock, ...) closes the sockets at teardown."""
    c = Closer()
    yield c
    c.close()


@pytest.fixture
def sockpair(closing):
    a, b = socket.socketpair()
    return closing(*nonblocking(a, b))


@pytest.fixture
def sockdir():
    # Short path: AF_UNIX paths are limited to ~108 bytes.
    d = tempfile.mkdtemp(prefix="aioev-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def make_listener(kind, sockdir, backlog=16):
    if kind == "tcp":
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.bind(("127.0.0.1", 0))
    else:
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(os.path.join(sockdir, "s"))
    srv.listen(backlog)
    srv.setblocking(False)
    return srv


def client_for(srv):
    c = socket.socket(srv.family, socket.SOCK_STREAM)
    c.setblocking(False)
    return c


STREAM_KINDS = ["tcp", pytest.param("unix", marks=needs_unix), "socketpair"]


@pytest.fixture(params=STREAM_KINDS)
def stream_pair(request, loop, closing, sockdir):
    """A connected pair of non-blocking stream sockets (a, b)."""
    kind = request.param
    if kind == "socketpair":
        a, b = socket.socketpair()
    else:
        srv = closing(make_listener(kind, sockdir))
        srv.setblocking(True)
        a = socket.socket(srv.family, socket.SOCK_STREAM)
        a.connect(srv.getsockname())
        b, _ = srv.accept()
    return closing(*nonblocking(a, b))


@pytest.fixture
def tcp_pair(loop, closing):
    srv = closing(make_listener("tcp", None))
    srv.setblocking(True)
    a = socket.socket()
    a.connect(srv.getsockname())
    b, _ = srv.accept()
    return closing(*nonblocking(a, b))


@pytest.fixture
def udp_pair(loop, closing):
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    return closing(*nonblocking(a, b))


@pytest.fixture
def unix_dgram_pair(loop, closing):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    return closing(*nonblocking(a, b))


# ---------------------------------------------------------------------------
# sock_recv / sock_recv_into


def test_recv_data_already_there(loop, stream_pair):
    a, b = stream_pair
    b.sendall(b"hello")

    async def main():
        # The data is in the kernel before the call.
        await asyncio.sleep(0.01)
        return await loop.sock_recv(a, 100)
    assert run(loop, main()) == b"hello"


def test_recv_waits_for_data(loop, stream_pair):
    a, b = stream_pair

    async def main():
        loop.call_later(0.02, b.send, b"later")
        return await loop.sock_recv(a, 100)
    assert run(loop, main()) == b"later"
    # Nothing is left registered on a's fd.
    assert not registered_for_reading(loop, a.fileno())


@pytest.mark.parametrize("method", ["sock_recv", "sock_sendall"])
def test_sock_coroutine_dropped_warns_never_awaited(loop, stream_pair,
                                                    method):
    """A sock_* call never awaited says so when dropped, as asyncio's
    coroutines do (exactly one RuntimeWarning); one that was awaited, or
    closed, says nothing."""
    a, b = stream_pair
    arg = 100 if method == "sock_recv" else b"x"

    async def main():
        coro = getattr(loop, method)(a, arg)
        with pytest.warns(RuntimeWarning, match="was never awaited") as rec:
            del coro
            gc.collect()
        assert len(rec) == 1
        coro = getattr(loop, method)(a, arg)
        coro.close()
        del coro
        b.send(b"y")
        await getattr(loop, method)(a, arg)
        gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(loop, main())


def test_recv_respects_nbytes(loop, stream_pair):
    a, b = stream_pair
    b.sendall(b"0123456789")

    async def main():
        first = await loop.sock_recv(a, 4)
        rest = await loop.sock_recv(a, 100)
        return first, rest
    assert run(loop, main()) == (b"0123", b"456789")


def test_recv_many_in_a_row(loop, stream_pair):
    # Every sock_recv waits (the peer answers one iteration later): aioev
    # hands the socket's watch from each op to the next.
    a, b = stream_pair

    async def main():
        got = []
        for i in range(300):
            loop.call_soon(b.send, b"%03d" % i)
            got.append(await loop.sock_recv(a, 3))
            if i % 50 == 0:
                await asyncio.sleep(0.002)  # let a watch expire now and then
        return got
    assert run(loop, main()) == [b"%03d" % i for i in range(300)]
    assert not registered_for_reading(loop, a.fileno())


def test_recv_results_stay_intact_after_later_waits(loop, stream_pair,
                                                   closing):
    # Each recv below finds no data and waits (the peer sends one iteration
    # later), on two sockets, with sizes that repeat and change, large and
    # small: every result is a bytes of its own, and later recvs never
    # change it.  (aioev keeps the empty bytes of a recv that found no data
    # for the next recv of that size.)
    a, b = stream_pair
    c, d = closing(*nonblocking(*socket.socketpair()))
    sizes = [65536, 65536, 1000, 65536, 300000, 300000, 7, 65536]

    async def main():
        got = []
        for i, size in enumerate(sizes * 4):
            sock, peer = (a, b) if i % 3 else (c, d)
            payload = bytes([i]) * min(size, 5000)
            loop.call_soon(peer.send, payload)
            data = await loop.sock_recv(sock, size)
            got.append((data, payload))
        return got
    got = run(loop, main())
    assert len({id(data) for data, _ in got}) == len(got)
    for data, payload in got:
        assert data == payload


def test_recv_into_empty_buffer_is_zero_at_once(loop, stream_pair):
    # socket.recv_into(empty) returns 0 with no data there (the kernel's
    # recv of 0 bytes would say EAGAIN and never become ready).
    a, b = stream_pair

    async def main():
        got = [await loop.sock_recv_into(a, bytearray()),
               await loop.sock_recv_into(a, memoryview(bytearray(4))[:0])]
        b.send(b"x")
        got.append(await loop.sock_recv_into(a, bytearray()))
        got.append(await loop.sock_recv(a, 10))   # the data is still there
        return got
    assert run(loop, main(), timeout=1.0) == [0, 0, 0, b"x"]


def test_recv_into_many_in_a_row(loop, stream_pair):
    # The same for sock_recv_into, and an empty buffer still returns 0 at
    # once between waits.
    a, b = stream_pair

    async def main():
        got = bytearray()
        buf = bytearray(3)
        for i in range(200):
            loop.call_soon(b.send, b"%03d" % i)
            n = await loop.sock_recv_into(a, buf)
            got += buf[:n]
            assert await loop.sock_recv_into(a, bytearray()) == 0
        return bytes(got)
    assert run(loop, main()) == b"".join(b"%03d" % i for i in range(200))
    assert not registered_for_reading(loop, a.fileno())


def test_recv_eof_immediate(loop, stream_pair):
    a, b = stream_pair
    b.sendall(b"last")
    b.shutdown(socket.SHUT_WR)

    async def main():
        return [await loop.sock_recv(a, 100), await loop.sock_recv(a, 100)]
    assert run(loop, main()) == [b"last", b""]


def test_recv_eof_while_waiting(loop, stream_pair):
    a, b = stream_pair

    async def main():
        loop.call_later(0.02, b.close)
        return await loop.sock_recv(a, 100)
    assert run(loop, main()) == b""


def test_recv_into_bytearray(loop, stream_pair):
    a, b = stream_pair
    buf = bytearray(16)

    async def main():
        loop.call_later(0.01, b.send, b"abcdef")
        return await loop.sock_recv_into(a, buf)
    assert run(loop, main()) == 6
    assert buf == b"abcdef" + bytes(10)


def test_recv_into_memoryview_slice(loop, stream_pair):
    a, b = stream_pair
    buf = bytearray(b"." * 10)
    view = memoryview(buf)[2:6]
    b.sendall(b"WXYZ--")

    async def main():
        await asyncio.sleep(0.01)
        n = await loop.sock_recv_into(a, view)  # the slice bounds the read
        m = await loop.sock_recv_into(a, memoryview(buf)[6:])
        loop.call_later(0.01, b.send, b"more")
        k = await loop.sock_recv_into(a, memoryview(buf)[8:])
        return n, m, k
    assert run(loop, main()) == (4, 2, 2)
    assert buf == b"..WXYZ--mo"
    view.release()


def test_recv_into_eof(loop, stream_pair):
    a, b = stream_pair
    buf = bytearray(8)

    async def main():
        loop.call_later(0.01, b.shutdown, socket.SHUT_WR)
        return await loop.sock_recv_into(a, buf)
    assert run(loop, main()) == 0


def test_recv_into_readonly_buffer(loop, stream_pair):
    a, b = stream_pair
    b.sendall(b"x")

    async def main():
        await asyncio.sleep(0.01)
        return await loop.sock_recv_into(a, b"immutable")
    with pytest.raises(TypeError):
        run(loop, main())


def test_concurrent_recv_two_sockets(loop, sockpair, closing):
    a1, b1 = sockpair
    a2, b2 = closing(*nonblocking(*socket.socketpair()))
    order = []

    async def reader(sock, tag):
        data = await loop.sock_recv(sock, 100)
        order.append(tag)
        return data

    async def main():
        t1 = asyncio.ensure_future(reader(a1, 1))
        t2 = asyncio.ensure_future(reader(a2, 2))
        await asyncio.sleep(0.01)
        assert not t1.done() and not t2.done()
        b2.send(b"two")
        await asyncio.sleep(0.02)
        assert t2.done() and not t1.done()
        b1.send(b"one")
        return await asyncio.gather(t1, t2)
    assert run(loop, main()) == [b"one", b"two"]
    assert order == [2, 1]


def test_recv_many_sockets_concurrently(loop, closing):
    pairs = [closing(*nonblocking(*socket.socketpair())) for _ in range(20)]

    async def main():
        tasks = [asyncio.ensure_future(loop.sock_recv(a, 10))
                 for a, _ in pairs]
        await asyncio.sleep(0.01)
        for i, (_, b) in reversed(list(enumerate(pairs))):
            b.send(b"%d" % i)
        return await asyncio.gather(*tasks)
    assert run(loop, main()) == [b"%d" % i for i in range(20)]


# ---------------------------------------------------------------------------
# Peer reset, closed sockets


def test_recv_peer_reset_immediate(loop, tcp_pair):
    a, b = tcp_pair
    reset(b)

    async def main():
        await asyncio.sleep(0.01)
        return await loop.sock_recv(a, 100)
    with pytest.raises(ConnectionResetError):
        run(loop, main())


def test_recv_peer_reset_while_waiting(loop, tcp_pair):
    a, b = tcp_pair

    async def main():
        loop.call_later(0.02, reset, b)
        return await loop.sock_recv(a, 100)
    with pytest.raises(ConnectionResetError):
        run(loop, main())
    assert not registered_for_reading(loop, a.fileno())


def test_recv_into_peer_reset(loop, tcp_pair):
    a, b = tcp_pair

    async def main():
        loop.call_later(0.02, reset, b)
        return await loop.sock_recv_into(a, bytearray(10))
    with pytest.raises(ConnectionResetError):
        run(loop, main())


def test_sendall_peer_closed(loop, stream_pair):
    a, b = stream_pair
    b.close()

    async def main():
        # Several rounds: the first send may still be accepted locally.
        for _ in range(100):
            await loop.sock_sendall(a, b"x" * 65536)
            await asyncio.sleep(0.001)
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        run(loop, main())


def test_sendall_peer_reset_while_waiting(loop, tcp_pair):
    a, b = tcp_pair

    async def main():
        loop.call_later(0.05, reset, b)
        await loop.sock_sendall(a, b"x" * (32 * 1024 * 1024))
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        run(loop, main())
    assert not registered_for_writing(loop, a.fileno())


def _closed_socket(kind, closing):
    if kind == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    elif kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    s.close()
    assert s.fileno() == -1
    return s


CLOSED_CALLS = {
    "sock_recv": ("tcp", lambda loop, s: loop.sock_recv(s, 10)),
    "sock_recv_into": ("tcp", lambda loop, s: loop.sock_recv_into(
        s, bytearray(10))),
    "sock_sendall": ("tcp", lambda loop, s: loop.sock_sendall(s, b"data")),
    "sock_connect": ("tcp", lambda loop, s: loop.sock_connect(
        s, ("127.0.0.1", 9))),
    "sock_connect_unix": ("unix", lambda loop, s: loop.sock_connect(
        s, "/nonexistent/aioev-test")),
    "sock_accept": ("tcp", lambda loop, s: loop.sock_accept(s)),
    "sock_recvfrom": ("udp", lambda loop, s: loop.sock_recvfrom(s, 10)),
    "sock_recvfrom_into": ("udp", lambda loop, s: loop.sock_recvfrom_into(
        s, bytearray(10))),
    "sock_sendto": ("udp", lambda loop, s: loop.sock_sendto(
        s, b"data", ("127.0.0.1", 9))),
}


@pytest.mark.parametrize("method", sorted(CLOSED_CALLS))
def test_closed_socket_raises_oserror(loop, method, closing):
    kind, call = CLOSED_CALLS[method]
    if kind == "unix" and not HAS_UNIX:
        pytest.skip("needs AF_UNIX")
    if not hasattr(loop, method.replace("_unix", "")):
        pytest.skip(f"no loop.{method} on this Python")
    s = _closed_socket(kind, closing)
    with pytest.raises(OSError):
        run(loop, call(loop, s))
    # The loop is still usable.
    a, b = closing(*nonblocking(*socket.socketpair()))
    b.send(b"ok")
    assert run(loop, loop.sock_recv(a, 10)) == b"ok"


def test_closed_socket_sendfile(loop, closing, tmp_path):
    s = _closed_socket("tcp", closing)
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    with open(path, "rb") as f:
        # os.sendfile fails before anything is sent: asyncio falls back to
        # the send loop, whose sock_sendall raises the OSError.
        with pytest.raises(OSError):
            run(loop, loop.sock_sendfile(s, f))


def test_socket_closed_while_waiting(loop, closing):
    # Closing a socket an operation waits on must not crash the loop (no
    # libev abort on the stale fd); asyncio just never completes the
    # operation.  After that, the same fd number (reused) works normally.
    a, b = socket.socketpair()
    a.setblocking(False)
    fd = a.fileno()

    async def main():
        task = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        a.close()
        b.close()
        try:
            await asyncio.wait_for(task, 0.1)
        except (asyncio.TimeoutError, OSError):
            pass
        # New sockets, likely reusing fd.
        c, d = closing(*nonblocking(*socket.socketpair()))
        loop.call_later(0.01, d.send, b"fresh")
        data = await loop.sock_recv(c, 100)
        if fd in (c.fileno(), d.fileno()):
            loop.call_later(0.01, c.send, b"back")
            data += await loop.sock_recv(d, 100)
        else:
            data += b"back"
        return data
    assert run(loop, main()) == b"freshback"


# ---------------------------------------------------------------------------
# The fd right after a wait.  aioev leaves a finished op's watch armed for a
# moment, for the same socket's next op to take over (no epoll_ctl); these
# check that nothing else on that fd number notices.


def _pair_reusing(fd, closing):
    """A new socketpair, as (end with fd number fd, other end)."""
    c, d = closing(*nonblocking(*socket.socketpair()))
    assert fd in (c.fileno(), d.fileno()), "fd number not reused"
    return (c, d) if c.fileno() == fd else (d, c)


@pytest.mark.parametrize("watch", ["sock_recv", "add_reader"])
def test_reused_fd_right_after_a_wait(loop, closing, watch):
    # a's op ends, a is closed and its fd number comes back as c's in the
    # same callback: c's wait (an op or a reader) must register with epoll
    # afresh.
    a, b = closing(*nonblocking(*socket.socketpair()))

    async def main():
        loop.call_soon(b.send, b"one")
        assert await loop.sock_recv(a, 100) == b"one"
        fd = a.fileno()
        a.close()
        b.close()
        c, d = _pair_reusing(fd, closing)
        loop.call_later(0.01, d.send, b"two")
        if watch == "sock_recv":
            return await loop.sock_recv(c, 100)
        fired = loop.create_future()
        loop.add_reader(fd, lambda: fired.done()
                        or fired.set_result(c.recv(100)))
        try:
            return await fired
        finally:
            loop.remove_reader(fd)
    assert run(loop, main()) == b"two"


def test_recv_on_reused_fd_after_socket_dropped(loop, closing):
    # The same with a socket closed by the garbage collector (its weakref
    # is what aioev compares).
    a, b = nonblocking(*socket.socketpair())
    closing(b)

    async def main():
        nonlocal a
        loop.call_soon(b.send, b"one")
        assert await loop.sock_recv(a, 100) == b"one"
        fd = a.fileno()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            del a
            gc.collect()
        c, d = _pair_reusing(fd, closing)
        loop.call_later(0.01, d.send, b"two")
        return await loop.sock_recv(c, 100)
    assert run(loop, main()) == b"two"


def test_add_reader_right_after_a_wait(loop, sockpair):
    a, b = sockpair

    async def main():
        loop.call_soon(b.send, b"1")
        assert await loop.sock_recv(a, 1) == b"1"
        # Nothing is registered for a: remove_reader says so.
        assert not watched_for_reading(loop, a.fileno())
        assert loop.remove_reader(a.fileno()) is False
        fired = loop.create_future()
        loop.add_reader(a.fileno(), lambda: fired.done()
                        or fired.set_result(a.recv(10)))
        loop.call_later(0.01, b.send, b"2")
        try:
            return await fired
        finally:
            loop.remove_reader(a.fileno())
    assert run(loop, main()) == b"2"


def test_sendall_wait_right_after_a_recv_wait(loop, tcp_pair):
    # The other direction on the same fd: the read watch cannot be taken
    # over by a write wait.
    a, b = tcp_pair

    async def main():
        loop.call_soon(b.send, b"go")
        assert await loop.sock_recv(a, 10) == b"go"
        blob = b"x" * (8 * 1024 * 1024)  # more than the socket buffers
        reader = loop.create_task(_read_exactly(loop, b, len(blob)))
        await loop.sock_sendall(a, blob)
        return await reader
    assert run(loop, main()) == 8 * 1024 * 1024


async def _read_exactly(loop, sock, n):
    got = 0
    while got < n:
        chunk = await loop.sock_recv(sock, 1 << 16)
        assert chunk
        got += len(chunk)
    return got


def test_data_while_no_op_waits(loop, sockpair):
    # Data arriving between two ops (on a watch left armed without an op)
    # is read by the next op, at once or after the watch was dropped.
    a, b = sockpair

    async def main():
        loop.call_soon(b.send, b"1")
        assert await loop.sock_recv(a, 10) == b"1"
        b.send(b"2")
        await asyncio.sleep(0)
        await asyncio.sleep(0.01)
        assert await loop.sock_recv(a, 10) == b"2"
        loop.call_soon(b.send, b"3")
        assert await loop.sock_recv(a, 10) == b"3"
        b.send(b"4")
        return await loop.sock_recv(a, 10)
    assert run(loop, main()) == b"4"


# ---------------------------------------------------------------------------
# Cancellation


def test_recv_cancel_then_reuse(loop, stream_pair):
    a, b = stream_pair

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_recv(a, 100), 0.02)
        await asyncio.sleep(0)
        # No reader left on the fd ...
        assert not registered_for_reading(loop, a.fileno())
        # ... and no stray callback consumes data sent after the cancel.
        b.send(b"after")
        await asyncio.sleep(0.03)
        assert a.recv(100) == b"after"
        # The same socket can be used again.
        loop.call_later(0.01, b.send, b"again")
        return await loop.sock_recv(a, 100)
    assert run(loop, main()) == b"again"


def test_recv_into_cancel_then_reuse(loop, sockpair):
    a, b = sockpair
    buf = bytearray(10)

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_recv_into(a, buf), 0.02)
        b.send(b"after")
        await asyncio.sleep(0.03)
        assert buf == bytes(10)  # not written by a stray callback
        return await loop.sock_recv_into(a, buf)
    assert run(loop, main()) == 5
    assert buf[:5] == b"after"


def test_recv_cancel_then_add_reader(loop, sockpair):
    # After a cancelled sock_recv, plain add_reader on the same fd works.
    a, b = sockpair
    fired = []

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_recv(a, 100), 0.02)
        done = loop.create_future()

        def on_readable():
            fired.append(a.recv(100))
            loop.remove_reader(a.fileno())
            done.set_result(None)
        loop.add_reader(a.fileno(), on_readable)
        b.send(b"via reader")
        await done
    run(loop, main())
    assert fired == [b"via reader"]


def test_recv_driven_by_hand_future_cancelled(loop, sockpair):
    # A driver other than Task: it cancels the yielded future and resumes
    # with send(): CancelledError, and the fd is no longer watched.
    a, b = sockpair

    async def main():
        coro = loop.sock_recv(a, 100)
        fut = coro.send(None)
        assert asyncio.isfuture(fut)
        assert watched_for_reading(loop, a.fileno())
        fut.cancel()
        with pytest.raises(asyncio.CancelledError):
            coro.send(None)
        await asyncio.sleep(0)
        assert not watched_for_reading(loop, a.fileno())
        b.send(b"kept")
        return await loop.sock_recv(a, 100)
    assert run(loop, main()) == b"kept"


def test_recv_dropped_awaitable_stops_watch(aioev_loop, sockpair):
    # A pending sock_recv awaitable that is closed or dropped cancels its
    # operation (asyncio's coroutine, closed, leaves its reader behind).
    loop = aioev_loop
    a, b = sockpair

    async def main():
        coro = loop.sock_recv(a, 100)
        coro.send(None)
        assert watched_for_reading(loop, a.fileno())
        coro.close()
        assert not watched_for_reading(loop, a.fileno())
        coro = loop.sock_recv(a, 100)
        coro.send(None)
        del coro
        assert not watched_for_reading(loop, a.fileno())
        b.send(b"kept")
        return await loop.sock_recv(a, 100)
    assert run(loop, main()) == b"kept"


def test_recv_cancel_explicit_task(loop, sockpair):
    a, b = sockpair

    async def main():
        task = asyncio.ensure_future(loop.sock_recv(a, 100))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Data sent in the same iteration as the cancellation.
        b.send(b"x")
        await asyncio.sleep(0.02)
        return await loop.sock_recv(a, 100)
    assert run(loop, main()) == b"x"


def test_sendall_cancel_stops_writing(loop, sockpair):
    a, b = sockpair

    async def main():
        fill_send_buffer(a)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(
                loop.sock_sendall(a, b"y" * (4 * 1024 * 1024)), 0.02)
        await asyncio.sleep(0)
        assert not registered_for_writing(loop, a.fileno())
        # Make room: a stray writer would now push more data.
        drain(b)
        await asyncio.sleep(0.03)
        assert drain(b) == b""
        # The socket works again.
        await loop.sock_sendall(a, b"fin")
        await asyncio.sleep(0.01)
        return drain(b)
    assert run(loop, main()) == b"fin"


def test_accept_cancel_then_reuse(loop, closing, sockdir):
    srv = closing(make_listener("tcp", sockdir))

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_accept(srv), 0.02)
        assert not registered_for_reading(loop, srv.fileno())
        c = closing(socket.create_connection(srv.getsockname()))
        await asyncio.sleep(0.03)
        # Still queued in the listener: no stray accept took it.
        conn, addr = await loop.sock_accept(srv)
        closing(conn)
        assert addr == c.getsockname()
        return conn
    run(loop, main())


def test_connect_cancel(loop, closing):
    # A listener with a full accept queue drops SYNs: connect() stays in
    # progress, and wait_for cancels it.
    srv = closing(make_listener("tcp", None, backlog=0))
    addr = srv.getsockname()
    for _ in range(3):
        filler = closing(client_for(srv))
        try:
            filler.connect(addr)
        except BlockingIOError:
            pass
    s = closing(client_for(srv))

    async def main():
        await asyncio.sleep(0.05)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_connect(s, addr), 0.05)
        await asyncio.sleep(0)
        assert not registered_for_writing(loop, s.fileno())
    run(loop, main())


# ---------------------------------------------------------------------------
# sock_sendall


def test_sendall_small(loop, stream_pair):
    a, b = stream_pair

    async def main():
        await loop.sock_sendall(a, b"ping")
        return await loop.sock_recv(b, 100)
    assert run(loop, main()) == b"ping"


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview"])
def test_sendall_buffer_types(loop, sockpair, kind):
    a, b = sockpair
    payload = bytes(range(256)) * 4
    data = {"bytes": payload, "bytearray": bytearray(payload),
            "memoryview": memoryview(payload)}[kind]

    async def main():
        assert await loop.sock_sendall(a, data) is None
        await asyncio.sleep(0.01)
        return drain(b)
    assert run(loop, main()) == payload


def test_sendall_empty(loop, sockpair):
    a, b = sockpair
    assert run(loop, loop.sock_sendall(a, b"")) is None


def test_sendall_large_to_slow_reader(loop, stream_pair):
    a, b = stream_pair
    payload = os.urandom(6 * 1024 * 1024)

    async def reader():
        await asyncio.sleep(0.05)  # the writer must wait for space
        chunks = []
        size = 0
        i = 0
        while True:
            chunk = await loop.sock_recv(b, 128 * 1024)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            i += 1
            if i % 8 == 0:
                await asyncio.sleep(0.001)  # slow
        return b"".join(chunks)

    async def writer():
        await loop.sock_sendall(a, payload)
        a.shutdown(socket.SHUT_WR)

    async def main():
        got, _ = await asyncio.gather(reader(), writer())
        return got
    got = run(loop, main(), timeout=30)
    assert len(got) == len(payload)
    assert got == payload


def test_sendall_large_memoryview_slice(loop, sockpair):
    a, b = sockpair
    payload = os.urandom(2 * 1024 * 1024)
    view = memoryview(payload)[1000:-1000]

    async def reader():
        out = bytearray()
        while len(out) < len(view):
            out += await loop.sock_recv(b, 65536)
        return bytes(out)

    async def main():
        got, _ = await asyncio.gather(reader(), loop.sock_sendall(a, view))
        return got
    assert run(loop, main(), timeout=20) == payload[1000:-1000]


def test_sendall_two_sockets_concurrently(loop, sockpair, closing):
    a1, b1 = sockpair
    a2, b2 = closing(*nonblocking(*socket.socketpair()))
    p1 = b"1" * (1024 * 1024)
    p2 = b"2" * (1024 * 1024)

    async def reader(sock, n):
        out = bytearray()
        while len(out) < n:
            out += await loop.sock_recv(sock, 65536)
        return bytes(out)

    async def main():
        return await asyncio.gather(
            loop.sock_sendall(a1, p1), loop.sock_sendall(a2, p2),
            reader(b1, len(p1)), reader(b2, len(p2)))
    res = run(loop, main(), timeout=20)
    assert res[2] == p1 and res[3] == p2


# ---------------------------------------------------------------------------
# sock_connect / sock_accept


@pytest.mark.parametrize("kind", ["tcp", pytest.param("unix",
                                                      marks=needs_unix)])
def test_connect_and_accept(loop, closing, sockdir, kind):
    srv = closing(make_listener(kind, sockdir))
    c = closing(client_for(srv))

    async def main():
        accept = asyncio.ensure_future(loop.sock_accept(srv))
        await asyncio.sleep(0.01)  # sock_accept waits
        assert not accept.done()
        assert await loop.sock_connect(c, srv.getsockname()) is None
        conn, addr = await accept
        closing(conn)
        assert conn.gettimeout() == 0  # non-blocking
        assert not conn.getblocking()
        if kind == "tcp":
            assert addr == c.getsockname()
        await loop.sock_sendall(c, b"hi")
        assert await loop.sock_recv(conn, 10) == b"hi"
        await loop.sock_sendall(conn, b"yo")
        assert await loop.sock_recv(c, 10) == b"yo"
    run(loop, main())


def test_accept_pending_connection(loop, closing):
    # The connection is already queued when sock_accept is called.
    srv = closing(make_listener("tcp", None))
    c = closing(socket.create_connection(srv.getsockname()))

    async def main():
        await asyncio.sleep(0.01)
        return await loop.sock_accept(srv)
    conn, addr = run(loop, main())
    closing(conn)
    assert addr == c.getsockname()
    assert conn.gettimeout() == 0
    assert conn.family == socket.AF_INET and conn.type == socket.SOCK_STREAM


def test_accept_several(loop, closing):
    srv = closing(make_listener("tcp", None))

    async def main():
        clients = [closing(client_for(srv)) for _ in range(5)]
        conns = []
        for c in clients:
            fut = asyncio.ensure_future(loop.sock_connect(
                c, srv.getsockname()))
            conn, addr = await loop.sock_accept(srv)
            closing(conn)
            await fut
            conns.append((conn, addr, c))
        for conn, addr, c in conns:
            assert addr == c.getsockname()
    run(loop, main())


def test_accept_many_in_a_row(loop, closing):
    # Each sock_accept either waits for a client that connects one
    # iteration later or finds one already queued (aioev may wait at once
    # right after a wait: the queued one must still be accepted, not
    # missed or left hanging).
    srv = closing(make_listener("tcp", None, backlog=64))

    def connect(c):
        try:
            c.connect(srv.getsockname())
        except BlockingIOError:
            pass

    async def main():
        for i in range(60):
            c = closing(client_for(srv))
            if i % 3 == 2:
                connect(c)
            else:
                loop.call_soon(connect, c)
            conn, addr = await loop.sock_accept(srv)
            closing(conn)
            assert addr == c.getsockname()
            if i % 20 == 0:
                await asyncio.sleep(0.002)  # let the watch expire
    run(loop, main())


def test_connect_refused(loop, closing):
    # A bound socket that does not listen answers SYN with RST.
    blocker = closing(socket.socket())
    blocker.bind(("127.0.0.1", 0))
    c = closing(client_for(blocker))
    with pytest.raises(ConnectionRefusedError):
        run(loop, loop.sock_connect(c, blocker.getsockname()))
    assert not registered_for_writing(loop, c.fileno())


@needs_unix
def test_connect_unix_missing_path(loop, closing, sockdir):
    c = closing(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    c.setblocking(False)
    with pytest.raises(FileNotFoundError):
        run(loop, loop.sock_connect(c, os.path.join(sockdir, "missing")))


def test_connect_resolves_localhost(loop, closing):
    srv = closing(make_listener("tcp", None))
    port = srv.getsockname()[1]
    c = closing(client_for(srv))

    async def main():
        accept = asyncio.ensure_future(loop.sock_accept(srv))
        await loop.sock_connect(c, ("localhost", port))
        conn, _ = await accept
        closing(conn)
        return c.getpeername()
    assert run(loop, main()) == ("127.0.0.1", port)


def test_connect_resolves_service_name_port(loop, closing):
    # A numeric port given as a string also goes through getaddrinfo.
    srv = closing(make_listener("tcp", None))
    port = srv.getsockname()[1]
    c = closing(client_for(srv))

    async def main():
        accept = asyncio.ensure_future(loop.sock_accept(srv))
        await loop.sock_connect(c, ("127.0.0.1", str(port)))
        conn, _ = await accept
        closing(conn)
        return c.getpeername()
    assert run(loop, main()) == ("127.0.0.1", port)


def _has_ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")
def test_connect_ipv6(loop, closing):
    srv = closing(socket.socket(socket.AF_INET6))
    srv.bind(("::1", 0))
    srv.listen(4)
    srv.setblocking(False)
    c = closing(client_for(srv))

    async def main():
        accept = asyncio.ensure_future(loop.sock_accept(srv))
        await loop.sock_connect(c, srv.getsockname()[:2])
        conn, addr = await accept
        closing(conn)
        assert addr[:2] == c.getsockname()[:2]
    run(loop, main())


def test_connect_udp(loop, udp_pair):
    # sock_connect on a datagram socket just sets the default peer.
    a, b = udp_pair

    async def main():
        await loop.sock_connect(a, b.getsockname())
        await loop.sock_sendall(a, b"dgram")
        return await loop.sock_recvfrom(b, 100)
    if not hasattr(loop, "sock_recvfrom"):
        pytest.skip("no sock_recvfrom")
    data, addr = run(loop, main())
    assert data == b"dgram" and addr == a.getsockname()


# ---------------------------------------------------------------------------
# UDP: sock_sendto / sock_recvfrom / sock_recvfrom_into

needs_dgram_api = pytest.mark.skipif(
    not hasattr(asyncio.AbstractEventLoop, "sock_recvfrom"),
    reason="sock_recvfrom/sock_sendto are new in 3.11")


@needs_dgram_api
def test_sendto_recvfrom(loop, udp_pair):
    a, b = udp_pair

    async def main():
        recv = asyncio.ensure_future(loop.sock_recvfrom(b, 100))
        await asyncio.sleep(0.01)
        assert not recv.done()
        n = await loop.sock_sendto(a, b"datagram", b.getsockname())
        assert n == 8
        return await recv
    data, addr = run(loop, main())
    assert data == b"datagram"
    assert addr == a.getsockname()


@needs_dgram_api
@pytest.mark.parametrize("method", ["sock_recvfrom", "sock_recvfrom_into"])
def test_recvfrom_many_in_a_row(loop, udp_pair, method):
    # Each recvfrom either waits for a datagram sent one iteration later or
    # finds one already queued (aioev may wait at once right after a wait:
    # the queued one must still come, not hang); every datagram is
    # received once, in order, with its sender's address.
    a, b = udp_pair
    dest = b.getsockname()

    async def recv():
        if method == "sock_recvfrom":
            return await loop.sock_recvfrom(b, 100)
        buf = bytearray(100)
        n, addr = await loop.sock_recvfrom_into(b, buf)
        return bytes(buf[:n]), addr

    async def main():
        got = []
        for i in range(200):
            if i % 3 == 2:
                a.sendto(b"%03d" % i, dest)
            else:
                loop.call_soon(a.sendto, b"%03d" % i, dest)
            got.append(await recv())
            if i % 50 == 0:
                await asyncio.sleep(0.002)  # let the watch expire
        return got
    got = run(loop, main())
    assert got == [(b"%03d" % i, a.getsockname()) for i in range(200)]


@needs_dgram_api
def test_recvfrom_already_there(loop, udp_pair):
    a, b = udp_pair
    a.sendto(b"one", b.getsockname())
    a.sendto(b"two", b.getsockname())

    async def main():
        await asyncio.sleep(0.01)
        return [await loop.sock_recvfrom(b, 100),
                await loop.sock_recvfrom(b, 100)]
    assert run(loop, main()) == [(b"one", a.getsockname()),
                                 (b"two", a.getsockname())]


@needs_dgram_api
def test_recvfrom_truncates(loop, udp_pair):
    a, b = udp_pair
    a.sendto(b"0123456789", b.getsockname())

    async def main():
        await asyncio.sleep(0.01)
        return await loop.sock_recvfrom(b, 4)
    assert run(loop, main()) == (b"0123", a.getsockname())


@needs_dgram_api
def test_recvfrom_into(loop, udp_pair):
    a, b = udp_pair
    buf = bytearray(16)

    async def main():
        loop.call_later(0.01, a.sendto, b"abc", b.getsockname())
        r1 = await loop.sock_recvfrom_into(b, buf)
        a.sendto(b"0123456789", b.getsockname())
        await asyncio.sleep(0.01)
        r2 = await loop.sock_recvfrom_into(b, memoryview(buf)[8:], 4)
        return r1, r2
    (n1, addr1), (n2, addr2) = run(loop, main())
    assert (n1, n2) == (3, 4)
    assert addr1 == addr2 == a.getsockname()
    assert buf == b"abc" + bytes(5) + b"0123" + bytes(4)


@needs_dgram_api
def test_recvfrom_cancel_then_reuse(loop, udp_pair):
    a, b = udp_pair

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_recvfrom(b, 100), 0.02)
        a.sendto(b"late", b.getsockname())
        await asyncio.sleep(0.03)
        # Not consumed by a stray callback.
        return await loop.sock_recvfrom(b, 100)
    assert run(loop, main()) == (b"late", a.getsockname())


@needs_dgram_api
def test_sendto_many(loop, udp_pair):
    a, b = udp_pair

    async def main():
        for i in range(20):
            await loop.sock_sendto(a, b"%d" % i, b.getsockname())
        got = []
        for _ in range(20):
            got.append((await loop.sock_recvfrom(b, 10))[0])
        return got
    assert run(loop, main()) == [b"%d" % i for i in range(20)]


@needs_dgram_api
def test_sendto_resolves_nothing_but_ip(loop, udp_pair):
    # sock_sendto takes an already resolved address, like socket.sendto.
    a, b = udp_pair

    async def main():
        await loop.sock_sendto(a, b"x", ("127.0.0.1", b.getsockname()[1]))
        return await loop.sock_recvfrom(b, 10)
    assert run(loop, main())[0] == b"x"


@needs_unix
@needs_dgram_api
def test_unix_dgram_socketpair(loop, unix_dgram_pair):
    a, b = unix_dgram_pair

    async def main():
        recv = asyncio.ensure_future(loop.sock_recv(b, 100))
        await asyncio.sleep(0.01)
        await loop.sock_sendall(a, b"unix dgram")
        return await recv
    assert run(loop, main()) == b"unix dgram"


# ---------------------------------------------------------------------------
# Blocking sockets and SSL sockets are refused


def _blocking_calls(loop, s, u, f):
    calls = [
        ("sock_recv", lambda: loop.sock_recv(s, 10)),
        ("sock_recv_into", lambda: loop.sock_recv_into(s, bytearray(10))),
        ("sock_sendall", lambda: loop.sock_sendall(s, b"x")),
        ("sock_connect", lambda: loop.sock_connect(s, ("127.0.0.1", 9))),
        ("sock_accept", lambda: loop.sock_accept(s)),
        ("sock_sendfile", lambda: loop.sock_sendfile(s, f)),
    ]
    if hasattr(asyncio.AbstractEventLoop, "sock_recvfrom"):
        calls += [
            ("sock_recvfrom", lambda: loop.sock_recvfrom(u, 10)),
            ("sock_recvfrom_into",
             lambda: loop.sock_recvfrom_into(u, bytearray(10))),
            ("sock_sendto", lambda: loop.sock_sendto(
                u, b"x", ("127.0.0.1", 9))),
        ]
    return calls


def _check_blocking_refused(loop, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"data")
    with socket.socket() as s, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
            open(path, "rb") as f:
        assert s.gettimeout() is None and u.gettimeout() is None
        for name, call in _blocking_calls(loop, s, u, f):
            with pytest.raises(ValueError, match="non-blocking"):
                run(loop, call())
        # A socket with a timeout is not non-blocking either.
        s.settimeout(1.0)
        with pytest.raises(ValueError, match="non-blocking"):
            run(loop, loop.sock_recv(s, 10))


def test_blocking_socket_refused_in_debug(loop, tmp_path):
    # asyncio (3.11 - 3.13) checks only in debug mode.
    loop.set_debug(True)
    _check_blocking_refused(loop, tmp_path)


def test_blocking_socket_refused_without_debug_aioev(aioev_loop, tmp_path):
    # aioev refuses blocking sockets always: a blocking call would freeze
    # the loop.
    assert not aioev_loop.get_debug()
    _check_blocking_refused(aioev_loop, tmp_path)


def test_ssl_socket_refused(loop):
    ctx = ssl.create_default_context()
    with ctx.wrap_socket(socket.socket(), server_hostname="localhost",
                         do_handshake_on_connect=False) as s:
        s.setblocking(False)
        calls = [loop.sock_recv(s, 10), loop.sock_recv_into(s, bytearray(1)),
                 loop.sock_sendall(s, b"x"),
                 loop.sock_connect(s, ("127.0.0.1", 9)),
                 loop.sock_accept(s)]
        for coro in calls:
            with pytest.raises(TypeError):
                run(loop, coro)


# ---------------------------------------------------------------------------
# sock_sendfile


@pytest.fixture
def datafile(tmp_path):
    data = os.urandom(300 * 1024) + b"END"
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    return path, data


async def _read_all(loop, sock, n=None):
    out = bytearray()
    while n is None or len(out) < n:
        chunk = await loop.sock_recv(sock, 65536)
        if not chunk:
            break
        out += chunk
    return bytes(out)


def test_sendfile_whole_file(loop, stream_pair, datafile):
    a, b = stream_pair
    path, data = datafile

    async def main():
        with open(path, "rb") as f:
            sent, got = await asyncio.gather(
                loop.sock_sendfile(a, f), _read_all(loop, b, len(data)))
            return sent, got, f.tell()
    sent, got, pos = run(loop, main(), timeout=20)
    assert sent == len(data)
    assert got == data
    assert pos == len(data)


def test_sendfile_offset_count(loop, stream_pair, datafile):
    a, b = stream_pair
    path, data = datafile

    async def main():
        with open(path, "rb") as f:
            sent = await loop.sock_sendfile(a, f, 1000, 5000)
            got = await _read_all(loop, b, 5000)
            return sent, got, f.tell()
    assert run(loop, main()) == (5000, data[1000:6000], 6000)


def test_sendfile_offset_to_end(loop, sockpair, datafile):
    a, b = sockpair
    path, data = datafile
    offset = len(data) - 10000

    async def main():
        with open(path, "rb") as f:
            sent = await loop.sock_sendfile(a, f, offset)
            got = await _read_all(loop, b, len(data) - offset)
            return sent, got, f.tell()
    assert run(loop, main()) == (10000, data[offset:], len(data))


def test_sendfile_count_beyond_end(loop, sockpair, datafile):
    a, b = sockpair
    path, data = datafile

    async def main():
        with open(path, "rb") as f:
            sent = await loop.sock_sendfile(a, f, len(data) - 3, 1000)
            got = await _read_all(loop, b, 3)
            return sent, got
    assert run(loop, main()) == (3, b"END")


def test_sendfile_empty_file(loop, sockpair, tmp_path):
    a, b = sockpair
    path = tmp_path / "empty"
    path.write_bytes(b"")
    with open(path, "rb") as f:
        assert run(loop, loop.sock_sendfile(a, f)) == 0


def test_sendfile_large_to_slow_reader(loop, tcp_pair, tmp_path):
    a, b = tcp_pair
    data = os.urandom(4 * 1024 * 1024)
    path = tmp_path / "big"
    path.write_bytes(data)

    async def slow_reader():
        await asyncio.sleep(0.05)
        out = bytearray()
        i = 0
        while len(out) < len(data):
            out += await loop.sock_recv(b, 65536)
            i += 1
            if i % 16 == 0:
                await asyncio.sleep(0.001)
        return bytes(out)

    async def main():
        with open(path, "rb") as f:
            return await asyncio.gather(loop.sock_sendfile(a, f),
                                        slow_reader())
    sent, got = run(loop, main(), timeout=30)
    assert sent == len(data)
    assert got == data


def test_sendfile_fallback_bytesio(loop, sockpair):
    # io.BytesIO has no fileno(): os.sendfile cannot be used, the default
    # fallback=True sends with a read/sock_sendall loop.
    a, b = sockpair
    data = os.urandom(200 * 1024)
    f = io.BytesIO(data)

    async def main():
        return await asyncio.gather(loop.sock_sendfile(a, f, 100, 150000),
                                    _read_all(loop, b, 150000))
    sent, got = run(loop, main(), timeout=20)
    assert sent == 150000
    assert got == data[100:150100]
    assert f.tell() == 150100


def test_sendfile_no_fallback_bytesio(loop, sockpair):
    a, b = sockpair
    f = io.BytesIO(b"data")
    with pytest.raises(asyncio.SendfileNotAvailableError):
        run(loop, loop.sock_sendfile(a, f, fallback=False))
    assert f.tell() == 0
    assert drain(b) == b""


class PipeReader:
    """A binary file object on a pipe: it has a fileno(), but os.sendfile()
    refuses it (ESPIPE, with an offset)."""

    mode = "rb"

    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd

    def readinto(self, buf):
        return os.readv(self.fd, [buf])


def test_sendfile_fallback_when_os_sendfile_fails(loop, sockpair, closing):
    a, b = sockpair
    r, w = os.pipe()
    try:
        os.write(w, b"through the pipe")
        os.close(w)
        w = -1
        f = PipeReader(r)

        async def main():
            if sys.version_info >= (3, 14):
                # 3.14's asyncio seeks the file back after a failed
                # os.sendfile() whatever was sent: on a pipe that fails,
                # with or without the fallback.
                for fallback in (False, True):
                    with pytest.raises(OSError) as info:
                        await loop.sock_sendfile(a, f, 0, 7,
                                                 fallback=fallback)
                    assert info.value.errno == errno.ESPIPE
                assert drain(b) == b""
                return 7, os.read(r, 7)  # nothing was taken from the pipe
            with pytest.raises(asyncio.SendfileNotAvailableError):
                await loop.sock_sendfile(a, f, 0, 7, fallback=False)
            assert drain(b) == b""
            sent = await loop.sock_sendfile(a, f, 0, 7)
            got = await _read_all(loop, b, 7)
            return sent, got
        assert run(loop, main()) == (7, b"through")
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_sendfile_bad_arguments(loop, sockpair, udp_pair, datafile, tmp_path):
    a, b = sockpair
    u, _ = udp_pair
    path, _ = datafile
    with open(path, "rb") as f:
        with pytest.raises(ValueError):
            run(loop, loop.sock_sendfile(u, f))         # not SOCK_STREAM
        with pytest.raises(ValueError):
            run(loop, loop.sock_sendfile(a, f, 0, 0))   # count <= 0
        with pytest.raises(ValueError):
            run(loop, loop.sock_sendfile(a, f, -1))     # offset < 0
        with pytest.raises(TypeError):
            run(loop, loop.sock_sendfile(a, f, 0, 1.5))
        with pytest.raises(TypeError):
            run(loop, loop.sock_sendfile(a, f, "0"))
    with open(path, "r", encoding="latin-1") as t:
        with pytest.raises(ValueError):
            run(loop, loop.sock_sendfile(a, t))         # text mode
    assert drain(b) == b""


def test_sendfile_cancel(loop, sockpair, tmp_path):
    # A socketpair: what the sender wrote is in the receive queue at once,
    # so after draining, any further data would come from a stray writer.
    # (asyncio leaves the file position unspecified after a cancel.)
    a, b = sockpair
    data = os.urandom(8 * 1024 * 1024)
    path = tmp_path / "big"
    path.write_bytes(data)

    async def main():
        with open(path, "rb") as f:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(loop.sock_sendfile(a, f), 0.05)
            await asyncio.sleep(0)
            assert not registered_for_writing(loop, a.fileno())
            got = drain(b)
            await asyncio.sleep(0.03)
            assert drain(b) == b""
            assert 0 < len(got) < len(data)
            assert got == data[:len(got)]
            # The socket is usable again.
            await loop.sock_sendall(a, b"next")
            return await loop.sock_recv(b, 10)
    assert run(loop, main(), timeout=20) == b"next"


# ---------------------------------------------------------------------------
# Drop-in details: result types, argument errors, awaitables


def test_result_types(loop, sockpair, udp_pair):
    a, b = sockpair
    u, v = udp_pair

    async def main():
        b.send(b"abc")
        await asyncio.sleep(0.01)
        data = await loop.sock_recv(a, 100)
        assert type(data) is bytes
        assert await loop.sock_sendall(b, b"xy") is None
        n = await loop.sock_recv_into(a, bytearray(10))
        assert type(n) is int and n == 2
        if hasattr(loop, "sock_sendto"):
            sent = await loop.sock_sendto(u, b"dg", v.getsockname())
            assert type(sent) is int and sent == 2
            res = await loop.sock_recvfrom(v, 10)
            assert type(res) is tuple and type(res[0]) is bytes
            u.sendto(b"dg", v.getsockname())
            res = await loop.sock_recvfrom_into(v, bytearray(10))
            assert type(res) is tuple and res[0] == 2
    run(loop, main())


def test_recv_zero_bytes(loop, sockpair):
    a, b = sockpair
    # recv(0) returns b"" at once, data or not.
    assert run(loop, loop.sock_recv(a, 0)) == b""


def test_recv_negative_size(loop, sockpair):
    a, b = sockpair
    b.send(b"x")
    with pytest.raises(ValueError):
        run(loop, loop.sock_recv(a, -1))


def test_recv_large_size_small_data(loop, sockpair):
    a, b = sockpair
    b.send(b"tiny")
    data = run(loop, loop.sock_recv(a, 16 * 1024 * 1024))
    assert data == b"tiny"


def test_sendall_str_refused(loop, sockpair):
    a, b = sockpair
    with pytest.raises(TypeError):
        run(loop, loop.sock_sendall(a, "text"))
    assert drain(b) == b""


def test_not_a_socket(loop):
    # asyncio calls sock.recv(...): AttributeError; TypeError is as good.
    for coro in (loop.sock_recv(object(), 10), loop.sock_sendall(None, b"x"),
                 loop.sock_recv_into(42, bytearray(1))):
        with pytest.raises((AttributeError, TypeError)):
            run(loop, coro)


def test_recv_into_buffer_not_locked_while_waiting(loop, sockpair):
    # asyncio only touches the buffer when data arrives: the bytearray can
    # still be resized while sock_recv_into waits (no buffer export held).
    a, b = sockpair
    buf = bytearray(4)

    async def main():
        task = asyncio.ensure_future(loop.sock_recv_into(a, buf))
        await asyncio.sleep(0.01)
        buf.extend(b"....")  # would raise BufferError if exported
        b.send(b"12345678")
        return await task
    assert run(loop, main()) == 8
    assert buf == b"12345678"


def test_methods_usable_with_create_task(loop, closing, sockdir):
    # asyncio's sock_* are coroutines: create_task() takes them.
    srv = closing(make_listener("tcp", sockdir))
    c = closing(client_for(srv))
    a, b = closing(*nonblocking(*socket.socketpair()))

    async def main():
        acc = loop.create_task(loop.sock_accept(srv))
        con = asyncio.create_task(loop.sock_connect(c, srv.getsockname()))
        conn, _ = await acc
        closing(conn)
        await con
        snd = asyncio.create_task(loop.sock_sendall(a, b"task"))
        rcv = asyncio.create_task(loop.sock_recv(b, 10))
        await snd
        assert await rcv == b"task"
        b.send(b"into")
        buf = bytearray(4)
        assert await asyncio.create_task(loop.sock_recv_into(a, buf)) == 4
    run(loop, main())


def test_awaitables_are_coroutines(loop, sockpair):
    a, b = sockpair
    coro = loop.sock_recv(a, 0)
    try:
        assert asyncio.iscoroutine(coro)
    finally:
        run(loop, coro)


def test_pending_operations_collected_after_close(loop, errors, closing):
    # Tasks still waiting in sock_* when the loop is closed, garbage
    # collected afterwards: asyncio reports "Task was destroyed but it is
    # pending!" and nothing else (no crash, no unraisable exception).
    a, b = closing(*nonblocking(*socket.socketpair()))
    srv = closing(make_listener("tcp", None))

    async def start():
        return [asyncio.ensure_future(loop.sock_recv(a, 10)),
                asyncio.ensure_future(loop.sock_recv_into(b, bytearray(4))),
                asyncio.ensure_future(loop.sock_accept(srv))]
    tasks = loop.run_until_complete(start())
    loop.run_until_complete(asyncio.sleep(0.01))
    assert not any(t.done() for t in tasks)
    loop.close()
    del tasks
    gc.collect()
    contexts = errors.take()
    assert len(contexts) == 3
    for ctx in contexts:
        assert "destroyed but it is pending" in ctx["message"]


# ---------------------------------------------------------------------------
# Arguments as asyncio's coroutines take them (found by a differential fuzzer)


def test_keyword_arguments(loop, sockpair, udp_pair):
    a, b = sockpair
    u, v = udp_pair

    async def main():
        await loop.sock_sendall(sock=b, data=b"abcd")
        got = [await loop.sock_recv(a, n=2)]
        buf = bytearray(2)
        got.append(await loop.sock_recv_into(sock=a, buf=buf))
        got.append(bytes(buf))
        if not hasattr(loop, "sock_sendto"):
            return got + [b"x", 2]  # asyncio before 3.11
        await loop.sock_sendto(v, data=b"x", address=u.getsockname())
        got.append((await loop.sock_recvfrom(u, bufsize=10))[0])
        await loop.sock_sendto(v, b"yz", u.getsockname())
        buf = bytearray(4)
        got.append((await loop.sock_recvfrom_into(u, buf, nbytes=4))[0])
        return got
    assert run(loop, main()) == [b"ab", 2, b"cd", b"x", 2]
    # Python's own wording for a method's bad call (the class name aside)
    for call, msg in [
            (lambda: loop.sock_recv(a, size=3),
             "sock_recv() got an unexpected keyword argument 'size'"),
            (lambda: loop.sock_recv(a, 3, n=3),
             "sock_recv() got multiple values for argument 'n'"),
            (lambda: loop.sock_sendall(a),
             "sock_sendall() missing 1 required positional argument: "
             "'data'"),
            (lambda: loop.sock_recv_into(),
             "sock_recv_into() missing 2 required positional arguments: "
             "'sock' and 'buf'"),
            (lambda: loop.sock_accept(a, 1),
             "sock_accept() takes 2 positional arguments but 3 were "
             "given")]:
        with pytest.raises(TypeError, match=re.escape(msg) + "$"):
            call()


@needs_dgram_api
@pytest.mark.parametrize("n, exc, msg", [
    (None, TypeError, "cannot be interpreted as an integer"),
    ("x", TypeError, "cannot be interpreted as an integer"),
    (2 ** 63, OverflowError, "Python int too large to convert to C ssize_t"),
])
def test_bad_size_fails_at_await(loop, sockpair, n, exc, msg):
    # As from asyncio's coroutines: the call is fine, awaiting raises, and
    # a task made of it fails (not its creator).
    a, b = sockpair

    async def main():
        t = loop.create_task(loop.sock_recv(a, n))
        with pytest.raises(exc, match=msg):
            await t
        with pytest.raises(exc, match=msg):
            await loop.sock_recvfrom(a, n)
    run(loop, main())


@needs_dgram_api
def test_recvfrom_into_falsy_nbytes_means_whole_buffer(loop, udp_pair):
    u, v = udp_pair

    async def main():
        got = []
        for nbytes in (None, 0, 0.0, False):
            v.sendto(b"abcdef", u.getsockname())
            buf = bytearray(4)
            n, _ = await loop.sock_recvfrom_into(u, buf, nbytes)
            got.append(bytes(buf[:n]))
        return got
    assert run(loop, main()) == [b"abcd"] * 4


def test_recv_into_bad_buffer_messages(loop, sockpair):
    a, b = sockpair
    released = memoryview(bytearray(4))
    released.release()

    async def main():
        for buf, name in [(bytes(4), "bytes"), ("s", "str"), (None, "None"),
                          (memoryview(bytes(4)), "memoryview"),
                          (released, "memoryview"),
                          (memoryview(bytearray(8))[::2], "memoryview")]:
            with pytest.raises(TypeError) as info:
                await loop.sock_recv_into(a, buf)
            assert str(info.value) == (
                "recv_into() argument 1 must be read-write bytes-like "
                "object, not " + name)
    run(loop, main())


@needs_dgram_api
def test_errors_not_delayed_after_a_cancelled_wait(loop, udp_pair, closing):
    # A recv-like op right after another one waited may skip its first try
    # (the poll said there is nothing to read). That must not hide errors
    # the call would raise at once: it waited for data forever.
    u, v = udp_pair
    a, b = closing(*socket.socketpair())
    a.setblocking(False)

    async def cancelled_wait(coro):
        t = loop.create_task(coro)
        await asyncio.sleep(0)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t

    async def main():
        await cancelled_wait(loop.sock_recvfrom(u, 10))
        with pytest.raises(TypeError, match="read-write"):
            await loop.sock_recvfrom_into(u, bytes(5))
        await cancelled_wait(loop.sock_recvfrom(u, 10))
        with pytest.raises(ValueError, match="nbytes is greater"):
            await loop.sock_recvfrom_into(u, bytearray(5), 100)
        await cancelled_wait(loop.sock_recvfrom(u, 10))
        with pytest.raises(OSError) as info:
            await loop.sock_accept(u)
        assert info.value.errno == errno.EOPNOTSUPP
        await cancelled_wait(loop.sock_recv(a, 10))
        with pytest.raises(OSError) as info:
            await loop.sock_accept(a)
        assert info.value.errno == errno.EINVAL
    run(loop, main(), timeout=2)


def test_sendall_nothing_still_sends(loop, closing):
    # asyncio calls send() once even for b"": the socket's own errors show.
    s = closing(socket.socket())
    s.setblocking(False)
    c, d = closing(*nonblocking(*socket.socketpair()))
    c.shutdown(socket.SHUT_WR)

    async def main():
        with pytest.raises(OSError) as info:
            await loop.sock_sendall(s, b"")
        assert info.value.errno == errno.EPIPE  # never connected: EPIPE
        with pytest.raises(BrokenPipeError):
            await loop.sock_sendall(c, b"")
        assert await loop.sock_sendall(d, b"") is None
    run(loop, main())


def test_closed_socket_arguments_checked_first(loop, closing):
    # As the socket's own methods do: arguments, then the socket.
    s = socket.socket()
    s.setblocking(False)
    s.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setblocking(False)
    u.close()

    async def main():
        assert await loop.sock_recv(s, 0) == b""
        assert await loop.sock_recv_into(s, bytearray(0)) == 0
        with pytest.raises(TypeError):
            await loop.sock_sendall(s, 5)
        with pytest.raises(TypeError):
            await loop.sock_recv_into(s, bytes(3))
        with pytest.raises(OverflowError):
            await loop.sock_connect(s, ("127.0.0.1", -1))
        with pytest.raises(OSError) as info:
            await loop.sock_recv(s, 1)
        assert info.value.errno == errno.EBADF
        if not hasattr(loop, "sock_sendto"):
            return  # asyncio before 3.11
        with pytest.raises(OSError) as info:
            await loop.sock_sendto(u, b"x", ("127.0.0.1", 9))
        assert info.value.errno == errno.EBADF
    run(loop, main())


def test_socket_owned_by_a_transport(loop, loop_kind, closing):
    # asyncio refuses to wait on a socket a live transport owns, and (3.12+)
    # to make a second transport over it; aioev does both on every version.
    a, b = closing(*nonblocking(*socket.socketpair()))

    async def main():
        tr, proto = await loop.connect_accepted_socket(asyncio.Protocol, a)
        try:
            with pytest.raises(RuntimeError, match="is used by transport"):
                await loop.sock_recv(a, 10)
            with pytest.raises(RuntimeError, match="is used by transport"):
                await loop.sock_recv_into(a, bytearray(10))
            if loop_kind == "aioev" or sys.version_info >= (3, 12):
                with pytest.raises(RuntimeError,
                                   match="is used by transport"):
                    await loop.connect_accepted_socket(asyncio.Protocol, a)
        finally:
            tr.close()
        await asyncio.sleep(0)
    run(loop, main())


@pytest.mark.parametrize("op", ["recv", "recv_into", "recvfrom",
                                "recvfrom_into", "accept"])
def test_dropped_op_then_socket_closed(loop, op, closing):
    # An op that waited, dropped unawaited, its socket then closed before
    # the loop polled again: the fd watch it started must not outlive it
    # (Debian's libev aborts the process on epoll_ctl with a closed fd).
    meth = getattr(loop, "sock_" + op, None)
    if meth is None:
        pytest.skip("no sock_" + op)
    if op == "accept":
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen()
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    args = {"recv": (10,), "recv_into": (bytearray(10),),
            "recvfrom": (10,), "recvfrom_into": (bytearray(10),),
            "accept": ()}[op]

    async def main():
        meth(s, *args).close()
        s.close()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return "alive"
    assert run(loop, main()) == "alive"

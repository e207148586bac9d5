"""add_reader / add_writer on sockets and pipes."""

import asyncio
import errno
import gc
import os
import socket
import warnings

import pytest


@pytest.fixture
def sockpair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def pipe():
    fds = list(os.pipe())
    for fd in fds:
        os.set_blocking(fd, False)
    yield fds
    for fd in fds:
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass


def run_until(loop, predicate, timeout=5.0):
    """Run the loop until predicate() is true (or fail after timeout)."""
    async def wait():
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.001)
    loop.run_until_complete(wait())


# ---------------------------------------------------------------------------
# Readers


def test_reader_socketpair(loop, sockpair):
    a, b = sockpair
    got = []

    def on_readable(tag):
        got.append((tag, a.recv(100)))
        loop.remove_reader(a.fileno())

    loop.add_reader(a.fileno(), on_readable, "tag")
    loop.call_soon(b.send, b"hello")
    run_until(loop, lambda: got)
    assert got == [("tag", b"hello")]


def test_reader_with_socket_object(loop, sockpair):
    a, b = sockpair
    got = []
    loop.add_reader(a, lambda: got.append(a.recv(100)))
    b.send(b"obj")
    run_until(loop, lambda: got)
    assert got == [b"obj"]
    assert loop.remove_reader(a) is True


def test_reader_called_repeatedly_while_readable(loop, sockpair):
    a, b = sockpair
    calls = []

    def on_readable():
        calls.append(1)
        if len(calls) == 3:
            a.recv(100)
            loop.remove_reader(a.fileno())

    loop.add_reader(a.fileno(), on_readable)
    b.send(b"x")
    run_until(loop, lambda: len(calls) >= 3)
    loop.run_until_complete(asyncio.sleep(0.005))
    assert len(calls) == 3


def test_reader_not_called_when_idle(loop, sockpair):
    a, b = sockpair
    calls = []
    loop.add_reader(a.fileno(), calls.append, 1)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert calls == []
    assert loop.remove_reader(a.fileno()) is True


def test_remove_reader_return_value(loop, sockpair):
    a, b = sockpair
    assert loop.remove_reader(a.fileno()) is False
    loop.add_reader(a.fileno(), lambda: None)
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(a.fileno()) is False


def test_removed_reader_not_called(loop, sockpair):
    a, b = sockpair
    calls = []
    loop.add_reader(a.fileno(), calls.append, 1)
    loop.remove_reader(a.fileno())
    b.send(b"x")
    loop.run_until_complete(asyncio.sleep(0.01))
    assert calls == []


def test_replace_reader(loop, sockpair):
    a, b = sockpair
    calls = []

    def second():
        calls.append("second")
        a.recv(100)
        loop.remove_reader(a.fileno())

    loop.add_reader(a.fileno(), calls.append, "first")
    loop.add_reader(a.fileno(), second)
    b.send(b"x")
    run_until(loop, lambda: calls)
    loop.run_until_complete(asyncio.sleep(0.005))
    assert calls == ["second"]


def test_reader_removed_by_other_callback_same_iteration(loop):
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        calls = []
        (a1, b1), (a2, b2) = pairs

        def cb(me, other):
            calls.append(me)
            loop.remove_reader(me.fileno())
            loop.remove_reader(other.fileno())

        loop.add_reader(a1.fileno(), cb, a1, a2)
        loop.add_reader(a2.fileno(), cb, a2, a1)
        b1.send(b"x")
        b2.send(b"x")
        loop.run_until_complete(asyncio.sleep(0.01))
        # Whichever ran first removed the other: it must not run after.
        assert len(calls) == 1
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_reader_exception_goes_to_handler(loop, errors, sockpair):
    a, b = sockpair
    calls = []

    def bad():
        calls.append(1)
        a.recv(100)
        if len(calls) == 1:
            raise ValueError("reader error")
        loop.remove_reader(a.fileno())

    loop.add_reader(a.fileno(), bad)
    b.send(b"1")
    run_until(loop, lambda: calls)
    b.send(b"2")
    run_until(loop, lambda: len(calls) == 2)
    ctx = errors.take_one()
    assert isinstance(ctx["exception"], ValueError)
    assert "handle" in ctx


def test_debug_mode_reader_exception_has_source_traceback(loop, errors,
                                                          sockpair):
    """In debug mode add_reader's handle records where it was added (its
    _source_traceback, as asyncio's Handle does), and the report of a
    failing reader carries it."""
    a, b = sockpair
    loop.set_debug(True)

    def bad():
        a.recv(100)
        loop.remove_reader(a.fileno())
        raise ValueError("reader error")

    loop.add_reader(a.fileno(), bad)
    b.send(b"1")
    run_until(loop, lambda: len(errors))
    ctx = errors.take_one()
    assert isinstance(ctx["exception"], ValueError)
    assert "created at" in repr(ctx["handle"])
    assert any(frame.name == "test_debug_mode_reader_exception_has_source_"
               "traceback" for frame in ctx["source_traceback"])


def test_reader_eof_on_peer_close(loop, sockpair):
    a, b = sockpair
    got = []

    def on_readable():
        got.append(a.recv(100))
        loop.remove_reader(a.fileno())

    loop.add_reader(a.fileno(), on_readable)
    b.close()
    run_until(loop, lambda: got)
    assert got == [b""]


def test_many_readers(loop):
    pairs = [socket.socketpair() for _ in range(50)]
    try:
        got = set()

        def on_readable(i, sock):
            assert sock.recv(10) == str(i).encode()
            got.add(i)
            loop.remove_reader(sock.fileno())

        for i, (a, b) in enumerate(pairs):
            loop.add_reader(a.fileno(), on_readable, i, a)
        for i, (a, b) in enumerate(pairs):
            b.send(str(i).encode())
        run_until(loop, lambda: len(got) == 50)
        assert got == set(range(50))
    finally:
        for a, b in pairs:
            a.close()
            b.close()


# ---------------------------------------------------------------------------
# Pipes


def test_pipe_reader(loop, pipe):
    r, w = pipe
    got = []

    def on_readable():
        data = os.read(r, 100)
        got.append(data)
        if not data:
            loop.remove_reader(r)

    loop.add_reader(r, on_readable)
    os.write(w, b"through the pipe")
    run_until(loop, lambda: got)
    os.close(w)
    pipe[1] = -1
    run_until(loop, lambda: got[-1] == b"")
    assert got == [b"through the pipe", b""]


def test_pipe_writer(loop, pipe):
    r, w = pipe
    calls = []

    def on_writable():
        calls.append(os.write(w, b"w"))
        loop.remove_writer(w)

    loop.add_writer(w, on_writable)
    run_until(loop, lambda: calls)
    assert calls == [1]
    assert os.read(r, 10) == b"w"


def test_pipe_writer_waits_for_space(loop, pipe):
    r, w = pipe
    total = 0
    while True:
        try:
            total += os.write(w, b"x" * 65536)
        except BlockingIOError:
            break
    calls = []

    def on_writable():
        calls.append(os.write(w, b"y"))
        loop.remove_writer(w)

    loop.add_writer(w, on_writable)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert calls == []
    drained = 0
    while drained < total:
        drained += len(os.read(r, 65536))
    run_until(loop, lambda: calls)
    assert calls == [1]


# ---------------------------------------------------------------------------
# Writers


def test_writer_socketpair(loop, sockpair):
    a, b = sockpair
    calls = []

    def on_writable(arg):
        calls.append(arg)
        a.send(b"written")
        loop.remove_writer(a.fileno())

    loop.add_writer(a.fileno(), on_writable, "arg")
    run_until(loop, lambda: calls)
    assert calls == ["arg"]
    assert b.recv(100) == b"written"


def test_remove_writer_return_value(loop, sockpair):
    a, b = sockpair
    assert loop.remove_writer(a.fileno()) is False
    loop.add_writer(a.fileno(), lambda: None)
    assert loop.remove_writer(a.fileno()) is True
    assert loop.remove_writer(a.fileno()) is False


def test_replace_writer(loop, sockpair):
    a, b = sockpair
    calls = []

    def second():
        calls.append("second")
        loop.remove_writer(a.fileno())

    loop.add_writer(a.fileno(), calls.append, "first")
    loop.add_writer(a.fileno(), second)
    run_until(loop, lambda: calls)
    loop.run_until_complete(asyncio.sleep(0.005))
    assert calls == ["second"]


def test_reader_and_writer_same_fd(loop, sockpair):
    a, b = sockpair
    events = []

    def on_writable():
        events.append("w")
        loop.remove_writer(a.fileno())

    def on_readable():
        events.append(("r", a.recv(10)))
        loop.remove_reader(a.fileno())

    loop.add_reader(a.fileno(), on_readable)
    loop.add_writer(a.fileno(), on_writable)
    run_until(loop, lambda: "w" in events)
    # Removing the writer must keep the reader.
    b.send(b"data")
    run_until(loop, lambda: len(events) == 2)
    assert events == ["w", ("r", b"data")]


def test_remove_reader_keeps_writer(loop, sockpair):
    a, b = sockpair
    calls = []
    loop.add_reader(a.fileno(), calls.append, "r")
    loop.add_writer(a.fileno(), lambda: (calls.append("w"),
                                         loop.remove_writer(a.fileno())))
    assert loop.remove_reader(a.fileno()) is True
    run_until(loop, lambda: calls)
    assert calls == ["w"]


def test_writer_after_send_buffer_drains(loop, sockpair):
    a, b = sockpair
    sent = 0
    try:
        while True:
            sent += a.send(b"z" * 65536)
    except BlockingIOError:
        pass
    assert sent > 0
    received = [0]
    writable = []

    def drain():
        try:
            while True:
                chunk = b.recv(65536)
                if not chunk:
                    break
                received[0] += len(chunk)
        except BlockingIOError:
            pass
        if received[0] >= sent:
            loop.remove_reader(b.fileno())

    def on_writable():
        writable.append(received[0])
        loop.remove_writer(a.fileno())

    loop.add_writer(a.fileno(), on_writable)
    loop.add_reader(b.fileno(), drain)
    run_until(loop, lambda: writable and received[0] >= sent)
    # The writer fired only once the peer had read something.
    assert writable[0] > 0


# ---------------------------------------------------------------------------
# Bad file descriptors


def test_add_reader_negative_fd(loop):
    with pytest.raises(ValueError):
        loop.add_reader(-1, lambda: None)
    with pytest.raises(ValueError):
        loop.add_writer(-5, lambda: None)


def test_add_reader_bad_object(loop):
    # The selectors module's errors, which asyncio's loops give.
    for bad in ("not an fd", object(), 1.5):
        for method in (loop.add_reader, loop.add_writer):
            with pytest.raises(ValueError, match="Invalid file object"):
                method(bad, lambda: None)
        for method in (loop.remove_reader, loop.remove_writer):
            with pytest.raises(ValueError, match="Invalid file object"):
                method(bad)
    with pytest.raises(ValueError, match=r"Invalid file descriptor: -1\b"):
        loop.add_reader(-1, lambda: None)

    class BadFileno:
        def fileno(self):
            return -3
    with pytest.raises(ValueError, match="Invalid file descriptor: -3"):
        loop.remove_writer(BadFileno())


def test_pipe_transport_repr_after_loop_close(loop_factory):
    # asyncio's pipe transports on a closed loop say "open" (they look for
    # the loop's selector, which a closed loop no longer has).
    loop = loop_factory()
    r, w = os.pipe()
    rpipe, wpipe = os.fdopen(r, "rb", 0), os.fdopen(w, "wb", 0)

    async def connect():
        rt, _ = await loop.connect_read_pipe(asyncio.Protocol, rpipe)
        wt, _ = await loop.connect_write_pipe(asyncio.Protocol, wpipe)
        return rt, wt
    try:
        rt, wt = loop.run_until_complete(connect())
        assert "polling" in repr(rt)
    finally:
        loop.close()
    assert "open" in repr(rt) and "open" in repr(wt)
    # Their loop is gone: they cannot close any more, only be dropped.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        rpipe.close()
        wpipe.close()
        del rt, wt
        gc.collect()


def test_add_reader_closed_fd(loop):
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises((OSError, ValueError)):
        loop.add_reader(r, lambda: None)
    with pytest.raises((OSError, ValueError)):
        loop.add_writer(w, lambda: None)
    # The failed registration left nothing behind.
    assert loop.remove_reader(r) is False
    assert loop.remove_writer(w) is False
    loop.run_until_complete(asyncio.sleep(0))


def test_add_reader_closed_fd_errno(loop):
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    try:
        loop.add_reader(r, lambda: None)
    except OSError as exc:
        assert exc.errno == errno.EBADF
    except ValueError:
        pass
    else:
        pytest.fail("add_reader on a closed fd did not raise")


def test_add_reader_regular_file(loop, tmp_path):
    # epoll cannot watch regular files; asyncio raises PermissionError.
    path = tmp_path / "f"
    path.write_bytes(b"x")
    with open(path, "rb") as f:
        with pytest.raises(OSError):
            loop.add_reader(f.fileno(), lambda: None)
    loop.run_until_complete(asyncio.sleep(0))


@pytest.mark.parametrize("dev", ["/dev/null", "/dev/zero"])
def test_add_reader_device_epoll_refuses(loop, dev):
    # epoll refuses these (EPERM); libev would call them ready on every
    # poll (a callback spinning thousands of times per millisecond).
    fd = os.open(dev, os.O_RDONLY)
    try:
        for add in (loop.add_reader, loop.add_writer):
            with pytest.raises(PermissionError):
                add(fd, lambda: None)
        assert loop.remove_reader(fd) is False
        assert loop.remove_writer(fd) is False
    finally:
        os.close(fd)


def test_add_reader_tty(loop):
    # A device epoll does take: a pseudo-terminal.
    import pty
    master, slave = pty.openpty()
    try:
        got = []
        loop.add_reader(master, lambda: got.append(os.read(master, 10)))
        os.write(slave, b"hi\n")
        run_until(loop, lambda: got)
        assert loop.remove_reader(master) is True
        assert got and got[0].startswith(b"hi")
    finally:
        os.close(master)
        os.close(slave)


class FilenoOf:
    def __init__(self, n):
        self.n = n

    def fileno(self):
        return self.n


@pytest.mark.parametrize("fd", [2 ** 31, 2 ** 63, FilenoOf(2 ** 40)])
def test_fd_past_an_int(loop, fd):
    # selectors take any int; epoll.register overflows, and removing one
    # finds nothing.
    for add in (loop.add_reader, loop.add_writer):
        with pytest.raises(OverflowError):
            add(fd, lambda: None)
    assert loop.remove_reader(fd) is False
    assert loop.remove_writer(fd) is False


def test_fd_closed_while_registered_then_reused(loop):
    """User closes a watched fd; the loop must survive and reuse the number."""
    r, w = os.pipe()
    calls = []
    loop.add_reader(r, calls.append, "old")
    loop.run_until_complete(asyncio.sleep(0))
    os.close(r)
    os.close(w)
    # Removing after close must not crash (asyncio returns True here).
    assert loop.remove_reader(r) is True
    loop.run_until_complete(asyncio.sleep(0))
    r2, w2 = os.pipe()
    try:
        got = []

        def on_readable():
            got.append(os.read(r2, 10))
            loop.remove_reader(r2)

        loop.add_reader(r2, on_readable)
        os.write(w2, b"new")
        run_until(loop, lambda: got)
        assert got == [b"new"]
        assert calls == []
    finally:
        os.close(r2)
        os.close(w2)


def test_fd_number_reused_without_remove(loop):
    """close + new fd with the same number + add_reader replaces the old."""
    a, b = socket.socketpair()
    fd = a.fileno()
    loop.add_reader(fd, lambda: None)
    loop.run_until_complete(asyncio.sleep(0))
    a.close()
    b.close()
    loop.remove_reader(fd)
    c, d = socket.socketpair()
    try:
        got = []
        loop.add_reader(c.fileno(), lambda: (got.append(c.recv(10)),
                                             loop.remove_reader(c.fileno())))
        d.send(b"again")
        run_until(loop, lambda: got)
        assert got == [b"again"]
    finally:
        c.close()
        d.close()


def test_close_loop_with_registered_fds(loop_factory, sockpair):
    lp = loop_factory()
    a, b = sockpair
    lp.add_reader(a.fileno(), lambda: None)
    lp.add_writer(b.fileno(), lambda: None)
    lp.run_until_complete(asyncio.sleep(0))
    lp.close()
    # The user's fds are untouched by close().
    a.send(b"still open")
    assert b.recv(100) == b"still open"


def test_readers_on_two_loops(loop, loop_factory):
    other = loop_factory()
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        got = []
        (a1, b1), (a2, b2) = pairs
        loop.add_reader(a1.fileno(), lambda: got.append(("loop", a1.recv(9))))
        other.add_reader(a2.fileno(),
                         lambda: got.append(("other", a2.recv(9))))
        b1.send(b"1")
        b2.send(b"2")
        other.run_until_complete(asyncio.sleep(0.01))
        assert got == [("other", b"2")]
        run_until(loop, lambda: len(got) == 2)
        assert got == [("other", b"2"), ("loop", b"1")]
        loop.remove_reader(a1.fileno())
        other.remove_reader(a2.fileno())
    finally:
        other.close()
        for a, b in pairs:
            a.close()
            b.close()


# ---------------------------------------------------------------------------
# Higher level: sock_* helpers are networking (out of scope), but a reader
# driving an asyncio.Future is the pattern libraries use.


def test_reader_future_pattern(loop, sockpair):
    a, b = sockpair

    async def recv_async(sock):
        fut = loop.create_future()

        def ready():
            loop.remove_reader(sock.fileno())
            try:
                fut.set_result(sock.recv(100))
            except Exception as exc:  # pragma: no cover
                fut.set_exception(exc)

        loop.add_reader(sock.fileno(), ready)
        return await fut

    async def main():
        loop.call_later(0.005, b.send, b"pattern")
        return await recv_async(a)

    assert loop.run_until_complete(main()) == b"pattern"


def test_close_fd_inside_reader_then_remove(loop):
    """Closing before remove_reader, inside the callback, must not abort."""
    a, b = socket.socketpair()
    fd = a.fileno()
    got = []

    def on_readable():
        got.append(a.recv(10))
        a.close()                       # wrong order, but users do it
        got.append(loop.remove_reader(fd))

    try:
        loop.add_reader(fd, on_readable)
        b.send(b"x")
        run_until(loop, lambda: len(got) == 2)
        loop.run_until_complete(asyncio.sleep(0.005))
        assert got == [b"x", True]
    finally:
        a.close()
        b.close()


def test_remove_then_close_in_callback(loop, sockpair):
    a, b = sockpair
    c, d = socket.socketpair()
    fd = c.fileno()
    got = []

    def on_readable():
        got.append(c.recv(10))
        loop.remove_reader(fd)
        c.close()

    try:
        loop.add_reader(fd, on_readable)
        d.send(b"y")
        run_until(loop, lambda: got)
        loop.run_until_complete(asyncio.sleep(0.005))
        assert got == [b"y"]
    finally:
        c.close()
        d.close()


def test_keyboard_interrupt_in_reader(loop, sockpair):
    a, b = sockpair

    def on_readable():
        a.recv(10)
        raise KeyboardInterrupt

    loop.add_reader(a.fileno(), on_readable)
    b.send(b"k")
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert loop.remove_reader(a.fileno()) is True
    assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"


def test_reader_added_while_busy(loop, sockpair):
    """A reader added by a task that never sleeps must still fire."""
    a, b = sockpair
    got = []

    async def busy():
        loop.add_reader(a.fileno(), lambda: (got.append(a.recv(10)),
                                             loop.remove_reader(a.fileno())))
        b.send(b"busy")
        for _ in range(100000):
            if got:
                return "io ran"
            await asyncio.sleep(0)
        return "starved"

    assert loop.run_until_complete(busy()) == "io ran"
    assert got == [b"busy"]

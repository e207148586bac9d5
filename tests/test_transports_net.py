"""The stream Transport API and Protocol semantics over loopback sockets.

Every test runs on stdlib asyncio and on aioev (the ``loop`` fixture); asyncio
is the reference.  Today aioev runs asyncio's own selector transports on its C
loop; these tests are the contract a native C transport has to keep.
"""

import asyncio
import gc
import io
import hashlib
import logging
import os
import re
import socket
import struct
import sys
import warnings
import weakref

import pytest

TIMEOUT = 10.0
LINUX = sys.platform.startswith("linux")


def run(loop, coro, timeout=TIMEOUT):
    """Run coro on loop, failing it if it takes longer than timeout."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def until(predicate, what="condition"):
    while not predicate():
        await asyncio.sleep(0.001)


class Recorder(asyncio.Protocol):
    """A protocol recording everything; eof_received returns keep_open."""

    def __init__(self, loop, keep_open=None):
        self.loop = loop
        self.keep_open = keep_open
        self.transport = None
        self.data = bytearray()
        self.eof = False
        self.events = []
        self.paused = False
        self.pauses = 0
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self._resumed = None

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")
        self.made.set_result(transport)

    def data_received(self, data):
        assert not self.eof, "data after eof"
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data

    def eof_received(self):
        self.events.append("eof")
        self.eof = True
        return self.keep_open

    def pause_writing(self):
        assert not self.paused
        self.paused = True
        self.pauses += 1

    def resume_writing(self):
        assert self.paused
        self.paused = False
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)

    async def writable(self):
        if self.paused:
            self._resumed = self.loop.create_future()
            await self._resumed

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)

    async def wait_data(self, n):
        while len(self.data) < n:
            if self.lost.done():
                raise AssertionError(
                    f"connection lost with {len(self.data)}/{n} bytes")
            await asyncio.sleep(0.001)
        return bytes(self.data)

    async def wait_eof(self):
        await until(lambda: self.eof or self.lost.done())
        assert self.eof


async def tcp_pair(loop, client_kw=None, server_kw=None):
    """A connected (client transport, client protocol, server transport,
    server protocol) pair over 127.0.0.1; the listener is already closed."""
    server_protos = []

    def server_factory():
        proto = Recorder(loop, **(server_kw or {}))
        server_protos.append(proto)
        return proto

    server = await loop.create_server(server_factory, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        ctr, cproto = await loop.create_connection(
            lambda: Recorder(loop, **(client_kw or {})), "127.0.0.1", port)
        await until(lambda: server_protos)
        sproto = server_protos[0]
        await sproto.made
    finally:
        server.close()
    return ctr, cproto, sproto.transport, sproto


async def unix_pair(loop, path):
    server_protos = []

    def server_factory():
        proto = Recorder(loop)
        server_protos.append(proto)
        return proto

    server = await loop.create_unix_server(server_factory, path)
    try:
        ctr, cproto = await loop.create_unix_connection(
            lambda: Recorder(loop), path)
        await until(lambda: server_protos)
        sproto = server_protos[0]
        await sproto.made
    finally:
        server.close()
    return ctr, cproto, sproto.transport, sproto


async def raw_peer_pair(loop, protocol_factory):
    """(transport, protocol, peer) where peer is a plain non-blocking socket
    accepted by a listener, for tests that need a misbehaving peer."""
    lsock = socket.socket()
    try:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lsock.setblocking(False)
        connect = asyncio.ensure_future(loop.create_connection(
            protocol_factory, *lsock.getsockname()))
        peer, _ = await loop.sock_accept(lsock)
        transport, proto = await connect
    finally:
        lsock.close()
    peer.setblocking(False)
    return transport, proto, peer


async def close_all(*pairs):
    for transport, proto in pairs:
        transport.close()
    for transport, proto in pairs:
        await proto.lost


def shrink_buffers(writer_tr, reader_tr, size=32 * 1024):
    """Small fixed kernel buffers, so that a peer which stops reading makes
    the writer's transport buffer fill up whatever the system's limits."""
    writer_tr.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    reader_tr.get_extra_info("socket").setsockopt(
        socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def reset(sock):
    """Close sock with an RST instead of a FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                    struct.pack("ii", 1, 0))
    sock.close()


async def recv_all(loop, sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


# ---------------------------------------------------------------------------
# Transport API


def test_transport_is_asyncio_transport(loop):
    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        try:
            for tr in (ctr, str_):
                assert isinstance(tr, asyncio.Transport)
                assert isinstance(tr, asyncio.ReadTransport)
                assert isinstance(tr, asyncio.WriteTransport)
                assert isinstance(tr, asyncio.BaseTransport)
                assert not tr.is_closing()
                assert tr.is_reading()
                assert tr.can_write_eof()
                assert tr.get_write_buffer_size() == 0
            assert ctr.get_protocol() is cproto
            assert str_.get_protocol() is sproto
            assert cproto.events == ["made"]
        finally:
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main())


def test_write_writelines_write_eof(loop):
    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop,
                                                  server_kw={"keep_open": True})
        try:
            ctr.write(b"a")
            ctr.write(bytearray(b"b"))
            ctr.write(memoryview(b"xcx")[1:2])
            ctr.write(b"")  # no-op
            ctr.writelines([b"d", bytearray(b"e"), memoryview(b"f")])
            ctr.writelines(iter([b"g"]))
            ctr.writelines((b"h",))  # a tuple is one argument
            assert ctr.can_write_eof()
            ctr.write_eof()
            ctr.write_eof()  # idempotent
            assert not ctr.is_closing()
            await sproto.wait_eof()
            assert bytes(sproto.data) == b"abcdefgh"
            assert sproto.events == ["made", "data", "eof"]
            with pytest.raises(RuntimeError):
                ctr.write(b"after eof")
            # 3.12's transport has its own writelines, with its own words
            name = "writelines" if sys.version_info >= (3, 12) else "write"
            with pytest.raises(RuntimeError, match=re.escape(
                    f"Cannot call {name}() after write_eof()")):
                ctr.writelines([b"after eof"])
            # Half-closed: the other direction still works.
            str_.write(b"reply")
            assert await cproto.wait_data(5) == b"reply"
            str_.close()
            assert await sproto.lost is None
            await cproto.wait_eof()
            assert await cproto.lost is None
            assert cproto.events == ["made", "data", "eof", "lost"]
        finally:
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main())


def test_write_rejects_non_bytes(loop):
    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        try:
            # asyncio's message, which 3.14 reworded
            msg = ("bytes, bytearray, or memoryview object" if
                   sys.version_info >= (3, 14) else "bytes-like object")
            with pytest.raises(TypeError, match=f"{msg}, not 'str'"):
                ctr.write("text")
            with pytest.raises(TypeError, match=f"{msg}, not 'int'"):
                ctr.write(1234)
            with pytest.raises(TypeError):
                ctr.writelines([b"ok", "text"])
        finally:
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main())


def test_close_flushes_buffer_then_loses_connection(loop):
    payload = os.urandom(4 * 1024 * 1024)

    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        try:
            shrink_buffers(ctr, str_)
            str_.pause_reading()
            ctr.write(payload)
            assert ctr.get_write_buffer_size() > 0
            ctr.close()
            assert ctr.is_closing()
            assert not ctr.is_reading()
            ctr.close()  # idempotent
            await asyncio.sleep(0.05)
            # Buffered data is still going out: no connection_lost yet.
            assert not cproto.lost.done()
            str_.resume_reading()
            assert await cproto.lost is None
            await sproto.wait_eof()
            assert bytes(sproto.data) == payload
            assert await sproto.lost is None
        finally:
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main())


def test_connection_lost_called_once_and_later(loop):
    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        ctr.close()
        # connection_lost is never called synchronously from close().
        assert not cproto.lost.done()
        assert await cproto.lost is None
        await sproto.wait_eof()
        assert await sproto.lost is None
        await asyncio.sleep(0.01)
        assert cproto.events.count("lost") == 1
        assert sproto.events.count("lost") == 1
    run(loop, main())


class Forgetful(asyncio.Protocol):
    """Drops its transport when the connection is lost."""

    def __init__(self, loop):
        self.transport = None
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def connection_lost(self, exc):
        self.transport = None
        self.lost.set_result(exc)


@pytest.mark.parametrize("how", ["close", "abort", "peer_eof", "write_eof"])
def test_transport_freed_without_the_gc(loop, loop_kind, how):
    # Once connection_lost has run, nothing the transport holds may point
    # back at it: reference counting alone frees it (asyncio's does so
    # since 3.12). The cycle finder is off to see that.
    if loop_kind == "asyncio" and sys.version_info < (3, 12):
        pytest.skip("asyncio's transport keeps a cycle before 3.12")
    if loop_kind == "asyncio" and how == "abort":
        pytest.skip("asyncio's drops its bound methods in close() only")

    async def main():
        transport, proto, peer = await raw_peer_pair(
            loop, lambda: Forgetful(loop))
        with peer:
            ref = weakref.ref(transport)
            if how == "close":
                transport.write(b"x" * 100000)  # closes once flushed
                transport.close()
            elif how == "abort":
                transport.abort()
            elif how == "peer_eof":
                peer.shutdown(socket.SHUT_WR)
            else:
                transport.write_eof()
                peer.shutdown(socket.SHUT_WR)
            del transport
            await asyncio.sleep(0)
            while not proto.lost.done():
                try:
                    peer.recv(1 << 20)  # drain what was written
                except BlockingIOError:
                    pass
                await asyncio.sleep(0.001)
            assert await proto.lost is None
            for _ in range(3):  # the callbacks queued around the loss
                await asyncio.sleep(0)
            return ref

    gc.collect()
    gc.disable()
    try:
        ref = run(loop, main())
        assert ref() is None, gc.get_referrers(ref())
    finally:
        gc.enable()


def test_abort_discards_buffer(loop):
    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        try:
            str_.pause_reading()
            ctr.write(b"x" * (8 * 1024 * 1024))
            assert ctr.get_write_buffer_size() > 0
            ctr.abort()
            assert ctr.is_closing()
            assert not cproto.lost.done()
            assert await cproto.lost is None
            str_.resume_reading()
            exc = await sproto.lost
            assert exc is None or isinstance(exc, OSError)
            assert len(sproto.data) < 8 * 1024 * 1024
        finally:
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main())


def test_abort_after_close(loop):
    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        try:
            str_.pause_reading()
            ctr.write(b"x" * (8 * 1024 * 1024))
            ctr.close()
            ctr.abort()
            assert await cproto.lost is None
            str_.resume_reading()
            await sproto.lost
        finally:
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main())


def test_get_extra_info(loop):
    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        try:
            csock = ctr.get_extra_info("socket")
            ssock = str_.get_extra_info("socket")
            for sock in (csock, ssock):
                assert sock.family == socket.AF_INET
                assert sock.type == socket.SOCK_STREAM
                assert sock.fileno() >= 0
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                assert sock.getsockopt(socket.SOL_SOCKET,
                                       socket.SO_KEEPALIVE)
            assert csock.fileno() != ssock.fileno()
            assert ctr.get_extra_info("sockname") == csock.getsockname()
            assert ctr.get_extra_info("peername") == csock.getpeername()
            assert ctr.get_extra_info("sockname") == \
                str_.get_extra_info("peername")
            assert ctr.get_extra_info("peername") == \
                str_.get_extra_info("sockname")
            assert ctr.get_extra_info("sockname")[0] == "127.0.0.1"
            assert ctr.get_extra_info("no such key") is None
            assert ctr.get_extra_info("no such key", "dflt") == "dflt"
            assert ctr.get_extra_info("sslcontext") is None
            assert ctr.get_extra_info("peercert") is None
        finally:
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main())


def test_get_extra_info_unix(loop, tmp_path):
    path = str(tmp_path / "s")

    async def main():
        ctr, cproto, str_, sproto = await unix_pair(loop, path)
        try:
            sock = ctr.get_extra_info("socket")
            assert sock.family == socket.AF_UNIX
            assert ctr.get_extra_info("peername") == path
            assert str_.get_extra_info("sockname") == path
            # No TCP_NODELAY business on Unix sockets, and no error either.
            ctr.write(b"unix")
            assert await sproto.wait_data(4) == b"unix"
            assert ctr.can_write_eof()
        finally:
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main())


def test_tcp_nodelay_by_default(loop):
    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        try:
            for tr in (ctr, str_):
                sock = tr.get_extra_info("socket")
                assert sock.getsockopt(socket.IPPROTO_TCP,
                                       socket.TCP_NODELAY)
        finally:
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main())


def test_pause_resume_reading(loop):
    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        try:
            assert str_.is_reading()
            str_.pause_reading()
            assert not str_.is_reading()
            str_.pause_reading()  # no error when already paused
            assert not str_.is_reading()
            ctr.write(b"held back")
            ctr.write_eof()
            await asyncio.sleep(0.05)
            assert sproto.data == b""
            assert not sproto.eof
            str_.resume_reading()
            assert str_.is_reading()
            str_.resume_reading()  # no error when already reading
            await sproto.wait_eof()
            assert sproto.data == b"held back"
            str_.close()
            assert not str_.is_reading()
            await sproto.lost
        finally:
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main())


def test_debug_mode_logs(loop, caplog):
    """In debug mode the loop's debug log says what asyncio's says: a
    server's new connection, a transport pausing and resuming reading,
    and the EOF it received."""
    loop.set_debug(True)

    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        try:
            str_.pause_reading()
            str_.resume_reading()
            ctr.write_eof()
            await sproto.wait_eof()
        finally:
            await close_all((ctr, cproto), (str_, sproto))
        return repr(str_)
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        server_transport = run(loop, main())
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert any(m.startswith("<Server") and " got a new connection from "
               in m for m in msgs), msgs
    fd = server_transport.split("fd=")[1].split()[0].rstrip(">")
    for what in ("pauses reading", "resumes reading", "received EOF"):
        assert any(m.endswith(what) and "fd=" + fd in m for m in msgs), \
            (what, msgs)


def test_failed_write_on_a_closed_loop_raises(loop_factory):
    """A write whose send fails once the loop is closed: the transport
    cannot schedule connection_lost, and write() raises asyncio's
    RuntimeError to its caller (a library cleaning up after the loop,
    e.g. asyncpg's leftover cancel task, stops there) rather than
    reporting it and returning."""
    lp = loop_factory()
    a, b = socket.socketpair()

    async def main():
        tr, _ = await lp.create_connection(asyncio.Protocol, sock=a)
        return tr
    try:
        tr = lp.run_until_complete(main())
        lp.close()
        a.shutdown(socket.SHUT_WR)  # the next send fails with EPIPE
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            tr.write(b"x")
        assert tr.is_closing()
    finally:
        a.close()
        b.close()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            tr = None
            gc.collect()


def test_write_buffer_limits(loop):
    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        try:
            low, high = ctr.get_write_buffer_limits()
            assert (low, high) == (16 * 1024, 64 * 1024)  # asyncio defaults
            ctr.set_write_buffer_limits(high=1000)
            assert ctr.get_write_buffer_limits() == (250, 1000)
            ctr.set_write_buffer_limits(low=100)
            assert ctr.get_write_buffer_limits() == (100, 400)
            ctr.set_write_buffer_limits(high=300, low=10)
            assert ctr.get_write_buffer_limits() == (10, 300)
            ctr.set_write_buffer_limits(0, 0)
            assert ctr.get_write_buffer_limits() == (0, 0)
            with pytest.raises(ValueError):
                ctr.set_write_buffer_limits(high=10, low=20)
            for high, low in [(-1, -1), (-5, -2), (-4, -1)]:
                # low is high // 4, as asyncio computes it
                with pytest.raises(ValueError, match=re.escape(
                        f"high ({high}) must be >= low ({low}) must be >= 0")):
                    ctr.set_write_buffer_limits(high=high)
            ctr.set_write_buffer_limits()
            assert ctr.get_write_buffer_limits() == (16 * 1024, 64 * 1024)

            # Fill: the peer does not read.
            str_.pause_reading()
            ctr.set_write_buffer_limits(high=4096)
            assert not cproto.paused
            for _ in range(200):
                ctr.write(b"y" * 65536)
                if ctr.get_write_buffer_size():
                    break
            assert ctr.get_write_buffer_size() > 4096
            assert cproto.paused and cproto.pauses == 1
            str_.resume_reading()
            await until(lambda: ctr.get_write_buffer_size() == 0)
            await until(lambda: not cproto.paused)

            # Lowering the limit under what is buffered pauses at once.
            str_.pause_reading()
            ctr.set_write_buffer_limits(high=64 * 1024 * 1024)
            for _ in range(200):
                ctr.write(b"y" * 65536)
                if ctr.get_write_buffer_size():
                    break
            assert ctr.get_write_buffer_size() > 0
            assert not cproto.paused
            ctr.set_write_buffer_limits(high=1)
            assert cproto.paused and cproto.pauses == 2
            str_.resume_reading()
            await until(lambda: ctr.get_write_buffer_size() == 0)
            await until(lambda: not cproto.paused)
        finally:
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main())


def test_set_protocol(loop):
    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        new = Recorder(loop)
        try:
            str_.set_protocol(new)
            assert str_.get_protocol() is new
            ctr.write(b"for the new one")
            assert await new.wait_data(15) == b"for the new one"
            assert sproto.data == b""
            ctr.close()
            await new.wait_eof()
            assert await new.lost is None
            assert not sproto.lost.done()
            assert not new.made.done()  # set_protocol does not call it
        finally:
            ctr.close()
            str_.close()
            await cproto.lost
    run(loop, main())


# ---------------------------------------------------------------------------
# Protocol semantics


def test_flow_control_100mb(loop):
    chunk_size = 1 << 20
    nchunks = 100
    high = 256 * 1024
    base = os.urandom(chunk_size + 1024)

    def chunk(i):
        off = (i * 7919) % 1024
        return base[off:off + chunk_size]

    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        try:
            ctr.set_write_buffer_limits(high=high)
            shrink_buffers(ctr, str_)
            str_.pause_reading()
            want = hashlib.sha256()
            written = 0
            max_buffered = 0

            async def produce():
                nonlocal written, max_buffered
                for i in range(nchunks):
                    await cproto.writable()
                    data = chunk(i)
                    want.update(data)
                    ctr.write(data)
                    written += 1
                    max_buffered = max(max_buffered,
                                       ctr.get_write_buffer_size())
                ctr.write_eof()

            producer = asyncio.ensure_future(produce())
            await asyncio.sleep(0.2)
            # The peer reads nothing: the producer is held by pause_writing.
            assert cproto.paused
            assert not producer.done()
            assert written < nchunks
            assert ctr.get_write_buffer_size() <= high + chunk_size

            got = hashlib.sha256()
            received = 0

            def data_received(data):
                nonlocal received
                got.update(data)
                received += len(data)
            sproto.data_received = data_received
            str_.resume_reading()
            await producer
            await sproto.wait_eof()
            assert received == nchunks * chunk_size
            assert got.hexdigest() == want.hexdigest()
            assert max_buffered <= high + chunk_size
            assert cproto.pauses >= 1
            assert not cproto.paused
            assert ctr.get_write_buffer_size() == 0
        finally:
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main(), timeout=20.0)


class Buffered(asyncio.BufferedProtocol):
    def __init__(self, loop, size):
        self.buf = bytearray(size)
        self.data = bytearray()
        self.hints = []
        self.eof = False
        self.lost = loop.create_future()
        self.updates = 0

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        self.hints.append(sizehint)
        return self.buf

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= len(self.buf)
        self.updates += 1
        self.data += self.buf[:nbytes]

    def eof_received(self):
        self.eof = True

    def connection_lost(self, exc):
        self.lost.set_result(exc)


@pytest.mark.parametrize("bufsize", [1, 1000, 256 * 1024])
def test_buffered_protocol_server(loop, bufsize):
    payload = os.urandom(1024 * 1024 if bufsize > 1 else 5000)

    async def main():
        protos = []

        def factory():
            protos.append(Buffered(loop, bufsize))
            return protos[-1]

        server = await loop.create_server(factory, "127.0.0.1", 0)
        try:
            ctr, cproto = await loop.create_connection(
                lambda: Recorder(loop), "127.0.0.1",
                server.sockets[0].getsockname()[1])
        finally:
            server.close()
        try:
            ctr.write(payload)
            ctr.write_eof()
            await until(lambda: protos and protos[0].eof)
            bp = protos[0]
            assert bytes(bp.data) == payload
            assert bp.updates >= len(payload) // bufsize
            assert await bp.lost is None
            assert await cproto.lost is None
        finally:
            ctr.close()
            await cproto.lost
    run(loop, main())


def test_buffered_protocol_client(loop):
    payload = os.urandom(2 * 1024 * 1024)

    async def main():
        ctr, bp, peer = await raw_peer_pair(loop, lambda: Buffered(loop, 4096))
        try:
            await loop.sock_sendall(peer, payload)
            peer.shutdown(socket.SHUT_WR)
            await until(lambda: bp.eof)
            assert bytes(bp.data) == payload
            assert await bp.lost is None  # eof_received returned None
        finally:
            ctr.close()
            peer.close()
    run(loop, main())


def test_buffered_protocol_empty_buffer_is_an_error(loop, errors):
    async def main():
        class Bad(Buffered):
            def get_buffer(self, sizehint):
                return bytearray()

        ctr, bp, peer = await raw_peer_pair(loop, lambda: Bad(loop, 1))
        try:
            await loop.sock_sendall(peer, b"data")
            exc = await bp.lost
            assert isinstance(exc, RuntimeError)
        finally:
            ctr.close()
            peer.close()
    run(loop, main())
    ctx = errors.take_one()
    assert isinstance(ctx["exception"], RuntimeError)


@pytest.mark.parametrize("buf, exc, where", [
    (b"abc", TypeError, "Fatal read error on socket transport"),
    (memoryview(bytearray(8))[::2], TypeError,
     "Fatal read error on socket transport"),
    (b"", RuntimeError, "Fatal error: protocol.get_buffer() call failed."),
    (None, TypeError, "Fatal error: protocol.get_buffer() call failed."),
    (5, TypeError, "Fatal error: protocol.get_buffer() call failed."),
])
def test_buffered_protocol_bad_buffer(loop, errors, buf, exc, where):
    # asyncio: len(buf) (the get_buffer() failure), then sock.recv_into(buf)
    # (a read error with recv_into's message for a read-only buffer).
    async def main():
        class Bad(Buffered):
            def get_buffer(self, sizehint):
                return buf

        ctr, bp, peer = await raw_peer_pair(loop, lambda: Bad(loop, 1))
        try:
            await loop.sock_sendall(peer, b"data")
            return await bp.lost
        finally:
            ctr.close()
            peer.close()
    lost = run(loop, main())
    ctx = errors.take_one()
    assert ctx["message"] == where
    assert ctx["exception"] is lost
    assert type(lost) is exc
    if where.startswith("Fatal read"):
        assert str(lost).startswith(
            "recv_into() argument 1 must be read-write bytes-like object")


def test_write_noncontiguous_memoryview(loop, errors):
    # asyncio hands it to socket.send(), which refuses it: a fatal write
    # error (connection_lost gets the BufferError), write() returns.
    view = memoryview(bytearray(b"abcdef"))[::2]

    async def main():
        tr, proto, peer = await raw_peer_pair(loop, lambda: Recorder(loop))
        try:
            assert tr.write(memoryview(bytearray())[::2]) is None  # empty
            assert tr.write(view) is None
            return await proto.lost
        finally:
            tr.close()
            peer.close()
    lost = run(loop, main())
    assert isinstance(lost, BufferError)
    ctx = errors.take_one()
    assert ctx["message"] == "Fatal write error on socket transport"
    assert ctx["exception"] is lost


@pytest.mark.parametrize("keep_open", [True, False, None])
def test_eof_received_return_value(loop, keep_open):
    async def main():
        tr, proto, peer = await raw_peer_pair(
            loop, lambda: Recorder(loop, keep_open=keep_open))
        try:
            await loop.sock_sendall(peer, b"request")
            peer.shutdown(socket.SHUT_WR)
            await proto.wait_eof()
            assert proto.data == b"request"
            if keep_open:
                await asyncio.sleep(0.02)
                assert not tr.is_closing()
                assert not proto.lost.done()
                tr.write(b"response")
                tr.write_eof()
                assert await recv_all(loop, peer, 100) == b"response"
                tr.close()
            else:
                # The transport closes itself.
                assert await proto.lost is None
                assert tr.is_closing()
                assert await loop.sock_recv(peer, 100) == b""
            assert await proto.lost is None
            assert proto.events == ["made", "data", "eof", "lost"]
        finally:
            tr.close()
            peer.close()
    run(loop, main())


def test_eof_received_keep_open_then_peer_reads_all(loop):
    """A half-closed peer (SHUT_WR) still receives a large response."""
    payload = os.urandom(3 * 1024 * 1024)

    async def main():
        tr, proto, peer = await raw_peer_pair(
            loop, lambda: Recorder(loop, keep_open=True))
        try:
            peer.shutdown(socket.SHUT_WR)
            await proto.wait_eof()
            tr.write(payload)
            tr.close()
            assert await recv_all(loop, peer, len(payload) + 1) == payload
            assert await proto.lost is None
        finally:
            tr.close()
            peer.close()
    run(loop, main())


class Chunks(Recorder):
    """A Recorder that also keeps each data_received() argument."""

    def __init__(self, loop, keep_open=None):
        super().__init__(loop, keep_open)
        self.chunks = []

    def data_received(self, data):
        assert type(data) is bytes
        self.chunks.append(data)
        super().data_received(data)


def test_mixed_message_sizes_arrive_intact(loop):
    # Big reads, small reads and big reads again (aioev sizes a read after
    # a big one from FIONREAD and receives straight into the bytes).
    sizes = [200_000, 7, 100_000, 1, 65_536, 3, 300_000, 40_000, 2]
    payload = os.urandom(sum(sizes))

    async def main():
        tr, proto, peer = await raw_peer_pair(loop, lambda: Chunks(loop))
        try:
            off = 0
            for n in sizes:
                await loop.sock_sendall(peer, payload[off:off + n])
                off += n
                await proto.wait_data(off)
            assert bytes(proto.data) == payload
            assert all(proto.chunks)
            assert max(map(len, proto.chunks)) <= 256 * 1024
        finally:
            tr.close()
            peer.close()
        assert await proto.lost is None
    run(loop, main())


@pytest.mark.parametrize("how", ["eof", "reset"])
def test_peer_gone_right_after_a_big_message(loop, how):
    payload = os.urandom(150_000)

    async def main():
        tr, proto, peer = await raw_peer_pair(loop, lambda: Chunks(loop))
        try:
            await loop.sock_sendall(peer, payload)
            await proto.wait_data(len(payload))
            if how == "eof":
                peer.shutdown(socket.SHUT_WR)
                await proto.wait_eof()
                assert await proto.lost is None
            else:
                reset(peer)
                assert isinstance(await proto.lost, ConnectionResetError)
            assert bytes(proto.data) == payload
        finally:
            tr.close()
            peer.close()
    run(loop, main())


def test_connection_lost_none_on_clean_close(loop):
    async def main():
        tr, proto, peer = await raw_peer_pair(loop, lambda: Recorder(loop))
        try:
            await loop.sock_sendall(peer, b"bye")
            peer.close()
            assert await proto.lost is None
            assert proto.events == ["made", "data", "eof", "lost"]
            assert proto.data == b"bye"
        finally:
            tr.close()
    run(loop, main())


def test_connection_lost_on_peer_reset_mid_write(loop):
    async def main():
        tr, proto, peer = await raw_peer_pair(loop, lambda: Recorder(loop))
        try:
            # Get some data moving, then reset.
            tr.write(b"x" * 65536)
            await loop.sock_recv(peer, 1024)
            reset(peer)
            for _ in range(2000):
                if proto.lost.done():
                    break
                tr.write(b"x" * 65536)
                await asyncio.sleep(0.001)
            exc = await proto.lost
            assert isinstance(exc, OSError), exc
            assert isinstance(exc, (ConnectionResetError, BrokenPipeError)), \
                exc
            assert tr.is_closing()
            # Later writes are silently dropped (asyncio logs a warning only
            # after several of them).
            tr.write(b"dropped")
        finally:
            tr.close()
            peer.close()
    run(loop, main())


def test_connection_lost_on_peer_reset_while_idle(loop):
    async def main():
        tr, proto, peer = await raw_peer_pair(loop, lambda: Recorder(loop))
        try:
            await loop.sock_sendall(peer, b"unread")
            await proto.wait_data(6)
            reset(peer)
            exc = await proto.lost
            assert exc is None or isinstance(exc, ConnectionResetError), exc
            assert tr.is_closing()
        finally:
            tr.close()
    run(loop, main())


def test_connection_lost_on_peer_reset_while_paused_writer(loop):
    """The reset arrives while everything is buffered in the transport."""
    async def main():
        tr, proto, peer = await raw_peer_pair(loop, lambda: Recorder(loop))
        try:
            tr.pause_reading()
            while not proto.paused:
                tr.write(b"p" * 65536)
                await asyncio.sleep(0)
            reset(peer)
            exc = await proto.lost
            assert isinstance(exc, (ConnectionResetError, BrokenPipeError)), \
                exc
            assert tr.is_closing()
            assert tr.get_write_buffer_size() == 0
        finally:
            tr.close()
    run(loop, main())


# ---------------------------------------------------------------------------
# Faults


def test_write_after_close_is_silently_ignored(loop, caplog):
    async def main():
        tr, proto, peer = await raw_peer_pair(loop, lambda: Recorder(loop))
        try:
            tr.close()
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                for _ in range(3):
                    tr.write(b"ignored")  # no exception
                assert not [r for r in caplog.records
                            if r.name == "asyncio"]
                assert await proto.lost is None
                # Enough writes after the connection is lost: asyncio logs.
                for _ in range(10):
                    tr.write(b"ignored")
                warnings_ = [r for r in caplog.records
                             if r.name == "asyncio"
                             and r.levelno == logging.WARNING]
                assert warnings_
                assert all("socket.send() raised exception."
                           in r.getMessage() for r in warnings_)
            assert await recv_all(loop, peer, 100) == b""
        finally:
            tr.close()
            peer.close()
    run(loop, main())


def test_write_after_connection_lost_to_reset(loop, caplog):
    async def main():
        tr, proto, peer = await raw_peer_pair(loop, lambda: Recorder(loop))
        try:
            reset(peer)
            while not proto.lost.done():
                tr.write(b"z" * 1024)
                await asyncio.sleep(0.001)
            await proto.lost
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                for _ in range(10):
                    tr.write(b"more")  # never raises
            assert any("socket.send() raised exception." in r.getMessage()
                       for r in caplog.records)
        finally:
            tr.close()
    run(loop, main())


def test_write_to_half_closed_peer(loop):
    """The peer shut down its read side: nothing crashes, and the
    connection ends with connection_lost once the peer goes away."""
    async def main():
        tr, proto, peer = await raw_peer_pair(loop, lambda: Recorder(loop))
        try:
            peer.shutdown(socket.SHUT_RD)
            tr.write(b"into the void")
            await asyncio.sleep(0.02)
            await loop.sock_sendall(peer, b"still talking")
            assert await proto.wait_data(13) == b"still talking"
            peer.close()
            exc = await proto.lost
            assert exc is None or isinstance(exc, OSError)
        finally:
            tr.close()
            peer.close()
    run(loop, main())


def test_data_received_exception_is_reported(loop, errors):
    async def main():
        class Boom(Recorder):
            def data_received(self, data):
                raise ZeroDivisionError("boom")

        tr, proto, peer = await raw_peer_pair(loop, lambda: Boom(loop))
        try:
            await loop.sock_sendall(peer, b"x")
            exc = await proto.lost
            assert isinstance(exc, ZeroDivisionError)
            assert tr.is_closing()
        finally:
            tr.close()
            peer.close()
    run(loop, main())
    ctx = errors.take_one()
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert ctx.get("protocol") is not None
    assert ctx.get("transport") is not None


def test_connection_refused_protocol_never_made(loop):
    made = []

    async def main():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            with pytest.raises(OSError):
                await loop.create_connection(
                    lambda: made.append(1) or Recorder(loop),
                    *s.getsockname())
    run(loop, main())
    assert made == []


# ---------------------------------------------------------------------------
# loop.sendfile


@pytest.fixture
def datafile(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 123)
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    with open(path, "rb") as f:
        yield f, data


@pytest.mark.parametrize("offset,count", [
    (0, None), (0, 1000), (12345, 2 * 1024 * 1024), (3 * 1024 * 1024, None)])
def test_sendfile(loop, datafile, offset, count):
    f, data = datafile
    want = data[offset:offset + count] if count else data[offset:]

    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        try:
            ctr.write(b"head:")
            sent = await loop.sendfile(ctr, f, offset, count)
            assert sent == len(want)
            assert f.tell() == offset + sent
            ctr.write(b":tail")  # the transport is usable afterwards
            ctr.write_eof()
            await sproto.wait_eof()
            assert bytes(sproto.data) == b"head:" + want + b":tail"
        finally:
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main())


@pytest.mark.parametrize("offset,count", [(0, None), (7, 100_000)])
def test_sendfile_fallback_without_fileno(loop, datafile, offset, count):
    # An in-memory file cannot go through os.sendfile: the fallback reads
    # it in the executor and writes it with flow control.
    _, data = datafile
    f = io.BytesIO(data)
    want = data[offset:offset + count] if count else data[offset:]

    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        try:
            sent = await loop.sendfile(ctr, f, offset, count)
            assert sent == len(want)
            assert f.tell() == offset + sent
            ctr.write_eof()
            await sproto.wait_eof()
            assert bytes(sproto.data) == want
        finally:
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main())


def test_sendfile_no_fallback_on_tcp(loop, datafile):
    f, data = datafile

    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        try:
            sent = await loop.sendfile(ctr, f, fallback=False)
            assert sent == len(data)
            ctr.write_eof()
            await sproto.wait_eof()
            assert bytes(sproto.data) == data
        finally:
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main())


def test_sendfile_unix(loop, datafile, tmp_path):
    f, data = datafile

    async def main():
        ctr, cproto, str_, sproto = await unix_pair(loop,
                                                    str(tmp_path / "sf"))
        try:
            sent = await loop.sendfile(ctr, f, 10, 100000)
            assert sent == 100000
            ctr.write_eof()
            await sproto.wait_eof()
            assert bytes(sproto.data) == data[10:100010]
        finally:
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main())


def test_sendfile_slow_reader(loop, datafile):
    """Paused peer: sendfile waits, then completes once it reads."""
    f, data = datafile

    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        try:
            shrink_buffers(ctr, str_)
            str_.pause_reading()
            task = asyncio.ensure_future(loop.sendfile(ctr, f))
            await asyncio.sleep(0.1)
            assert not task.done()
            with pytest.raises(RuntimeError):
                ctr.write(b"not while sendfile runs")
            str_.resume_reading()
            assert await task == len(data)
            ctr.write_eof()
            await sproto.wait_eof()
            assert bytes(sproto.data) == data
        finally:
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main())


def test_sendfile_bad_arguments(loop, tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("text")

    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        try:
            with open(path, "r") as text:
                with pytest.raises(ValueError):
                    await loop.sendfile(ctr, text)
            with open(path, "rb") as f:
                with pytest.raises(ValueError):
                    await loop.sendfile(ctr, f, -1)
                with pytest.raises(ValueError):
                    await loop.sendfile(ctr, f, 0, 0)
                with pytest.raises(TypeError):
                    await loop.sendfile(ctr, f, "0")
        finally:
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main())


def test_sendfile_closing_transport(loop, datafile):
    f, _ = datafile

    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        try:
            ctr.close()
            with pytest.raises(RuntimeError):
                await loop.sendfile(ctr, f)
        finally:
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main())


def test_write_after_drained_close_touches_no_fd(aioev_loop):
    # close() with data still buffered: connection_lost comes once the
    # buffer drains and the socket is closed; a write after that must be
    # ignored, never sent through a reused fd number.
    loop = aioev_loop

    async def main():
        ctr, cproto, str_, sproto = await tcp_pair(loop)
        str_.pause_reading()
        ctr.set_write_buffer_limits(high=1 << 30)
        ctr.write(b"x" * (8 << 20))
        assert ctr.get_write_buffer_size() > 0
        ctr.close()
        str_.resume_reading()
        await asyncio.wait_for(cproto.lost, TIMEOUT)
        a, b = socket.socketpair()       # may take the freed fd number
        try:
            ctr.write(b"stray")
            ctr.write(b"stray")
            assert ctr.get_write_buffer_size() == 0
            b.setblocking(False)
            with pytest.raises(BlockingIOError):
                b.recv(10)
            a.setblocking(False)
            with pytest.raises(BlockingIOError):
                a.recv(10)
        finally:
            a.close()
            b.close()
            await close_all((ctr, cproto), (str_, sproto))
    run(loop, main())


def test_transport_repr_follows_its_state(loop):
    # asyncio's selector transports' repr, class name aside: the fd, and
    # while the transport is not closed (and the loop open) what the loop
    # watches it for and the write buffer's size.
    async def main():
        a, b = socket.socketpair()
        t, _ = await loop.create_connection(asyncio.Protocol, sock=a)
        fd = a.fileno()
        got = [repr(t)]
        t.pause_reading()
        got.append(repr(t))
        t.resume_reading()
        t.close()
        got.append(repr(t))
        await asyncio.sleep(0.01)
        got.append(repr(t))
        b.close()
        return t, fd, got
    t, fd, got = run(loop, main())
    assert [g.split(" ", 1)[1] for g in got] == [
        f"fd={fd} read=polling write=<idle, bufsize=0>>",
        f"fd={fd} read=idle write=<idle, bufsize=0>>",
        f"closing fd={fd} read=idle write=<idle, bufsize=0>>",
        f"closed fd={fd}>",
    ]

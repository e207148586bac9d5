"""Servers, connections and asyncio streams over loopback TCP and Unix sockets.

Every test runs on stdlib asyncio and on aioev (the ``loop`` fixture); asyncio
is the reference.  Today aioev runs asyncio's own selector transports on its C
loop; these tests must keep passing when native C transports replace them, so
they only check behaviour asyncio documents or visibly has.
"""

import asyncio
import os
import socket
import struct
import sys
import uuid

import pytest

from conftest import open_fds

TIMEOUT = 10.0
LINUX = sys.platform.startswith("linux")


def run(loop, coro, timeout=TIMEOUT):
    """Run coro on loop, failing it if it takes longer than timeout."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def _ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = _ipv6_loopback()


class Echo(asyncio.Protocol):
    """Server protocol: echo everything, close on EOF."""

    instances = None  # set to a list to collect instances

    def connection_made(self, transport):
        self.transport = transport
        if Echo.instances is not None:
            Echo.instances.append(self)

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        self.transport.close()


class Client(asyncio.Protocol):
    """Client protocol recording what happens to it."""

    def __init__(self, loop):
        self.loop = loop
        self.transport = None
        self.data = bytearray()
        self.eof = False
        self.made = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.made.set_result(transport)

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.eof = True

    def connection_lost(self, exc):
        self.lost.set_result(exc)

    async def wait_data(self, n):
        while len(self.data) < n:
            if self.lost.done():
                raise AssertionError(
                    f"connection lost with {len(self.data)}/{n} bytes")
            await asyncio.sleep(0.001)
        return bytes(self.data)


async def echo_roundtrip(loop, connect, payload=b"ping"):
    """Connect with connect(factory) -> (transport, protocol), echo once,
    close, and return (sockname, peername) of the client transport."""
    transport, proto = await connect(lambda: Client(loop))
    try:
        transport.write(payload)
        assert await proto.wait_data(len(payload)) == payload
        names = (transport.get_extra_info("sockname"),
                 transport.get_extra_info("peername"))
    finally:
        transport.close()
    assert await proto.lost is None
    return names


async def close_server(server):
    server.close()
    await server.wait_closed()


def port_of(server, index=0):
    return server.sockets[index].getsockname()[1]


def listen_backlog(sock):
    """The listen backlog of a listening TCP socket (Linux: TCP_INFO)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    # u8 x 8, then u32 rto, ato, snd_mss, rcv_mss, unacked, sacked; for a
    # listening socket sacked is sk_max_ack_backlog.
    return struct.unpack_from("6I", info, 8)[5]


# ---------------------------------------------------------------------------
# create_server


def test_create_server_host_port0(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        try:
            assert isinstance(server, asyncio.AbstractServer)
            assert len(server.sockets) == 1
            sock = server.sockets[0]
            assert sock.family == socket.AF_INET
            assert sock.type == socket.SOCK_STREAM
            host, port = sock.getsockname()
            assert host == "127.0.0.1" and port != 0
            assert server.is_serving()
            sockname, peername = await echo_roundtrip(
                loop, lambda f: loop.create_connection(f, "127.0.0.1", port))
            assert peername == ("127.0.0.1", port)
            assert sockname[0] == "127.0.0.1"
        finally:
            await close_server(server)
    run(loop, main())


def test_create_server_list_of_hosts(loop):
    hosts = ["127.0.0.1", "::1"] if HAS_IPV6 else ["127.0.0.1", "127.0.0.2"]
    if not LINUX and not HAS_IPV6:
        pytest.skip("needs IPv6 or Linux's whole 127/8 loopback")

    async def main():
        server = await loop.create_server(Echo, hosts, 0)
        try:
            socks = server.sockets
            assert len(socks) == 2
            bound = sorted(s.getsockname()[0] for s in socks)
            assert bound == sorted(hosts)
            for s in socks:
                host, port = s.getsockname()[:2]
                _, peer = await echo_roundtrip(
                    loop, lambda f: loop.create_connection(f, host, port))
                assert peer[:2] == (host, port)
        finally:
            await close_server(server)
    run(loop, main())


def test_create_server_family_inet(loop):
    async def main():
        server = await loop.create_server(Echo, "localhost", 0,
                                          family=socket.AF_INET)
        try:
            assert server.sockets
            for s in server.sockets:
                assert s.family == socket.AF_INET
                assert s.getsockname()[0].startswith("127.")
            await echo_roundtrip(loop, lambda f: loop.create_connection(
                f, "127.0.0.1", port_of(server)))
        finally:
            await close_server(server)
    run(loop, main())


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
def test_create_server_family_inet6(loop):
    async def main():
        server = await loop.create_server(Echo, "::1", 0,
                                          family=socket.AF_INET6)
        try:
            (s,) = server.sockets
            assert s.family == socket.AF_INET6
            # asyncio sets IPV6_V6ONLY on AF_INET6 listeners.
            assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            await echo_roundtrip(loop, lambda f: loop.create_connection(
                f, "::1", port_of(server)))
        finally:
            await close_server(server)
    run(loop, main())


@pytest.mark.parametrize("reuse", [True, False])
def test_create_server_reuse_address(loop, reuse):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0,
                                          reuse_address=reuse)
        try:
            opt = server.sockets[0].getsockopt(socket.SOL_SOCKET,
                                               socket.SO_REUSEADDR)
            assert bool(opt) is reuse
        finally:
            await close_server(server)
    run(loop, main())


def test_create_server_reuse_address_default_on_posix(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        try:
            assert server.sockets[0].getsockopt(socket.SOL_SOCKET,
                                                socket.SO_REUSEADDR)
        finally:
            await close_server(server)
    run(loop, main())


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"),
                    reason="SO_REUSEPORT not supported")
def test_create_server_reuse_port(loop):
    async def main():
        try:
            s1 = await loop.create_server(Echo, "127.0.0.1", 0,
                                          reuse_port=True)
        except (ValueError, OSError) as exc:
            pytest.skip(f"reuse_port unsupported: {exc}")
        try:
            port = port_of(s1)
            assert s1.sockets[0].getsockopt(socket.SOL_SOCKET,
                                            socket.SO_REUSEPORT)
            # A second listener on the very same port.
            s2 = await loop.create_server(Echo, "127.0.0.1", port,
                                          reuse_port=True)
            try:
                assert port_of(s2) == port
                for _ in range(4):
                    await echo_roundtrip(loop, lambda f: loop.create_connection(
                        f, "127.0.0.1", port))
            finally:
                await close_server(s2)
        finally:
            await close_server(s1)
    run(loop, main())


def test_create_server_port_in_use(loop):
    async def main():
        s1 = await loop.create_server(Echo, "127.0.0.1", 0,
                                      reuse_address=False)
        try:
            with pytest.raises(OSError):
                await loop.create_server(Echo, "127.0.0.1", port_of(s1),
                                         reuse_address=False)
        finally:
            await close_server(s1)
    run(loop, main())


@pytest.mark.skipif(not LINUX, reason="reads the backlog with TCP_INFO")
def test_create_server_backlog(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=7)
        try:
            assert listen_backlog(server.sockets[0]) == 7
            await echo_roundtrip(loop, lambda f: loop.create_connection(
                f, "127.0.0.1", port_of(server)))
        finally:
            await close_server(server)
    run(loop, main())


def test_create_server_sock(loop):
    async def main():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        addr = sock.getsockname()
        server = await loop.create_server(Echo, sock=sock)
        try:
            (s,) = server.sockets
            assert s.fileno() == sock.fileno()
            assert s.getsockname() == addr
            assert sock.gettimeout() == 0  # asyncio made it non-blocking
            await echo_roundtrip(loop, lambda f: loop.create_connection(
                f, *addr))
        finally:
            await close_server(server)
        # The server owns the socket: closing the server closes it.
        assert sock.fileno() == -1
    run(loop, main())


def test_create_server_sock_and_host_is_error(loop):
    async def main():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            with pytest.raises(ValueError):
                await loop.create_server(Echo, "127.0.0.1", 0, sock=sock)
            with pytest.raises(ValueError):
                await loop.create_server(Echo)
    run(loop, main())


def test_create_server_start_serving_false(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0,
                                          start_serving=False)
        try:
            port = port_of(server)
            assert not server.is_serving()
            # Not listening yet: the connection is refused.
            with pytest.raises(OSError):
                await loop.create_connection(lambda: Client(loop),
                                             "127.0.0.1", port)
            await server.start_serving()
            assert server.is_serving()
            await server.start_serving()  # idempotent
            assert server.is_serving()
            await echo_roundtrip(loop, lambda f: loop.create_connection(
                f, "127.0.0.1", port))
        finally:
            await close_server(server)
    run(loop, main())


# ---------------------------------------------------------------------------
# The Server object


def test_server_close_and_wait_closed(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = port_of(server)
        assert server.get_loop() is loop
        await echo_roundtrip(loop, lambda f: loop.create_connection(
            f, "127.0.0.1", port))
        server.close()
        assert not server.is_serving()
        assert server.sockets == ()
        await server.wait_closed()
        server.close()  # idempotent
        await server.wait_closed()
        with pytest.raises(OSError):
            await loop.create_connection(lambda: Client(loop),
                                         "127.0.0.1", port)
    run(loop, main())


def test_server_close_keeps_accepted_connections(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        transport, proto = await loop.create_connection(
            lambda: Client(loop), "127.0.0.1", port_of(server))
        try:
            await echo_roundtrip(loop, lambda f: loop.create_connection(
                f, "127.0.0.1", port_of(server)))
            server.close()
            # An already accepted connection lives on.
            transport.write(b"still here")
            assert await proto.wait_data(10) == b"still here"
        finally:
            transport.close()
        assert await proto.lost is None
        await server.wait_closed()
    run(loop, main())


def test_server_serve_forever_cancel(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0,
                                          start_serving=False)
        port = port_of(server)
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0.01)
        assert server.is_serving()
        await echo_roundtrip(loop, lambda f: loop.create_connection(
            f, "127.0.0.1", port))
        with pytest.raises(RuntimeError):
            await server.serve_forever()  # already being awaited
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Cancelling serve_forever closes the server.
        assert not server.is_serving()
        assert server.sockets == ()
        await server.wait_closed()
        with pytest.raises(RuntimeError):
            await server.serve_forever()  # closed
    run(loop, main())


def test_server_serve_forever_ended_by_close(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        task = asyncio.ensure_future(server.serve_forever())
        await asyncio.sleep(0.01)
        server.close()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.wait_closed()
    run(loop, main())


def test_server_async_with(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        async with server as srv:
            assert srv is server
            assert server.is_serving()
            port = port_of(server)
            await echo_roundtrip(loop, lambda f: loop.create_connection(
                f, "127.0.0.1", port))
        assert not server.is_serving()
        assert server.sockets == ()
        with pytest.raises(OSError):
            await loop.create_connection(lambda: Client(loop),
                                         "127.0.0.1", port)
    run(loop, main())


def test_server_sockets_are_transport_sockets(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        try:
            (s,) = server.sockets
            # Views, not the real socket: no way to close or accept on it.
            assert not isinstance(s, socket.socket)
            assert s.fileno() >= 0
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            assert "127.0.0.1" in repr(server)
        finally:
            await close_server(server)
    run(loop, main())


needs_313 = pytest.mark.skipif(sys.version_info < (3, 13),
                               reason="Server.close_clients/abort_clients "
                                      "are new in 3.13")


@needs_313
@pytest.mark.parametrize("method", ["close_clients", "abort_clients"])
def test_server_close_abort_clients(loop, method):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        clients = []
        try:
            for _ in range(3):
                clients.append(await loop.create_connection(
                    lambda: Client(loop), "127.0.0.1", port_of(server)))
            for transport, proto in clients:
                transport.write(b"x")
                await proto.wait_data(1)
            server.close()
            getattr(server, method)()
            for transport, proto in clients:
                await proto.lost
                assert proto.eof or method == "abort_clients"
            await server.wait_closed()
        finally:
            for transport, _ in clients:
                transport.close()
            await close_server(server)
    run(loop, main())


# ---------------------------------------------------------------------------
# create_connection


def test_create_connection_localhost_getaddrinfo(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        try:
            port = port_of(server)
            _, peer = await echo_roundtrip(loop, lambda f: loop.create_connection(
                f, "localhost", port))
            assert peer == ("127.0.0.1", port)
            # The port may be a service string, as with getaddrinfo.
            _, peer = await echo_roundtrip(loop, lambda f: loop.create_connection(
                f, "localhost", str(port), family=socket.AF_INET))
            assert peer == ("127.0.0.1", port)
        finally:
            await close_server(server)
    run(loop, main())


def test_create_connection_refused(loop):
    async def main():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]  # bound, not listening
            with pytest.raises(OSError) as info:
                await loop.create_connection(lambda: Client(loop),
                                             "127.0.0.1", port)
            assert isinstance(info.value, ConnectionRefusedError) or \
                "refused" in str(info.value).lower()
    run(loop, main())


def test_create_connection_sock(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        try:
            sock = socket.create_connection(("127.0.0.1", port_of(server)))
            fd = sock.fileno()
            transport, proto = await loop.create_connection(
                lambda: Client(loop), sock=sock)
            try:
                assert transport.get_extra_info("socket").fileno() == fd
                assert sock.gettimeout() == 0
                transport.write(b"via sock=")
                assert await proto.wait_data(9) == b"via sock="
            finally:
                transport.close()
            assert await proto.lost is None
            assert sock.fileno() == -1  # the transport closed it
        finally:
            await close_server(server)
    run(loop, main())


def test_create_connection_sock_and_host_is_error(loop):
    async def main():
        with socket.socket() as sock:
            with pytest.raises(ValueError):
                await loop.create_connection(lambda: Client(loop),
                                             "127.0.0.1", 1, sock=sock)
        with pytest.raises(ValueError):
            await loop.create_connection(lambda: Client(loop))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            with pytest.raises(ValueError):
                await loop.create_connection(lambda: Client(loop), sock=sock)
    run(loop, main())


def test_create_connection_local_addr(loop):
    async def main():
        peers = []

        class Recording(Echo):
            def connection_made(self, transport):
                super().connection_made(transport)
                peers.append(transport.get_extra_info("peername"))

        server = await loop.create_server(Recording, "127.0.0.1", 0)
        try:
            sockname, _ = await echo_roundtrip(
                loop, lambda f: loop.create_connection(
                    f, "127.0.0.1", port_of(server),
                    local_addr=("127.0.0.1", 0)))
            assert sockname[0] == "127.0.0.1" and sockname[1] != 0
            assert peers == [sockname]
        finally:
            await close_server(server)
    run(loop, main())


def test_create_connection_local_addr_fixed_port(loop):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                free = probe.getsockname()[1]
            sockname, _ = await echo_roundtrip(
                loop, lambda f: loop.create_connection(
                    f, "127.0.0.1", port_of(server),
                    local_addr=("127.0.0.1", free)))
            assert sockname == ("127.0.0.1", free)
        finally:
            await close_server(server)
    run(loop, main())


@pytest.mark.parametrize("kwargs", [
    dict(happy_eyeballs_delay=0.05),
    dict(happy_eyeballs_delay=0.05, interleave=1),
    dict(interleave=2),
])
def test_create_connection_happy_eyeballs(loop, kwargs):
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        try:
            port = port_of(server)
            _, peer = await echo_roundtrip(loop, lambda f: loop.create_connection(
                f, "localhost", port, **kwargs))
            assert peer == ("127.0.0.1", port)
        finally:
            await close_server(server)
    run(loop, main())


@pytest.mark.skipif(not HAS_IPV6, reason="no IPv6 loopback")
def test_create_connection_happy_eyeballs_skips_dead_address(loop):
    """Two candidate addresses; the first refuses: the second is used."""
    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        try:
            port = port_of(server)
            infos = [
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", port)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 ("127.0.0.1", port)),
            ]

            async def fake_getaddrinfo(*args, **kwargs):
                return infos

            loop.getaddrinfo = fake_getaddrinfo
            try:
                _, peer = await echo_roundtrip(
                    loop, lambda f: loop.create_connection(
                        f, "dual.invalid", port, happy_eyeballs_delay=0.05))
            finally:
                del loop.getaddrinfo
            assert peer == ("127.0.0.1", port)
        finally:
            await close_server(server)
    run(loop, main())


def test_create_connection_server_hostname_without_ssl(loop):
    async def main():
        with pytest.raises(ValueError):
            await loop.create_connection(lambda: Client(loop), "127.0.0.1", 1,
                                         server_hostname="example.com")
        with pytest.raises(ValueError):
            await loop.create_connection(lambda: Client(loop), "127.0.0.1", 1,
                                         ssl_handshake_timeout=1.0)
    run(loop, main())


# ---------------------------------------------------------------------------
# Unix sockets


def test_unix_server_and_connection_path(loop, tmp_path):
    path = str(tmp_path / "sock")

    async def main():
        server = await loop.create_unix_server(Echo, path)
        try:
            (s,) = server.sockets
            assert s.family == socket.AF_UNIX
            assert s.getsockname() == path
            assert os.path.exists(path)
            sockname, peer = await echo_roundtrip(
                loop, lambda f: loop.create_unix_connection(f, path))
            assert peer == path
            assert sockname in ("", None, b"")
        finally:
            await close_server(server)
    run(loop, main())


def test_unix_server_replaces_stale_socket_file(loop, tmp_path):
    path = str(tmp_path / "stale")
    with socket.socket(socket.AF_UNIX) as old:
        old.bind(path)  # leaves the file behind when closed

    async def main():
        server = await loop.create_unix_server(Echo, path)
        try:
            await echo_roundtrip(
                loop, lambda f: loop.create_unix_connection(f, path))
        finally:
            await close_server(server)
    run(loop, main())


@pytest.mark.skipif(sys.version_info < (3, 13),
                    reason="cleanup_socket is new in 3.13")
@pytest.mark.parametrize("cleanup", [True, False])
def test_unix_server_cleanup_socket(loop, tmp_path, cleanup):
    path = str(tmp_path / "cleanup")

    async def main():
        server = await loop.create_unix_server(Echo, path,
                                               cleanup_socket=cleanup)
        await echo_roundtrip(
            loop, lambda f: loop.create_unix_connection(f, path))
        assert os.path.exists(path)
        await close_server(server)
        # 3.13 removes the socket file on close unless told not to.
        assert os.path.exists(path) is not cleanup
    run(loop, main())


def test_unix_server_sock(loop, tmp_path):
    path = str(tmp_path / "bound")

    async def main():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        server = await loop.create_unix_server(Echo, sock=sock)
        try:
            await echo_roundtrip(
                loop, lambda f: loop.create_unix_connection(f, path))
        finally:
            await close_server(server)
        assert sock.fileno() == -1
    run(loop, main())


def test_unix_connection_sock(loop, tmp_path):
    path = str(tmp_path / "s")

    async def main():
        server = await loop.create_unix_server(Echo, path)
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            await echo_roundtrip(loop, lambda f: loop.create_unix_connection(
                f, sock=sock))
        finally:
            await close_server(server)
    run(loop, main())


def test_unix_connection_missing_path(loop, tmp_path):
    async def main():
        with pytest.raises(FileNotFoundError):
            await loop.create_unix_connection(lambda: Client(loop),
                                              str(tmp_path / "nope"))
    run(loop, main())


@pytest.mark.skipif(not LINUX, reason="abstract Unix names are Linux-only")
def test_unix_abstract_name(loop):
    name = "\0aioev-test-" + uuid.uuid4().hex

    async def main():
        server = await loop.create_unix_server(Echo, name)
        try:
            (s,) = server.sockets
            assert s.getsockname() == name.encode()
            _, peer = await echo_roundtrip(
                loop, lambda f: loop.create_unix_connection(f, name))
            assert peer == name.encode()
        finally:
            await close_server(server)
    run(loop, main())


# ---------------------------------------------------------------------------
# connect_accepted_socket


def test_connect_accepted_socket(loop):
    async def main():
        lsock = socket.socket()
        try:
            lsock.bind(("127.0.0.1", 0))
            lsock.listen(1)
            csock = socket.create_connection(lsock.getsockname())
            asock, _ = lsock.accept()
        finally:
            lsock.close()
        server_tr, server_proto = await loop.connect_accepted_socket(
            Echo, asock)
        assert isinstance(server_proto, Echo)
        assert server_tr.get_extra_info("peername") == csock.getsockname()
        sockname, _ = await echo_roundtrip(
            loop, lambda f: loop.create_connection(f, sock=csock),
            b"accepted")
        # Echo closed its side on EOF.
        while not server_tr.is_closing():
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
        assert asock.fileno() == -1
    run(loop, main())


def test_connect_accepted_socket_unix(loop):
    async def main():
        a, b = socket.socketpair()
        await loop.connect_accepted_socket(Echo, a)
        await echo_roundtrip(
            loop, lambda f: loop.create_unix_connection(f, sock=b))
        await asyncio.sleep(0.01)
    run(loop, main())


def test_connect_accepted_socket_rejects_dgram(loop):
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            with pytest.raises(ValueError):
                await loop.connect_accepted_socket(Echo, s)
    run(loop, main())


# ---------------------------------------------------------------------------
# asyncio streams


async def stream_echo_handler(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
        await writer.wait_closed()


def test_streams_echo(loop):
    async def main():
        server = await asyncio.start_server(stream_echo_handler,
                                            "127.0.0.1", 0)
        async with server:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port_of(server))
            writer.write(b"line one\nline two\n")
            assert await reader.readline() == b"line one\n"
            assert await reader.readline() == b"line two\n"
            writer.write(b"0123456789")
            assert await reader.readexactly(4) == b"0123"
            assert await reader.readexactly(6) == b"456789"
            writer.writelines([b"ab", b"c|", b"tail"])
            assert await reader.readuntil(b"|") == b"abc|"
            assert writer.can_write_eof()
            writer.write_eof()
            assert await reader.read(-1) == b"tail"
            assert reader.at_eof()
            assert await reader.read(-1) == b""
            assert await reader.readline() == b""
            assert writer.get_extra_info("peername") == \
                server.sockets[0].getsockname()
            writer.close()
            await writer.wait_closed()
            assert writer.is_closing()
    run(loop, main())


def test_streams_unix_echo(loop, tmp_path):
    path = str(tmp_path / "streams")

    async def main():
        server = await asyncio.start_unix_server(stream_echo_handler, path)
        async with server:
            reader, writer = await asyncio.open_unix_connection(path)
            payload = os.urandom(300_000)
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
            assert await reader.read(-1) == payload
            writer.close()
            await writer.wait_closed()
    run(loop, main())


@pytest.mark.skipif(not LINUX, reason="abstract Unix names are Linux-only")
def test_streams_unix_abstract(loop):
    name = "\0aioev-streams-" + uuid.uuid4().hex

    async def main():
        server = await asyncio.start_unix_server(stream_echo_handler, name)
        async with server:
            reader, writer = await asyncio.open_unix_connection(name)
            writer.write(b"abstract\n")
            assert await reader.readline() == b"abstract\n"
            writer.close()
            await writer.wait_closed()
    run(loop, main())


def test_streams_read_all_after_server_close(loop):
    body = b"".join(b"%06d\n" % i for i in range(20000))

    async def handler(reader, writer):
        writer.write(body)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        async with server:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port_of(server))
            assert await reader.readline() == b"000000\n"
            rest = await reader.read(-1)
            assert b"000000\n" + rest == body
            writer.close()
            await writer.wait_closed()
    run(loop, main())


def test_streams_incomplete_read(loop):
    async def handler(reader, writer):
        writer.write(b"short")
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        async with server:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port_of(server))
            with pytest.raises(asyncio.IncompleteReadError) as info:
                await reader.readexactly(10)
            assert info.value.partial == b"short"
            assert info.value.expected == 10
            with pytest.raises(asyncio.IncompleteReadError) as info:
                await reader.readuntil(b"\n")
            assert info.value.partial == b""
            writer.close()
            await writer.wait_closed()
    run(loop, main())


def test_streams_limit_overrun(loop):
    async def handler(reader, writer):
        writer.write(b"x" * 100 + b"\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        async with server:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port_of(server), limit=10)
            with pytest.raises(ValueError):  # LimitOverrunError via readline
                await reader.readline()
            writer.close()
            await writer.wait_closed()
    run(loop, main())


def test_streams_drain_under_flow_control(loop):
    total = 16 * 1024 * 1024
    chunk = b"z" * 65536
    release = None
    received = 0

    async def handler(reader, writer):
        nonlocal received
        writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        await release  # a reader that does not read, for now
        while True:
            data = await reader.read(1 << 20)
            if not data:
                break
            received += len(data)
        writer.close()
        await writer.wait_closed()

    async def main():
        nonlocal release
        release = loop.create_future()
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        async with server:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port_of(server))
            transport = writer.transport
            # Small kernel buffers: the transport's own buffer must fill.
            transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
            low, high = transport.get_write_buffer_limits()
            sent = 0

            async def produce():
                nonlocal sent
                while sent < total:
                    writer.write(chunk)
                    sent += len(chunk)
                    await writer.drain()
                    assert transport.get_write_buffer_size() <= high

            producer = asyncio.ensure_future(produce())
            await asyncio.sleep(0.2)
            # The peer reads nothing: drain() must be holding the producer.
            assert not producer.done()
            assert sent < total
            assert transport.get_write_buffer_size() <= high + len(chunk)
            release.set_result(None)
            await producer
            writer.write_eof()
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
        assert received == total
    run(loop, main())


def test_streams_drain_raises_after_peer_reset(loop):
    async def main():
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        lsock.setblocking(False)
        try:
            connect = asyncio.ensure_future(asyncio.open_connection(
                *lsock.getsockname()))
            peer, _ = await loop.sock_accept(lsock)
            reader, writer = await connect
        finally:
            lsock.close()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        struct.pack("ii", 1, 0))
        peer.close()
        with pytest.raises((ConnectionError, OSError)):
            for _ in range(1000):
                writer.write(b"x" * 65536)
                await writer.drain()
                await asyncio.sleep(0.001)
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    run(loop, main())


# ---------------------------------------------------------------------------
# Many short connections: no descriptor growth


def churn(loop, count, budget):
    async def handler(reader, writer):
        data = await reader.read(100)
        writer.write(data)
        writer.close()
        await writer.wait_closed()

    async def one(port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hi")
        assert await reader.read(100) == b"hi"
        writer.close()
        await writer.wait_closed()

    async def main():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        async with server:
            port = port_of(server)
            for _ in range(20):  # warm up: lazy loop resources, executor...
                await one(port)
            await asyncio.sleep(0.01)
            before = open_fds()
            start = loop.time()
            for _ in range(count):
                await one(port)
            elapsed = loop.time() - start
            await asyncio.sleep(0.05)
            after = open_fds()
        if before is not None:
            grown = after - before
            assert len(grown) <= 2, f"fds grew by {len(grown)}"
        return elapsed

    elapsed = run(loop, main(), timeout=budget)
    return elapsed


def test_many_connections_no_fd_growth(loop):
    churn(loop, 2000, budget=15.0)


@pytest.mark.slow
def test_many_connections_no_fd_growth_long(loop):
    churn(loop, 10000, budget=120.0)


# -- the accept path ----------------------------------------------------------

@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("bad", ["raises", "None"])
def test_accept_factory_error_reported_and_serving_goes_on(aioev_loop, errors,
                                                           debug, bad):
    # aioev sets connections up in the accept callback: a factory that
    # raises (or returns None) has its connection closed at once (asyncio's
    # waits for the GC), the next one served; reported in debug mode only,
    # as asyncio does, without a 'protocol' key for None.
    loop = aioev_loop
    loop.set_debug(debug)
    calls = []

    def factory():
        calls.append(1)
        if len(calls) == 1:
            if bad == "None":
                return None
            raise ValueError("no protocol for you")
        return Echo()

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        assert await r.read() == b""                 # closed at once
        w.close()
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"ping")
        assert await r.readexactly(4) == b"ping"
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
    run(loop, main())
    if not debug:
        assert errors.take() == []
        return
    (ctx,) = errors.take()
    assert ctx["message"] == ("Error on transport creation for incoming "
                              "connection")
    if bad == "raises":
        assert isinstance(ctx["exception"], ValueError)
    else:
        assert "protocol" not in ctx


def test_accept_context_not_shared_between_connections(loop):
    import contextvars
    var = contextvars.ContextVar("var", default="unset")
    seen = []

    def factory():
        seen.append(var.get())
        var.set("set by a factory")
        return Echo()

    async def main():
        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        for _ in range(3):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"x")
            await r.readexactly(1)
            w.close()
            await w.wait_closed()
        server.close()
        await server.wait_closed()
    run(loop, main())
    assert seen == ["unset"] * 3


def listening_socket(cls):
    """A non-blocking TCP socket of class cls listening on 127.0.0.1."""
    lsock = cls(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    lsock.setblocking(False)
    return lsock


def test_accept_out_of_fds_backs_off(loop, errors, monkeypatch):
    import errno
    monkeypatch.setattr(asyncio.constants, "ACCEPT_RETRY_DELAY", 0.05)

    class Flaky(socket.socket):
        fails = 1

        def accept(self):
            if Flaky.fails:
                Flaky.fails -= 1
                raise OSError(errno.EMFILE, "Too many open files")
            return super().accept()

    lsock = listening_socket(Flaky)

    async def main():
        server = await loop.create_server(Echo, sock=lsock)
        port = lsock.getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"late")
        # Served after the back-off, not lost.
        assert await r.readexactly(4) == b"late"
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
    run(loop, main())
    (ctx,) = errors.take()
    assert ctx["message"] == "socket.accept() out of system resource"
    assert ctx["exception"].errno == errno.EMFILE


def test_accept_factory_system_exit_propagates(aioev_loop):
    # SystemExit from a protocol factory ends run_until_complete, as it
    # does from asyncio's accept task, and the connection is closed
    # (asyncio's task leaves it, and itself, to the garbage collector:
    # not a behaviour to test on it).
    loop = aioev_loop
    def factory():
        raise SystemExit(7)

    async def start():
        return await loop.create_server(factory, "127.0.0.1", 0)
    server = run(loop, start())
    port = server.sockets[0].getsockname()[1]
    # Connected by the kernel's backlog, before the loop accepts it.
    client = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        never = loop.create_future()
        loop.call_later(TIMEOUT, never.set_result, None)
        with pytest.raises(SystemExit) as info:
            loop.run_until_complete(never)
        assert info.value.code == 7
        assert not never.done()
        never.cancel()
        # The server's side was closed: EOF (or a reset).
        try:
            assert client.recv(10) == b""
        except ConnectionResetError:
            pass
    finally:
        client.close()

    async def stop():
        server.close()
        await server.wait_closed()
    run(loop, stop())    # the loop still works


def test_accept_burst_larger_than_backlog(loop):
    # More connections wait than one accept batch (backlog) takes: all are
    # served, over several wake-ups. They are queued by the kernel before
    # the loop runs (it holds backlog + 1 on Linux).
    backlog = 4
    lost = []

    class Served(Echo):
        def connection_lost(self, exc):
            lost.append(exc)

    async def start():
        return await loop.create_server(Served, "127.0.0.1", 0,
                                        backlog=backlog)
    server = run(loop, start())
    port = server.sockets[0].getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
               for _ in range(backlog + 1)]

    async def main():
        for i, c in enumerate(clients):
            c.setblocking(False)
            await loop.sock_sendall(c, b"%d" % i)
        for i, c in enumerate(clients):
            assert await loop.sock_recv(c, 10) == b"%d" % i
            c.close()
        while len(lost) < len(clients):
            await asyncio.sleep(0.01)
        server.close()
        await server.wait_closed()
    try:
        run(loop, main())
    finally:
        for c in clients:
            c.close()
    assert lost == [None] * len(clients)


def test_accept_overridden_accept_is_used(loop):
    # A listening socket whose class overrides accept() gets it called,
    # as asyncio does (aioev skips socket.accept's Python code only when
    # it is not overridden).
    calls = []

    class Counting(socket.socket):
        def accept(self):
            conn, addr = super().accept()
            calls.append(addr)
            return conn, addr

    lsock = listening_socket(Counting)

    async def main():
        server = await loop.create_server(Echo, sock=lsock)
        port = lsock.getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"hi")
        assert await r.readexactly(2) == b"hi"
        assert calls == [w.get_extra_info("sockname")]
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
    run(loop, main())


# -- the transport's fast path into asyncio's StreamReader -------------------
# aioev's transport feeds an asyncio StreamReader directly when the
# protocol is asyncio's own StreamReaderProtocol; these check that it keeps
# feed_data's behaviour, and steps aside for subclasses and patches.

async def _reader_pair(loop, limit=2 ** 16):
    """A stream reader/writer for the server side, and the client's."""
    got = loop.create_future()

    def on_client(reader, writer):
        got.set_result((reader, writer))
    server = await asyncio.start_server(on_client, "127.0.0.1", 0,
                                        limit=limit)
    port = server.sockets[0].getsockname()[1]
    cr, cw = await asyncio.open_connection("127.0.0.1", port)
    sr, sw = await got
    return server, sr, sw, cr, cw


async def _close_pair(server, sw, cw):
    for w in (cw, sw):
        w.close()
    for w in (cw, sw):
        try:
            await w.wait_closed()
        except ConnectionError:
            pass
    server.close()
    await server.wait_closed()


def test_stream_reader_pauses_past_twice_limit(loop):
    async def main():
        server, sr, sw, cr, cw = await _reader_pair(loop, limit=1024)
        cw.write(b"x" * 10000)
        await cw.drain()
        for _ in range(200):
            if not sw.transport.is_reading():
                break
            await asyncio.sleep(0.005)
        assert not sw.transport.is_reading()   # paused: > 2 * limit held
        assert len(sr._buffer) > 2048
        data = b""
        while len(data) < 10000:
            data += await sr.read(100000)
        assert data == b"x" * 10000
        assert sw.transport.is_reading()       # resumed once drained
        await _close_pair(server, sw, cw)
    run(loop, main())


def test_stream_reader_cancelled_read_then_data(loop):
    async def main():
        server, sr, sw, cr, cw = await _reader_pair(loop)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(sr.read(10), 0.02)
        cw.write(b"late")
        assert await asyncio.wait_for(sr.readexactly(4), TIMEOUT) == b"late"
        await _close_pair(server, sw, cw)
    run(loop, main())


def test_stream_reader_protocol_subclass_is_called(loop):
    seen = []

    class Counting(asyncio.StreamReaderProtocol):
        def data_received(self, data):
            seen.append(bytes(data))
            super().data_received(data)

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader = asyncio.StreamReader()
        await loop.create_connection(lambda: Counting(reader),
                                     "127.0.0.1", port)
        transport = reader._transport
        transport.write(b"hello")
        assert await reader.readexactly(5) == b"hello"
        assert b"".join(seen) == b"hello"
        transport.close()
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_stream_reader_patched_feed_data_is_called(loop, monkeypatch):
    seen = []
    original = asyncio.StreamReader.feed_data

    def feed_data(self, data):
        seen.append(bytes(data))
        original(self, data)
    monkeypatch.setattr(asyncio.StreamReader, "feed_data", feed_data)

    async def main():
        server, sr, sw, cr, cw = await _reader_pair(loop)
        cw.write(b"patched")
        assert await sr.readexactly(7) == b"patched"
        assert b"".join(seen) == b"patched"
        await _close_pair(server, sw, cw)
    run(loop, main())

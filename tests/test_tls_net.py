"""TLS on aioev: asyncio's SSL protocol over aioev's C stream transport.

aioev has no TLS code of its own yet: ``ssl=`` runs asyncio's SSLProtocol
on aioev's transports. These tests check that it works end to end (both
loops run them); CPython's test_ssl and test_sslproto run in the
tests/cpython runner too.
"""

import asyncio
import socket

import pytest

ssl = pytest.importorskip("ssl")
test_utils = pytest.importorskip("test.test_asyncio.utils")

TIMEOUT = 10.0


def run(loop, coro, timeout=TIMEOUT):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def contexts():
    return (test_utils.simple_server_sslcontext(),
            test_utils.simple_client_sslcontext())


async def tls_echo(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


def test_tls_streams_echo(loop):
    server_ctx, client_ctx = contexts()

    async def main():
        server = await asyncio.start_server(tls_echo, "127.0.0.1", 0,
                                            ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port,
                                             ssl=client_ctx)
        assert w.get_extra_info("sslcontext") is client_ctx
        assert w.get_extra_info("cipher") is not None
        payload = bytes(range(256)) * 1000          # several TLS records
        w.write(payload)
        assert await r.readexactly(len(payload)) == payload
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_tls_bad_certificate_fails_handshake(loop):
    server_ctx, _ = contexts()
    strict = ssl.create_default_context()  # does not trust the test cert

    async def main():
        server = await asyncio.start_server(tls_echo, "127.0.0.1", 0,
                                            ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection("127.0.0.1", port, ssl=strict,
                                          server_hostname="localhost")
        server.close()
        await server.wait_closed()
    run(loop, main())


def test_start_tls_upgrades_a_plain_connection(loop):
    server_ctx, client_ctx = contexts()
    upgraded = []

    async def handler(reader, writer):
        assert await reader.readexactly(8) == b"STARTTLS"
        writer.write(b"OK")
        await writer.drain()
        await writer.start_tls(server_ctx)
        upgraded.append(writer.get_extra_info("sslcontext"))
        data = await reader.readexactly(6)
        writer.write(data.upper())
        await writer.drain()
        writer.close()

    async def main():
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"STARTTLS")
        assert await r.readexactly(2) == b"OK"
        await w.start_tls(client_ctx)
        w.write(b"secret")
        assert await r.readexactly(6) == b"SECRET"
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
    if not hasattr(asyncio.StreamWriter, "start_tls"):
        pytest.skip("StreamWriter.start_tls is 3.11+")
    run(loop, main())
    assert upgraded == [server_ctx]


def test_tls_over_unix_socket(loop, tmp_path):
    server_ctx, client_ctx = contexts()
    path = str(tmp_path / "tls.sock")

    async def main():
        server = await asyncio.start_unix_server(tls_echo, path,
                                                 ssl=server_ctx)
        r, w = await asyncio.open_unix_connection(
            path, ssl=client_ctx, server_hostname="localhost")
        w.write(b"over unix")
        assert await r.readexactly(9) == b"over unix"
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
    run(loop, main())

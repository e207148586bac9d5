"""aiohttp, unchanged, on aioev: an HTTP server and client in one loop.

Every test runs on stdlib asyncio and on aioev (the ``loop`` fixture); asyncio
is the reference.  Each test starts an aiohttp web server (``web.AppRunner``
plus a site on 127.0.0.1 port 0, or a Unix socket) and talks to it with an
``aiohttp.ClientSession`` in the same loop, then checks exact bodies, statuses
and exception types.  The fixture fails a test on anything the loop reports
to its exception handler and on leaked file descriptors, so every test shuts
its server and session down even when it fails.

aiohttp is optional for a local run (the module is skipped without it); CI
sets AIOEV_REQUIRE_AIOHTTP=1 so that a missing aiohttp fails there instead.
"""

import asyncio
import contextlib
import os
import socket
import ssl
import tempfile
import time

import pytest

if os.environ.get("AIOEV_REQUIRE_AIOHTTP") == "1":
    import aiohttp
else:
    aiohttp = pytest.importorskip("aiohttp")

from aiohttp import web  # noqa: E402

TIMEOUT = 10.0


def run(loop, coro, timeout=TIMEOUT):
    """Run coro on loop, failing it if it takes longer than timeout."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def until(predicate, timeout=2.0):
    """Wait until predicate() is true; fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def serve(app, *, ssl_context=None, unix_path=None, **runner_kwargs):
    """Run app on a fresh site; yield (runner, base_url); always clean up.

    base_url is "http://localhost" for a Unix site (the client then uses a
    UnixConnector: the host is only a name).  shutdown_timeout is short so that a test that goes wrong does
    not sit in aiohttp's 60 s graceful shutdown.  A test may call
    runner.cleanup() itself; it is not repeated then.
    """
    runner_kwargs.setdefault("shutdown_timeout", 2.0)
    runner_kwargs.setdefault("access_log", None)
    runner = web.AppRunner(app, **runner_kwargs)
    await runner.setup()
    try:
        if unix_path is not None:
            site = web.UnixSite(runner, unix_path)
            await site.start()
            base = "http://localhost"
        else:
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]
            scheme = "https" if ssl_context is not None else "http"
            base = f"{scheme}://127.0.0.1:{port}"
        yield runner, base
    finally:
        if runner.server is not None:
            await runner.cleanup()


async def hello(request):
    return web.Response(text="hello")


# -- 1. many concurrent requests over keep-alive ----------------------------


def test_concurrent_keepalive_gets(loop):
    peers = set()
    handled = []

    async def item(request):
        i = int(request.match_info["i"])
        peers.add(request.transport.get_extra_info("peername"))
        handled.append(i)
        return web.Response(text=f"item {i} " + "x" * (i % 97))

    async def main():
        app = web.Application()
        app.router.add_get("/item/{i}", item)
        async with serve(app) as (runner, base):
            connector = aiohttp.TCPConnector(limit=20)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def get(i):
                    async with session.get(f"{base}/item/{i}") as r:
                        assert r.status == 200
                        return await r.text()

                bodies = await asyncio.gather(*(get(i) for i in range(300)))
        return bodies

    bodies = run(loop, main())
    assert bodies == [f"item {i} " + "x" * (i % 97) for i in range(300)]
    assert sorted(handled) == list(range(300))
    # At most 20 connections at a time and keep-alive: they were reused.
    assert 1 <= len(peers) <= 20, len(peers)


# -- 2. large and chunked request bodies ------------------------------------


# aiohttp warns (ResourceWarning) that a body of more than 1 MiB given as raw
# bytes is written in one go and "might lock the event loop"; that single
# large write is what this test wants, and the warning is advice about the
# caller's code, not about the loop.
@pytest.mark.filterwarnings(
    "ignore:Sending a large body directly with raw bytes:ResourceWarning")
def test_post_large_and_chunked_bodies(loop):
    big = os.urandom(16 * 1024 * 1024)
    pieces = [os.urandom(100 * 1000) for _ in range(50)]
    seen = []

    async def echo(request):
        data = await request.read()
        seen.append((request.headers.get("Transfer-Encoding"),
                     request.content_length))
        return web.Response(body=data,
                            content_type="application/octet-stream")

    async def gen():
        for piece in pieces:
            yield piece
            await asyncio.sleep(0)

    async def main():
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/echo", echo)
        async with serve(app) as (runner, base):
            async with aiohttp.ClientSession() as session:
                async with session.post(f"{base}/echo", data=big) as r:
                    assert r.status == 200
                    assert r.content_length == len(big)
                    got_big = await r.read()
                async with session.post(f"{base}/echo", data=gen()) as r:
                    assert r.status == 200
                    got_chunked = await r.read()
        return got_big, got_chunked

    got_big, got_chunked = run(loop, main())
    assert len(got_big) == len(big)
    assert got_big == big
    assert got_chunked == b"".join(pieces)
    assert seen == [(None, len(big)), ("chunked", None)]


# -- 3. streamed response -----------------------------------------------------


def test_stream_response_iter_chunked(loop):
    chunks = [bytes([i]) * (1000 + 37 * i) for i in range(100)]

    async def stream(request):
        resp = web.StreamResponse()
        resp.content_type = "application/octet-stream"
        await resp.prepare(request)
        for i, chunk in enumerate(chunks):
            await resp.write(chunk)
            if i % 10 == 0:
                await asyncio.sleep(0.001)
        await resp.write_eof()
        return resp

    async def main():
        app = web.Application()
        app.router.add_get("/stream", stream)
        async with serve(app) as (runner, base):
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/stream") as r:
                    assert r.status == 200
                    assert r.headers["Transfer-Encoding"] == "chunked"
                    got = [c async for c in r.content.iter_chunked(4096)]
        return got

    got = run(loop, main())
    assert got and all(0 < len(c) <= 4096 for c in got)
    assert b"".join(got) == b"".join(chunks)


# -- 4. WebSocket -------------------------------------------------------------


def test_websocket_round_trips(loop):
    server_close = []
    blob = os.urandom(500 * 1000)

    async def ws_handler(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data.upper())
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(msg.data[::-1])
        server_close.append(ws.close_code)
        return ws

    async def main():
        app = web.Application()
        app.router.add_get("/ws", ws_handler)
        async with serve(app) as (runner, base):
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(f"{base}/ws") as ws:
                    for i in range(200):
                        await ws.send_str(f"message {i} abc")
                        assert await ws.receive_str() == f"MESSAGE {i} ABC"
                    await ws.send_bytes(blob)
                    got = await ws.receive_bytes()
                    assert await ws.close() is True
                    assert ws.closed
                    code = ws.close_code
                await until(lambda: server_close)
        return got, code

    got, code = run(loop, main())
    assert got == blob[::-1]
    assert code == aiohttp.WSCloseCode.OK
    assert server_close == [aiohttp.WSCloseCode.OK]


# -- 5. FileResponse (loop.sendfile) ------------------------------------------


@contextlib.contextmanager
def counting_sendfile(loop):
    """Count loop.sendfile calls (aiohttp's FileResponse uses it) and bytes."""
    calls = []
    real = loop.sendfile

    async def sendfile(transport, file, offset=0, count=None, **kwargs):
        sent = await real(transport, file, offset, count, **kwargs)
        calls.append((offset, count, sent))
        return sent

    loop.sendfile = sendfile
    try:
        yield calls
    finally:
        del loop.sendfile


def _file_app(path):
    async def file_handler(request):
        return web.FileResponse(path)

    app = web.Application()
    app.router.add_get("/file", file_handler)
    return app


async def close_served_files():
    """Wait until FileResponse has closed the files it served.

    FileResponse closes its file with loop.run_in_executor(None, f.close) and
    does not wait for that (so the connection is free sooner); on a busy
    machine the close may not have run when the test ends, and the fixture
    would see the file's descriptor as leaked.  Shutting the default executor
    down waits for every job queued on it.
    """
    await asyncio.get_running_loop().shutdown_default_executor()


async def _get_file_and_range(session, base, data):
    async with session.get(f"{base}/file") as r:
        assert r.status == 200
        assert r.content_length == len(data)
        assert r.headers["Accept-Ranges"] == "bytes"
        whole = await r.read()
    rng = {"Range": "bytes=1000-1999999"}
    async with session.get(f"{base}/file", headers=rng) as r:
        assert r.status == 206
        assert r.headers["Content-Range"] == f"bytes 1000-1999999/{len(data)}"
        part = await r.read()
    rng = {"Range": "bytes=-12345"}
    async with session.get(f"{base}/file", headers=rng) as r:
        assert r.status == 206
        tail = await r.read()
    assert whole == data
    assert part == data[1000:2000000]
    assert tail == data[-12345:]


def test_file_response_and_range(loop, tmp_path):
    data = os.urandom(5 * 1024 * 1024 + 321)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)

    async def main():
        try:
            async with serve(_file_app(path)) as (runner, base):
                async with aiohttp.ClientSession() as session:
                    await _get_file_and_range(session, base, data)
        finally:
            await close_served_files()

    with counting_sendfile(loop) as calls:
        run(loop, main())
    assert calls == [
        (0, len(data), len(data)),
        (1000, 1999000, 1999000),
        (len(data) - 12345, 12345, 12345),
    ]


# -- 6. HTTPS -----------------------------------------------------------------


def _test_certificate():
    import test.test_asyncio as ta
    here = os.path.dirname(ta.__file__)
    for path in (os.path.join(here, "..", "certdata", "keycert.pem"),
                 os.path.join(here, "..", "keycert.pem")):
        if os.path.exists(path):
            return path
    pytest.skip("CPython's test certificate keycert.pem is not installed")


def test_https(loop, tmp_path):
    certfile = _test_certificate()
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certfile)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE

    body = os.urandom(1024 * 1024)
    data = os.urandom(5 * 1024 * 1024 + 321)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    secure = []

    async def big(request):
        secure.append((request.secure, request.scheme,
                       request.transport.get_extra_info("ssl_object")
                       is not None))
        return web.Response(body=body)

    async def main():
        try:
            return await serve_https()
        finally:
            await close_served_files()

    async def serve_https():
        app = _file_app(path)
        app.router.add_get("/big", big)
        async with serve(app, ssl_context=server_ctx) as (runner, base):
            assert base.startswith("https://")
            connector = aiohttp.TCPConnector(ssl=client_ctx)
            async with aiohttp.ClientSession(connector=connector) as session:
                async with session.get(f"{base}/big") as r:
                    assert r.status == 200
                    assert r.connection.transport.get_extra_info(
                        "ssl_object") is not None
                    got = await r.read()
                await _get_file_and_range(session, base, data)
        return got

    got = run(loop, main())
    assert got == body
    assert secure == [(True, "https", True)]


# -- 7. Unix sockets ----------------------------------------------------------


def test_unix_site(loop, tmp_path):
    families = []

    async def who(request):
        sock = request.transport.get_extra_info("socket")
        families.append(sock.family)
        return web.Response(text=f"unix {request.path}")

    async def main(sock_path):
        app = web.Application()
        app.router.add_get("/who/{x}", who)
        async with serve(app, unix_path=sock_path) as (runner, base):
            connector = aiohttp.UnixConnector(path=sock_path)
            async with aiohttp.ClientSession(connector=connector) as session:
                bodies = []
                for i in range(3):
                    async with session.get(f"{base}/who/{i}") as r:
                        assert r.status == 200
                        bodies.append(await r.text())
        return bodies

    sock_path = str(tmp_path / "aiohttp.sock")
    with contextlib.ExitStack() as stack:
        if len(sock_path) > 100:  # AF_UNIX paths are limited to ~107 bytes
            sock_path = os.path.join(
                stack.enter_context(tempfile.TemporaryDirectory()), "s.sock")
        bodies = run(loop, main(sock_path))
    assert bodies == ["unix /who/0", "unix /who/1", "unix /who/2"]
    assert families == [socket.AF_UNIX] * 3


# -- 8. client timeout --------------------------------------------------------


def test_client_timeout(loop):
    events = []

    async def sleepy(request):
        events.append("started")
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        events.append("finished")
        return web.Response(text="too late")

    async def main():
        app = web.Application()
        app.router.add_get("/sleepy", sleepy)
        app.router.add_get("/hello", hello)
        # handler_cancellation: the server cancels the handler of a request
        # whose client went away (aiohttp's default is to let it run on).
        async with serve(app, handler_cancellation=True) as (runner, base):
            async with aiohttp.ClientSession() as session:
                t0 = time.monotonic()
                with pytest.raises(asyncio.TimeoutError) as info:
                    async with session.get(
                            f"{base}/sleepy",
                            timeout=aiohttp.ClientTimeout(total=0.2)) as r:
                        await r.read()
                elapsed = time.monotonic() - t0
                # The server notices the client went away and cleans up.
                await until(lambda: "cancelled" in events)
                await until(lambda: not runner.server.connections)
                async with session.get(f"{base}/hello") as r:
                    assert r.status == 200
                    assert await r.text() == "hello"
        return info.value, elapsed

    exc, elapsed = run(loop, main())
    # Same exact type on both loops: aiohttp raises the plain TimeoutError
    # for a total timeout (its ServerTimeoutError subclasses are for the
    # connect / sock_read timeouts).
    assert type(exc) is asyncio.TimeoutError, repr(exc)
    assert 0.15 <= elapsed < 2.0, elapsed
    assert events == ["started", "cancelled"]


# -- 9. server aborts the connection ------------------------------------------


def test_server_abort(loop):
    calls = []

    async def abort(request):
        calls.append("abort")
        request.transport.abort()
        # Never answered: the connection is gone.
        await asyncio.sleep(5)
        return web.Response(text="unreachable")

    async def main():
        app = web.Application()
        app.router.add_get("/abort", abort)
        app.router.add_get("/hello", hello)
        async with serve(app, handler_cancellation=True) as (runner, base):
            async with aiohttp.ClientSession() as session:
                with pytest.raises(aiohttp.ClientError) as info:
                    async with session.get(f"{base}/abort") as r:
                        await r.read()
                # The server is unaffected.
                async with session.get(f"{base}/hello") as r:
                    assert r.status == 200
                    assert await r.text() == "hello"
        return info.value

    exc = run(loop, main())
    # The exact type asyncio gives, on both loops.
    assert type(exc) is aiohttp.ServerDisconnectedError, repr(exc)
    assert isinstance(exc, aiohttp.ClientError)
    # aiohttp retries an idempotent request once on ServerDisconnectedError
    # (RFC 9112 9.3.1), on a new connection; that one is aborted too.
    assert calls == ["abort", "abort"]


# -- 10. client goes away while the server streams ----------------------------


def test_client_disconnect_during_slow_stream(loop):
    outcome = []
    chunk = b"z" * 65536

    async def slow(request):
        resp = web.StreamResponse()
        resp.content_type = "application/octet-stream"
        await resp.prepare(request)
        try:
            # Up to 64 MiB, 2 MiB ahead of the client at most (write drains).
            for _ in range(1024):
                await resp.write(chunk)
                await asyncio.sleep(0.001)
        except Exception as exc:
            # Re-raised as a real handler would; aiohttp logs it on
            # aiohttp.server ("Error handling request"), which is expected.
            outcome.append(exc)
            raise
        outcome.append(None)
        return resp

    async def main():
        app = web.Application()
        app.router.add_get("/slow", slow)
        app.router.add_get("/hello", hello)
        async with serve(app) as (runner, base):
            async with aiohttp.ClientSession() as session:
                r = await session.get(f"{base}/slow")
                assert r.status == 200
                head = await r.content.readexactly(200000)
                r.close()  # drops the connection, unread data and all
            await until(lambda: outcome, timeout=5.0)
            await until(lambda: not runner.server.connections)
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/hello") as r:
                    assert r.status == 200
                    nxt = await r.text()
        return head, nxt

    head, nxt = run(loop, main())
    assert head == b"z" * 200000
    assert nxt == "hello"
    assert len(outcome) == 1
    exc = outcome[0]
    assert isinstance(exc, ConnectionResetError), repr(exc)
    # The exact type asyncio gives, on both loops: the next write finds the
    # transport closing ("Cannot write to closing transport").  The server is
    # never more than a few chunks ahead of the client here, so it is not
    # paused in drain() when the connection goes (that path would give a
    # plain ConnectionError("Connection lost") on any loop).
    assert type(exc) is aiohttp.ClientConnectionResetError, repr(exc)


# -- 11. graceful shutdown ----------------------------------------------------


def test_graceful_shutdown_with_open_connections(loop):
    server_transports = []
    slow_started = []

    async def remember(request):
        server_transports.append(request.transport)
        return web.Response(text="hello")

    async def slow(request):
        slow_started.append(request.transport)
        await asyncio.sleep(0.3)
        return web.Response(text="slow done")

    async def main():
        app = web.Application()
        app.router.add_get("/hello", remember)
        app.router.add_get("/slow", slow)
        async with serve(app) as (runner, base):
            async with aiohttp.ClientSession() as session:

                async def get_slow():
                    async with session.get(f"{base}/slow") as r:
                        return r.status, await r.text()

                slow_task = asyncio.ensure_future(get_slow())
                await until(lambda: slow_started)
                # A second connection, left idle in the client's pool.
                async with session.get(f"{base}/hello") as r:
                    assert r.status == 200
                    assert await r.text() == "hello"
                assert len(runner.server.connections) == 2
                assert server_transports[0] is not slow_started[0]

                await runner.cleanup()

                # The in-flight request was let finish; the idle connection
                # was closed; nothing listens any more.
                assert await slow_task == (200, "slow done")
                assert server_transports[0].is_closing()
                assert slow_started[0].is_closing()
                with pytest.raises(aiohttp.ClientConnectorError) as info:
                    async with session.get(f"{base}/hello") as r:
                        await r.read()
                assert isinstance(info.value.os_error, ConnectionRefusedError)

    run(loop, main())

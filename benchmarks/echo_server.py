#!/usr/bin/env python3
"""Echo servers for benchmarks/echo.py, in four styles, on any loop.

    python benchmarks/echo_server.py --loop asyncio|uvloop|rloop|aioev \\
        --style sockets|streams|protocol|bufferedprotocol \\
        (--port P [--host 127.0.0.1] | --unix PATH)

Prints one line ``READY {json}`` on stdout once it is listening (the JSON
says which loop and version, and the port: ``--port 0`` picks a free one),
then serves until killed.  If the loop cannot run the style (not
installed, or NotImplementedError), it prints the error on stderr and
exits 3 without printing READY.

Each style is the plain, idiomatic way to write an echo server with that
API; none of them is tuned for one loop:

sockets           ``loop.sock_accept`` and, per connection, a task doing
                  ``data = await loop.sock_recv(sock, 64 KiB)`` /
                  ``await loop.sock_sendall(sock, data)``
streams           ``asyncio.start_server``; per connection
                  ``data = await reader.read(64 KiB)``, ``writer.write(data)``,
                  ``await writer.drain()``
protocol          ``loop.create_server`` with an ``asyncio.Protocol`` whose
                  ``data_received`` calls ``transport.write(data)``
bufferedprotocol  ``loop.create_server`` with an ``asyncio.BufferedProtocol``
                  that reads into its own 256 KiB buffer and writes the
                  received slice back (taking a fresh buffer whenever the
                  transport kept part of it unsent)
"""

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

READ_SIZE = 64 * 1024
STYLES = ("sockets", "streams", "protocol", "bufferedprotocol")
LOOPS = ("asyncio", "uvloop", "rloop", "aioev")


def nodelay(sock):
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# -- sock_* -----------------------------------------------------------------

async def sockets_client(loop, sock):
    with sock:
        while True:
            data = await loop.sock_recv(sock, READ_SIZE)
            if not data:
                break
            await loop.sock_sendall(sock, data)


async def sockets_server(loop, lsock):
    tasks = set()   # keep the client tasks referenced
    with lsock:
        while True:
            sock, _ = await loop.sock_accept(lsock)
            sock.setblocking(False)
            nodelay(sock)
            t = loop.create_task(sockets_client(loop, sock))
            tasks.add(t)
            t.add_done_callback(tasks.discard)


# -- streams ----------------------------------------------------------------

async def streams_client(reader, writer):
    try:
        while True:
            data = await reader.read(READ_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


# -- protocols --------------------------------------------------------------

class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class EchoBufferedProtocol(asyncio.BufferedProtocol):
    SIZE = 256 * 1024

    def connection_made(self, transport):
        self.transport = transport
        self.buf = memoryview(bytearray(self.SIZE))

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        self.transport.write(self.buf[:nbytes])
        if self.transport.get_write_buffer_size():
            # The transport holds unsent bytes, perhaps as a view of our
            # buffer: read the next data into a fresh one.
            self.buf = memoryview(bytearray(self.SIZE))


# -- setup ------------------------------------------------------------------

def make_loop(name):
    if name == "asyncio":
        loop = asyncio.SelectorEventLoop()
        info = {"version": platform.python_version()}
    elif name == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
        info = {"version": getattr(uvloop, "__version__", "?")}
    elif name == "rloop":
        import rloop
        loop = rloop.new_event_loop()
        info = {"version": getattr(rloop, "__version__", "?")}
    elif name == "aioev":
        sys.path.insert(1, HERE)
        from _harness import import_aioev
        aioev = import_aioev()
        loop = aioev.new_event_loop()
        info = {"version": getattr(aioev, "__version__", "?"),
                "path": os.path.dirname(getattr(aioev, "__file__", "")
                                        or "")}
        core = sys.modules.get("aioev._core")
        if core is not None and getattr(core, "__file__", None):
            info["core_mtime"] = os.path.getmtime(core.__file__)
    else:
        raise ValueError("unknown loop %r" % name)
    return loop, info


def listening_socket(args):
    if args.unix:
        try:
            os.unlink(args.unix)
        except FileNotFoundError:
            pass
        lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        lsock.bind(args.unix)
    else:
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind((args.host, args.port))
    lsock.listen(1024)
    lsock.setblocking(False)
    return lsock


async def start(loop, style, lsock):
    """Start serving on lsock; return what keeps it alive."""
    if style == "sockets":
        task = loop.create_task(sockets_server(loop, lsock))
        # sock_accept fails at once if the loop lacks it: give it a few
        # iterations to do so before saying READY.
        for _ in range(3):
            await asyncio.sleep(0)
        if task.done():
            task.result()   # raises
        return task
    if style == "streams":
        if lsock.family == socket.AF_UNIX:
            return await asyncio.start_unix_server(streams_client,
                                                   sock=lsock)
        return await asyncio.start_server(streams_client, sock=lsock)
    proto = EchoProtocol if style == "protocol" else EchoBufferedProtocol
    if lsock.family == socket.AF_UNIX:
        return await loop.create_unix_server(proto, sock=lsock)
    return await loop.create_server(proto, sock=lsock)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--loop", choices=LOOPS, required=True)
    ap.add_argument("--style", choices=STYLES, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=None,
                    help="TCP port on --host (0: any free port)")
    ap.add_argument("--unix", default=None, help="Unix socket path")
    args = ap.parse_args(argv)
    if not args.unix and args.port is None:
        ap.error("--port or --unix is required")

    try:
        loop, info = make_loop(args.loop)
    except Exception as e:
        print("not available: %s: %s" % (type(e).__name__, e),
              file=sys.stderr)
        return 3
    asyncio.set_event_loop(loop)
    lsock = listening_socket(args)
    port = None if args.unix else lsock.getsockname()[1]
    try:
        server = loop.run_until_complete(start(loop, args.style, lsock))
    except Exception as e:
        print("%s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 3
    info.update(loop=args.loop, style=args.style, pid=os.getpid(),
                port=port,
                loop_type=type(loop).__module__ + "." + type(loop).__name__)
    print("READY " + json.dumps(info), flush=True)
    try:
        loop.add_signal_handler(signal.SIGTERM, loop.stop)
    except (NotImplementedError, RuntimeError, AttributeError):
        pass    # the default SIGTERM action ends us just as well
    try:
        loop.run_forever()
    except KeyboardInterrupt:
        pass
    del server
    return 0


if __name__ == "__main__":
    sys.exit(main())

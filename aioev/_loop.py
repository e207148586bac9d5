"""The public Loop class: the C core plus asyncio's set-up paths.

Everything on a per-callback path is in aioev._core. What is here runs
once per run_forever, per executor job or per signal handler, and reuses
asyncio.BaseEventLoop's own code where that code only needs the loop's
public surface, so behaviour follows the running Python's asyncio.
"""

import asyncio
import errno
import os
import signal
import socket
import sys
import warnings
import weakref
from asyncio import (base_events, coroutines, events, selector_events, trsock,
                     unix_events)

from . import _core

__all__ = ("Loop",)

_Base = base_events.BaseEventLoop
_Unix = unix_events._UnixSelectorEventLoop
_Sel = selector_events.BaseSelectorEventLoop
_PY_TRANSPORT = bool(os.environ.get("AIOEV_PY_TRANSPORT"))
# 3.14 deprecates coroutines.iscoroutinefunction; asyncio uses this one.
_iscoroutinefunction = getattr(coroutines, "_iscoroutinefunction",
                               coroutines.iscoroutinefunction)

# What asyncio checks on a transport before loop.sendfile and start_tls.
_core.StreamTransport._sendfile_compatible = (
    asyncio.constants._SendfileMode.TRY_NATIVE)
_core.StreamTransport._start_tls_compatible = True
def _sighandler_noop(signum, frame):
    """Dummy signal handler: the wakeup fd does the work."""


class Loop(_core.Loop, asyncio.AbstractEventLoop):
    """asyncio event loop on libev. Use it like asyncio's default loop."""

    def __init__(self):
        self._exception_handler = None
        self._default_executor = None
        self._executor_shutdown_called = False
        self._asyncgens = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None
        self._signal_handlers = {}
        self._transports = weakref.WeakValueDictionary()
        self._unix_server_sockets = {}  # 3.13: socket files to unlink
        self._ssock = self._csock = None
        self._debug = coroutines._is_debug_mode()
        if sys.version_info >= (3, 14):
            # 3.14's Unix loop owns its child watcher (the policy's are
            # gone); the borrowed _make_subprocess_transport reads it.
            self._watcher = (unix_events._PidfdChildWatcher()
                             if unix_events.can_use_pidfd()
                             else unix_events._ThreadedChildWatcher())

    # -- running ---------------------------------------------------------

    def run_forever(self):
        """Run until stop() is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        old_agen_hooks = sys.get_asyncgen_hooks()
        try:
            sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                                   finalizer=self._asyncgen_finalizer_hook)
            events._set_running_loop(self)
            self._run()
        finally:
            events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)

    run_until_complete = _Base.run_until_complete
    _check_running = _Base._check_running
    _set_coroutine_origin_tracking = _Base._set_coroutine_origin_tracking

    def close(self):
        """Close the loop: drop pending callbacks, shut the executor down
        without waiting. The loop must not be running."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self._debug:
            base_events.logger.debug("Close %r", self)
        for sig in list(self._signal_handlers):
            self.remove_signal_handler(sig)
        self._close_self_pipe()
        self._close()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    def __del__(self, _warn=warnings.warn):
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning,
                  source=self)
            if not self.is_running():
                self.close()

    __repr__ = _Base.__repr__

    def set_debug(self, enabled):
        self._debug = enabled
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking,
                                      enabled)

    # -- executors, async generators, errors: asyncio's own code -----------

    run_in_executor = _Base.run_in_executor
    set_default_executor = _Base.set_default_executor
    shutdown_default_executor = _Base.shutdown_default_executor
    _do_shutdown = _Base._do_shutdown
    _check_default_executor = _Base._check_default_executor
    _check_callback = _Base._check_callback
    shutdown_asyncgens = _Base.shutdown_asyncgens
    _asyncgen_firstiter_hook = _Base._asyncgen_firstiter_hook
    _asyncgen_finalizer_hook = _Base._asyncgen_finalizer_hook
    get_exception_handler = _Base.get_exception_handler
    set_exception_handler = _Base.set_exception_handler
    default_exception_handler = _Base.default_exception_handler
    call_exception_handler = _Base.call_exception_handler
    getaddrinfo = _Base.getaddrinfo
    getnameinfo = _Base.getnameinfo
    _getaddrinfo_debug = _Base._getaddrinfo_debug

    # -- signals: Python's handler + set_wakeup_fd, as asyncio does ------

    def _make_self_pipe(self):
        self._ssock, self._csock = socket.socketpair()
        self._ssock.setblocking(False)
        self._csock.setblocking(False)
        self.add_reader(self._ssock.fileno(), self._read_from_self)

    def _close_self_pipe(self):
        if self._ssock is None:
            return
        self.remove_reader(self._ssock.fileno())
        self._ssock.close()
        self._csock.close()
        self._ssock = self._csock = None

    def _read_from_self(self):
        while True:
            try:
                data = self._ssock.recv(4096)
            except InterruptedError:
                continue
            except BlockingIOError:
                return
            if not data:
                return
            for signum in data:
                handle = self._signal_handlers.get(signum)
                if handle is None:
                    continue
                if handle._cancelled:
                    self.remove_signal_handler(signum)
                else:
                    self.call_soon(handle._run)

    def _check_signal(self, sig):
        if not isinstance(sig, int):
            raise TypeError(f"sig must be an int, not {sig!r}")
        if sig not in signal.valid_signals():
            raise ValueError(f"invalid signal number {sig}")

    def add_signal_handler(self, sig, callback, *args):
        """Add a handler for a UNIX signal."""
        if (coroutines.iscoroutine(callback)
                or _iscoroutinefunction(callback)):
            raise TypeError("coroutines cannot be used "
                            "with add_signal_handler()")
        self._check_signal(sig)
        self._check_closed()
        if self._ssock is None:
            self._make_self_pipe()
        try:
            signal.set_wakeup_fd(self._csock.fileno())
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc))
        handle = events.Handle(callback, args, self, None)
        self._signal_handlers[sig] = handle
        try:
            signal.signal(sig, _sighandler_noop)
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers:
                try:
                    signal.set_wakeup_fd(-1)
                except (ValueError, OSError) as nexc:
                    base_events.logger.info("set_wakeup_fd(-1) failed: %s",
                                            nexc)
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught")
            raise

    def remove_signal_handler(self, sig):
        """Remove a handler for a UNIX signal; True if one was set."""
        self._check_signal(sig)
        try:
            handle = self._signal_handlers.pop(sig)
        except KeyError:
            return False
        handle.cancel()
        if sig == signal.SIGINT:
            handler = signal.default_int_handler
        else:
            handler = signal.SIG_DFL
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise RuntimeError(f"sig {sig:d} cannot be caught")
            raise
        if not self._signal_handlers:
            try:
                signal.set_wakeup_fd(-1)
            except (ValueError, OSError) as exc:
                base_events.logger.info("set_wakeup_fd(-1) failed: %s", exc)
        return True

    # -- sockets: the sock_* I/O is in C (sock.c); names and files here -----

    async def sock_connect(self, sock, address):
        """Connect sock to a remote address, resolving names as asyncio
        does (in the default executor, unless already numeric)."""
        base_events._check_ssl_socket(sock)
        if sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        if sock.family == socket.AF_INET or (
                base_events._HAS_IPv6 and sock.family == socket.AF_INET6):
            resolved = await self._ensure_resolved(
                address, family=sock.family, type=sock.type,
                proto=sock.proto, loop=self)
            _, _, _, _, address = resolved[0]
        return await self._sock_connect(sock, address)

    _ensure_resolved = _Base._ensure_resolved
    sock_sendfile = _Base.sock_sendfile
    _sock_sendfile_fallback = _Base._sock_sendfile_fallback
    _check_sendfile_params = _Base._check_sendfile_params
    # os.sendfile driven by add_writer, asyncio's own Unix implementation
    _sock_sendfile_native = _Unix._sock_sendfile_native
    _sock_sendfile_native_impl = _Unix._sock_sendfile_native_impl
    _sock_sendfile_update_filepos = _Unix._sock_sendfile_update_filepos
    _sock_add_cancellation_callback = _Unix._sock_add_cancellation_callback

    # -- transports, servers, pipes, subprocesses, TLS ----------------------
    #
    # For now these are asyncio's own selector-loop implementations (stream
    # and datagram transports, the Server object, happy eyeballs, SSL,
    # pipes, child watchers) running on this loop through its C add_reader
    # and add_writer. Native C transports replace them piece by piece.

    _add_reader = _core.Loop.add_reader
    _add_writer = _core.Loop.add_writer
    _remove_reader = _core.Loop.remove_reader
    _remove_writer = _core.Loop.remove_writer

    # The public ones refuse an fd a live transport owns, as asyncio's do.
    def add_reader(self, fd, callback, *args):
        """Start watching fd for read availability."""
        if self._transports:
            self._ensure_fd_no_transport(fd)
        self._add_reader(fd, callback, *args)

    def add_writer(self, fd, callback, *args):
        """Start watching fd for write availability."""
        if self._transports:
            self._ensure_fd_no_transport(fd)
        self._add_writer(fd, callback, *args)

    def remove_reader(self, fd):
        """Stop watching fd for reading; True if it was watched."""
        if self._transports:
            self._ensure_fd_no_transport(fd)
        return self._remove_reader(fd)

    def remove_writer(self, fd):
        """Stop watching fd for writing; True if it was watched."""
        if self._transports:
            self._ensure_fd_no_transport(fd)
        return self._remove_writer(fd)

    def _make_socket_transport(self, sock, protocol, waiter=None, *,
                               extra=None, server=None):
        # TCP and Unix streams get the C transport; AIOEV_PY_TRANSPORT=1
        # falls back to asyncio's Python one (to compare, or to work around).
        if _PY_TRANSPORT:
            return _Sel._make_socket_transport(
                self, sock, protocol, waiter, extra=extra, server=server)
        if self._transports:
            # one transport per socket (asyncio checks it since 3.12)
            self._ensure_fd_no_transport(sock)
        return _core.StreamTransport(self, sock, protocol, waiter, extra,
                                     server)

    async def _sendfile_fallback(self, transp, file, offset, count):
        # loop.sendfile() when os.sendfile cannot be used: read blocks in
        # the executor and write them, honouring the transport's flow
        # control. (asyncio's own version accepts only its Python
        # transports.)
        if offset:
            file.seek(offset)
        blocksize = min(count, 16384) if count else 16384
        buf = bytearray(blocksize)
        total_sent = 0
        proto = _SendfileFallbackProtocol(transp)
        try:
            while not count or total_sent < count:
                if count:
                    blocksize = min(count - total_sent, blocksize)
                view = memoryview(buf)[:blocksize]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    break
                await proto.drain()
                transp.write(view[:read])
                total_sent += read
            return total_sent
        finally:
            if total_sent > 0 and hasattr(file, "seek"):
                file.seek(offset + total_sent)
            await proto.restore()

    def _start_serving(self, protocol_factory, sock, sslcontext=None,
                       server=None, backlog=100, *ssl_timeouts):
        # Plain servers accept in C (server.c): each connection is set up
        # in the accept callback, with no task, coroutine or waiter future
        # per connection as asyncio has. TLS takes asyncio's path (its
        # handshake is awaited), as does AIOEV_PY_TRANSPORT=1.
        if sslcontext is not None or _PY_TRANSPORT:
            return _Sel._start_serving(
                self, protocol_factory, sock, sslcontext, server, backlog,
                *ssl_timeouts)
        self._add_reader(sock.fileno(), self._accept_connections,
                         protocol_factory, sock, server, backlog)

    def _accept_connection(self, protocol_factory, sock, sslcontext=None,
                           server=None, backlog=100, *ssl_timeouts):
        """Accept what is waiting on a listening socket, up to backlog."""
        if sslcontext is not None or _PY_TRANSPORT:
            return _Sel._accept_connection(
                self, protocol_factory, sock, sslcontext, server, backlog,
                *ssl_timeouts)
        self._accept_connections(protocol_factory, sock, server, backlog)

    def _accept_backoff(self, exc, protocol_factory, sock, server, backlog):
        # Out of fds or memory: the socket stays readable, so stop watching
        # it for a while, as asyncio does (called by _accept_connections).
        self.call_exception_handler({
            "message": "socket.accept() out of system resource",
            "exception": exc,
            "socket": trsock.TransportSocket(sock),
        })
        self._remove_reader(sock.fileno())
        self.call_later(asyncio.constants.ACCEPT_RETRY_DELAY,
                        self._start_serving, protocol_factory, sock,
                        None, server, backlog)

    def _stop_serving(self, sock):
        # 3.13's create_unix_server(cleanup_socket=True) records the socket
        # file's inode: unlink it when the server stops, if still ours.
        path = None
        if sock in self._unix_server_sockets:
            path = sock.getsockname()
        _Sel._stop_serving(self, sock)
        if path is None:
            return
        prev_ino = self._unix_server_sockets.pop(sock)
        try:
            if os.stat(path).st_ino == prev_ino:
                os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as err:
            base_events.logger.error(
                "Unable to clean up listening UNIX socket %r: %r", path, err)

    @property
    def _selector(self):
        # asyncio's transports read it for their repr only; a closed
        # selector loop has none (their repr then says "open").
        return None if self.is_closed() else _SelectorView(self)

    for _cls, _names in (
            (_Base, (
                "create_connection", "_create_connection_transport",
                "_connect_sock", "create_server", "_create_server_getaddrinfo",
                "connect_accepted_socket", "create_datagram_endpoint",
                "connect_read_pipe", "connect_write_pipe", "subprocess_exec",
                "subprocess_shell", "_log_subprocess", "sendfile",
                "start_tls")),
            (_Sel, (
                "_make_ssl_transport",
                "_make_datagram_transport",
                "_accept_connection2",
                "_ensure_fd_no_transport", "_sendfile_native")),
            (_Unix, (
                "create_unix_connection", "create_unix_server",
                "_make_read_pipe_transport", "_make_write_pipe_transport",
                "_make_subprocess_transport", "_child_watcher_callback"))):
        for _name in _names:
            if hasattr(_cls, _name):
                locals()[_name] = getattr(_cls, _name)
    del _cls, _names, _name


class _SendfileFallbackProtocol(base_events._SendfileFallbackProtocol):
    """asyncio's stand-in protocol for the sendfile fallback, for any
    transport with the flow-control API (asyncio's insists on its own
    Python base class)."""

    def __init__(self, transp):
        self._transport = transp
        self._proto = transp.get_protocol()
        self._should_resume_reading = transp.is_reading()
        self._should_resume_writing = transp._protocol_paused
        transp.pause_reading()
        transp.set_protocol(self)
        self._write_ready_fut = None
        if self._should_resume_writing:
            self._write_ready_fut = transp._loop.create_future()


class _SelectorView:
    """The bit of a selector asyncio's transport reprs use: get_key()."""

    class _Key:
        __slots__ = ("events",)

        def __init__(self, events):
            self.events = events

    def __init__(self, loop):
        self._loop = loop

    def get_key(self, fd):
        events = self._loop._fd_events(fd)
        if not events:
            raise KeyError(fd)
        return self._Key(events)

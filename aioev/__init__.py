"""aioev: a drop-in asyncio event loop written in C on libev.

    import aioev
    aioev.run(main())                      # like asyncio.run, on aioev
    asyncio.run(main(), loop_factory=aioev.new_event_loop)   # 3.12+
    aioev.install()                        # make aioev asyncio's default
"""

import asyncio as _asyncio
import sys as _sys
import warnings as _warnings

import collections.abc as _abc

from ._core import Future, Task, Handle, TimerHandle, SockCoro as _SockCoro
from ._core import StreamCoro as _StreamCoro
from ._loop import Loop

# What loop.sock_*() return: awaitables that asyncio.iscoroutine() accepts,
# so create_task(loop.sock_recv(...)) works as with asyncio's coroutines.
_abc.Coroutine.register(_SockCoro)
_abc.Coroutine.register(_StreamCoro)

__version__ = "0.1.0.dev0"
__all__ = ("Loop", "Future", "Task", "EventLoopPolicy", "new_event_loop",
           "install", "run")

_PolicyBase = getattr(_asyncio.events, "BaseDefaultEventLoopPolicy", None)
if _PolicyBase is None:  # 3.14 renamed it when policies were deprecated
    _PolicyBase = _asyncio.events._BaseDefaultEventLoopPolicy
if _sys.platform != "win32":
    # The Unix default policy: up to 3.13 it is where subprocesses get
    # their child watcher (asyncio.get_child_watcher() asks the policy).
    _PolicyBase = getattr(_asyncio.unix_events,
                          "_UnixDefaultEventLoopPolicy", _PolicyBase)


def new_event_loop():
    """Return a new aioev event loop."""
    return Loop()


class EventLoopPolicy(_PolicyBase):
    """Event loop policy whose loops are aioev loops.

    asyncio.set_event_loop_policy(aioev.EventLoopPolicy())
    """

    def _loop_factory(self):
        return new_event_loop()

    def __repr__(self):
        return f"<{type(self).__name__}>"


def install():
    """Make aioev the loop asyncio.run() and friends create.

    Policies are deprecated from Python 3.14 on: prefer
    asyncio.run(main(), loop_factory=aioev.new_event_loop) there.
    """
    if _sys.version_info >= (3, 14):
        _warnings.warn("aioev.install() relies on asyncio policies, "
                       "deprecated since Python 3.14; use "
                       "asyncio.run(main, loop_factory=aioev.new_event_loop)",
                       DeprecationWarning, stacklevel=2)
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore", DeprecationWarning)
            _asyncio.set_event_loop_policy(EventLoopPolicy())
        return
    _asyncio.set_event_loop_policy(EventLoopPolicy())


def run(main, *, debug=None):
    """Run coroutine main on a new aioev loop and return its result,
    as asyncio.run() does."""
    if _asyncio.events._get_running_loop() is not None:
        # Checked before a Runner exists, as asyncio.run does.
        raise RuntimeError(
            "aioev.run() cannot be called from a running event loop")
    if hasattr(_asyncio, "Runner"):
        with _asyncio.Runner(debug=debug, loop_factory=new_event_loop) as r:
            return r.run(main)
    return _run_310(main, debug)


def _run_310(main, debug):
    # Python 3.10 has no asyncio.Runner: this is asyncio.run on our loop.
    from asyncio import coroutines, events
    if not coroutines.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = new_event_loop()
    try:
        events.set_event_loop(loop)
        if debug is not None:
            loop.set_debug(debug)
        return loop.run_until_complete(main)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            events.set_event_loop(None)
            loop.close()


def _cancel_all_tasks(loop):
    to_cancel = _asyncio.all_tasks(loop)
    if not to_cancel:
        return
    for task in to_cancel:
        task.cancel()
    loop.run_until_complete(_asyncio.gather(*to_cancel,
                                            return_exceptions=True))
    for task in to_cancel:
        if task.cancelled():
            continue
        if task.exception() is not None:
            loop.call_exception_handler({
                "message": "unhandled exception during asyncio.run() "
                           "shutdown",
                "exception": task.exception(),
                "task": task,
            })

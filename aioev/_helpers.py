"""Slow paths of aioev._core written in Python: reprs and error reports.

Imported by the C module at start-up; nothing here runs per callback
unless something is printed or a callback failed.
"""

from asyncio import base_futures, base_tasks, events, format_helpers
import sys

_DEBUG_KW = sys.version_info >= (3, 13)


def _callback_source(loop, callback, args):
    if _DEBUG_KW:
        debug = bool(getattr(loop, "get_debug", lambda: False)())
        return format_helpers._format_callback_source(callback, args,
                                                      debug=debug)
    return format_helpers._format_callback_source(callback, args)


def future_repr(fut):
    info = " ".join(base_futures._future_repr_info(fut))
    return f"<{type(fut).__name__} {info}>"


def task_repr(task):
    info = " ".join(base_tasks._task_repr_info(task))
    return f"<{type(task).__name__} {info}>"


def handle_repr(handle):
    info = [type(handle).__name__]
    if handle._cancelled:
        info.append("cancelled")
    if handle._callback is not None:
        info.append(_callback_source(handle._loop, handle._callback,
                                     handle._args))
    if hasattr(handle, "_when"):
        info.insert(1, f"when={handle._when}")
    if handle._source_traceback:
        frame = handle._source_traceback[-1]
        info.append(f"created at {frame[0]}:{frame[1]}")
    return "<{}>".format(" ".join(info))


def report_callback_error(loop, exc, handle, callback, args):
    """Send a failed callback's exception to loop.call_exception_handler,
    in the words asyncio's Handle._run uses."""
    if handle is not None:
        callback, args = handle._callback, handle._args
    if args is None and callback is not None and hasattr(callback,
                                                         "get_coro"):
        # A task step that failed inside aioev itself.
        cb = repr(callback)
    else:
        cb = _callback_source(loop, callback, args or ())
    context = {
        "message": f"Exception in callback {cb}",
        "exception": exc,
    }
    if handle is None:
        # Internal work has no Handle; asyncio's context always names one.
        handle = events.Handle(callback, tuple(args or ()), loop)
    context["handle"] = handle
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    loop.call_exception_handler(context)

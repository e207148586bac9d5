"""Handle and TimerHandle: cancel, when, repr, contextvars."""

import asyncio
import contextvars
import decimal
import fractions
import sys
import threading

import pytest

var = contextvars.ContextVar("var", default="default")


def test_cancel_call_soon(loop):
    ran = []
    h = loop.call_soon(ran.append, 1)
    assert not h.cancelled()
    h.cancel()
    assert h.cancelled()
    loop.run_until_complete(asyncio.sleep(0))
    assert ran == []


def test_cancel_twice(loop):
    h = loop.call_soon(lambda: None)
    h.cancel()
    h.cancel()
    assert h.cancelled()


def test_cancel_after_run(loop):
    ran = []
    h = loop.call_soon(ran.append, 1)
    loop.run_until_complete(asyncio.sleep(0))
    assert ran == [1]
    h.cancel()
    assert h.cancelled()


def test_cancel_only_the_cancelled_one(loop):
    ran = []
    handles = [loop.call_soon(ran.append, i) for i in range(10)]
    for h in handles[::2]:
        h.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    assert ran == [1, 3, 5, 7, 9]


def test_cancel_later_handle_from_earlier_callback(loop):
    ran = []
    later = []
    loop.call_soon(lambda: later[0].cancel())
    later.append(loop.call_soon(ran.append, "should not run"))
    loop.call_soon(ran.append, "runs")
    loop.run_until_complete(asyncio.sleep(0))
    assert ran == ["runs"]


def test_cancel_timer(loop):
    ran = []
    h = loop.call_later(0.001, ran.append, 1)
    assert not h.cancelled()
    h.cancel()
    assert h.cancelled()
    loop.run_until_complete(asyncio.sleep(0.01))
    assert ran == []


def test_cancel_timer_from_callback_same_deadline(loop):
    ran = []
    when = loop.time() + 0.005
    handles = {}

    def canceller():
        ran.append("canceller")
        handles["victim"].cancel()

    loop.call_at(when - 0.001, canceller)
    handles["victim"] = loop.call_at(when, ran.append, "victim")
    loop.run_until_complete(asyncio.sleep(0.02))
    assert ran == ["canceller"]


def test_cancel_many_timers(loop):
    ran = []
    now = loop.time()
    handles = [loop.call_at(now + 0.001 * (i % 5), ran.append, i)
               for i in range(100)]
    for h in handles:
        if h is not handles[42]:
            h.cancel()
    loop.run_until_complete(asyncio.sleep(0.02))
    assert ran == [42]


def test_cancelled_timer_when_still_available(loop):
    h = loop.call_later(5, lambda: None)
    when = h.when()
    h.cancel()
    assert h.when() == when


def test_timer_handle_ordering_by_when(loop):
    a = loop.call_at(10, lambda: None)
    b = loop.call_at(20, lambda: None)
    try:
        assert a < b
        assert b > a
        assert a <= b
        assert not (b <= a)
    finally:
        a.cancel()
        b.cancel()


def test_handle_repr(loop):
    def my_callback(x, y):
        pass

    h = loop.call_soon(my_callback, 1, 2)
    r = repr(h)
    assert r.startswith("<") and r.endswith(">")
    assert "Handle" in r
    assert "my_callback" in r
    h.cancel()
    assert "cancelled" in repr(h)


def test_timer_handle_repr(loop):
    def my_timer_cb():
        pass

    h = loop.call_at(1234.5, my_timer_cb)
    r = repr(h)
    assert "TimerHandle" in r
    assert "when=1234.5" in r
    assert "my_timer_cb" in r
    h.cancel()
    assert "cancelled" in repr(h)


def test_handle_repr_does_not_crash_on_odd_callbacks(loop):
    import functools
    handles = [
        loop.call_soon(functools.partial(print, 1)),
        loop.call_soon(print),                   # builtin
        loop.call_soon(object.__new__.__call__, object),
        loop.call_soon(lambda: None),
    ]
    for h in handles:
        assert isinstance(repr(h), str)
        h.cancel()


# ---------------------------------------------------------------------------
# contextvars


def test_call_soon_captures_current_context(loop):
    seen = []
    token = var.set("at schedule")
    try:
        loop.call_soon(lambda: seen.append(var.get()))
    finally:
        var.reset(token)
    var.set("changed later")
    try:
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        var.set("default")
    assert seen == ["at schedule"]


def test_callback_changes_do_not_leak_to_caller(loop):
    def setter():
        var.set("inside")

    loop.call_soon(setter)
    loop.run_until_complete(asyncio.sleep(0))
    assert var.get() == "default"


def test_callbacks_get_independent_context_copies(loop):
    seen = []

    def setter(value):
        var.set(value)
        seen.append(var.get())

    def getter():
        seen.append(var.get())

    loop.call_soon(setter, "first")
    loop.call_soon(getter)
    loop.run_until_complete(asyncio.sleep(0))
    assert seen == ["first", "default"]


@pytest.mark.parametrize("how", ["call_soon", "call_later", "call_at",
                                 "call_soon_threadsafe"])
def test_explicit_context(loop, how):
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in ctx")
    seen = []

    def cb(arg):
        seen.append((arg, var.get()))
        var.set("modified by cb")

    if how == "call_soon":
        loop.call_soon(cb, "x", context=ctx)
    elif how == "call_later":
        loop.call_later(0.001, cb, "x", context=ctx)
    elif how == "call_at":
        loop.call_at(loop.time() + 0.001, cb, "x", context=ctx)
    else:
        loop.call_soon_threadsafe(cb, "x", context=ctx)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert seen == [("x", "in ctx")]
    # The callback ran inside ctx itself, not a copy of it.
    assert ctx[var] == "modified by cb"
    assert var.get() == "default"


def test_same_context_shared_by_callbacks(loop):
    ctx = contextvars.copy_context()
    seen = []

    def incr():
        var.set(var.get() + "+")
        seen.append(var.get())

    for _ in range(3):
        loop.call_soon(incr, context=ctx)
    loop.run_until_complete(asyncio.sleep(0))
    assert seen == ["default+", "default++", "default+++"]


def test_context_entered_twice_is_an_error_not_a_crash(loop, errors):
    ctx = contextvars.copy_context()

    def reenter():
        # ctx is already entered by the loop: Context.run must refuse.
        ctx.run(lambda: None)

    loop.call_soon(reenter, context=ctx)
    loop.run_until_complete(asyncio.sleep(0))
    ctx_info = errors.take_one()
    assert isinstance(ctx_info["exception"], RuntimeError)


@pytest.mark.parametrize("how", ["call_soon", "call_later", "call_at",
                                 "call_soon_threadsafe", "cancelled"])
@pytest.mark.parametrize("bad", ["x", 5, {}, None.__class__])
def test_context_that_is_no_context(loop, errors, how, bad):
    # asyncio takes any context= and calls its run() when the handle runs:
    # AttributeError to the exception handler, no crash (aioev used to
    # abort on GC bookkeeping meant for its own context copies).
    ran = []
    if how == "call_soon":
        loop.call_soon(ran.append, 1, context=bad)
    elif how == "call_later":
        loop.call_later(0.001, ran.append, 1, context=bad)
    elif how == "call_at":
        loop.call_at(loop.time() + 0.001, ran.append, 1, context=bad)
    elif how == "call_soon_threadsafe":
        loop.call_soon_threadsafe(ran.append, 1, context=bad)
    else:
        loop.call_later(0.001, ran.append, 1, context=bad).cancel()
    loop.run_until_complete(asyncio.sleep(0.01))
    assert ran == []
    if how == "cancelled":
        return
    exc = errors.take_one()["exception"]
    assert isinstance(exc, AttributeError)
    assert "run" in str(exc)


def test_context_with_a_run_method_is_used(loop):
    # Duck typing, as asyncio's Handle: context.run(callback, *args).
    calls = []

    class Runner:
        def run(self, fn, *args):
            calls.append(args)
            return fn(*args)

    fut = loop.create_future()
    loop.call_soon(calls.append, "direct", context=Runner())
    fut.add_done_callback(lambda f: calls.append("done cb"),
                          context=Runner())
    loop.call_soon(fut.set_result, None)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert calls == [("direct",), "direct", (fut,), "done cb"]


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="create_task(context=) is 3.11+")
def test_task_context_that_is_no_context(loop, errors):
    async def coro():
        return 1

    async def main():
        t = loop.create_task(coro(), context="x")
        await asyncio.sleep(0.01)
        return t

    t = loop.run_until_complete(main())
    # Its first step failed in "x".run(...): reported, the task not run.
    exc = errors.take_one()["exception"]
    assert isinstance(exc, AttributeError)
    assert not t.done()
    t._log_destroy_pending = False
    t.get_coro().close()


def test_call_soon_threadsafe_context_from_thread(loop):
    seen = []
    done = loop.create_future()

    def thread_main():
        var.set("thread value")
        loop.call_soon_threadsafe(lambda: seen.append(var.get()))
        loop.call_soon_threadsafe(done.set_result, None)

    t = threading.Thread(target=thread_main)
    loop.call_soon(t.start)
    loop.run_until_complete(done)
    t.join()
    assert seen == ["thread value"]


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.12+ API")
def test_handle_get_context(loop):
    ctx = contextvars.copy_context()
    h = loop.call_soon(lambda: None, context=ctx)
    assert h.get_context() is ctx
    h.cancel()


def test_cancel_from_a_thread_while_the_callback_runs(loop, errors):
    """cancel() from another thread while the handle's callback runs with
    the GIL released (a blocking recv of a socket only the handle refers
    to): the callback and what it holds stay alive until it returns; the
    loop reports its outcome as asyncio does (no use after free)."""
    import socket
    import threading
    import time
    class Sock(socket.socket):
        def __del__(self):  # dropped by the handle: closed, no warning
            self.close()
    a, b = socket.socketpair()
    a = Sock(fileno=a.detach())
    a.settimeout(0.5)
    holder = {"sock": a}
    del a

    def in_thread():
        h = loop.call_soon_threadsafe(holder.pop("sock").recv, 10)
        time.sleep(0.2)  # the loop is inside recv(), GIL released
        h.cancel()
        loop.call_soon_threadsafe(loop.stop)
    t = threading.Thread(target=in_thread)
    t.start()
    loop.run_forever()
    t.join()
    b.close()
    ctx = errors.take_one()
    assert isinstance(ctx["exception"], TimeoutError)


def test_call_later_delay_types(loop):
    # self.time() + delay, as asyncio computes it.
    with pytest.raises(TypeError, match=r"unsupported operand type\(s\) for "
                                        r"\+: 'float' and 'str'"):
        loop.call_later("1", print)
    with pytest.raises(TypeError, match="'float' and 'decimal.Decimal'"):
        loop.call_later(decimal.Decimal("0.001"), print)
    with pytest.raises(TypeError):
        loop.call_later(None, print)
    if sys.version_info >= (3, 11):
        with pytest.raises(TypeError, match="^delay must not be None$"):
            loop.call_later(None, print)
        with pytest.raises(TypeError, match="^when cannot be None$"):
            loop.call_at(None, print)
    ran = []
    loop.call_later(fractions.Fraction(1, 1000), ran.append, 1)
    loop.call_at(decimal.Decimal(loop.time()), ran.append, 2)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert sorted(ran) == [1, 2]


def test_nan_when_never_due_loop_still_runs(aioev_loop):
    # asyncio runs a NaN-time handle at once or fails in its poll
    # (ValueError); aioev never calls it, and its poll gets a sane timeout
    # (no NaN handed to libev) while the loop goes on.
    loop = aioev_loop
    ran = []
    h = loop.call_at(float("nan"), ran.append, 1)
    loop.call_later(0.01, ran.append, 2)
    loop.run_until_complete(asyncio.sleep(0.02))
    assert ran == [2]
    # the NaN one alone: the poll sleeps until woken from a thread
    t = threading.Timer(0.02, loop.call_soon_threadsafe, (loop.stop,))
    t.start()
    loop.run_forever()
    t.join()
    assert ran == [2]
    h.cancel()

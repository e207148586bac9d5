"""Futures made by loop.create_future() and their use by asyncio's helpers."""

import asyncio
import concurrent.futures
import contextvars
import gc
import sys
import threading

import pytest

var = contextvars.ContextVar("var", default="default")


# ---------------------------------------------------------------------------
# State machine


def test_is_future(loop):
    fut = loop.create_future()
    assert asyncio.isfuture(fut)
    assert fut.get_loop() is loop
    fut.cancel()


def test_aioev_create_future_type(aioev_loop, aioev):
    fut = aioev_loop.create_future()
    assert type(fut) is aioev.Future
    fut.cancel()


def test_aioev_future_constructor(aioev_loop, aioev):
    fut = aioev.Future(loop=aioev_loop)
    assert fut.get_loop() is aioev_loop
    assert asyncio.isfuture(fut)
    fut.set_result(1)
    assert aioev_loop.run_until_complete(fut) == 1


def test_aioev_future_class_getitem(aioev):
    alias = aioev.Future[int]
    assert alias.__origin__ is aioev.Future


@pytest.mark.parametrize("value", [None, 5, (1, 2)])
def test_await_iterator_send_on_done_future(loop, value):
    """fut.__await__().send(None) on a done future raises StopIteration
    carrying the result (None too), as a generator's send() does."""
    async def main():
        fut = loop.create_future()
        fut.set_result(value)
        it = fut.__await__()
        with pytest.raises(StopIteration) as info:
            it.send(None)
        return info.value.value
    assert loop.run_until_complete(main()) == value


def test_sock_awaitable_send_when_done_at_once(loop):
    """A sock_* awaitable driven by hand: send(None) when the operation
    completes at once raises StopIteration with its result."""
    import socket
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)

    async def main():
        coro = loop.sock_sendall(a, b"x")
        with pytest.raises(StopIteration) as info:
            coro.send(None)
        return info.value.value, b.recv(10)
    try:
        assert loop.run_until_complete(main()) == (None, b"x")
    finally:
        a.close()
        b.close()


def test_pending_state(loop):
    fut = loop.create_future()
    assert not fut.done()
    assert not fut.cancelled()
    # The messages of asyncio's C Future (the default one).
    with pytest.raises(asyncio.InvalidStateError,
                       match=r"^Result is not set\.$"):
        fut.result()
    with pytest.raises(asyncio.InvalidStateError,
                       match=r"^Exception is not set\.$"):
        fut.exception()
    assert fut._state == "PENDING"
    fut.cancel()


def test_set_result(loop):
    fut = loop.create_future()
    fut.set_result([1, 2])
    assert fut.done()
    assert not fut.cancelled()
    assert fut.result() == [1, 2]
    assert fut.exception() is None
    assert fut._state == "FINISHED"


def test_set_result_twice(loop):
    fut = loop.create_future()
    fut.set_result(1)
    with pytest.raises(asyncio.InvalidStateError):
        fut.set_result(2)
    with pytest.raises(asyncio.InvalidStateError):
        fut.set_exception(ValueError())
    assert fut.result() == 1


def test_set_exception(loop):
    fut = loop.create_future()
    exc = ValueError("boom")
    fut.set_exception(exc)
    assert fut.done()
    assert fut.exception() is exc
    with pytest.raises(ValueError, match="boom"):
        fut.result()
    with pytest.raises(asyncio.InvalidStateError):
        fut.set_result(1)


def test_set_exception_class_is_instantiated(loop):
    fut = loop.create_future()
    fut.set_exception(KeyError)
    assert isinstance(fut.exception(), KeyError)


CANCEL_MSG_ARGS = sys.version_info >= (3, 11)

# gh-112182: from 3.12.2 on, StopIteration is wrapped in a RuntimeError.
WRAPS_STOP_ITERATION = sys.version_info >= (3, 12, 2)


@pytest.mark.skipif(WRAPS_STOP_ITERATION, reason="older asyncio rule")
def test_set_exception_stop_iteration(loop):
    fut = loop.create_future()
    with pytest.raises(TypeError):
        fut.set_exception(StopIteration())
    with pytest.raises(TypeError):
        fut.set_exception(StopIteration)
    assert not fut.done()
    fut.cancel()


@pytest.mark.skipif(not WRAPS_STOP_ITERATION, reason="newer asyncio rule")
@pytest.mark.parametrize("make", [StopIteration, lambda: StopIteration(1)])
def test_set_exception_stop_iteration_wrapped(loop, make):
    fut = loop.create_future()
    fut.set_exception(make())
    exc = fut.exception()
    assert type(exc) is RuntimeError
    assert type(exc.__cause__) is StopIteration


def test_set_exception_not_an_exception(loop):
    fut = loop.create_future()
    with pytest.raises(TypeError):
        fut.set_exception("not an exception")
    fut.cancel()


def test_cancel(loop):
    fut = loop.create_future()
    assert fut.cancel() is True
    assert fut.cancelled()
    assert fut.done()
    assert fut._state == "CANCELLED"
    with pytest.raises(asyncio.CancelledError):
        fut.result()
    with pytest.raises(asyncio.CancelledError):
        fut.exception()
    assert fut.cancel() is False
    with pytest.raises(asyncio.InvalidStateError):
        fut.set_result(1)
    with pytest.raises(asyncio.InvalidStateError):
        fut.set_exception(ValueError())


def test_cancel_done_future(loop):
    fut = loop.create_future()
    fut.set_result(1)
    assert fut.cancel() is False
    assert not fut.cancelled()
    assert fut.result() == 1


def test_cancel_message(loop):
    fut = loop.create_future()
    fut.cancel("the reason")
    with pytest.raises(asyncio.CancelledError) as info:
        fut.result()
    assert info.value.args == ("the reason",)
    with pytest.raises(asyncio.CancelledError) as info:
        fut.exception()
    assert info.value.args == ("the reason",)


def test_cancel_message_keyword(loop):
    fut = loop.create_future()
    fut.cancel(msg="kw")
    with pytest.raises(asyncio.CancelledError) as info:
        fut.result()
    assert info.value.args == ("kw",)


def test_cancel_without_message(loop):
    fut = loop.create_future()
    fut.cancel()
    with pytest.raises(asyncio.CancelledError) as info:
        fut.result()
    assert info.value.args == ()


def test_cancel_message_through_await(loop):
    fut = loop.create_future()

    async def waiter():
        return await fut

    loop.call_soon(fut.cancel, "via await")
    with pytest.raises(asyncio.CancelledError) as info:
        loop.run_until_complete(waiter())
    # 3.10 does not carry the message through the awaiting task.
    assert info.value.args == (("via await",) if CANCEL_MSG_ARGS else ())


def test_log_traceback_attribute(loop):
    fut = loop.create_future()
    fut.set_exception(ValueError())
    assert fut._log_traceback is True
    fut._log_traceback = False
    assert fut._log_traceback is False
    with pytest.raises(ValueError):
        fut._log_traceback = True


def test_asyncio_future_blocking_attribute(loop):
    fut = loop.create_future()
    assert fut._asyncio_future_blocking is False
    fut._asyncio_future_blocking = True
    assert fut._asyncio_future_blocking is True
    fut._asyncio_future_blocking = False
    fut.cancel()


def test_internal_fields_used_by_stdlib(loop):
    fut = loop.create_future()
    assert fut._result is None
    assert fut._exception is None
    assert fut._cancel_message is None
    fut.set_result("r")
    assert fut._result == "r"
    fut2 = loop.create_future()
    fut2.cancel("m")
    assert fut2._cancel_message == "m"
    err = fut2._make_cancelled_error()
    assert isinstance(err, asyncio.CancelledError)
    assert err.args == ("m",)


def test_repr(loop):
    fut = loop.create_future()
    assert "pending" in repr(fut)
    fut.set_result(42)
    assert "finished" in repr(fut)
    assert "result=42" in repr(fut)
    fut = loop.create_future()
    fut.cancel()
    assert "cancelled" in repr(fut)
    fut = loop.create_future()
    fut.set_exception(ValueError("x"))
    assert "exception=ValueError" in repr(fut)
    fut.exception()


def test_future_not_hashable_by_value(loop):
    a = loop.create_future()
    b = loop.create_future()
    assert a != b
    assert len({a, b}) == 2
    a.cancel()
    b.cancel()


def test_future_weakref(loop):
    import weakref
    fut = loop.create_future()
    ref = weakref.ref(fut)
    assert ref() is fut
    del fut
    gc.collect()
    assert ref() is None


def test_debug_source_traceback(loop):
    loop.set_debug(True)
    fut = loop.create_future()
    tb = fut._source_traceback
    assert tb
    assert any(frame.name == "test_debug_source_traceback" for frame in tb)
    fut.cancel()


def test_no_source_traceback_without_debug(loop):
    fut = loop.create_future()
    assert not fut._source_traceback
    fut.cancel()


# ---------------------------------------------------------------------------
# Done callbacks


def test_done_callback_scheduled_not_called_synchronously(loop):
    calls = []
    fut = loop.create_future()
    fut.add_done_callback(calls.append)
    fut.set_result(1)
    assert calls == []
    loop.run_until_complete(asyncio.sleep(0))
    assert calls == [fut]


def test_done_callbacks_order(loop):
    calls = []
    fut = loop.create_future()
    for i in range(5):
        fut.add_done_callback(lambda f, i=i: calls.append(i))
    fut.set_result(None)
    loop.run_until_complete(asyncio.sleep(0))
    assert calls == [0, 1, 2, 3, 4]


def test_done_callback_on_done_future(loop):
    calls = []
    fut = loop.create_future()
    fut.set_result(1)
    fut.add_done_callback(calls.append)
    assert calls == []
    loop.run_until_complete(asyncio.sleep(0))
    assert calls == [fut]


def test_done_callback_on_cancel_and_exception(loop):
    calls = []
    f1 = loop.create_future()
    f2 = loop.create_future()
    f1.add_done_callback(lambda f: calls.append(("f1", f.cancelled())))
    f2.add_done_callback(lambda f: calls.append(("f2", f.exception())))
    f1.cancel()
    exc = ValueError()
    f2.set_exception(exc)
    loop.run_until_complete(asyncio.sleep(0))
    assert calls == [("f1", True), ("f2", exc)]


def test_remove_done_callback(loop):
    calls = []

    def cb1(f):
        calls.append(1)

    def cb2(f):
        calls.append(2)

    fut = loop.create_future()
    fut.add_done_callback(cb1)
    fut.add_done_callback(cb2)
    fut.add_done_callback(cb1)
    assert fut.remove_done_callback(cb1) == 2
    assert fut.remove_done_callback(cb1) == 0
    fut.set_result(None)
    loop.run_until_complete(asyncio.sleep(0))
    assert calls == [2]


def test_remove_done_callback_by_equality(loop):
    class Cb:
        def __init__(self):
            self.calls = 0

        def __call__(self, fut):
            self.calls += 1

        def __eq__(self, other):
            return isinstance(other, Cb)

        __hash__ = object.__hash__

    fut = loop.create_future()
    a = Cb()
    fut.add_done_callback(a)
    assert fut.remove_done_callback(Cb()) == 1
    fut.set_result(None)
    loop.run_until_complete(asyncio.sleep(0))
    assert a.calls == 0


def test_remove_done_callback_with_evil_eq(loop):
    fut = loop.create_future()
    calls = []
    busy = []

    def victim(f):
        calls.append("victim")

    class Evil:
        def __call__(self, f):
            calls.append("evil")

        def __eq__(self, other):
            # Mutates the callback list while it is being searched.
            if not busy:
                busy.append(1)
                fut.remove_done_callback(victim)
            return False

        __hash__ = object.__hash__

    for _ in range(3):
        fut.add_done_callback(Evil())
        fut.add_done_callback(victim)
    assert fut.remove_done_callback(lambda f: None) == 0
    fut.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    # Whether the nested removal survives is implementation-defined (the
    # pure-Python Future rebuilds the list); crashing or losing Evil is not.
    assert calls.count("victim") in (0, 3)
    assert calls.count("evil") == 3


def test_done_callback_context(loop):
    seen = []
    ctx = contextvars.copy_context()
    ctx.run(var.set, "cb ctx")
    fut = loop.create_future()
    fut.add_done_callback(lambda f: seen.append(var.get()), context=ctx)
    fut.add_done_callback(lambda f: seen.append(var.get()))
    fut.set_result(None)
    loop.run_until_complete(asyncio.sleep(0))
    assert seen == ["cb ctx", "default"]


def test_done_callback_captures_context_at_add(loop):
    seen = []
    fut = loop.create_future()
    token = var.set("when added")
    try:
        fut.add_done_callback(lambda f: seen.append(var.get()))
    finally:
        var.reset(token)
    fut.set_result(None)
    loop.run_until_complete(asyncio.sleep(0))
    assert seen == ["when added"]


def test_done_callback_exception_goes_to_handler(loop, errors):
    fut = loop.create_future()

    def bad(f):
        raise ValueError("in done callback")

    fut.add_done_callback(bad)
    fut.set_result(None)
    loop.run_until_complete(asyncio.sleep(0))
    ctx = errors.take_one()
    assert isinstance(ctx["exception"], ValueError)


def test_done_callback_adding_callback(loop):
    calls = []
    fut = loop.create_future()

    def first(f):
        calls.append("first")
        f.add_done_callback(lambda f: calls.append("added later"))

    fut.add_done_callback(first)
    fut.set_result(None)
    loop.run_until_complete(asyncio.sleep(0.001))
    assert calls == ["first", "added later"]


# ---------------------------------------------------------------------------
# Awaiting


def test_await_future(loop):
    fut = loop.create_future()

    async def waiter():
        return await fut

    loop.call_soon(fut.set_result, "value")
    assert loop.run_until_complete(waiter()) == "value"


def test_await_done_future(loop):
    fut = loop.create_future()
    fut.set_result(3)

    async def waiter():
        return (await fut) + (await fut)

    assert loop.run_until_complete(waiter()) == 6


def test_await_future_exception(loop):
    fut = loop.create_future()

    async def waiter():
        return await fut

    loop.call_soon(fut.set_exception, OSError("io"))
    with pytest.raises(OSError, match="io"):
        loop.run_until_complete(waiter())


def test_future_iter_protocol(loop):
    fut = loop.create_future()
    it = fut.__await__()
    assert next(it) is fut
    fut.set_result(9)
    with pytest.raises(StopIteration) as info:
        next(it)
    assert info.value.value == 9


def test_future_iter_is_await(loop):
    fut = loop.create_future()
    assert next(iter(fut)) is fut
    fut.cancel()


def test_yield_from_future_in_generator_coroutine(loop):
    import types
    fut = loop.create_future()

    @types.coroutine
    def gen():
        return (yield from fut)

    async def main():
        return await gen()

    loop.call_soon(fut.set_result, "gen")
    assert loop.run_until_complete(main()) == "gen"


def test_await_from_stdlib_task(loop):
    fut = loop.create_future()

    async def waiter():
        return await fut

    task = asyncio.Task(waiter(), loop=loop)
    loop.call_soon(fut.set_result, "stdlib task")
    assert loop.run_until_complete(task) == "stdlib task"


def test_stdlib_task_cancels_awaited_future(loop):
    fut = loop.create_future()

    async def waiter():
        await fut

    task = asyncio.Task(waiter(), loop=loop)
    loop.run_until_complete(asyncio.sleep(0))
    task.cancel("stop")
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)
    assert fut.cancelled()


def test_future_on_foreign_loop_rejected_by_task(loop, loop_factory):
    other = loop_factory()
    try:
        fut = other.create_future()

        async def waiter():
            await fut

        with pytest.raises(RuntimeError, match="different loop"):
            loop.run_until_complete(waiter())
        fut.cancel()
    finally:
        other.close()


# ---------------------------------------------------------------------------
# asyncio helpers on our futures


def test_wait_for_result(loop):
    fut = loop.create_future()
    loop.call_soon(fut.set_result, 1)
    assert loop.run_until_complete(asyncio.wait_for(fut, 10)) == 1


def test_wait_for_timeout_cancels(loop):
    fut = loop.create_future()
    with pytest.raises(asyncio.TimeoutError):
        loop.run_until_complete(asyncio.wait_for(fut, 0.01))
    assert fut.cancelled()


def test_gather(loop):
    futs = [loop.create_future() for _ in range(3)]
    for i, f in enumerate(futs):
        loop.call_soon(f.set_result, i)
    assert loop.run_until_complete(asyncio.gather(*futs)) == [0, 1, 2]


def test_gather_exception(loop):
    f1 = loop.create_future()
    f2 = loop.create_future()
    loop.call_soon(f1.set_exception, ValueError("g"))
    with pytest.raises(ValueError):
        loop.run_until_complete(asyncio.gather(f1, f2))
    f2.cancel()


def test_gather_return_exceptions(loop):
    f1 = loop.create_future()
    f2 = loop.create_future()
    f3 = loop.create_future()
    exc = ValueError()
    loop.call_soon(f1.set_exception, exc)
    loop.call_soon(f2.set_result, 2)
    loop.call_soon(f3.cancel, "msg")

    res = loop.run_until_complete(
        asyncio.gather(f1, f2, f3, return_exceptions=True))
    assert res[0] is exc
    assert res[1] == 2
    assert isinstance(res[2], asyncio.CancelledError)


def test_gather_cancel_propagates(loop):
    f1 = loop.create_future()
    f2 = loop.create_future()

    async def main():
        g = asyncio.gather(f1, f2)
        loop.call_soon(g.cancel)
        await g

    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(main())
    assert f1.cancelled() and f2.cancelled()


def test_shield(loop):
    inner = loop.create_future()

    async def main():
        outer = asyncio.shield(inner)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        assert not inner.cancelled()
        inner.set_result("kept")
        return await inner

    assert loop.run_until_complete(main()) == "kept"


def test_wait(loop):
    f1 = loop.create_future()
    f2 = loop.create_future()
    loop.call_soon(f1.set_result, 1)

    async def main():
        return await asyncio.wait([f1, f2],
                                  return_when=asyncio.FIRST_COMPLETED)

    done, pending = loop.run_until_complete(main())
    assert done == {f1}
    assert pending == {f2}
    f2.cancel()


def test_wait_timeout(loop):
    f1 = loop.create_future()

    async def main():
        return await asyncio.wait([f1], timeout=0.01)

    done, pending = loop.run_until_complete(main())
    assert done == set()
    assert pending == {f1}
    assert not f1.done()
    f1.cancel()


def test_as_completed(loop):
    futs = [loop.create_future() for _ in range(3)]
    loop.call_soon(futs[2].set_result, "c")
    loop.call_later(0.005, futs[0].set_result, "a")
    loop.call_later(0.01, futs[1].set_result, "b")

    async def main():
        return [await f for f in asyncio.as_completed(futs)]

    assert loop.run_until_complete(main()) == ["c", "a", "b"]


def test_ensure_future_returns_same(loop):
    fut = loop.create_future()
    assert asyncio.ensure_future(fut, loop=loop) is fut
    fut.cancel()


def test_wrap_future(loop):
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        cf = ex.submit(lambda: "from thread")
        fut = asyncio.wrap_future(cf, loop=loop)
        assert asyncio.isfuture(fut)
        assert loop.run_until_complete(fut) == "from thread"


def test_wrap_future_exception(loop):
    cf = concurrent.futures.Future()

    def setter():
        cf.set_exception(ZeroDivisionError())

    fut = asyncio.wrap_future(cf, loop=loop)
    t = threading.Thread(target=setter)
    loop.call_soon(t.start)
    with pytest.raises(ZeroDivisionError):
        loop.run_until_complete(fut)
    t.join()


def test_wrap_future_cancel_propagates(loop):
    cf = concurrent.futures.Future()
    fut = asyncio.wrap_future(cf, loop=loop)
    fut.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    assert cf.cancelled()


def test_chain_to_concurrent_future(loop):
    # asyncio.run_coroutine_threadsafe relies on futures._chain_future.
    fut = loop.create_future()
    cf = concurrent.futures.Future()
    asyncio.futures._chain_future(fut, cf)
    loop.call_soon(fut.set_result, 5)
    loop.run_until_complete(asyncio.sleep(0.001))
    assert cf.result(timeout=5) == 5


# ---------------------------------------------------------------------------
# Finalization


def test_exception_never_retrieved(loop, errors):
    fut = loop.create_future()
    fut.set_exception(ValueError("lost"))
    del fut
    gc.collect()
    ctx = errors.take_one()
    assert "exception was never retrieved" in ctx["message"]
    assert isinstance(ctx["exception"], ValueError)
    assert "future" in ctx


def test_exception_never_retrieved_in_debug_has_source_traceback(loop,
                                                                 errors):
    loop.set_debug(True)
    fut = loop.create_future()
    fut.set_exception(ValueError("lost"))
    del fut
    gc.collect()
    ctx = errors.take_one()
    assert "exception was never retrieved" in ctx["message"]
    assert ctx.get("source_traceback")


@pytest.mark.parametrize("retrieve", ["result", "exception", "flag"])
def test_exception_retrieved_not_logged(loop, errors, retrieve):
    fut = loop.create_future()
    fut.set_exception(ValueError("seen"))
    if retrieve == "result":
        with pytest.raises(ValueError):
            fut.result()
    elif retrieve == "exception":
        fut.exception()
    else:
        fut._log_traceback = False
    del fut
    gc.collect()
    assert errors.take() == []


def test_pending_future_destroyed_silently(loop, errors):
    fut = loop.create_future()
    fut.add_done_callback(lambda f: None)
    del fut
    gc.collect()
    assert errors.take() == []


def test_future_in_reference_cycle_collected(loop):
    import weakref
    fut = loop.create_future()
    fut.add_done_callback(lambda f, fut=fut: None)   # cycle via callback
    ref = weakref.ref(fut)
    del fut
    gc.collect()
    assert ref() is None


def test_future_result_traceback_kept(loop):
    fut = loop.create_future()

    def raiser():
        raise ValueError("tb")

    try:
        raiser()
    except ValueError as exc:
        fut.set_exception(exc)
    with pytest.raises(ValueError) as info:
        fut.result()
    names = [entry.name for entry in info.traceback]
    assert "raiser" in names


def test_repr_with_callbacks(loop):
    fut = loop.create_future()

    def my_done_cb(f):
        pass

    fut.add_done_callback(my_done_cb)
    assert "my_done_cb" in repr(fut)
    fut.cancel()


def test_exception_never_retrieved_after_loop_closed(loop, errors):
    fut = loop.create_future()
    fut.set_exception(ValueError("after close"))
    loop.close()
    del fut
    gc.collect()
    ctx = errors.take_one()
    assert "exception was never retrieved" in ctx["message"]


# ---------------------------------------------------------------------------
# aioev.Future on either loop (a library may create it on any loop)


def test_aioev_future_on_any_loop(loop, aioev):
    fut = aioev.Future(loop=loop)
    assert fut.get_loop() is loop

    async def waiter():
        return await fut

    seen = []
    fut.add_done_callback(lambda f: seen.append(f.result()))
    loop.call_later(0.001, fut.set_result, "any loop")
    assert loop.run_until_complete(waiter()) == "any loop"
    loop.run_until_complete(asyncio.sleep(0))
    assert seen == ["any loop"]


def test_aioev_future_subclass(loop, aioev):
    class MyFuture(aioev.Future):
        def __init__(self, *, loop):
            super().__init__(loop=loop)
            self.note = "subclassed"

    fut = MyFuture(loop=loop)
    assert fut.note == "subclassed"
    assert asyncio.isfuture(fut)
    loop.call_soon(fut.set_result, 3)
    assert loop.run_until_complete(fut) == 3


def test_aioev_future_never_retrieved_on_any_loop(loop, aioev, errors):
    fut = aioev.Future(loop=loop)
    fut.set_exception(ValueError("any loop lost"))
    del fut
    gc.collect()
    ctx = errors.take_one()
    assert "exception was never retrieved" in ctx["message"]

"""Loop life cycle: run/stop/close, scheduling, errors, debug mode."""

import asyncio
import gc
import logging
import sys
import time

import pytest

# A timer may fire when its deadline is within the loop's clock resolution
# (asyncio compares against now + resolution; epoll waits in milliseconds).
CLOCK_SLACK = 0.001


def stop_after(loop, *callbacks):
    """Schedule callbacks (callable, *args tuples) then loop.stop."""
    for cb, *args in callbacks:
        loop.call_soon(cb, *args)
    loop.call_soon(loop.stop)


# ---------------------------------------------------------------------------
# Basic properties


def test_is_abstract_event_loop(loop):
    assert isinstance(loop, asyncio.AbstractEventLoop)


def test_fresh_loop_state(loop):
    assert not loop.is_running()
    assert not loop.is_closed()
    assert loop.get_debug() is False


def test_time_is_monotonic_clock(loop):
    before = time.monotonic()
    now = loop.time()
    after = time.monotonic()
    assert isinstance(now, float)
    assert before <= now <= after


def test_time_advances(loop):
    t0 = loop.time()
    time.sleep(0.002)
    assert loop.time() > t0


def test_loop_is_hashable_and_weakrefable(loop):
    import weakref
    assert hash(loop) == hash(loop)
    assert {loop: 1}[loop] == 1
    assert weakref.ref(loop)() is loop


# ---------------------------------------------------------------------------
# call_soon


def test_call_soon_order_and_args(loop):
    calls = []
    for i in range(20):
        loop.call_soon(calls.append, (i, "x"))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == [(i, "x") for i in range(20)]


def test_call_soon_multiple_positional_args(loop):
    calls = []

    def cb(*args):
        calls.append(args)

    loop.call_soon(cb)
    loop.call_soon(cb, 1)
    loop.call_soon(cb, 1, "two", None, 4.0)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == [(), (1,), (1, "two", None, 4.0)]


def test_call_soon_rejects_keyword_arguments(loop):
    with pytest.raises(TypeError):
        loop.call_soon(print, end="")


def test_call_soon_returns_handle(loop):
    h = loop.call_soon(lambda: None)
    assert hasattr(h, "cancel") and hasattr(h, "cancelled")
    assert not h.cancelled()
    h.cancel()


def test_call_soon_from_callback_runs_on_next_iteration(loop):
    calls = []

    def first():
        calls.append("first")
        loop.call_soon(calls.append, "nested")

    loop.call_soon(first)
    loop.call_soon(calls.append, "second")
    loop.call_soon(loop.stop)
    loop.run_forever()
    # stop() ends the loop after the current batch: "nested" was scheduled
    # during that batch and so has not run yet.
    assert calls == ["first", "second"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["first", "second", "nested"]


def test_callbacks_scheduled_before_run_all_run(loop):
    hits = []
    for i in range(1000):
        loop.call_soon(hits.append, i)
    loop.run_until_complete(asyncio.sleep(0))
    assert hits == list(range(1000))


def test_call_soon_chain_many_iterations(loop):
    count = [0]

    def tick():
        count[0] += 1
        if count[0] < 10000:
            loop.call_soon(tick)
        else:
            loop.stop()

    loop.call_soon(tick)
    loop.run_forever()
    assert count[0] == 10000


# ---------------------------------------------------------------------------
# call_later / call_at


def test_call_later_fires_not_before_its_time(loop):
    fired = []
    h = loop.call_later(0.02, lambda: fired.append(loop.time()))
    loop.call_later(0.03, loop.stop)
    loop.run_forever()
    assert len(fired) == 1
    assert fired[0] >= h.when() - CLOCK_SLACK


def test_call_later_args(loop):
    got = []
    loop.call_later(0.001, got.append, "a")
    loop.call_later(0.002, lambda *a: got.append(a), 1, 2)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert got == ["a", (1, 2)]


def test_timers_fire_in_deadline_order(loop):
    order = []
    now = loop.time()
    for delay in (0.03, 0.01, 0.05, 0.02, 0.04):
        loop.call_at(now + delay, order.append, delay)
    loop.call_at(now + 0.06, loop.stop)
    loop.run_forever()
    assert order == [0.01, 0.02, 0.03, 0.04, 0.05]


def test_timers_with_same_deadline_all_fire(loop):
    # asyncio keeps timers in a heap and does not promise FIFO order for
    # equal deadlines, so only the set is checked.
    fired = []
    when = loop.time() + 0.01
    for i in range(10):
        loop.call_at(when, fired.append, i)
    loop.call_at(when + 0.01, loop.stop)
    loop.run_forever()
    assert sorted(fired) == list(range(10))


def test_call_later_zero_runs_after_already_ready_callbacks(loop):
    order = []
    loop.call_later(0, order.append, "later0")
    loop.call_soon(order.append, "soon")
    loop.run_until_complete(asyncio.sleep(0.01))
    assert order == ["soon", "later0"]


def test_call_later_negative_delay_runs(loop):
    fired = []
    loop.call_later(-5, fired.append, 1)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert fired == [1]


def test_call_at_in_the_past_runs(loop):
    fired = []
    loop.call_at(loop.time() - 100, fired.append, 1)
    loop.run_until_complete(asyncio.sleep(0.01))
    assert fired == [1]


def test_timer_when(loop):
    before = loop.time()
    h = loop.call_later(10, lambda: None)
    after = loop.time()
    assert before + 10 <= h.when() <= after + 10
    when = loop.time() + 123.5
    h2 = loop.call_at(when, lambda: None)
    assert h2.when() == when
    h.cancel()
    h2.cancel()


def test_timer_scheduled_from_timer(loop):
    fired = []

    def first():
        fired.append(("first", loop.time()))
        h = loop.call_later(0.01, second)
        fired.append(("h", h.when()))

    def second():
        fired.append(("second", loop.time()))
        loop.stop()

    loop.call_later(0.01, first)
    loop.run_forever()
    names = [n for n, _ in fired]
    assert names == ["first", "h", "second"]
    assert fired[2][1] >= fired[1][1] - CLOCK_SLACK


def test_many_timers(loop):
    fired = []
    now = loop.time()
    for i in range(500):
        loop.call_at(now + (i % 50) / 5000, fired.append, i)
    loop.run_until_complete(asyncio.sleep(0.02))
    assert sorted(fired) == list(range(500))


def test_call_later_rejects_keyword_arguments(loop):
    with pytest.raises(TypeError):
        loop.call_later(1, print, end="")


def test_sleep_does_not_return_early(loop):
    async def main():
        t0 = loop.time()
        await asyncio.sleep(0.02)
        return loop.time() - t0

    assert loop.run_until_complete(main()) >= 0.02 - CLOCK_SLACK


def test_sleep_result(loop):
    assert loop.run_until_complete(asyncio.sleep(0, "r0")) == "r0"
    assert loop.run_until_complete(asyncio.sleep(0.001, "r1")) == "r1"


# ---------------------------------------------------------------------------
# run_forever / stop


def test_stop_before_run_forever_runs_one_iteration(loop):
    calls = []
    loop.stop()
    loop.call_soon(calls.append, 1)
    loop.run_forever()
    assert calls == [1]
    assert not loop.is_running()


def test_stop_runs_rest_of_current_batch(loop):
    calls = []
    loop.call_soon(calls.append, "a")
    loop.call_soon(loop.stop)
    loop.call_soon(calls.append, "b")
    loop.run_forever()
    assert calls == ["a", "b"]


def test_run_forever_can_be_restarted(loop):
    count = [0]
    for _ in range(5):
        loop.call_soon(count.__setitem__, 0, count[0] + 1)
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert count[0] == 5


def test_is_running_inside_callback(loop):
    seen = []
    loop.call_soon(lambda: seen.append(loop.is_running()))
    loop.call_soon(loop.stop)
    assert not loop.is_running()
    loop.run_forever()
    assert seen == [True]
    assert not loop.is_running()


def test_get_running_loop_inside_callback(loop):
    seen = []
    loop.call_soon(lambda: seen.append(asyncio.get_running_loop()))
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [loop]
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_get_event_loop_inside_coroutine(loop):
    async def main():
        return asyncio.get_event_loop()

    assert loop.run_until_complete(main()) is loop


def test_run_forever_while_running(loop):
    caught = []

    def cb():
        try:
            loop.run_forever()
        except RuntimeError as exc:
            caught.append(exc)
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert len(caught) == 1
    assert "already running" in str(caught[0])


def test_run_until_complete_while_running(loop):
    caught = []

    def cb():
        fut = loop.create_future()
        fut.set_result(None)
        try:
            loop.run_until_complete(fut)
        except RuntimeError as exc:
            caught.append(exc)
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert len(caught) == 1
    assert "already running" in str(caught[0])


def test_run_other_loop_while_running(loop, loop_factory):
    other = loop_factory()
    caught = []

    def cb():
        try:
            other.run_forever()
        except RuntimeError as exc:
            caught.append(exc)
        loop.stop()

    try:
        loop.call_soon(cb)
        loop.run_forever()
    finally:
        other.close()
    assert len(caught) == 1
    assert not other.is_running()


def test_two_loops_one_after_another(loop, loop_factory):
    other = loop_factory()
    try:
        assert loop.run_until_complete(asyncio.sleep(0, 1)) == 1
        assert other.run_until_complete(asyncio.sleep(0, 2)) == 2
        assert loop.run_until_complete(asyncio.sleep(0, 3)) == 3
    finally:
        other.close()


def test_keyboard_interrupt_in_callback_propagates(loop):
    def boom():
        raise KeyboardInterrupt

    loop.call_soon(boom)
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert not loop.is_running()
    # The loop is still usable afterwards.
    assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"


def test_system_exit_in_callback_propagates(loop):
    def boom():
        raise SystemExit(3)

    loop.call_soon(boom)
    with pytest.raises(SystemExit):
        loop.run_forever()
    assert not loop.is_running()


def test_base_exception_in_task_propagates(loop):
    async def main():
        raise KeyboardInterrupt

    task = loop.create_task(main())
    with pytest.raises(KeyboardInterrupt):
        loop.run_until_complete(task)
    assert task.done()
    assert isinstance(task.exception(), KeyboardInterrupt)


# ---------------------------------------------------------------------------
# run_until_complete


def test_run_until_complete_coroutine(loop):
    async def main(x):
        await asyncio.sleep(0)
        return x * 2

    assert loop.run_until_complete(main(21)) == 42


def test_run_until_complete_future(loop):
    fut = loop.create_future()
    loop.call_soon(fut.set_result, "done")
    assert loop.run_until_complete(fut) == "done"


def test_run_until_complete_done_future(loop):
    fut = loop.create_future()
    fut.set_result(5)
    assert loop.run_until_complete(fut) == 5


def test_run_until_complete_task(loop):
    async def main():
        return "t"

    task = loop.create_task(main())
    assert loop.run_until_complete(task) == "t"


def test_run_until_complete_exception(loop):
    async def main():
        await asyncio.sleep(0)
        raise ValueError("bad")

    with pytest.raises(ValueError, match="bad"):
        loop.run_until_complete(main())


def test_run_until_complete_cancelled_future(loop):
    fut = loop.create_future()
    loop.call_soon(fut.cancel)
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(fut)


def test_run_until_complete_awaitable_object(loop):
    class Awaitable:
        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return "aw"

    assert loop.run_until_complete(Awaitable()) == "aw"


def test_run_until_complete_not_awaitable(loop):
    with pytest.raises(TypeError):
        loop.run_until_complete(42)


def test_run_until_complete_stopped_early(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError):
        loop.run_until_complete(fut)
    assert not fut.done()
    fut.cancel()


def test_run_until_complete_future_of_other_loop(loop, loop_factory):
    other = loop_factory()
    try:
        fut = other.create_future()
        with pytest.raises(ValueError):
            loop.run_until_complete(fut)
    finally:
        other.close()


def test_run_until_complete_stops_when_future_done_from_callback(loop):
    fut = loop.create_future()
    ran = []
    loop.call_later(0.005, fut.set_result, 1)
    assert loop.run_until_complete(fut) == 1
    # A later run still works and the loop is not left in a stopping state.
    loop.call_soon(ran.append, 1)
    loop.run_until_complete(asyncio.sleep(0.001))
    assert ran == [1]


# ---------------------------------------------------------------------------
# close


def test_close_is_idempotent(loop):
    assert loop._closed is False  # private, but libraries read it
    loop.close()
    assert loop.is_closed()
    assert loop._closed is True
    loop.close()
    assert loop.is_closed()


def test_close_while_running(loop):
    caught = []

    def cb():
        try:
            loop.close()
        except RuntimeError as exc:
            caught.append(exc)
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert len(caught) == 1
    assert not loop.is_closed()


@pytest.mark.parametrize("method, args", [
    ("call_soon", (print,)),
    ("call_later", (1, print)),
    ("call_at", (1, print)),
    ("call_soon_threadsafe", (print,)),
    ("run_forever", ()),
    ("run_in_executor", (None, print)),
    ("add_reader", (0, print)),
    ("add_writer", (1, print)),
])
def test_closed_loop_raises(loop, method, args):
    loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        getattr(loop, method)(*args)


def test_closed_loop_run_until_complete(loop):
    loop.close()
    fut = loop.create_future()
    with pytest.raises(RuntimeError, match="closed"):
        loop.run_until_complete(fut)

    async def main():
        pass

    coro = main()
    with pytest.raises(RuntimeError, match="closed"):
        loop.run_until_complete(coro)
    coro.close()


def test_closed_loop_create_task(loop):
    loop.close()

    async def main():
        pass

    coro = main()
    with pytest.raises(RuntimeError, match="closed"):
        loop.create_task(coro)
    coro.close()


def test_close_drops_pending_callbacks(loop):
    ran = []
    loop.call_soon(ran.append, 1)
    loop.call_later(0.001, ran.append, 2)
    loop.close()
    assert ran == []


def test_close_shuts_down_default_executor(loop):
    import threading
    idents = set()
    for _ in range(3):
        loop.run_until_complete(loop.run_in_executor(
            None, lambda: idents.add(threading.get_ident())))
    loop.close()
    # asyncio closes with shutdown(wait=False); the worker threads exit soon.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = [t for t in threading.enumerate() if t.ident in idents]
        if not alive:
            break
        time.sleep(0.01)
    assert not alive


# ---------------------------------------------------------------------------
# Callback type checks


def test_call_soon_not_callable_debug(loop):
    loop.set_debug(True)
    with pytest.raises(TypeError):
        loop.call_soon(1)
    with pytest.raises(TypeError):
        loop.call_later(1, "not callable")
    with pytest.raises(TypeError):
        loop.call_at(1, None)


def test_call_soon_coroutine_function_debug(loop):
    loop.set_debug(True)

    async def coro():
        pass

    with pytest.raises(TypeError):
        loop.call_soon(coro)


def test_aioev_call_soon_not_callable(aioev_loop):
    with pytest.raises(TypeError):
        aioev_loop.call_soon(1)
    with pytest.raises(TypeError):
        aioev_loop.call_later(1, None)
    with pytest.raises(TypeError):
        aioev_loop.call_at(1, "x")
    with pytest.raises(TypeError):
        aioev_loop.call_soon_threadsafe(object())


# ---------------------------------------------------------------------------
# Exception handling


def test_callback_exception_goes_to_handler(loop, errors):
    calls = []

    def boom():
        raise ZeroDivisionError("oops")

    h = loop.call_soon(boom)
    loop.call_soon(calls.append, "after")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == ["after"]
    ctx = errors.take_one()
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert "message" in ctx and isinstance(ctx["message"], str)
    assert ctx["message"].startswith("Exception in callback")
    assert ctx["handle"] is h


def test_timer_exception_goes_to_handler(loop, errors):
    def boom():
        raise RuntimeError("timer")

    h = loop.call_later(0.001, boom)
    loop.run_until_complete(asyncio.sleep(0.01))
    ctx = errors.take_one()
    assert isinstance(ctx["exception"], RuntimeError)
    assert ctx["handle"] is h


def test_handler_receives_loop(loop_factory):
    lp = loop_factory()
    seen = []
    lp.set_exception_handler(lambda l, c: seen.append((l, c)))
    try:
        lp.call_soon(lambda: 1 / 0)
        lp.run_until_complete(asyncio.sleep(0))
    finally:
        lp.close()
    assert len(seen) == 1
    assert seen[0][0] is lp


def test_get_set_exception_handler(loop, errors):
    assert loop.get_exception_handler() is errors

    def handler(lp, ctx):
        pass

    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None
    with pytest.raises(TypeError):
        loop.set_exception_handler(42)


def test_call_exception_handler_custom(loop, errors):
    ctx = {"message": "hello", "extra": 1}
    loop.call_exception_handler(ctx)
    assert errors.take() == [ctx]


def test_default_exception_handler_logs(loop, caplog):
    loop.set_exception_handler(None)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        try:
            raise ValueError("logged-exc")
        except ValueError as exc:
            loop.call_exception_handler({"message": "custom message",
                                         "exception": exc})
    recs = [r for r in caplog.records if r.name == "asyncio"]
    assert len(recs) == 1
    assert "custom message" in recs[0].getMessage()
    assert recs[0].exc_info[1].args == ("logged-exc",)


def test_default_exception_handler_direct(loop, caplog):
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.default_exception_handler({"message": "direct call"})
    assert any("direct call" in r.getMessage() for r in caplog.records)


def test_callback_exception_default_handler_logs(loop, caplog):
    loop.set_exception_handler(None)

    def boom():
        raise KeyError("in-callback")

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(boom)
        loop.run_until_complete(asyncio.sleep(0))
    recs = [r for r in caplog.records if r.name == "asyncio"]
    assert len(recs) == 1
    assert "Exception in callback" in recs[0].getMessage()
    assert isinstance(recs[0].exc_info[1], KeyError)


def test_exception_handler_that_raises(loop, caplog):
    def bad_handler(lp, ctx):
        raise RuntimeError("handler broke")

    loop.set_exception_handler(bad_handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_soon(lambda: 1 / 0)
        loop.call_soon(loop.stop)
        loop.run_forever()
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert any("Unhandled error in exception handler" in m for m in msgs)


def test_exception_handler_with_default_fallback(loop, caplog):
    seen = []

    def handler(lp, ctx):
        seen.append(ctx["message"])
        lp.default_exception_handler(ctx)

    loop.set_exception_handler(handler)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.call_exception_handler({"message": "via default"})
    assert seen == ["via default"]
    assert any("via default" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------
# Debug mode


def test_set_debug(loop):
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_slow_callback_duration_attribute(loop):
    assert loop.slow_callback_duration == pytest.approx(0.1)
    loop.slow_callback_duration = 0.5
    assert loop.slow_callback_duration == 0.5


def test_debug_slow_callback_warning(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    def slow_cb():
        time.sleep(0.05)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(slow_cb)
        loop.run_until_complete(asyncio.sleep(0))
    msgs = [r.getMessage() for r in caplog.records
            if r.name == "asyncio" and r.levelno == logging.WARNING]
    assert any("slow_cb" in m and "took" in m for m in msgs), msgs


def test_no_slow_callback_warning_without_debug(loop, caplog):
    loop.slow_callback_duration = 0.001

    def slow_cb():
        time.sleep(0.01)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.call_soon(slow_cb)
        loop.run_until_complete(asyncio.sleep(0))
    assert not [r for r in caplog.records if r.name == "asyncio"]


def test_debug_mode_callback_exception_has_source_traceback(loop, errors):
    loop.set_debug(True)
    loop.call_soon(lambda: 1 / 0)
    loop.run_until_complete(asyncio.sleep(0))
    ctx = errors.take_one()
    assert isinstance(ctx["exception"], ZeroDivisionError)
    tb = ctx.get("source_traceback")
    assert tb, ctx
    assert any(frame.name == "test_debug_mode_callback_exception_has_"
               "source_traceback" for frame in tb)


def test_debug_mode_done_callback_exception_says_where_it_was_scheduled(
        loop, errors):
    """In debug mode a failing done callback's report carries where the
    future was completed (asyncio's call_soon Handle records it there)."""
    loop.set_debug(True)

    def bad(fut):
        raise ValueError("done callback")

    def complete(fut):
        fut.set_result(1)

    async def main():
        fut = loop.create_future()
        fut.add_done_callback(bad)
        complete(fut)
        await asyncio.sleep(0)
    loop.run_until_complete(main())
    ctx = errors.take_one()
    assert isinstance(ctx["exception"], ValueError)
    assert ctx["source_traceback"][-1].name == "complete"
    assert "created at" in repr(ctx["handle"])


def test_debug_done_callback_runs_as_a_handle(loop, caplog):
    # In debug mode the default exception handler reads
    # loop._current_handle._source_traceback: for a future's done
    # callback that is a Handle (asyncio runs it as one), so a report made
    # from the callback is logged as it is, not lost to an AttributeError
    # ("Exception in default exception handler").  The slow-callback
    # warning names the Handle too.
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    seen = []

    def on_done(fut):
        seen.append(type(loop._current_handle).__name__)
        loop.default_exception_handler(
            {"message": "reported from a done callback"})
        time.sleep(0.03)

    async def main():
        fut = loop.create_future()
        fut.add_done_callback(on_done)
        fut.set_result(None)
        await asyncio.sleep(0.01)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_until_complete(main())
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert seen == ["Handle"]
    assert any(m.startswith("reported from a done callback")
               for m in msgs), msgs
    assert not any("default exception handler" in m for m in msgs), msgs
    assert any(m.startswith("Executing <Handle") and "on_done" in m
               and "took" in m for m in msgs), msgs


@pytest.mark.parametrize("debug", [False, True])
def test_subprocess_in_debug_mode(loop, debug):
    # Debug mode logs each subprocess it starts (asyncio's
    # _log_subprocess): the loop must have that helper.
    loop.set_debug(debug)

    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print('hi')",
            stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return out, proc.returncode
    assert loop.run_until_complete(main()) == (b"hi\n", 0)


def test_call_later_checks_name_call_at(loop):
    # asyncio's call_later() is call_at(), whose debug-mode checks name
    # call_at() in their messages.
    loop.set_debug(True)

    async def coro_fn():
        pass

    with pytest.raises(TypeError,
                       match=r"^coroutines cannot be used with call_at\(\)$"):
        loop.call_later(0.1, coro_fn)
    with pytest.raises(TypeError,
                       match=r"^a callable object was expected by call_at\(\)"):
        loop.call_later(0.1, 42)


def test_debug_coroutine_origin_tracking(loop):
    import sys
    loop.set_debug(True)

    async def main():
        return sys.get_coroutine_origin_tracking_depth()

    assert loop.run_until_complete(main()) > 0
    assert sys.get_coroutine_origin_tracking_depth() == 0


# ---------------------------------------------------------------------------
# Async generators


def test_shutdown_asyncgens(loop):
    finalized = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            finalized.append("closed")

    gen = agen()

    async def start():
        return await gen.__anext__()

    assert loop.run_until_complete(start()) == 1
    assert finalized == []
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert finalized == ["closed"]


def test_shutdown_asyncgens_with_await_in_finally(loop):
    finalized = []

    async def agen():
        try:
            yield 1
        finally:
            await asyncio.sleep(0)
            finalized.append("closed after await")

    gens = [agen() for _ in range(3)]

    async def start():
        for g in gens:
            await g.__anext__()

    loop.run_until_complete(start())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert finalized == ["closed after await"] * 3


def test_shutdown_asyncgens_error_reported(loop, errors):
    async def agen():
        try:
            yield 1
        finally:
            raise ValueError("in finally")

    gen = agen()

    async def start():
        await gen.__anext__()

    loop.run_until_complete(start())
    loop.run_until_complete(loop.shutdown_asyncgens())
    ctx = errors.take_one()
    assert isinstance(ctx["exception"], ValueError)
    assert ctx["asyncgen"] is gen


def test_asyncgen_finalized_by_gc_while_running(loop):
    finalized = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            finalized.append("gc")

    async def main():
        g = agen()
        await g.__anext__()
        del g
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert finalized == ["gc"]


def test_asyncgen_hooks_restored_after_run(loop):
    import sys
    before = sys.get_asyncgen_hooks()
    seen = []

    async def main():
        seen.append(sys.get_asyncgen_hooks())

    loop.run_until_complete(main())
    assert sys.get_asyncgen_hooks() == before
    assert seen[0].firstiter is not None
    assert seen[0].finalizer is not None


def test_async_for_over_agen(loop):
    async def agen(n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    async def main():
        return [x async for x in agen(5)]

    assert loop.run_until_complete(main()) == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------------------
# Networking is out of scope for now; only its presence is checked.


def test_networking_methods_exist(loop):
    for name in ("create_connection", "create_server", "sock_recv",
                 "sock_sendall", "getaddrinfo", "subprocess_exec"):
        assert callable(getattr(loop, name))


# ---------------------------------------------------------------------------
# Fairness: a busy loop of ready callbacks must not starve timers or I/O.


def test_timers_not_starved_by_busy_callbacks(loop):
    fired = []

    def busy():
        if not fired:
            loop.call_soon(busy)

    loop.call_soon(busy)
    loop.call_later(0.01, fired.append, "timer")
    fallback = loop.call_later(10, loop.stop)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    fallback.cancel()
    assert fired == ["timer"]


def test_io_not_starved_by_busy_task(loop):
    import socket
    a, b = socket.socketpair()
    try:
        got = []
        loop.add_reader(a.fileno(), lambda: (got.append(a.recv(10)),
                                             loop.remove_reader(a.fileno())))

        async def busy():
            b.send(b"ping")
            for _ in range(100000):
                if got:
                    return "io ran"
                await asyncio.sleep(0)
            return "starved"

        assert loop.run_until_complete(busy()) == "io ran"
    finally:
        a.close()
        b.close()


def test_threadsafe_not_starved_by_busy_task(loop):
    import threading
    got = []

    def thread_main():
        loop.call_soon_threadsafe(got.append, "threadsafe")

    async def busy():
        t = threading.Thread(target=thread_main)
        t.start()
        t.join()
        for _ in range(100000):
            if got:
                return "ran"
            await asyncio.sleep(0)
        return "starved"

    assert loop.run_until_complete(busy()) == "ran"


# ---------------------------------------------------------------------------
# Extreme timer values


@pytest.mark.parametrize("when", [float("inf"), 1e12])
def test_far_future_timer(loop, when):
    h = loop.call_at(when, lambda: None)
    loop.run_until_complete(asyncio.sleep(0.005))
    assert not h.cancelled()
    h.cancel()


def test_huge_call_later(loop):
    h = loop.call_later(1e12, lambda: None)
    loop.run_until_complete(asyncio.sleep(0.001))
    h.cancel()


def test_stop_before_run_until_complete(loop):
    fut = loop.create_future()
    loop.call_later(0.01, fut.set_result, None)
    loop.stop()
    with pytest.raises(RuntimeError):
        loop.run_until_complete(fut)
    # The stop request was consumed: a later run is normal.
    assert loop.run_until_complete(fut) is None


def test_stop_twice(loop):
    calls = []
    loop.call_soon(loop.stop)
    loop.call_soon(loop.stop)
    loop.call_soon(calls.append, 1)
    loop.run_forever()
    assert calls == [1]
    loop.call_soon(calls.append, 2)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert calls == [1, 2]


# ---------------------------------------------------------------------------
# References: the loop must drop callbacks and args as soon as it can.


class Token:
    """A weak-referenceable callback argument."""


def test_callback_args_released_after_run(loop):
    import weakref
    tok = Token()
    ref = weakref.ref(tok)
    loop.call_soon(lambda t: None, tok)
    del tok
    loop.run_until_complete(asyncio.sleep(0))
    gc.collect()
    assert ref() is None


def test_cancelled_timer_releases_args(loop):
    import weakref
    tok = Token()
    ref = weakref.ref(tok)
    h = loop.call_later(3600, lambda t: None, tok)
    del tok
    h.cancel()
    gc.collect()
    assert ref() is None


def test_cancelled_handle_releases_args(loop):
    import weakref
    tok = Token()
    ref = weakref.ref(tok)
    h = loop.call_soon(lambda t: None, tok)
    del tok
    h.cancel()
    gc.collect()
    assert ref() is None
    loop.run_until_complete(asyncio.sleep(0))


def test_close_releases_pending_callbacks(loop):
    import weakref
    tok1, tok2 = Token(), Token()
    refs = [weakref.ref(tok1), weakref.ref(tok2)]
    loop.call_soon(lambda t: None, tok1)
    loop.call_later(3600, lambda t: None, tok2)
    del tok1, tok2
    loop.close()
    gc.collect()
    assert [r() for r in refs] == [None, None]


def test_debug_slow_task_step_warning(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    async def slow_task_body():
        time.sleep(0.05)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_until_complete(loop.create_task(slow_task_body()))
    msgs = [r.getMessage() for r in caplog.records
            if r.name == "asyncio" and r.levelno == logging.WARNING]
    assert any("slow_task_body" in m and "took" in m for m in msgs), msgs


# ---------------------------------------------------------------------------
# Queue and heap stress with asyncio as the oracle


def test_ready_queue_fifo_with_growth_and_shrink(loop):
    """Callbacks run in exactly the order call_soon was called."""
    import random
    rng = random.Random(1234)
    scheduled = []
    executed = []
    counter = [0]

    def schedule():
        i = counter[0]
        counter[0] += 1
        scheduled.append(i)
        loop.call_soon(cb, i)

    def cb(i):
        executed.append(i)
        if counter[0] < 20000:
            # Fan-out varies so the queue grows, shrinks and wraps.
            for _ in range(rng.choice((0, 0, 1, 1, 2, 3, 8))):
                schedule()

    for _ in range(50):
        schedule()
    while len(executed) < len(scheduled):
        loop.run_until_complete(asyncio.sleep(0))
    assert executed == scheduled


def test_timer_heap_random_schedule_and_cancel(loop):
    import random
    rng = random.Random(4321)
    now = loop.time()
    fired = []
    handles = {}
    for i in range(2000):
        when = now + rng.random() * 0.03
        handles[i] = loop.call_at(when, lambda i=i: fired.append(i))
    cancelled = set(rng.sample(range(2000), 1000))
    for i in cancelled:
        handles[i].cancel()
    # Some timers cancel others while the loop runs.
    victims = set(rng.sample(sorted(set(range(2000)) - cancelled), 100))

    def canceller():
        for v in victims:
            handles[v].cancel()

    loop.call_at(now + 0.001, canceller)
    loop.run_until_complete(asyncio.sleep(0.05))
    expected_min = set(range(2000)) - cancelled - victims
    assert set(fired) >= expected_min
    assert not (set(fired) & cancelled)
    # Victims either fired before the canceller ran or never.
    for v in victims & set(fired):
        assert handles[v].when() <= now + 0.001 + CLOCK_SLACK
    assert len(fired) == len(set(fired))
    whens = [handles[i].when() for i in fired]
    assert whens == sorted(whens)


def test_timers_rescheduled_from_callbacks(loop):
    """Each timer reschedules itself; deadlines are always honoured."""
    late = []
    count = [0]

    def tick(h_when):
        now = loop.time()
        if now < h_when[0] - CLOCK_SLACK:
            late.append((now, h_when[0]))
        count[0] += 1
        if count[0] < 300:
            nxt = loop.call_later((count[0] % 3) * 0.0003, tick, h_when)
            h_when[0] = nxt.when()

    for _ in range(3):
        box = [0.0]
        h = loop.call_later(0, tick, box)
        box[0] = h.when()
    while count[0] < 300:
        loop.run_until_complete(asyncio.sleep(0.001))
    assert late == []


def test_call_soon_threadsafe_racing_close(loop_factory):
    """Threads calling call_soon_threadsafe while the loop closes: each call
    either succeeds or raises RuntimeError; nothing crashes."""
    import threading
    for _ in range(3):
        lp = loop_factory()
        stop = threading.Event()
        outcomes = []

        def hammer():
            ok = err = 0
            while not stop.is_set():
                try:
                    lp.call_soon_threadsafe(lambda: None)
                    ok += 1
                except RuntimeError:
                    err += 1
                    if err > 10:
                        break
            outcomes.append((ok, err))

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        lp.run_until_complete(asyncio.sleep(0.005))
        lp.close()
        time.sleep(0.005)
        stop.set()
        for t in threads:
            t.join()
        assert all(err > 0 for ok, err in outcomes), outcomes


def test_exception_handler_raising_during_gc(loop, caplog):
    def bad_handler(lp, ctx):
        raise RuntimeError("handler failed in finalizer")

    loop.set_exception_handler(bad_handler)
    fut = loop.create_future()
    fut.set_exception(ValueError("never retrieved"))
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        del fut
        gc.collect()
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert any("Unhandled error in exception handler" in m for m in msgs)


# -- garbage collection of queued handles (aioev keeps them untracked) ------

def test_dropped_loop_with_cyclic_pending_callback_is_collected(aioev):
    import gc
    import warnings
    import weakref

    class Owner:
        def cb(self):
            pass

    loop = aioev.new_event_loop()
    owner = Owner()
    owner.loop = loop
    owner.handle = loop.call_soon(owner.cb)          # shared with owner
    owner.timer = loop.call_later(3600, owner.cb)
    loop.call_soon(owner.cb)                         # owned by the loop only
    refs = weakref.ref(owner), weakref.ref(loop)
    del owner, loop
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
        gc.collect()
    assert [r() for r in refs] == [None, None]


def test_handle_held_by_user_survives_collection_of_its_loop(aioev):
    import gc

    seen = []
    loop = aioev.new_event_loop()
    handle = loop.call_soon(seen.append, "ran")
    gc.collect()
    assert not handle.cancelled()
    assert handle._callback is not None
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["ran"]
    loop.close()
    handle.cancel()
    assert handle.cancelled()


def test_handle_context_kept_by_user_after_run(aioev):
    import contextvars
    import gc

    var = contextvars.ContextVar("var", default="unset")
    loop = aioev.new_event_loop()
    handles = [loop.call_soon(var.set, i) for i in range(3)]
    contexts = [h._context for h in handles[:2]]     # shared before the run
    loop.call_soon(loop.stop)
    loop.run_forever()
    contexts.append(handles[2]._context)             # shared after the run
    del handles
    gc.collect()
    # Each callback ran in its own copy, and the caller's context is clean.
    assert [ctx[var] for ctx in contexts] == [0, 1, 2]
    assert var.get() == "unset"
    loop.close()


# -- regressions found under ASan -------------------------------------------

def test_timer_purge_survives_reentrant_scheduling(aioev):
    """Dropping many cancelled timers runs their contexts' finalizers; one
    that schedules a timer while the heap is compacted must not corrupt
    it or lose the new timer."""
    import contextvars

    loop = aioev.new_event_loop()
    var = contextvars.ContextVar("var")
    fired, scheduled = [], []

    class Reenter:
        def __del__(self):
            scheduled.append(1)
            loop.call_later(0, fired.append, 1)

    keep = []
    for i in range(300):
        if i % 3 == 0:
            keep.append(loop.call_later(1000, fired.append, "never"))
            continue
        ctx = contextvars.Context()
        ctx.run(var.set, Reenter() if i % 10 == 1 else None)
        loop.call_later(1000, fired.append, "never", context=ctx).cancel()
        del ctx
    loop.run_until_complete(asyncio.sleep(0.01))
    assert scheduled and len(fired) == len(scheduled)
    assert "never" not in fired
    for h in keep:
        h.cancel()
    loop.close()


def test_remove_done_callback_when_eq_removes_the_callback(aioev):
    loop = aioev.new_event_loop()
    fut = loop.create_future()

    class SelfRemover:
        busy = False

        def __call__(self, f):
            pass

        def __eq__(self, other):
            if not self.busy:
                self.busy = True
                fut.remove_done_callback(self)   # drops the last reference
            return NotImplemented

    class Other:
        def __call__(self, f):
            pass

        def __eq__(self, other):
            return other is self

    fut.add_done_callback(SelfRemover())
    assert fut.remove_done_callback(Other()) == 0
    assert fut._callbacks is None
    fut.cancel()
    loop.close()


@pytest.mark.parametrize("name", ["Handle", "TimerHandle"])
def test_handles_cannot_be_made_from_python(aioev, name):
    from aioev import _core

    cls = getattr(_core, name)
    with pytest.raises(TypeError):
        cls()
    try:
        class Sub(cls):
            pass
    except TypeError:
        return      # not subclassable at all
    with pytest.raises(TypeError):
        Sub()

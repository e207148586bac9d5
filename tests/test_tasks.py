"""Tasks made by loop.create_task() and the asyncio machinery around them."""

import asyncio
import contextvars
import gc
import io
import sys
import types
import weakref

import pytest

CANCEL_MSG_ARGS = sys.version_info >= (3, 11)

var = contextvars.ContextVar("var", default="default")

requires_311 = pytest.mark.skipif(sys.version_info < (3, 11),
                                  reason="needs Python 3.11+")
requires_312 = pytest.mark.skipif(sys.version_info < (3, 12),
                                  reason="needs Python 3.12+")


async def return_value(value):
    return value


async def sleep_forever():
    await asyncio.sleep(3600)


# ---------------------------------------------------------------------------
# Basics


def test_create_task_result(loop):
    task = loop.create_task(return_value(7))
    assert asyncio.isfuture(task)
    assert not task.done()
    assert loop.run_until_complete(task) == 7
    assert task.done()
    assert task.result() == 7


def test_aioev_create_task_type(aioev_loop, aioev):
    task = aioev_loop.create_task(return_value(1))
    assert type(task) is aioev.Task
    assert aioev_loop.run_until_complete(task) == 1


def test_aioev_task_constructor(aioev_loop, aioev):
    task = aioev.Task(return_value(2), loop=aioev_loop, name="direct")
    assert task.get_name() == "direct"
    assert aioev_loop.run_until_complete(task) == 2


def test_aioev_types_are_asyncio_subclasses(aioev_loop, aioev):
    """isinstance(x, asyncio.Future / asyncio.Task) holds for aioev's
    futures and tasks, as libraries (tornado, ...) check it."""
    assert issubclass(aioev.Future, asyncio.Future)
    assert issubclass(aioev.Task, asyncio.Task)
    assert issubclass(aioev.Task, asyncio.Future)

    async def main():
        fut = aioev_loop.create_future()
        task = asyncio.current_task()
        other = asyncio.ensure_future(asyncio.sleep(0))
        wrapped = asyncio.wrap_future(
            aioev_loop.run_in_executor(None, int, "7"))
        assert isinstance(fut, asyncio.Future)
        assert isinstance(task, asyncio.Task)
        assert isinstance(other, asyncio.Task)
        assert isinstance(wrapped, asyncio.Future)
        fut.set_result(1)
        assert await other is None
        return await fut + await wrapped
    assert aioev_loop.run_until_complete(main()) == 8


def test_create_task_not_a_coroutine(loop):
    with pytest.raises(TypeError):
        loop.create_task(42)
    with pytest.raises(TypeError):
        loop.create_task(return_value)    # the function, not a coroutine


def test_task_exception(loop):
    async def bad():
        await asyncio.sleep(0)
        raise LookupError("task failed")

    task = loop.create_task(bad())
    with pytest.raises(LookupError, match="task failed"):
        loop.run_until_complete(task)
    assert isinstance(task.exception(), LookupError)


def test_task_runs_without_being_awaited(loop):
    ran = []

    async def body():
        ran.append(1)

    loop.create_task(body())
    loop.run_until_complete(asyncio.sleep(0))
    assert ran == [1]


def test_task_get_coro(loop):
    coro = return_value(1)
    task = loop.create_task(coro)
    assert task.get_coro() is coro
    loop.run_until_complete(task)


def test_task_get_loop(loop):
    task = loop.create_task(return_value(1))
    assert task.get_loop() is loop
    loop.run_until_complete(task)


def test_task_set_result_not_supported(loop):
    task = loop.create_task(return_value(1))
    with pytest.raises(RuntimeError):
        task.set_result(2)
    with pytest.raises(RuntimeError):
        task.set_exception(ValueError())
    assert loop.run_until_complete(task) == 1


def test_task_names(loop):
    t1 = loop.create_task(return_value(1))
    t2 = loop.create_task(return_value(2), name="custom")
    assert t1.get_name().startswith("Task-")
    assert t2.get_name() == "custom"
    t1.set_name(12345)
    assert t1.get_name() == "12345"
    assert "12345" in repr(t1)
    loop.run_until_complete(asyncio.gather(t1, t2))


def test_task_default_names_increase(loop):
    tasks = [loop.create_task(return_value(i)) for i in range(3)]
    nums = [int(t.get_name().split("-")[1]) for t in tasks]
    assert nums == sorted(nums) and len(set(nums)) == 3
    loop.run_until_complete(asyncio.gather(*tasks))


def test_task_repr(loop):
    async def some_coro_name():
        await asyncio.sleep(0)

    task = loop.create_task(some_coro_name(), name="repr-task")
    r = repr(task)
    assert "pending" in r
    assert "repr-task" in r
    assert "some_coro_name" in r
    loop.run_until_complete(task)
    assert "finished" in repr(task)


def test_interleaving_with_sleep_zero(loop):
    order = []

    async def worker(name):
        for i in range(3):
            order.append((name, i))
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(worker("a"), worker("b"))

    loop.run_until_complete(main())
    assert order == [("a", 0), ("b", 0), ("a", 1), ("b", 1),
                     ("a", 2), ("b", 2)]


def test_tasks_start_in_creation_order(loop):
    order = []

    async def body(i):
        order.append(i)

    tasks = [loop.create_task(body(i)) for i in range(10)]
    loop.run_until_complete(asyncio.gather(*tasks))
    assert order == list(range(10))


def test_task_does_not_start_synchronously(loop):
    started = []

    async def body():
        started.append(1)

    task = loop.create_task(body())
    assert started == []
    loop.run_until_complete(task)
    assert started == [1]


def test_task_weakref_and_hash(loop):
    task = loop.create_task(return_value(1))
    assert weakref.ref(task)() is task
    assert {task: 1}[task] == 1
    loop.run_until_complete(task)


def test_deep_await_chain(loop):
    async def depth(n):
        if n == 0:
            await asyncio.sleep(0)
            return 0
        return 1 + await depth(n - 1)

    assert loop.run_until_complete(depth(200)) == 200


def test_many_tasks(loop):
    async def body(i):
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return i

    async def main():
        return await asyncio.gather(*(body(i) for i in range(2000)))

    assert loop.run_until_complete(main()) == list(range(2000))


def test_task_done_callbacks(loop):
    seen = []
    task = loop.create_task(return_value("v"))
    task.add_done_callback(lambda t: seen.append(t.result()))
    loop.run_until_complete(task)
    loop.run_until_complete(asyncio.sleep(0))
    assert seen == ["v"]


# ---------------------------------------------------------------------------
# Cancellation


def test_cancel_before_start(loop):
    started = []

    async def body():
        started.append(1)

    task = loop.create_task(body())
    assert task.cancel() is True
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)
    assert task.cancelled()
    assert started == []


def test_cancel_running_task_message(loop):
    inner = []

    async def body():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError as exc:
            inner.append(exc.args)
            raise

    task = loop.create_task(body())
    loop.run_until_complete(asyncio.sleep(0))
    assert task.cancel("goodbye") is True
    with pytest.raises(asyncio.CancelledError) as info:
        loop.run_until_complete(task)
    assert inner == [("goodbye",)]
    # 3.10 keeps the message only on the inner exception.
    assert info.value.args == (("goodbye",) if CANCEL_MSG_ARGS else ())
    assert task.cancelled()


def test_cancel_done_task(loop):
    task = loop.create_task(return_value(1))
    loop.run_until_complete(task)
    assert task.cancel() is False
    assert not task.cancelled()


def test_cancel_cancels_awaited_future(loop):
    fut = loop.create_future()

    async def body():
        await fut

    task = loop.create_task(body())
    loop.run_until_complete(asyncio.sleep(0))
    task.cancel("m")
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)
    assert fut.cancelled()


def test_task_can_swallow_cancel(loop):
    async def body():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return "survived"

    task = loop.create_task(body())
    loop.run_until_complete(asyncio.sleep(0))
    task.cancel()
    assert loop.run_until_complete(task) == "survived"
    assert not task.cancelled()


def test_cancel_propagates_through_awaited_task(loop):
    async def inner():
        await asyncio.sleep(3600)

    async def outer():
        await inner_task

    inner_task = loop.create_task(inner())
    outer_task = loop.create_task(outer())
    loop.run_until_complete(asyncio.sleep(0))
    outer_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(outer_task)
    assert inner_task.cancelled()


def test_cancel_self(loop):
    async def body():
        asyncio.current_task().cancel("self")
        await asyncio.sleep(0)
        return "not reached"

    task = loop.create_task(body())
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)
    assert task.cancelled()


def test_cancelled_error_raised_by_coroutine(loop):
    async def body():
        raise asyncio.CancelledError("own")

    task = loop.create_task(body())
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)
    assert task.cancelled()


@requires_311
def test_cancelling_and_uncancel(loop):
    seen = []

    async def body():
        task = asyncio.current_task()
        assert task.cancelling() == 0
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append(task.cancelling())
            seen.append(task.uncancel())
            seen.append(task.cancelling())
        return "ok"

    task = loop.create_task(body())
    loop.run_until_complete(asyncio.sleep(0))
    task.cancel()
    task.cancel()
    assert task.cancelling() == 2
    assert loop.run_until_complete(task) == "ok"
    assert seen == [2, 1, 1]


@requires_311
def test_uncancel_at_zero(loop):
    async def body():
        return asyncio.current_task().uncancel()

    assert loop.run_until_complete(loop.create_task(body())) == 0


# ---------------------------------------------------------------------------
# current_task / all_tasks


def test_current_task(loop):
    async def body():
        return asyncio.current_task()

    task = loop.create_task(body())
    assert loop.run_until_complete(task) is task
    assert asyncio.current_task(loop) is None


def test_current_task_in_plain_callback(loop):
    seen = []
    loop.call_soon(lambda: seen.append(asyncio.current_task()))
    loop.run_until_complete(asyncio.sleep(0))
    assert seen == [None]


def test_current_task_switches(loop):
    seen = []

    async def body(name):
        for _ in range(2):
            seen.append((name, asyncio.current_task().get_name()))
            await asyncio.sleep(0)

    tasks = [loop.create_task(body(n), name=n) for n in ("x", "y")]
    loop.run_until_complete(asyncio.gather(*tasks))
    assert all(a == b for a, b in seen)
    assert len(seen) == 4


def test_all_tasks(loop):
    async def main():
        me = asyncio.current_task()
        t = loop.create_task(sleep_forever())
        await asyncio.sleep(0)
        result = asyncio.all_tasks()
        t.cancel()
        return me, t, result

    me, t, result = loop.run_until_complete(main())
    assert result == {me, t}
    assert asyncio.all_tasks(loop) == set()


def test_all_tasks_excludes_done(loop):
    done_task = loop.create_task(return_value(1))
    loop.run_until_complete(done_task)
    pending = loop.create_task(sleep_forever())
    assert asyncio.all_tasks(loop) == {pending}
    pending.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(pending)


# ---------------------------------------------------------------------------
# Stacks


def test_get_stack_suspended(loop):
    async def suspended_here():
        await asyncio.sleep(3600)

    task = loop.create_task(suspended_here())
    loop.run_until_complete(asyncio.sleep(0))
    stack = task.get_stack()
    assert len(stack) == 1
    assert stack[0].f_code.co_name == "suspended_here"
    out = io.StringIO()
    task.print_stack(file=out)
    text = out.getvalue()
    assert "Stack for" in text
    assert "suspended_here" in text
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)
    assert task.get_stack() == []


def test_get_stack_exception(loop):
    async def failing_here():
        raise ValueError("stacked")

    task = loop.create_task(failing_here())
    loop.run_until_complete(asyncio.wait([task]))
    stack = task.get_stack()
    assert [f.f_code.co_name for f in stack] == ["failing_here"]
    out = io.StringIO()
    task.print_stack(file=out)
    assert "Traceback for" in out.getvalue()
    assert "ValueError" in out.getvalue()
    task.exception()


# ---------------------------------------------------------------------------
# contextvars


def test_task_copies_context_at_creation(loop):
    async def body():
        return var.get()

    token = var.set("at creation")
    try:
        task = loop.create_task(body())
    finally:
        var.reset(token)
    assert loop.run_until_complete(task) == "at creation"


def test_task_context_persists_across_steps(loop):
    async def body():
        var.set("step1")
        await asyncio.sleep(0)
        await asyncio.sleep(0.001)
        return var.get()

    assert loop.run_until_complete(loop.create_task(body())) == "step1"
    assert var.get() == "default"


def test_tasks_have_isolated_contexts(loop):
    async def body(v):
        var.set(v)
        await asyncio.sleep(0)
        return var.get()

    async def main():
        return await asyncio.gather(body("a"), body("b"), body("c"))

    assert loop.run_until_complete(main()) == ["a", "b", "c"]


@requires_311
def test_create_task_context_argument(loop):
    ctx = contextvars.copy_context()
    ctx.run(var.set, "given")

    async def body():
        v = var.get()
        var.set("changed in task")
        return v

    task = loop.create_task(body(), context=ctx)
    assert loop.run_until_complete(task) == "given"
    assert ctx[var] == "changed in task"


# ---------------------------------------------------------------------------
# Awaitables


def test_await_object_with_generator_await(loop):
    class Custom:
        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return "custom"

    async def main():
        return await Custom()

    assert loop.run_until_complete(loop.create_task(main())) == "custom"


def test_bare_yield_in_await_yields_to_loop(loop):
    order = []

    class YieldOnce:
        def __await__(self):
            yield        # bare yield: Task reschedules itself
            return "after yield"

    async def a():
        order.append("a1")
        r = await YieldOnce()
        order.append("a2")
        return r

    async def b():
        order.append("b")

    async def main():
        return await asyncio.gather(a(), b())

    assert loop.run_until_complete(main()) == ["after yield", None]
    assert order == ["a1", "b", "a2"]


def test_types_coroutine_generator(loop):
    @types.coroutine
    def gen_coro():
        yield
        return "gen"

    async def main():
        return await gen_coro()

    assert loop.run_until_complete(main()) == "gen"


def test_bad_yield(loop):
    class BadYield:
        def __await__(self):
            yield "not a future"

    async def main():
        await BadYield()

    with pytest.raises(RuntimeError, match="bad yield"):
        loop.run_until_complete(loop.create_task(main()))


def test_yield_future_without_blocking_flag(loop):
    fut = loop.create_future()

    class Naked:
        def __await__(self):
            # Yields the future without going through Future.__await__, so
            # _asyncio_future_blocking stays False: asyncio reports this.
            yield fut

    async def main():
        await Naked()

    with pytest.raises(RuntimeError):
        loop.run_until_complete(loop.create_task(main()))
    fut.cancel()


def test_await_yield_from_task(loop):
    async def inner():
        await asyncio.sleep(0)
        return "inner"

    async def main():
        t = loop.create_task(inner())
        return await t

    assert loop.run_until_complete(main()) == "inner"


def test_task_awaits_loop_create_future(loop):
    fut = loop.create_future()

    async def main():
        return await fut

    task = loop.create_task(main())
    loop.call_later(0.001, fut.set_result, "lf")
    assert loop.run_until_complete(task) == "lf"


def test_task_awaits_stdlib_future(loop):
    fut = asyncio.Future(loop=loop)

    async def main():
        return await fut

    task = loop.create_task(main())
    loop.call_later(0.001, fut.set_result, "stdlib future")
    assert loop.run_until_complete(task) == "stdlib future"


def test_task_cancel_cancels_stdlib_future(loop):
    fut = asyncio.Future(loop=loop)

    async def main():
        await fut

    task = loop.create_task(main())
    loop.run_until_complete(asyncio.sleep(0))
    task.cancel("stdlib")
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)
    assert fut.cancelled()


def test_stdlib_task_on_loop(loop):
    async def main():
        await asyncio.sleep(0.001)
        return asyncio.current_task()

    task = asyncio.Task(main(), loop=loop)
    assert loop.run_until_complete(task) is task


def test_stdlib_task_awaits_our_task(loop):
    async def inner():
        await asyncio.sleep(0)
        return "ours"

    async def outer():
        return await loop.create_task(inner())

    assert loop.run_until_complete(asyncio.Task(outer(), loop=loop)) == \
        "ours"


def test_task_awaits_stdlib_task(loop):
    async def inner():
        await asyncio.sleep(0)
        return "theirs"

    async def outer():
        return await asyncio.Task(inner(), loop=loop)

    assert loop.run_until_complete(loop.create_task(outer())) == "theirs"


# ---------------------------------------------------------------------------
# Finalization reports


def test_task_destroyed_pending(loop, errors):
    fut = loop.create_future()

    async def body():
        await fut

    task = loop.create_task(body())
    loop.run_until_complete(asyncio.sleep(0))
    assert not task.done()
    del task, fut
    gc.collect()
    ctx = errors.take_one()
    assert ctx["message"] == "Task was destroyed but it is pending!"
    assert "task" in ctx


def test_task_destroyed_pending_not_logged_when_flag_cleared(loop, errors):
    fut = loop.create_future()

    async def body():
        await fut

    task = loop.create_task(body())
    loop.run_until_complete(asyncio.sleep(0))
    task._log_destroy_pending = False
    del task, fut
    gc.collect()
    assert errors.take() == []


def test_task_exception_never_retrieved(loop, errors):
    async def body():
        raise ValueError("unretrieved")

    task = loop.create_task(body())
    loop.run_until_complete(asyncio.wait([task]))
    del task
    gc.collect()
    ctx = errors.take_one()
    assert ctx["message"] == "Task exception was never retrieved"
    assert isinstance(ctx["exception"], ValueError)


def test_task_exception_retrieved_not_logged(loop, errors):
    async def body():
        raise ValueError("retrieved")

    task = loop.create_task(body())
    loop.run_until_complete(asyncio.wait([task]))
    assert isinstance(task.exception(), ValueError)
    del task
    gc.collect()
    assert errors.take() == []


def test_finished_task_collected(loop):
    task = loop.create_task(return_value(1))
    loop.run_until_complete(task)
    ref = weakref.ref(task)
    del task
    gc.collect()
    assert ref() is None


# ---------------------------------------------------------------------------
# Task factory


def test_task_factory(loop):
    made = []

    def factory(lp, coro, **kwargs):
        task = asyncio.Task(coro, loop=lp, **kwargs)
        made.append(task)
        return task

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory
    task = loop.create_task(return_value(3), name="factored")
    assert made == [task]
    assert task.get_name() == "factored"
    assert loop.run_until_complete(task) == 3
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    loop.run_until_complete(loop.create_task(return_value(4)))
    assert len(made) == 1


@pytest.mark.skipif(sys.version_info >= (3, 14),
                    reason="3.14 hands the name to the factory")
def test_task_factory_returning_no_task(loop, loop_kind):
    # Before 3.13 asyncio keeps a task without set_name() (3.11 and 3.12
    # warn); 3.13 calls set_name(). Without a name, nothing is asked of it.
    # (3.13.0-3.13.2 call set_name(None) even then, renaming real tasks
    # "None": gh-130033; aioev does not.)
    coro = return_value(1)
    loop.set_task_factory(lambda lp, c, **kw: 5)
    try:
        if sys.version_info < (3, 13) or loop_kind == "aioev":
            assert loop.create_task(coro) == 5
        if sys.version_info >= (3, 13):
            with pytest.raises(AttributeError, match="set_name"):
                loop.create_task(coro, name="n")
        elif sys.version_info >= (3, 11):
            with pytest.warns(DeprecationWarning, match="set_name"):
                assert loop.create_task(coro, name="n") == 5
        else:
            assert loop.create_task(coro, name="n") == 5  # 3.10: silent
    finally:
        loop.set_task_factory(None)
        coro.close()


def test_task_factory_used_by_ensure_future(loop):
    made = []

    def factory(lp, coro, **kwargs):
        made.append(coro)
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    assert loop.run_until_complete(return_value(5)) == 5
    assert len(made) == 1


def test_create_task_extra_keywords(loop):
    # 3.14: loop.create_task(coro, **kwargs) hands other keywords to the
    # Task (eager_start=...) or to the task factory; before, TypeError.
    order = []

    async def body():
        order.append("body")
        return "done"

    async def main():
        task = loop.create_task(body(), eager_start=True, name="eager")
        order.append("returned")
        assert task.get_name() == "eager"
        assert await task == "done"
        task = loop.create_task(body(), eager_start=False)
        order.append("returned")
        await task
        coro = body()
        with pytest.raises(TypeError):
            loop.create_task(coro, loop=loop)
        coro.close()

    if sys.version_info < (3, 14):
        coro = body()
        with pytest.raises(TypeError):
            loop.create_task(coro, eager_start=True)
        coro.close()
        return
    loop.run_until_complete(main())
    assert order == ["body", "returned", "returned", "body"]


@pytest.mark.skipif(sys.version_info < (3, 14),
                    reason="create_task(**kwargs) is new in 3.14")
def test_task_factory_gets_the_keywords(loop):
    seen = []

    def factory(lp, coro, **kwargs):
        seen.append(kwargs)
        return asyncio.Task(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)
    ctx = contextvars.copy_context()
    task = loop.create_task(return_value(3), name="n", context=ctx,
                            eager_start=False)
    assert loop.run_until_complete(task) == 3
    assert seen == [{"name": "n", "context": ctx, "eager_start": False}]
    assert task.get_name() == "n"


@pytest.mark.skipif(sys.version_info < (3, 14),
                    reason="asyncio.capture_call_graph is new in 3.14")
def test_call_graph_knows_who_awaits(loop):
    # A task awaiting a future or a task is recorded in its awaited_by
    # while it waits, and forgotten once it wakes up.
    seen = {}

    async def inner():
        await asyncio.sleep(0)
        graph = asyncio.capture_call_graph()
        seen["inner"] = [g.future.get_name() for g in graph.awaited_by]

    async def waiter(fut):
        await fut

    async def main():
        await asyncio.create_task(inner(), name="inner")
        fut = loop.create_future()
        w = asyncio.create_task(waiter(fut), name="waiter")
        await asyncio.sleep(0)
        seen["fut"] = sorted(t.get_name() for t in fut._asyncio_awaited_by)
        fut.set_result(None)
        await w
        seen["after"] = fut._asyncio_awaited_by

    loop.run_until_complete(asyncio.Task(main(), loop=loop, name="main"))
    assert seen == {"inner": ["main"], "fut": ["waiter"], "after": None}


def test_set_task_factory_not_callable(loop):
    with pytest.raises(TypeError):
        loop.set_task_factory(1)


@requires_312
def test_eager_task_factory(loop):
    order = []

    async def body():
        order.append("body start")
        await asyncio.sleep(0)
        order.append("body end")
        return "eager"

    async def main():
        loop.set_task_factory(asyncio.eager_task_factory)
        task = loop.create_task(body())
        order.append("after create_task")
        return await task

    assert loop.run_until_complete(main()) == "eager"
    assert order == ["body start", "after create_task", "body end"]


@requires_312
def test_eager_task_finishes_synchronously(loop):
    async def body():
        return "sync"

    async def main():
        loop.set_task_factory(asyncio.eager_task_factory)
        task = loop.create_task(body())
        return task.done(), await task

    assert loop.run_until_complete(main()) == (True, "sync")


# ---------------------------------------------------------------------------
# TaskGroup, timeout, helpers


@requires_311
def test_taskgroup(loop):
    async def main():
        async with asyncio.TaskGroup() as tg:
            t1 = tg.create_task(return_value(1))
            t2 = tg.create_task(asyncio.sleep(0.001, 2))
        return t1.result(), t2.result()

    assert loop.run_until_complete(main()) == (1, 2)


@requires_311
def test_taskgroup_failure_cancels_siblings(loop):
    cancelled = []

    async def failing():
        await asyncio.sleep(0)
        raise ValueError("tg")

    async def sibling():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main():
        async with asyncio.TaskGroup() as tg:
            tg.create_task(sibling())
            tg.create_task(failing())

    with pytest.raises(ExceptionGroup) as info:  # noqa: F821
        loop.run_until_complete(main())
    assert info.group_contains(ValueError) if hasattr(
        info, "group_contains") else isinstance(
        info.value.exceptions[0], ValueError)
    assert cancelled == [True]


@requires_311
def test_timeout_expires(loop):
    async def main():
        async with asyncio.timeout(0.01) as cm:
            await asyncio.sleep(3600)
        return cm

    with pytest.raises(TimeoutError):
        loop.run_until_complete(main())


@requires_311
def test_timeout_not_expired(loop):
    async def main():
        async with asyncio.timeout(10) as cm:
            await asyncio.sleep(0)
        return cm.expired()

    assert loop.run_until_complete(main()) is False


@requires_311
def test_timeout_reschedule_and_when(loop):
    async def main():
        async with asyncio.timeout(None) as cm:
            assert cm.when() is None
            deadline = loop.time() + 0.01
            cm.reschedule(deadline)
            assert cm.when() == deadline
            await asyncio.sleep(3600)

    with pytest.raises(TimeoutError):
        loop.run_until_complete(main())


def test_wait_for_task_timeout(loop):
    cancelled = []

    async def slow():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    with pytest.raises(asyncio.TimeoutError):
        loop.run_until_complete(asyncio.wait_for(slow(), 0.01))
    assert cancelled == [True]


def test_gather_coroutines(loop):
    async def main():
        return await asyncio.gather(return_value(1), asyncio.sleep(0, 2))

    assert loop.run_until_complete(main()) == [1, 2]


def test_as_completed_tasks(loop):
    async def delayed(d, v):
        await asyncio.sleep(d)
        return v

    async def main():
        aws = [delayed(0.02, "slow"), delayed(0.001, "fast")]
        return [await f for f in asyncio.as_completed(aws)]

    assert loop.run_until_complete(main()) == ["fast", "slow"]


def test_shield_task(loop):
    async def inner():
        await asyncio.sleep(0.005)
        return "shielded"

    async def main():
        t = loop.create_task(inner())
        outer = asyncio.shield(t)
        await asyncio.sleep(0)
        outer.cancel()
        try:
            await outer
        except asyncio.CancelledError:
            pass
        return await t

    assert loop.run_until_complete(main()) == "shielded"


def test_to_thread(loop):
    import threading

    async def main():
        var.set("to_thread ctx")
        return await asyncio.to_thread(
            lambda: (threading.current_thread() is not
                     threading.main_thread(), var.get()))

    assert loop.run_until_complete(main()) == (True, "to_thread ctx")


# ---------------------------------------------------------------------------
# Runner and asyncio.run with a loop factory


@requires_311
def test_runner_with_loop_factory(loop_factory):
    async def main():
        return asyncio.get_running_loop()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        used = runner.run(main())
        assert runner.get_loop() is used
        assert runner.run(return_value("again")) == "again"
    assert isinstance(used, asyncio.AbstractEventLoop)
    assert used.is_closed()


@requires_311
def test_runner_loop_type_aioev(aioev):
    async def main():
        return type(asyncio.get_running_loop())

    with asyncio.Runner(loop_factory=aioev.new_event_loop) as runner:
        assert runner.run(main()) is aioev.Loop


@requires_311
def test_runner_debug_aioev(aioev):
    async def main():
        return asyncio.get_running_loop().get_debug()

    with asyncio.Runner(loop_factory=aioev.new_event_loop,
                        debug=True) as runner:
        assert runner.run(main()) is True


@requires_311
def test_runner_cancels_leftover_tasks(loop_factory):
    cancelled = []

    async def leftover():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main():
        asyncio.get_running_loop().create_task(leftover())
        await asyncio.sleep(0)

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    assert cancelled == [True]


def test_task_repr_while_waiting_on_future(loop):
    fut = loop.create_future()

    async def waiting_body():
        await fut

    task = loop.create_task(waiting_body())
    loop.run_until_complete(asyncio.sleep(0))
    r = repr(task)
    assert "pending" in r and "waiting_body" in r
    assert "wait_for=" in r
    # The waited-on future lists the task's wake-up callback.
    assert "cb=[" in repr(fut)
    fut.set_result(None)
    loop.run_until_complete(task)


def test_task_repr_while_waiting_on_task(loop):
    async def inner():
        await asyncio.sleep(3600)

    async def outer():
        await inner_task

    inner_task = loop.create_task(inner())
    outer_task = loop.create_task(outer())
    loop.run_until_complete(asyncio.sleep(0))
    assert "wait_for=" in repr(outer_task)
    assert "cb=[" in repr(inner_task)
    outer_task.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(outer_task)


def test_coroutine_raising_stop_iteration(loop):
    async def body():
        raise StopIteration("inside")

    task = loop.create_task(body())
    with pytest.raises(RuntimeError, match="StopIteration"):
        loop.run_until_complete(task)


def test_task_exception_never_retrieved_debug_traceback(loop, errors):
    loop.set_debug(True)

    async def body():
        raise ValueError("debug unretrieved")

    task = loop.create_task(body())
    loop.run_until_complete(asyncio.wait([task]))
    del task
    gc.collect()
    ctx = errors.take_one()
    assert ctx["message"] == "Task exception was never retrieved"
    assert ctx.get("source_traceback")


def test_task_cancel_busy_yielding(loop):
    async def spinner():
        while True:
            await asyncio.sleep(0)

    task = loop.create_task(spinner())
    loop.call_later(0.005, task.cancel)
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)


def test_task_result_reference_released(loop):
    class Result:
        pass

    async def body():
        return Result()

    task = loop.create_task(body())
    result = loop.run_until_complete(task)
    ref = weakref.ref(result)
    del result, task
    gc.collect()
    assert ref() is None


def test_task_coroutine_frame_released_after_done(loop):
    class Local:
        pass

    refs = []

    async def body():
        obj = Local()
        refs.append(weakref.ref(obj))
        await asyncio.sleep(0)

    task = loop.create_task(body())
    loop.run_until_complete(task)
    gc.collect()
    assert refs[0]() is None


# ---------------------------------------------------------------------------
# aioev.Task on either loop


def test_aioev_task_on_any_loop(loop, aioev):
    async def body():
        await asyncio.sleep(0.001)
        return asyncio.current_task()

    task = aioev.Task(body(), loop=loop)
    assert task in asyncio.all_tasks(loop)
    assert loop.run_until_complete(task) is task


def test_aioev_task_cancel_on_any_loop(loop, aioev):
    fut = loop.create_future()

    async def body():
        await fut

    task = aioev.Task(body(), loop=loop)
    loop.run_until_complete(asyncio.sleep(0))
    task.cancel("any")
    with pytest.raises(asyncio.CancelledError) as info:
        loop.run_until_complete(task)
    assert info.value.args == (("any",) if CANCEL_MSG_ARGS else ())
    assert fut.cancelled()


def test_aioev_task_subclass(loop, aioev):
    class MyTask(aioev.Task):
        pass

    def factory(lp, coro, **kwargs):
        return MyTask(coro, loop=lp, **kwargs)

    loop.set_task_factory(factory)

    async def body():
        return type(asyncio.current_task())

    assert loop.run_until_complete(loop.create_task(body())) is MyTask


def test_aioev_task_taskgroup_on_any_loop(loop, aioev):
    if sys.version_info < (3, 11):
        pytest.skip("needs Python 3.11+")
    loop.set_task_factory(
        lambda lp, coro, **kw: aioev.Task(coro, loop=lp, **kw))

    async def failing():
        await asyncio.sleep(0)
        raise KeyError("tg")

    async def main():
        async with asyncio.TaskGroup() as tg:
            tg.create_task(asyncio.sleep(3600))
            tg.create_task(failing())

    with pytest.raises(BaseExceptionGroup):  # noqa: F821
        loop.run_until_complete(main())


def test_cancel_after_awaited_future_completed(loop):
    """The future is done but the task has not woken: cancel still wins."""
    fut = loop.create_future()
    seen = []

    async def body():
        try:
            await fut
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        seen.append("resumed")

    task = loop.create_task(body())
    loop.run_until_complete(asyncio.sleep(0))
    fut.set_result(None)
    assert task.cancel() is True
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)
    assert seen == ["cancelled"]


def test_task_awaiting_itself(loop):
    async def body():
        await asyncio.current_task()

    task = loop.create_task(body())
    with pytest.raises(RuntimeError):
        loop.run_until_complete(task)


def test_coroutine_like_object(loop):
    """Tasks must drive any collections.abc.Coroutine, not only native ones
    (Cython and other compiled coroutines are such objects)."""
    import collections.abc

    class Wrapped(collections.abc.Coroutine):
        def __init__(self, coro):
            self._coro = coro
            self.sends = 0

        def send(self, value):
            self.sends += 1
            return self._coro.send(value)

        def throw(self, typ, val=None, tb=None):
            if val is None:
                return self._coro.throw(typ)
            return self._coro.throw(val)

        def close(self):
            return self._coro.close()

        def __await__(self):
            return self

        def __iter__(self):
            return self

        def __next__(self):
            return self.send(None)

    async def inner():
        await asyncio.sleep(0)
        await asyncio.sleep(0.001)
        return "wrapped"

    w = Wrapped(inner())
    task = loop.create_task(w)
    assert loop.run_until_complete(task) == "wrapped"
    assert w.sends >= 3

    fut = loop.create_future()

    async def waits():
        await fut

    w2 = Wrapped(waits())
    task2 = loop.create_task(w2)
    loop.run_until_complete(asyncio.sleep(0))
    task2.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task2)
    assert fut.cancelled()


def test_get_stack_limit(loop):
    async def level3():
        await asyncio.sleep(3600)

    task = loop.create_task(level3())
    loop.run_until_complete(asyncio.sleep(0))
    assert len(task.get_stack(limit=1)) == 1
    out = io.StringIO()
    task.print_stack(limit=1, file=out)
    assert "level3" in out.getvalue()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)


@requires_311
def test_timeout_external_cancel_is_not_timeout(loop):
    async def body():
        async with asyncio.timeout(10):
            await asyncio.sleep(3600)

    task = loop.create_task(body())
    loop.run_until_complete(asyncio.sleep(0))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)


@requires_311
def test_nested_timeouts(loop):
    async def body():
        async with asyncio.timeout(10):
            try:
                async with asyncio.timeout(0.005):
                    await asyncio.sleep(3600)
            except TimeoutError:
                pass
            await asyncio.sleep(0)
            return asyncio.current_task().cancelling()

    assert loop.run_until_complete(loop.create_task(body())) == 0


def test_remove_done_callback_eq_raises(loop):
    fut = loop.create_future()

    class Bad:
        def __call__(self, f):
            pass

        def __eq__(self, other):
            raise ZeroDivisionError("eq")

        __hash__ = object.__hash__

    fut.add_done_callback(Bad())
    fut.add_done_callback(print)
    with pytest.raises(ZeroDivisionError):
        fut.remove_done_callback(print)
    fut.cancel()
    loop.run_until_complete(asyncio.sleep(0))

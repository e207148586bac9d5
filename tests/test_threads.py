"""Threads: call_soon_threadsafe, thread checks, executors."""

import asyncio
import sys
import concurrent.futures
import threading
import time

import pytest


# ---------------------------------------------------------------------------
# call_soon_threadsafe


def test_call_soon_threadsafe_many_threads(loop):
    n_threads, per_thread = 16, 200
    total = n_threads * per_thread
    got = []
    done = loop.create_future()
    start = threading.Barrier(n_threads)

    def record(item):
        got.append(item)
        if len(got) == total:
            done.set_result(None)

    def worker(t):
        start.wait()
        for i in range(per_thread):
            loop.call_soon_threadsafe(record, (t, i))

    threads = [threading.Thread(target=worker, args=(t,))
               for t in range(n_threads)]
    for t in threads:
        loop.call_soon(t.start)
    try:
        loop.run_until_complete(asyncio.wait_for(done, 30))
    finally:
        for t in threads:
            t.join()
    assert sorted(got) == sorted((t, i) for t in range(n_threads)
                                 for i in range(per_thread))
    # Each thread's own calls keep their order.
    for t in range(n_threads):
        assert [i for (tt, i) in got if tt == t] == list(range(per_thread))


def test_call_soon_threadsafe_wakes_idle_loop(loop):
    woke = []

    def thread_main():
        time.sleep(0.05)
        loop.call_soon_threadsafe(lambda: (woke.append(1), loop.stop()))

    t = threading.Thread(target=thread_main)
    # Fallback so a missing wakeup fails the test instead of hanging it.
    fallback = loop.call_later(10, loop.stop)
    t.start()
    try:
        loop.run_forever()
    finally:
        t.join()
        fallback.cancel()
    assert woke == [1]


def test_call_soon_threadsafe_before_run(loop):
    calls = []
    t = threading.Thread(target=loop.call_soon_threadsafe,
                         args=(calls.append, "queued"))
    t.start()
    t.join()
    loop.run_until_complete(asyncio.sleep(0))
    assert calls == ["queued"]


def test_call_soon_threadsafe_handle_cancel(loop):
    calls = []
    h = loop.call_soon_threadsafe(calls.append, 1)
    h.cancel()
    loop.run_until_complete(asyncio.sleep(0))
    assert calls == []


def _needs_threadsafe_handle_lock(loop_kind):
    if loop_kind == "asyncio" and not hasattr(asyncio.events,
                                              "_ThreadSafeHandle"):
        pytest.skip("asyncio's threadsafe handles lock since 3.12.8/3.13.1")


@pytest.mark.parametrize("method", ["cancel", "cancelled"])
def test_threadsafe_handle_waits_for_its_running_callback(loop, loop_kind,
                                                          method):
    # cancel()/cancelled() from another thread while the callback runs
    # return only once it has finished: afterwards it is not running.
    _needs_threadsafe_handle_lock(loop_kind)
    started, finished = threading.Event(), threading.Event()
    seen = []

    def callback():
        started.set()
        time.sleep(0.2)  # GIL released: the other thread gets to call
        finished.set()

    def other():
        handle = loop.call_soon_threadsafe(callback)
        started.wait()
        result = getattr(handle, method)()
        seen.append((finished.is_set(), result))
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=other)
    t.start()
    loop.run_forever()
    t.join()
    assert seen == [(True, None if method == "cancel" else False)]


def test_threadsafe_handle_cancelled_by_its_callback(loop, loop_kind):
    # The callback's own thread does not wait on itself.
    _needs_threadsafe_handle_lock(loop_kind)
    box = concurrent.futures.Future()
    seen = []

    def callback():
        handle = box.result()
        handle.cancel()
        seen.append(handle.cancelled())
        # Another threadsafe handle run from inside this one.
        nested = loop.call_soon_threadsafe(seen.append, "nested")
        nested._run()
        nested.cancel()
        loop.stop()

    box.set_result(loop.call_soon_threadsafe(callback))
    loop.run_forever()
    assert seen == [True, "nested"]


def test_threadsafe_handle_cancelled_before_it_runs(loop, loop_kind):
    seen = []

    def other():
        handle = loop.call_soon_threadsafe(seen.append, "ran")
        handle.cancel()
        seen.append(handle.cancelled())
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    loop.run_forever()
    assert seen == [True]


def test_stop_from_other_thread(loop):
    started = threading.Event()
    loop.call_soon(started.set)

    def stopper():
        started.wait(10)
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=stopper)
    t.start()
    fallback = loop.call_later(10, loop.stop)
    try:
        loop.run_forever()
    finally:
        t.join()
        fallback.cancel()
    assert started.is_set()


def test_loop_running_in_other_thread(loop):
    started = threading.Event()
    loop.call_soon(started.set)
    t = threading.Thread(target=loop.run_forever)
    t.start()
    try:
        assert started.wait(10)
        assert loop.is_running()
        with pytest.raises(RuntimeError):
            loop.run_forever()

        async def work():
            await asyncio.sleep(0.001)
            return threading.current_thread()

        cf = asyncio.run_coroutine_threadsafe(work(), loop)
        assert cf.result(timeout=10) is t
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)
    assert not t.is_alive()
    assert not loop.is_running()


def test_run_coroutine_threadsafe_exception_and_cancel(loop):
    results = []

    async def fail():
        raise KeyError("threadsafe")

    async def forever():
        await asyncio.sleep(3600)

    def thread_main():
        cf = asyncio.run_coroutine_threadsafe(fail(), loop)
        try:
            cf.result(timeout=10)
        except KeyError as exc:
            results.append(("error", exc.args))
        cf2 = asyncio.run_coroutine_threadsafe(forever(), loop)
        cf2.cancel()
        try:
            cf2.result(timeout=10)
        except concurrent.futures.CancelledError:
            results.append("cancelled")
        loop.call_soon_threadsafe(loop.stop)

    t = threading.Thread(target=thread_main)
    loop.call_soon(t.start)
    fallback = loop.call_later(20, loop.stop)
    try:
        loop.run_forever()
    finally:
        t.join()
        fallback.cancel()
    # Let the cancelled task finish its cancellation.
    loop.run_until_complete(asyncio.sleep(0.001))
    assert results == [("error", ("threadsafe",)), "cancelled"]


# ---------------------------------------------------------------------------
# Thread checks in debug mode


@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at"])
def test_debug_call_from_other_thread_raises(loop, method):
    loop.set_debug(True)
    caught = []
    done = loop.create_future()

    def thread_main():
        try:
            if method == "call_soon":
                loop.call_soon(print)
            elif method == "call_later":
                loop.call_later(1, print)
            else:
                loop.call_at(loop.time() + 1, print)
        except RuntimeError as exc:
            caught.append(exc)
        loop.call_soon_threadsafe(done.set_result, None)

    t = threading.Thread(target=thread_main)
    loop.call_soon(t.start)
    loop.run_until_complete(done)
    t.join()
    assert len(caught) == 1
    assert "thread" in str(caught[0])


def test_debug_call_soon_from_other_thread_when_not_running(loop):
    # The check applies only while the loop runs in some thread.
    loop.set_debug(True)
    calls = []
    t = threading.Thread(target=loop.call_soon, args=(calls.append, 1))
    t.start()
    t.join()
    loop.run_until_complete(asyncio.sleep(0))
    assert calls == [1]


def test_create_task_from_thread_while_running_debug(loop, errors):
    loop.set_debug(True)
    caught = []
    done = loop.create_future()

    async def coro():
        pass

    def thread_main():
        c = coro()
        try:
            loop.create_task(c)
        except RuntimeError:
            caught.append(True)   # not the exception: its frames hold c
            c.close()
        loop.call_soon_threadsafe(done.set_result, None)

    t = threading.Thread(target=thread_main)
    loop.call_soon(t.start)
    loop.run_until_complete(done)
    t.join()
    assert len(caught) == 1
    # asyncio builds the Task before its call_soon fails, so the half-made
    # task may be reported as destroyed while pending; nothing else may be.
    import gc
    gc.collect()
    for ctx in errors.take():
        assert ctx["message"] == "Task was destroyed but it is pending!"


# ---------------------------------------------------------------------------
# Executors


def test_run_in_executor_default(loop):
    def work(a, b):
        return a + b, threading.current_thread() is threading.main_thread()

    fut = loop.run_in_executor(None, work, 2, 3)
    assert asyncio.isfuture(fut)
    assert loop.run_until_complete(fut) == (5, False)


def test_run_in_executor_exception(loop):
    def work():
        raise ArithmeticError("in executor")

    with pytest.raises(ArithmeticError, match="in executor"):
        loop.run_until_complete(loop.run_in_executor(None, work))


def test_run_in_executor_custom_executor(loop):
    names = []
    with concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="custom-pool") as ex:
        fut = loop.run_in_executor(
            ex, lambda: names.append(threading.current_thread().name) or 9)
        assert loop.run_until_complete(fut) == 9
    assert names[0].startswith("custom-pool")


def test_run_in_executor_many(loop):
    async def main():
        futs = [loop.run_in_executor(None, pow, i, 2) for i in range(100)]
        return await asyncio.gather(*futs)

    assert loop.run_until_complete(main()) == [i * i for i in range(100)]


def test_run_in_executor_cancel(loop):
    # One worker, kept busy: the second job is still queued when its
    # future is cancelled (a free worker may finish it first, and 3.14
    # hands back a future that is already done then).
    release = threading.Event()
    ran = []

    async def main(ex):
        blocker = loop.run_in_executor(ex, release.wait, 10)
        fut = loop.run_in_executor(ex, ran.append, "ran")
        assert fut.cancel()
        await asyncio.sleep(0)
        release.set()
        await blocker
        return fut.cancelled()

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ex:
        assert loop.run_until_complete(main(ex)) is True
    assert ran == []


def test_set_default_executor(loop):
    names = []
    ex = concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix="default-pool")
    loop.set_default_executor(ex)

    def work():
        names.append(threading.current_thread().name)

    loop.run_until_complete(loop.run_in_executor(None, work))
    assert names[0].startswith("default-pool")
    loop.run_until_complete(loop.shutdown_default_executor())
    assert ex._shutdown


def test_set_default_executor_type_check(loop):
    if sys.version_info < (3, 11):
        # 3.10 still accepts it, with a DeprecationWarning.
        with pytest.warns(DeprecationWarning):
            loop.set_default_executor(object())
        loop._default_executor = None
        return
    with pytest.raises(TypeError):
        loop.set_default_executor(object())


def test_shutdown_default_executor(loop):
    idents = []
    loop.run_until_complete(loop.run_in_executor(
        None, lambda: idents.append(threading.get_ident())))
    loop.run_until_complete(loop.shutdown_default_executor())
    # The worker thread was joined.
    assert all(t.ident not in idents for t in threading.enumerate())
    with pytest.raises(RuntimeError):
        loop.run_in_executor(None, print)


def test_shutdown_default_executor_without_executor(loop):
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.run_until_complete(loop.shutdown_default_executor())


def test_shutdown_default_executor_waits_for_work(loop):
    finished = []

    def slow():
        time.sleep(0.05)
        finished.append(True)

    async def main():
        loop.run_in_executor(None, slow)
        await loop.shutdown_default_executor()
        return list(finished)

    assert loop.run_until_complete(main()) == [True]


def test_executor_work_sees_no_running_loop(loop):
    def work():
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return "no loop"
        return "loop"

    assert loop.run_until_complete(
        loop.run_in_executor(None, work)) == "no loop"


def test_threadsafe_future_completion_from_executor(loop):
    fut = loop.create_future()

    def work():
        loop.call_soon_threadsafe(fut.set_result, "from worker")

    async def main():
        await loop.run_in_executor(None, work)
        return await fut

    assert loop.run_until_complete(main()) == "from worker"

"""A small but real asyncio program, run on the aioev event loop.

    python examples/hello.py          # after `bash scripts/quickstart.sh`
    python -m aioev examples/hello.py # same, through aioev's runner

It exercises the loop core: tasks, a producer/consumer queue, timers
(call_later / call_at, one of them cancelled), gather, wait_for, an
Event, cancellation with a message, a timeout (asyncio.timeout on 3.11+),
and call_soon_threadsafe from a worker thread.  Nothing here needs the
network, which aioev does not do yet.
"""

import asyncio
import sys
import threading
import time

import aioev


async def producer(queue, n):
    for i in range(n):
        await queue.put(i)
        await asyncio.sleep(0.001)
    await queue.put(None)  # sentinel


async def consumer(queue):
    total = 0
    while (item := await queue.get()) is not None:
        total += item * item
        queue.task_done()
    queue.task_done()
    return total


async def square_later(x, delay):
    await asyncio.sleep(delay)
    return x * x


def from_thread(loop, fut):
    # Runs in a plain thread: the only safe way back into the loop.
    time.sleep(0.01)
    loop.call_soon_threadsafe(fut.set_result, threading.current_thread().name)


async def main():
    loop = asyncio.get_running_loop()
    print(f"running on {type(loop).__module__}.{type(loop).__qualname__}")
    if not type(loop).__module__.startswith("aioev"):
        raise SystemExit("error: this is not the aioev loop")
    t0 = loop.time()

    # Producer / consumer over a queue.
    queue = asyncio.Queue(maxsize=4)
    _, total = await asyncio.gather(producer(queue, 20), consumer(queue))
    print(f"queue: sum of squares 0..19 = {total}")
    assert total == sum(i * i for i in range(20))

    # Many tasks at once, results in order.
    tasks = [asyncio.create_task(square_later(i, 0.01 * (5 - i)))
             for i in range(5)]
    print(f"gather: {await asyncio.gather(*tasks)}")

    # Timers: call_later, call_at, and a cancelled one.
    fired = []
    done = loop.create_future()
    loop.call_later(0.02, fired.append, "call_later")
    cancelled = loop.call_later(0.01, fired.append, "never")
    cancelled.cancel()
    loop.call_at(loop.time() + 0.03, done.set_result, None)
    await done
    print(f"timers fired: {fired} (the cancelled one did not)")
    assert fired == ["call_later"]

    # An Event set by a timer.
    event = asyncio.Event()
    loop.call_later(0.01, event.set)
    await asyncio.wait_for(event.wait(), timeout=1)
    print("event: set by a timer")

    # Cancellation with a message.
    sleeper = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    sleeper.cancel("no time to sleep")
    try:
        await sleeper
    except asyncio.CancelledError as exc:
        print(f"cancelled: {exc.args}")

    # Timeouts.
    try:
        if sys.version_info >= (3, 11):
            async with asyncio.timeout(0.02):
                await asyncio.sleep(10)
        else:
            await asyncio.wait_for(asyncio.sleep(10), timeout=0.02)
    except (asyncio.TimeoutError, TimeoutError):
        print("timeout: a 10 s sleep gave up after 20 ms")

    # A worker thread hands a result back with call_soon_threadsafe.
    fut = loop.create_future()
    worker = threading.Thread(target=from_thread, args=(loop, fut),
                              name="worker-1")
    worker.start()
    print(f"threadsafe: result from {await fut}")
    worker.join()

    print(f"all done in {loop.time() - t0:.3f} s of loop time")


if __name__ == "__main__":
    if sys.version_info >= (3, 12):
        asyncio.run(main(), loop_factory=aioev.new_event_loop)
    else:
        aioev.run(main())

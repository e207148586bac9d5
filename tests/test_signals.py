"""Signal handlers, Ctrl-C and fork."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest

pytestmark = pytest.mark.usefixtures("restore_signals")


def caught_by_kernel(sig):
    """True if this process has a handler installed for sig (SigCgt)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    return False  # pragma: no cover


def kill_self(sig):
    # Never deliver a signal whose default action would kill the test run.
    assert caught_by_kernel(sig), f"signal {sig} has no handler installed"
    os.kill(os.getpid(), sig)


def run_until(loop, predicate, timeout=5.0):
    async def wait():
        deadline = loop.time() + timeout
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError("condition not reached in time")
            await asyncio.sleep(0.001)
    loop.run_until_complete(wait())


# ---------------------------------------------------------------------------
# add_signal_handler / remove_signal_handler


def test_signal_handler_called(loop):
    calls = []

    def handler(*args):
        calls.append((args, loop.is_running(),
                      threading.current_thread() is threading.main_thread()))

    loop.add_signal_handler(signal.SIGUSR1, handler, "a", 2)
    loop.call_soon(kill_self, signal.SIGUSR1)
    run_until(loop, lambda: calls)
    assert calls == [(("a", 2), True, True)]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True


def test_signal_before_run_is_delivered_when_running(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "early")
    kill_self(signal.SIGUSR1)
    assert calls == []      # not called from the signal handler itself
    run_until(loop, lambda: calls)
    assert calls == ["early"]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_handler_multiple_deliveries(loop):
    calls = []

    def send_and_wait():
        kill_self(signal.SIGUSR1)

    loop.add_signal_handler(signal.SIGUSR1, calls.append, 1)
    for i in range(5):
        loop.call_soon(send_and_wait)
        run_until(loop, lambda: len(calls) == i + 1)
    assert calls == [1] * 5
    loop.remove_signal_handler(signal.SIGUSR1)


def test_two_signals(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "usr1")
    loop.add_signal_handler(signal.SIGUSR2, calls.append, "usr2")
    kill_self(signal.SIGUSR1)
    kill_self(signal.SIGUSR2)
    run_until(loop, lambda: len(calls) == 2)
    assert sorted(calls) == ["usr1", "usr2"]
    assert loop.remove_signal_handler(signal.SIGUSR1)
    assert loop.remove_signal_handler(signal.SIGUSR2)


def test_replace_signal_handler(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "first")
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "second")
    kill_self(signal.SIGUSR1)
    run_until(loop, lambda: calls)
    loop.run_until_complete(asyncio.sleep(0.005))
    assert calls == ["second"]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_handler_exception_goes_to_handler(loop, errors):
    calls = []

    def bad():
        calls.append(1)
        raise ValueError("in signal handler")

    loop.add_signal_handler(signal.SIGUSR1, bad)
    kill_self(signal.SIGUSR1)
    run_until(loop, lambda: calls)
    ctx = errors.take_one()
    assert isinstance(ctx["exception"], ValueError)
    loop.remove_signal_handler(signal.SIGUSR1)


def test_remove_signal_handler(loop):
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    assert caught_by_kernel(signal.SIGUSR1)
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert not caught_by_kernel(signal.SIGUSR1)


def test_remove_sigint_restores_default_int_handler(loop):
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    assert loop.remove_signal_handler(signal.SIGINT) is True
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigint_handler_replaces_keyboard_interrupt(loop):
    calls = []
    loop.add_signal_handler(signal.SIGINT, calls.append, "int")
    kill_self(signal.SIGINT)
    run_until(loop, lambda: calls)
    assert calls == ["int"]
    loop.remove_signal_handler(signal.SIGINT)


def test_close_removes_signal_handlers(loop):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    loop.add_signal_handler(signal.SIGUSR2, lambda: None)
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGUSR2) == signal.SIG_DFL
    assert not caught_by_kernel(signal.SIGUSR1)
    # The loop let go of the wakeup fd as well.
    assert signal.set_wakeup_fd(-1) == -1


def test_invalid_signal_numbers(loop):
    for sig in (0, -1, 1000, signal.NSIG):
        with pytest.raises(ValueError):
            loop.add_signal_handler(sig, lambda: None)
        with pytest.raises(ValueError):
            loop.remove_signal_handler(sig)


def test_signal_not_an_int(loop):
    with pytest.raises(TypeError):
        loop.add_signal_handler("SIGUSR1", lambda: None)
    with pytest.raises(TypeError):
        loop.remove_signal_handler(1.5)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP])
def test_uncatchable_signal(loop, sig):
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(sig, lambda: None)
    assert loop.remove_signal_handler(sig) is False


def test_signal_handler_coroutine_rejected(loop):
    async def coro_func():
        pass

    with pytest.raises(TypeError):
        loop.add_signal_handler(signal.SIGUSR1, coro_func)
    coro = coro_func()
    with pytest.raises(TypeError):
        loop.add_signal_handler(signal.SIGUSR1, coro)
    coro.close()
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_signal_handler_closed_loop(loop):
    loop.close()
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)


def test_add_signal_handler_from_thread(loop):
    caught = []

    def thread_main():
        try:
            loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        except (RuntimeError, ValueError) as exc:
            caught.append(exc)

    t = threading.Thread(target=thread_main)
    t.start()
    t.join()
    assert len(caught) == 1
    assert isinstance(caught[0], RuntimeError)
    assert loop.remove_signal_handler(signal.SIGUSR1) is False


def test_signal_handler_wakes_idle_loop(loop):
    """A signal arriving while the loop sleeps in its poll must wake it."""
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, lambda: (calls.append(1),
                                                    loop.stop()))
    timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1))
    # Fallback so a broken wakeup fails the test instead of hanging it.
    fallback = loop.call_later(10, loop.stop)
    timer.start()
    try:
        loop.run_forever()
    finally:
        timer.join()
        fallback.cancel()
    assert calls == [1]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_from_c_code_in_a_callback(loop):
    """A signal raised by C code as a callback's last act (no bytecode runs
    after it to notice) must be handled before the loop goes to sleep."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    seen = []

    def handler(signum, frame):
        seen.append("signal")
        loop.stop()

    signal.signal(signal.SIGUSR1, handler)
    # Fails the test instead of hanging it; runs only if the poll slept.
    fallback = loop.call_later(5, seen.append, "slept through it")
    loop.call_soon(libc.kill, os.getpid(), signal.SIGUSR1)
    loop.run_forever()
    fallback.cancel()
    assert seen == ["signal"]


def test_loop_reads_the_wakeup_fd_while_it_runs(loop, loop_kind):
    # aioev, like uvloop, is the wakeup fd's reader while it runs in the
    # main thread and nobody else has set one, so a signal that lands
    # just before the poll still ends it; asyncio leaves it unset. Taken
    # before the first poll that may sleep: probe after one.
    during = []

    def probe():
        fd = signal.set_wakeup_fd(-1)
        signal.set_wakeup_fd(fd)
        during.append(fd)

    assert signal.set_wakeup_fd(-1) == -1
    loop.call_later(0.001, probe)
    loop.run_until_complete(asyncio.sleep(0.01))
    if loop_kind == "aioev":
        assert during[0] != -1
        os.fstat(during[0])  # open while the loop runs
    else:
        assert during == [-1]
    assert signal.set_wakeup_fd(-1) == -1  # given back


def test_loop_keeps_a_wakeup_fd_set_by_someone_else(loop):
    r, w = os.pipe()
    try:
        os.set_blocking(w, False)
        signal.set_wakeup_fd(w)
        during = []

        def probe():
            fd = signal.set_wakeup_fd(-1)
            signal.set_wakeup_fd(fd)
            during.append(fd)

        loop.call_later(0.001, probe)
        loop.run_until_complete(asyncio.sleep(0.01))
        assert during == [w]
        assert signal.set_wakeup_fd(-1) == w
        # One set while the loop runs stays too.
        loop.call_later(0.001, signal.set_wakeup_fd, w)
        loop.run_until_complete(asyncio.sleep(0.01))
        assert signal.set_wakeup_fd(-1) == w
    finally:
        signal.set_wakeup_fd(-1)
        os.close(r)
        os.close(w)


def test_wakeup_fd_unset_during_the_run_stays_unset(loop):
    # add_signal_handler sets its fd, removing the last handler unsets it:
    # the run must not leave its own behind (its pipe closes with it).
    async def main():
        await asyncio.sleep(0.001)  # a poll that may sleep: fd taken
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        loop.remove_signal_handler(signal.SIGUSR1)

    assert signal.set_wakeup_fd(-1) == -1
    loop.run_until_complete(main())
    assert signal.set_wakeup_fd(-1) == -1


def test_loop_in_a_thread_leaves_the_wakeup_fd(loop_factory):
    seen = []

    def run():
        lp = loop_factory()
        try:
            lp.run_until_complete(asyncio.sleep(0.01))
        finally:
            lp.close()
        seen.append("ran")

    th = threading.Thread(target=run)
    th.start()
    th.join()
    assert seen == ["ran"]
    assert signal.set_wakeup_fd(-1) == -1


WAKEUP_SWAP_SCRIPT = textwrap.dedent("""
    # A signal landing while the loop checks whose the wakeup fd is (set
    # ours, see the old one, put it back) must reach the old one's reader:
    # add_signal_handler's turns its bytes into handler calls. The spy
    # raises the signal right inside that window; it has to be in place
    # before aioev keeps a reference to signal.set_wakeup_fd.
    import os, signal, sys
    kind, when = sys.argv[1], sys.argv[2]
    real = signal.set_wakeup_fd
    state = {"armed": False, "csock": None, "fired": False}

    def spy(fd, *args, **kwargs):
        old = real(fd, *args, **kwargs)
        if state["armed"] and fd not in (-1, state["csock"]):
            state["armed"] = False
            state["fired"] = True
            os.kill(os.getpid(), signal.SIGUSR1)
        return old

    signal.set_wakeup_fd = spy
    import asyncio
    if kind == "aioev":
        import aioev
        loop = aioev.new_event_loop()
    else:
        loop = asyncio.SelectorEventLoop()
    calls = []

    def handler():
        calls.append("handled")

    async def wait_for_handler():
        for _ in range(2000):
            if calls:
                return calls[0]
            await asyncio.sleep(0.001)
        return "lost"

    if when == "take":  # the run's start, with a handler set before
        loop.add_signal_handler(signal.SIGUSR1, handler)
        state["csock"] = loop._csock.fileno()
        state["armed"] = True
        loop.run_until_complete(asyncio.sleep(0.01))
    else:  # "give-back": the run's end, with a handler set during it
        async def add():
            loop.add_signal_handler(signal.SIGUSR1, handler)
            state["csock"] = loop._csock.fileno()
            state["armed"] = True
            await asyncio.sleep(0.01)
        loop.run_until_complete(add())
    where = "in the window"
    if not state["fired"]:  # asyncio never sets another fd: no window
        state["armed"] = False
        os.kill(os.getpid(), signal.SIGUSR1)
        where = "later"
    print(loop.run_until_complete(wait_for_handler()), where, flush=True)
    loop.close()
""")


@pytest.mark.parametrize("when", ["take", "give-back"])
def test_signal_during_wakeup_fd_check_reaches_handler(
        loop_kind, loop_factory, when, tmp_path, subprocess_env):
    script = tmp_path / "wakeup_swap.py"
    script.write_text(WAKEUP_SWAP_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), loop_kind, when],
                          capture_output=True, text=True, timeout=30,
                          env=subprocess_env)
    assert proc.returncode == 0, proc.stderr
    where = "in the window" if loop_kind == "aioev" else "later"
    assert proc.stdout.splitlines() == ["handled " + where], proc.stderr


# ---------------------------------------------------------------------------
# Ctrl-C in a child process

CTRL_C_SCRIPT = textwrap.dedent("""
    import asyncio, sys
    kind, mode = sys.argv[1], sys.argv[2]
    if kind == "aioev":
        import aioev
        loop = aioev.new_event_loop()
    else:
        loop = asyncio.SelectorEventLoop()

    def ready():
        print("ready", flush=True)

    def busy():
        loop.call_soon(busy)

    loop.call_soon(ready)
    try:
        if mode == "idle":
            loop.run_forever()
        elif mode == "sleep":
            loop.run_until_complete(asyncio.sleep(3600))
        elif mode == "busy":
            loop.call_soon(busy)
            loop.run_forever()
        elif mode == "timers":
            def tick():
                loop.call_later(0.001, tick)
            tick()
            loop.run_forever()
        print("run returned without KeyboardInterrupt", flush=True)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
    assert not loop.is_running()
    # The loop is usable after the interrupt and closes cleanly.
    print("again", loop.run_until_complete(asyncio.sleep(0, "ok")),
          flush=True)
    loop.close()
    print("closed", loop.is_closed(), flush=True)
""")


@pytest.mark.parametrize("mode", ["idle", "sleep", "busy", "timers"])
def test_ctrl_c_interrupts_run(loop_kind, loop_factory, mode, tmp_path,
                               subprocess_env):
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), loop_kind, mode],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=subprocess_env)
    try:
        first = proc.stdout.readline()
        assert first == "ready\n", (first, proc.stderr.read())
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["KeyboardInterrupt", "again ok",
                                "closed True"], err


def test_ctrl_c_with_signal_handler_in_child(loop_kind, loop_factory,
                                             tmp_path, subprocess_env):
    script = tmp_path / "ctrl_c_handler.py"
    script.write_text(textwrap.dedent("""
        import asyncio, signal, sys
        if sys.argv[1] == "aioev":
            import aioev
            loop = aioev.new_event_loop()
        else:
            loop = asyncio.SelectorEventLoop()
        loop.add_signal_handler(signal.SIGINT, lambda: (print("handled"),
                                                        loop.stop()))
        loop.call_soon(lambda: print("ready", flush=True))
        loop.run_forever()
        loop.close()
        print("closed", flush=True)
    """))
    proc = subprocess.Popen(
        [sys.executable, str(script), loop_kind],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=subprocess_env)
    try:
        first = proc.stdout.readline()
        assert first == "ready\n", (first, proc.stderr.read())
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.splitlines() == ["handled", "closed"], err


# ---------------------------------------------------------------------------
# fork


def _fork_and_wait(child_main):
    with warnings.catch_warnings():
        # 3.12+ warns about fork() in a multi-threaded process.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            code = child_main()
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_fork_child_runs_new_loop(loop, loop_factory):
    # The parent's loop has been used before the fork.
    loop.run_until_complete(asyncio.sleep(0.001))

    def child():
        lp = loop_factory()
        try:
            fired = []
            lp.call_later(0.001, fired.append, "timer")
            lp.call_soon(fired.append, "soon")
            lp.run_until_complete(asyncio.sleep(0.01))

            async def main():
                return await lp.run_in_executor(None, lambda: 41) + 1

            result = lp.run_until_complete(main())
            return 0 if (fired == ["soon", "timer"] and result == 42) else 3
        finally:
            lp.close()

    assert _fork_and_wait(child) == 0
    # The parent's loop still works after the fork.
    assert loop.run_until_complete(asyncio.sleep(0.001, "parent")) == "parent"


def test_fork_child_io_and_signals(loop, loop_factory):
    loop.run_until_complete(asyncio.sleep(0))

    def child():
        import socket
        lp = loop_factory()
        a, b = socket.socketpair()
        try:
            got = []
            lp.add_reader(a.fileno(), lambda: (got.append(a.recv(10)),
                                               lp.remove_reader(a.fileno())))
            lp.add_signal_handler(signal.SIGUSR1, got.append, "sig")
            b.send(b"io")
            lp.call_soon(os.kill, os.getpid(), signal.SIGUSR1)

            async def wait():
                for _ in range(5000):
                    if len(got) == 2:
                        return
                    await asyncio.sleep(0.001)

            lp.run_until_complete(wait())
            lp.remove_signal_handler(signal.SIGUSR1)
            return 0 if sorted(got, key=str) == [b"io", "sig"] else 3
        finally:
            a.close()
            b.close()
            lp.close()

    assert _fork_and_wait(child) == 0


def test_fork_inside_running_loop(loop, loop_factory):
    """fork() from a callback; the child starts over with a fresh loop."""
    results = []

    def do_fork():
        def child():
            # The child may not run the inherited loop; a new one must work
            # (asyncio.run-style code in forked workers does exactly this).
            asyncio.events._set_running_loop(None)
            lp = loop_factory()
            try:
                return 0 if lp.run_until_complete(
                    asyncio.sleep(0.001, 7)) == 7 else 3
            finally:
                lp.close()

        results.append(_fork_and_wait(child))

    loop.call_soon(do_fork)
    loop.run_until_complete(asyncio.sleep(0.001))
    assert results == [0]

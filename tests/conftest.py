"""Shared fixtures for the aioev test suite.

Most tests take the ``loop`` fixture, which is parametrized so that each test
runs once on stdlib asyncio (id ``asyncio``) and once on aioev (id ``aioev``).
asyncio is the reference: a test that fails on the ``asyncio`` variant is a
wrong test, not an aioev bug.

The ``loop`` fixture installs a recording exception handler (the ``errors``
fixture).  A test that expects the loop to report something takes ``errors``
and consumes the contexts with ``errors.take()``; anything left over at
teardown fails the test.  At teardown the fixture also closes the loop, runs
the garbage collector (so "never retrieved" / "destroyed but pending" reports
land in the test that caused them) and checks that no file descriptor was
leaked.
"""

import asyncio
import gc
import os
import signal

import pytest

LOOP_KINDS = ("asyncio", "aioev")


def import_aioev():
    """Return the aioev module, or skip the test if it is not built yet."""
    try:
        import aioev
    except ImportError as exc:  # pragma: no cover - only before the build
        pytest.skip(f"aioev is not importable: {exc}")
    if not hasattr(aioev, "new_event_loop"):  # pragma: no cover
        pytest.skip("aioev is not built yet (no aioev.new_event_loop)")
    return aioev


def open_fds():
    """The set of file descriptors open in this process right now."""
    try:
        return set(int(fd) for fd in os.listdir("/proc/self/fd"))
    except FileNotFoundError:  # pragma: no cover - not Linux
        return None


def describe_fd(fd):
    try:
        return f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}"
    except OSError:
        return str(fd)


def _subprocess_env():
    """Environment for child Pythons that must import this aioev checkout."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        import aioev
    except ImportError:
        aioev = None
    if getattr(aioev, "__file__", None):
        root = os.path.dirname(os.path.dirname(os.path.abspath(
            aioev.__file__)))
    paths = [root]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("PYTHONASYNCIODEBUG", None)
    return env


class ExceptionRecorder:
    """A loop exception handler that records every context it is given."""

    def __init__(self):
        self.contexts = []

    def __call__(self, loop, context):
        self.contexts.append(context)

    def take(self):
        """Return the recorded contexts and forget them."""
        contexts = list(self.contexts)
        self.contexts.clear()
        return contexts

    def take_one(self):
        """Return the only recorded context; fail unless there is one."""
        contexts = self.take()
        assert len(contexts) == 1, contexts
        return contexts[0]

    def __len__(self):
        return len(self.contexts)


@pytest.fixture(params=LOOP_KINDS)
def loop_kind(request):
    return request.param


@pytest.fixture
def loop_factory(loop_kind):
    """A callable making a new, unconfigured loop of the kind under test."""
    if loop_kind == "asyncio":
        # Not asyncio.new_event_loop(): that goes through the policy, which a
        # broken test could have left set to aioev's.
        return asyncio.SelectorEventLoop
    return import_aioev().new_event_loop


@pytest.fixture
def errors():
    return ExceptionRecorder()


@pytest.fixture
def loop(loop_factory, errors):
    fds_before = open_fds()
    lp = loop_factory()
    lp.set_exception_handler(errors)
    yield lp
    assert not lp.is_running(), "test left the loop running"
    if not lp.is_closed():
        lp.close()
    asyncio.set_event_loop(None)
    del lp
    gc.collect()
    leftover = errors.take()
    assert not leftover, (
        f"unexpected calls to the loop's exception handler: {leftover!r}")
    if fds_before is not None:
        leaked = open_fds() - fds_before
        assert not leaked, "file descriptors leaked: " + ", ".join(
            describe_fd(fd) for fd in sorted(leaked))


@pytest.fixture
def aioev():
    """The aioev module (aioev-only tests)."""
    return import_aioev()


@pytest.fixture
def aioev_loop(aioev, errors):
    """A checked aioev loop, for tests that are about aioev itself."""
    lp = aioev.new_event_loop()
    lp.set_exception_handler(errors)
    yield lp
    assert not lp.is_running(), "test left the loop running"
    if not lp.is_closed():
        lp.close()
    del lp
    gc.collect()
    leftover = errors.take()
    assert not leftover, (
        f"unexpected calls to the loop's exception handler: {leftover!r}")


@pytest.fixture
def restore_policy():
    """Put back the event loop policy a test changes."""
    saved = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(saved)


@pytest.fixture
def restore_signals():
    """Put back the handlers and wakeup fd of the signals tests touch."""
    sigs = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT, signal.SIGALRM)
    saved = {sig: signal.getsignal(sig) for sig in sigs}
    yield
    for sig, handler in saved.items():
        if handler is not None:
            signal.signal(sig, handler)
    signal.set_wakeup_fd(-1)


@pytest.fixture
def subprocess_env():
    """os.environ plus a PYTHONPATH under which children import aioev."""
    return _subprocess_env()


def pytest_collection_finish(session):
    # The loop fixture runs a full collection after every test.  Freezing
    # what exists after collection keeps those passes short.
    gc.collect()
    gc.freeze()

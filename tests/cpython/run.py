#!/usr/bin/env python3
"""Run CPython's own ``test.test_asyncio`` suites against aioev.

Usage::

    python tests/cpython/run.py                      # all modules, aioev
    python tests/cpython/run.py --module test_tasks -v
    python tests/cpython/run.py --loop asyncio       # baseline: stock loop,
                                                     # asyncio's C Future/Task
    python tests/cpython/run.py -k call_soon --module test_events
    python tests/cpython/run.py --list               # print selected ids
    python tests/cpython/run.py --network            # + networking tests
    python tests/cpython/run.py --network -m test_streams --loop asyncio

The tests come from the standard library of the interpreter that runs this
script (``python -c "import test.test_asyncio"`` must work: pyenv and most
distributions' ``python3-test`` package ship it).

How the loop under test gets in
-------------------------------
* ``asyncio.DefaultEventLoopPolicy._loop_factory`` is set to the loop class
  before any test module is imported.  Every test module's
  ``tearDownModule`` calls ``set_event_loop_policy(None)``; patching the
  class (not installing a policy object) survives that.  So
  ``asyncio.new_event_loop()``, ``asyncio.run()``, ``asyncio.Runner`` and
  ``unittest.IsolatedAsyncioTestCase`` all run on the loop under test.
* Where CPython plugs its C classes into shared test bases, we plug ours the
  same way, in new classes named ``Impl*`` (``Impl`` = the implementation
  under test: aioev's, or asyncio's C one with ``--loop asyncio``):

  ==============  =========================================================
  test_futures    ImplFutureTests, ImplSubFutureTests (cls=Future),
                  ImplFutureDoneCallbackTests, ImplSubFutureDoneCallbackTests,
                  ImplFutureInheritanceTests
  test_futures2   ImplFutureTests (cls=Task)
  test_tasks      ImplTask_ImplFuture_Tests (+SetMethodsTest),
                  ImplTask_ImplFuture_SubclassTests (add_subclass_tests),
                  ImplTask_PyFuture_Tests, PyTask_ImplFuture_Tests,
                  ImplCurrentLoopTests
  test_events     ImplEventLoopTests (EventLoopTestsMixin,
                  create_event_loop -> Loop(); with --network
                  UnixEventLoopTestsMixin, i.e. + a child watcher, as
                  CPython's Unix loop classes)
  --network only:
  test_sock_lowlevel  ImplSockTests (BaseSockTestsMixin,
                  create_event_loop -> Loop())
  test_sendfile   ImplSendfileTests (SendfileTestsBase,
                  create_event_loop -> Loop())
  test_server     ImplStartServerTests (BaseStartServer, new_loop -> Loop())
  test_buffered_proto  ImplBufferedProtocolTests (BaseTestBufferedProtocol,
                  new_loop -> Loop())
  test_sslproto   ImplStartTLSTests (BaseStartTLS, new_loop -> Loop())
  ==============  =========================================================

  The tests CPython defines directly on its stock-loop class of those
  modules (e.g. ``SelectorStartServerTests.test_start_unix_server_1``) are
  copied into the Impl class.  test_streams, test_protocols,
  test_transports, test_ssl, test_subprocess, the functional tests of
  test_unix_events and the IsolatedAsyncioTestCase classes of test_server
  get their loop from ``asyncio.new_event_loop()`` / ``asyncio.Runner``,
  i.e. from the patched policy: nothing to plug.

  The C-only test methods of CPython's ``CFutureTests`` /
  ``CTask_CFuture_Tests`` (``del`` of C slots must not crash, ...) are copied
  into the Impl classes, since our Future and Task are C types too.
  ``BaseFutureTests``/``BaseTaskTests`` run on the fake-clock ``TestLoop``
  (a foreign loop): that is intended, it proves our Future/Task work there.
* test_pep492 and test_runners build an ``asyncio.BaseEventLoop`` with a
  mocked selector in their ``BaseTest``; that hook is replaced to build the
  loop under test (a trivial Python subclass of it for test_runners, which
  sets attributes on the loop).

Selection rules (what is NOT run, and is not listed in skips.txt)
-----------------------------------------------------------------
1. Classes that test stdlib implementations and involve neither our loop nor
   our Future/Task, replaced by the Impl classes above:
   test_futures ``(C|Py)(Sub)?Future(DoneCallback|Inheritance)?Tests``;
   test_futures2 ``(C|Py)FutureTests``;
   test_tasks ``(C|Py)Task*_(C|Py)Future*Tests`` and
   ``(C|Py)IntrospectionTests`` (``_register_task``/``_enter_task``
   implementations);
   test_events ``(Select|EPoll|Poll|Kqueue|Proactor)EventLoopTests``
   (the stock selector loops); with --network also test_sock_lowlevel and
   test_sendfile ``(Select|EPoll|Poll|Kqueue|Proactor)EventLoopTests``,
   test_server ``(Selector|Proactor)StartServerTests``, test_buffered_proto
   ``BufferedProtocol(Selector|Proactor)Tests``.
2. Network tests -- the networking milestone; ``--network`` selects them.
   Without --network, in ImplEventLoopTests every test whose name matches
   NETWORK_RE below (``connect|server|datagram|sock|ssl|unix|sendfile|
   prompt_cancellation``) is left out, and the
   ``TestServer``/``TestAbstractServer`` classes of test_events too, and
   the NETWORK_MODULES (test_sock_lowlevel, test_streams, test_server,
   test_buffered_proto, test_sendfile, test_protocols, test_transports,
   test_ssl, test_sslproto) are not run.  What remains:
   run_until_complete*, call_soon*, call_later, run_in_executor*,
   reader/writer callbacks, add/remove fds after closing, signal handling,
   close*, pipes, ptys and subprocesses (test_subprocess, test_unix_events
   too).  With --network, the network tests and modules are run too.
3. Modules missing from a Python version (test_timeouts, test_taskgroups on
   3.10; test_eager_task_factory, test_staggered before 3.12; test_graph,
   test_free_threading, test_tools before 3.14) are skipped with a note.

Everything else that is skipped or expected to fail is in ONE file,
``skips.txt`` next to this script, each entry with its reason.

Isolation and hangs
-------------------
Each module runs in its own child process (``-j`` of them at a time).  Each
test is guarded by ``faulthandler.dump_traceback_later(--timeout,
exit=True)``: a hang dumps all threads' stacks and kills the child.  When a
child dies (hang, segfault, abort in libev), the test it was running is
recorded as an error (``CRASH``/``TIMEOUT``) and the child is restarted to
run the rest of the module.

Exit status
-----------
0 when the pass rate passed / (passed + failed + errors) is at least
``--min-pass-rate`` percent (default 95) and, with ``--strict``, there are
no failures or errors at all.  Crashes and timeouts always make it non-zero
unless ``--allow-crashes``.  2 on usage/setup errors.
"""

import argparse
import fnmatch
import json
import os
import re
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SKIPS_FILE = os.path.join(HERE, "skips.txt")
PKG = "test.test_asyncio."

MODULES = [
    "test_futures", "test_futures2", "test_tasks", "test_locks",
    "test_queues", "test_timeouts", "test_taskgroups", "test_runners",
    "test_waitfor", "test_pep492", "test_context", "test_threads",
    "test_events", "test_subprocess", "test_unix_events",
    "test_eager_task_factory", "test_staggered", "test_graph",
    "test_free_threading", "test_tools",
]
# Run only with --network (see rule 2).
NETWORK_MODULES = [
    "test_sock_lowlevel", "test_streams", "test_server",
    "test_buffered_proto", "test_sendfile", "test_protocols",
    "test_transports", "test_ssl", "test_sslproto",
]
# Heaviest first, so that -j 2 finishes early.
ORDER = ["test_tasks", "test_subprocess", "test_events", "test_locks",
         "test_waitfor", "test_unix_events",
         "test_futures", "test_queues", "test_taskgroups", "test_timeouts",
         "test_runners", "test_threads", "test_futures2", "test_pep492",
         "test_context", "test_streams", "test_sock_lowlevel",
         "test_sendfile", "test_ssl", "test_server", "test_sslproto",
         "test_buffered_proto", "test_protocols", "test_transports",
         "test_eager_task_factory", "test_free_threading", "test_graph",
         "test_staggered", "test_tools"]

# Rule 2; matched against the test method name of ImplEventLoopTests.
# NETWORK_RE: run with --network only.
NETWORK_RE = re.compile(
    r"connect|server|datagram|sock|ssl|unix|sendfile|prompt_cancellation")

# Rule 1: classes of stdlib-only variants, replaced by Impl* classes.
EXCLUDED_CLASSES = {
    "test_futures": [r"(C|Py)(Sub)?Future(DoneCallback|Inheritance)?Tests"],
    "test_futures2": [r"(C|Py)FutureTests"],
    "test_tasks": [r"(C|Py)Task\w*_(C|Py)Future\w*Tests",
                   r"(C|Py)IntrospectionTests"],
    "test_events": [r"(Select|EPoll|Poll|Kqueue|Proactor)EventLoopTests"],
    "test_sock_lowlevel": [
        r"(Select|EPoll|Poll|Kqueue|Proactor)EventLoopTests"],
    "test_sendfile": [r"(Select|EPoll|Poll|Kqueue|Proactor)EventLoopTests"],
    "test_server": [r"(Selector|Proactor)StartServerTests"],
    "test_buffered_proto": [r"BufferedProtocol(Selector|Proactor)Tests"],
    "test_sslproto": [r"(Selector|Proactor)StartTLSTests"],
}
# Rule 2: classes left out without --network.
NETWORK_CLASSES = {
    "test_events": [r"TestServer", r"TestAbstractServer"],
}


def short_id(test_id):
    return test_id[len(PKG):] if test_id.startswith(PKG) else test_id


# --------------------------------------------------------------------------
# skips.txt
# --------------------------------------------------------------------------

def _version_ok(cond):
    m = re.fullmatch(r"py(>=|<=|==|<|>|!=)(\d+)\.(\d+)", cond)
    if not m:
        raise ValueError("bad condition %r" % cond)
    op, want = m.group(1), (int(m.group(2)), int(m.group(3)))
    have = sys.version_info[:2]
    return {">=": have >= want, "<=": have <= want, "==": have == want,
            "<": have < want, ">": have > want, "!=": have != want}[op]


def load_skips(path, loop_kind, network=False):
    """Parse skips.txt.

    Line format:  KIND  PATTERN  [CONDITION ...]  --  REASON
      KIND       skip | xfail
      PATTERN    short test id (module.Class.test_name), fnmatch wildcards ok
      CONDITION  py>=3.12, py<3.11 ... ; loop=aioev | loop=asyncio ;
                 network (only with --network)
    Returns a list of dicts (only the entries whose conditions hold).
    """
    entries = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if " -- " not in line:
                raise SystemExit("%s:%d: missing ' -- reason'" % (path, lineno))
            head, reason = line.split(" -- ", 1)
            parts = head.split()
            if len(parts) < 2 or parts[0] not in ("skip", "xfail"):
                raise SystemExit("%s:%d: expected 'skip|xfail PATTERN ...'"
                                 % (path, lineno))
            kind, pattern, conds = parts[0], parts[1], parts[2:]
            ok = True
            for c in conds:
                if c.startswith("loop="):
                    ok = ok and c[5:] == loop_kind
                elif c == "network":
                    ok = ok and network
                else:
                    ok = ok and _version_ok(c)
            if ok:
                entries.append(dict(kind=kind, pattern=pattern,
                                    reason=reason.strip(), line=lineno))
    return entries


def match_skip(entries, sid):
    for e in entries:
        if fnmatch.fnmatchcase(sid, e["pattern"]):
            return e
    return None


# ==========================================================================
# Child: runs one module, writes JSON lines.
# ==========================================================================

class Impl:
    """The implementation under test."""
    kind = None
    Loop = None      # class; Loop() gives a new loop
    Future = None
    Task = None
    LoopSubclass = None  # Python subclass of Loop (instances get a __dict__)


def setup_impl(kind):
    import asyncio
    from asyncio import futures, tasks

    Impl.kind = kind
    if kind == "aioev":
        try:
            import aioev
            aioev.Loop
        except (ImportError, AttributeError):
            sys.modules.pop("aioev", None)
            sys.path.insert(0, ROOT)
            import aioev
        Impl.Loop = aioev.Loop
        Impl.Future = aioev.Future
        Impl.Task = aioev.Task
        # staticmethod: works whatever kind of callable Loop is.
        asyncio.DefaultEventLoopPolicy._loop_factory = staticmethod(aioev.Loop)
    else:
        Impl.Loop = asyncio.DefaultEventLoopPolicy._loop_factory
        Impl.Future = futures._CFuture
        Impl.Task = tasks._CTask
    asyncio.set_event_loop_policy(None)

    class LoopSubclass(Impl.Loop):
        pass
    Impl.LoopSubclass = LoopSubclass

    # Sanity check: the policy must hand out our loop.
    loop = asyncio.new_event_loop()
    try:
        if type(loop) is not Impl.Loop:
            raise SystemExit("policy patch failed: new_event_loop() gave %r"
                             % (type(loop),))
    finally:
        loop.close()
    asyncio.set_event_loop(None)


def _copy_own_tests(src, dst):
    """Copy test_* methods defined directly on class src onto dst."""
    if src is None:
        return
    for name, value in vars(src).items():
        if name.startswith("test_") and callable(value) \
                and not hasattr(dst, name):
            setattr(dst, name, value)


def _copy_own_members(src, dst, factories=("create_event_loop", "new_loop")):
    """Copy the test_* methods and helpers (``_basetest_*`` ...) defined
    directly on class src onto dst; not the loop factory, not dunders."""
    if src is None:
        return
    for name, value in vars(src).items():
        if name in factories or name.startswith("__") or hasattr(dst, name):
            continue
        if callable(value) or isinstance(value, (staticmethod, classmethod)):
            setattr(dst, name, value)


def _add_class(mod, name, bases, ns):
    ns = dict(ns)
    ns["__module__"] = mod.__name__
    ns["__qualname__"] = name
    cls = type(name, bases, ns)
    setattr(mod, name, cls)
    return cls


def extra_classes(modname, mod, network=False):
    """Create the Impl* classes / re-hook loop factories of one module.

    Returns (classes to add, per-class method filter).
    """
    from test.test_asyncio import utils as test_utils
    from asyncio import futures, tasks
    import asyncio
    import unittest

    added = []
    method_filter = {}

    if modname == "test_futures":
        Future = Impl.Future

        class SubFuture(Future):
            pass

        c = _add_class(mod, "ImplFutureTests",
                       (mod.BaseFutureTests, test_utils.TestCase),
                       {"cls": Future})
        _copy_own_tests(getattr(mod, "CFutureTests", None), c)
        added.append(c)
        added.append(_add_class(mod, "ImplSubFutureTests",
                                (mod.BaseFutureTests, test_utils.TestCase),
                                {"cls": SubFuture}))
        added.append(_add_class(
            mod, "ImplFutureDoneCallbackTests",
            (mod.BaseFutureDoneCallbackTests, test_utils.TestCase),
            {"_new_future": lambda self: Future(loop=self.loop)}))
        added.append(_add_class(
            mod, "ImplSubFutureDoneCallbackTests",
            (mod.BaseFutureDoneCallbackTests, test_utils.TestCase),
            {"_new_future": lambda self: SubFuture(loop=self.loop)}))
        added.append(_add_class(
            mod, "ImplFutureInheritanceTests",
            (mod.BaseFutureInheritanceTests, test_utils.TestCase),
            {"_get_future_cls": lambda self: Future}))

    elif modname == "test_futures2":
        added.append(_add_class(
            mod, "ImplFutureTests",
            (mod.FutureTests, __import__("unittest").IsolatedAsyncioTestCase),
            {"cls": Impl.Task}))

    elif modname == "test_tasks":
        base = (mod.BaseTaskTests, test_utils.TestCase)
        # 3.14: BaseTaskTests calls self.all_tasks / self.current_task
        # (class attributes CPython sets per C/Py variant).
        if "all_tasks" in vars(mod.BaseTaskTests):
            c_ns = {"all_tasks": staticmethod(getattr(tasks, "_c_all_tasks",
                                                      asyncio.all_tasks)),
                    "current_task": staticmethod(getattr(
                        tasks, "_c_current_task", asyncio.current_task))}
            py_ns = {"all_tasks": staticmethod(tasks._py_all_tasks),
                     "current_task": staticmethod(tasks._py_current_task)}
        else:
            c_ns = py_ns = {}
        c = _add_class(mod, "ImplTask_ImplFuture_Tests",
                       (mod.BaseTaskTests, mod.SetMethodsTest,
                        test_utils.TestCase),
                       {"Task": Impl.Task, "Future": Impl.Future, **c_ns})
        _copy_own_tests(getattr(mod, "CTask_CFuture_Tests", None), c)
        added.append(c)
        c = _add_class(mod, "ImplTask_ImplFuture_SubclassTests", base,
                       {"Task": Impl.Task, "Future": Impl.Future, **c_ns})
        added.append(mod.add_subclass_tests(c))
        added.append(_add_class(mod, "ImplTask_PyFuture_Tests", base,
                                {"Task": Impl.Task,
                                 "Future": futures._PyFuture, **c_ns}))
        added.append(_add_class(mod, "PyTask_ImplFuture_Tests", base,
                                {"Task": tasks._PyTask,
                                 "Future": Impl.Future, **py_ns}))
        Task = Impl.Task
        ns = {"new_task": lambda self, coro: Task(coro, loop=self.loop)}
        if "current_task" in vars(mod.BaseCurrentLoopTests):
            ns["current_task"] = staticmethod(asyncio.current_task)
        added.append(_add_class(mod, "ImplCurrentLoopTests",
                                (mod.BaseCurrentLoopTests,
                                 test_utils.TestCase), ns))

    elif modname == "test_events":
        def create_event_loop(self):
            return Impl.Loop()
        mixin = mod.EventLoopTestsMixin
        if network:
            mixin = getattr(mod, "UnixEventLoopTestsMixin", mixin)
        c = _add_class(mod, "ImplEventLoopTests",
                       (mixin, test_utils.TestCase),
                       {"create_event_loop": create_event_loop})
        added.append(c)
        if not network:
            method_filter[c] = lambda name: not NETWORK_RE.search(name)

    elif modname in ("test_sock_lowlevel", "test_sendfile"):
        def create_event_loop(self):
            return Impl.Loop()
        base = (mod.BaseSockTestsMixin if modname == "test_sock_lowlevel"
                else mod.SendfileTestsBase)
        name = ("ImplSockTests" if modname == "test_sock_lowlevel"
                else "ImplSendfileTests")
        c = _add_class(mod, name, (base, test_utils.TestCase),
                       {"create_event_loop": create_event_loop})
        # On Unix, the last stock class defined (the one that always
        # exists) is SelectEventLoopTests.
        _copy_own_members(getattr(mod, "SelectEventLoopTests", None), c)
        added.append(c)

    elif modname in ("test_server", "test_buffered_proto", "test_sslproto"):
        def new_loop(self):
            return Impl.Loop()
        if modname == "test_server":
            base, name = mod.BaseStartServer, "ImplStartServerTests"
            stock = getattr(mod, "SelectorStartServerTests", None)
        elif modname == "test_sslproto":
            base, name = mod.BaseStartTLS, "ImplStartTLSTests"
            stock = getattr(mod, "SelectorStartTLSTests", None)
        else:
            base, name = (mod.BaseTestBufferedProtocol,
                          "ImplBufferedProtocolTests")
            stock = getattr(mod, "BufferedProtocolSelectorTests", None)
        c = _add_class(mod, name, (base, unittest.TestCase),
                       {"new_loop": new_loop})
        _copy_own_members(stock, c)
        added.append(c)

    elif modname == "test_pep492":
        def setUp(self):
            test_utils.TestCase.setUp(self)
            self.loop = Impl.Loop()
            self.set_event_loop(self.loop)
        mod.BaseTest.setUp = setUp

    elif modname == "test_runners":
        def new_loop(self):
            loop = Impl.LoopSubclass()
            loop.shutdown_ag_run = False
            orig = loop.shutdown_asyncgens

            async def shutdown_asyncgens():
                loop.shutdown_ag_run = True
                await orig()
            loop.shutdown_asyncgens = shutdown_asyncgens
            return loop
        mod.BaseTest.new_loop = new_loop

    return added, method_filter


def build_suite(modname, kfilters, network=False):
    import importlib
    import unittest

    mod = importlib.import_module(PKG + modname)
    added, method_filter = extra_classes(modname, mod, network)
    patterns = list(EXCLUDED_CLASSES.get(modname, []))
    if not network:
        patterns += NETWORK_CLASSES.get(modname, [])
    excluded = [re.compile(p + r"\Z") for p in patterns]
    loader = unittest.TestLoader()

    classes = []
    for name, obj in vars(mod).items():
        if isinstance(obj, type) and issubclass(obj, unittest.TestCase) \
                and obj.__module__ == mod.__name__ and obj not in added:
            if any(r.match(name) for r in excluded):
                continue
            classes.append(obj)
    classes += added

    tests = []
    for cls in classes:
        keep = method_filter.get(cls, lambda n: True)
        for name in loader.getTestCaseNames(cls):
            if keep(name):
                tests.append(cls(name))
    if kfilters:
        def kmatch(t):
            sid = short_id(t.id())
            return any(fnmatch.fnmatchcase(sid, k if "*" in k else "*%s*" % k)
                       for k in kfilters)
        tests = [t for t in tests if kmatch(t)]
    # One suite per class, so class fixtures run once.
    suite = unittest.TestSuite()
    by_class = {}
    for t in tests:
        by_class.setdefault(type(t), []).append(t)
    for ts in by_class.values():
        suite.addTest(unittest.TestSuite(ts))
    return mod, suite, tests


def apply_skips(tests, entries):
    """Make matching tests skip / expect failure; return used line numbers."""
    used = set()
    for t in tests:
        e = match_skip(entries, short_id(t.id()))
        if e is None:
            continue
        used.add(e["line"])
        name = t._testMethodName
        orig = getattr(t, name)
        reason = "skips.txt:%d: %s" % (e["line"], e["reason"])
        if e["kind"] == "skip":
            def stub(*a, **kw):
                pass
            stub.__unittest_skip__ = True
            stub.__unittest_skip_why__ = reason
            setattr(t, name, stub)
        else:
            def make(orig):
                def wrapper(*a, **kw):
                    return orig(*a, **kw)
                return wrapper
            w = make(orig)
            w.__unittest_expecting_failure__ = True
            setattr(t, name, w)
            t._aioev_xfail_reason = reason
    return used


def child_main(args):
    import faulthandler
    import traceback
    import unittest
    import warnings

    out = open(args.results, "a", buffering=1, encoding="utf-8")

    def emit(**rec):
        out.write(json.dumps(rec) + "\n")
        out.flush()

    try:
        setup_impl(args.loop)
        entries = (load_skips(args.skips, args.loop, args.network)
                   if args.skips else [])
        mod, suite, tests = build_suite(args.child, args.k, args.network)
    except SystemExit:
        raise
    except BaseException:
        emit(event="fatal", detail=traceback.format_exc())
        return 3

    done = set()
    if args.done:
        with open(args.done, encoding="utf-8") as f:
            done = set(line.strip() for line in f if line.strip())
    if done:
        tests = [t for t in tests if t.id() not in done]
        keep = set(map(id, tests))

        def prune(s):
            new = unittest.TestSuite()
            for x in s:
                if isinstance(x, unittest.TestSuite):
                    x = prune(x)
                    if x.countTestCases():
                        new.addTest(x)
                elif id(x) in keep:
                    new.addTest(x)
            return new
        suite = prune(suite)

    if args.list:
        for t in tests:
            e = match_skip(entries, short_id(t.id()))
            print(short_id(t.id()) + ("   [%s]" % e["kind"] if e else ""))
        return 0

    emit(event="skips_used", lines=sorted(apply_skips(tests, entries)))
    timeout = args.timeout

    class Result(unittest.TestResult):
        def __init__(self):
            super().__init__()
            self.outcome = None
            self.detail = None
            self.t0 = 0

        def _set(self, outcome, detail=None):
            rank = ["pass", "skip", "xfail", "xpass", "fail", "error"]
            if self.outcome is None or rank.index(outcome) > rank.index(self.outcome):
                self.outcome, self.detail = outcome, detail

        def startTest(self, test):
            super().startTest(test)
            self.outcome = None
            self.detail = None
            self.t0 = time.monotonic()
            emit(event="start", id=test.id())
            faulthandler.dump_traceback_later(timeout, exit=True)

        def stopTest(self, test):
            faulthandler.cancel_dump_traceback_later()
            super().stopTest(test)
            emit(event="result", id=test.id(), outcome=self.outcome or "pass",
                 detail=self.detail,
                 time=round(time.monotonic() - self.t0, 3))

        def addSuccess(self, test):
            self._set("pass")

        def addFailure(self, test, err):
            self._set("fail", self._exc_info_to_string(err, test))

        def addError(self, test, err):
            if not isinstance(test, unittest.TestCase):
                # setUpClass/tearDownModule ... failures (_ErrorHolder)
                emit(event="result", id=getattr(test, "description", str(test)),
                     outcome="error", detail=self._exc_info_to_string(err, test),
                     time=0)
                return
            self._set("error", self._exc_info_to_string(err, test))

        def addSkip(self, test, reason):
            self._set("skip", reason)

        def addExpectedFailure(self, test, err):
            self._set("xfail", getattr(test, "_aioev_xfail_reason", "")
                      + "\n" + self._exc_info_to_string(err, test))

        def addUnexpectedSuccess(self, test):
            self._set("xpass", getattr(test, "_aioev_xfail_reason", ""))

        def addSubTest(self, test, subtest, err):
            if err is not None:
                if issubclass(err[0], test.failureException):
                    self._set("fail", "%s\n%s" % (
                        subtest, self._exc_info_to_string(err, test)))
                else:
                    self._set("error", "%s\n%s" % (
                        subtest, self._exc_info_to_string(err, test)))

    result = Result()
    with warnings.catch_warnings():
        # what unittest.main() does
        warnings.simplefilter("default")
        suite.run(result)
    emit(event="done")
    out.close()
    return 0


# ==========================================================================
# Parent
# ==========================================================================

def python_has_module(python, modname):
    import importlib.util
    return importlib.util.find_spec(PKG + modname) is not None


def run_module(modname, args, workdir):
    """Run one module in child processes, restarting after crashes.

    Returns (ordered list of result records, list of notes).
    """
    results = {}          # id -> record
    order = []
    notes = []
    skips_used = set()
    res_path = os.path.join(workdir, modname + ".jsonl")
    done_path = os.path.join(workdir, modname + ".done")
    err_path = os.path.join(workdir, modname + ".stderr")
    t0 = time.monotonic()
    for attempt in range(args.max_restarts + 1):
        open(res_path, "w").close()
        with open(done_path, "w") as f:
            f.write("\n".join(results))
        cmd = [sys.executable, os.path.abspath(__file__), "--child", modname,
               "--results", res_path, "--done", done_path,
               "--loop", args.loop, "--timeout", str(args.timeout)]
        cmd += ["--skips", args.skips] if args.skips else ["--no-skips"]
        if args.network:
            cmd.append("--network")
        for k in args.k or ():
            cmd += ["-k", k]
        env = dict(os.environ)
        env.setdefault("PYTHONFAULTHANDLER", "1")
        with open(err_path, "w") as err:
            try:
                proc = subprocess.run(cmd, stdout=err, stderr=err, env=env,
                                      cwd=workdir, timeout=args.module_timeout)
                rc = proc.returncode
            except subprocess.TimeoutExpired:
                rc = "module-timeout"
        with open(err_path, errors="replace") as f:
            stderr = f.read()
        with open(res_path, encoding="utf-8") as f:
            recs = [json.loads(line) for line in f if line.strip()]
        started = None
        finished = False
        fatal = None
        for r in recs:
            if r["event"] == "start":
                started = r["id"]
            elif r["event"] == "result":
                if r["id"] not in results:
                    order.append(r["id"])
                results[r["id"]] = r
                if r["id"] == started:
                    started = None
            elif r["event"] == "done":
                finished = True
            elif r["event"] == "fatal":
                fatal = r["detail"]
            elif r["event"] == "skips_used":
                skips_used.update(r["lines"])
        if fatal is not None:
            rid = modname + " (import/setup)"
            order.append(rid)
            results[rid] = dict(id=rid, outcome="error", detail=fatal, time=0)
            break
        if finished and rc == 0:
            break
        tail = "\n".join(stderr.splitlines()[-60:])
        if started is None:
            rid = modname + " (child process)"
            order.append(rid)
            results[rid] = dict(
                id=rid, outcome="error", time=0,
                detail="child exited with %s outside a test\n%s" % (rc, tail))
            break
        kind = "TIMEOUT" if "Timeout (" in stderr else "CRASH"
        where = ""
        m = re.search(r"Current thread[^\n]*\n\s*(File .*)", stderr) or \
            re.search(r"(?:Timeout \(|Fatal Python error)[^\n]*\n(?:.*\n)*?"
                      r"\s*(File .*)", stderr)
        if m:
            where = " at " + m.group(1).strip()
        order.append(started)
        results[started] = dict(
            id=started, outcome="error", time=0,
            crash="%s (exit %s)%s" % (kind, rc, where),
            detail="%s: child exited with %s while running this test\n%s"
                   % (kind, rc, tail))
        notes.append("%s in %s (exit %s); restarting child"
                     % (kind, short_id(started), rc))
    else:
        notes.append("gave up after %d restarts" % args.max_restarts)
    return ([results[i] for i in order], notes, time.monotonic() - t0,
            skips_used)


def error_gist(detail):
    """The exception line of a formatted traceback."""
    lines = [l for l in detail.splitlines() if l.strip()]
    for line in reversed(lines):
        if re.match(r"[A-Za-z_][\w.]*(: |$)", line) and \
                not line.startswith("Traceback"):
            return line.strip()
    return lines[-1].strip() if lines else ""


def summarize(all_results):
    c = dict(ran=0, passed=0, failed=0, errors=0, skipped=0, xfail=0,
             xpass=0, crashes=0)
    for r in all_results:
        o = r["outcome"]
        if o == "skip":
            c["skipped"] += 1
            continue
        c["ran"] += 1
        if o == "pass":
            c["passed"] += 1
        elif o == "fail":
            c["failed"] += 1
        elif o == "error":
            c["errors"] += 1
            if r.get("crash"):
                c["crashes"] += 1
        elif o == "xfail":
            c["xfail"] += 1
        elif o == "xpass":
            c["xpass"] += 1
    denom = c["passed"] + c["failed"] + c["errors"]
    c["rate"] = 100.0 * c["passed"] / denom if denom else 100.0
    return c


def fmt_counts(c):
    s = ("ran %(ran)d, passed %(passed)d, failed %(failed)d, "
         "errors %(errors)d, skipped %(skipped)d" % c)
    if c["xfail"] or c["xpass"]:
        s += ", expected failures %(xfail)d, unexpected successes %(xpass)d" % c
    if c["crashes"]:
        s += ", crashes/timeouts %(crashes)d" % c
    s += " -- %.1f%% passed" % c["rate"]
    return s


def parent_main(args):
    import concurrent.futures

    if args.loop == "aioev":
        # Fail fast and clearly if aioev does not import.
        chk = subprocess.run(
            [sys.executable, "-c",
             "import sys\ntry:\n import aioev; aioev.Loop\nexcept Exception:\n"
             " sys.modules.pop('aioev', None); sys.path.insert(0, %r)\n"
             " import aioev\nprint(aioev.__file__); aioev.Loop; aioev.Future; "
             "aioev.Task" % ROOT],
            capture_output=True, text=True)
        if chk.returncode:
            print("cannot import aioev (build it first: "
                  "python setup.py build_ext --inplace):\n" + chk.stderr,
                  file=sys.stderr)
            return 2
        where = chk.stdout.strip()
    else:
        where = "stdlib asyncio (%s loop, _CFuture, _CTask)" % (
            "selector")

    known = MODULES + NETWORK_MODULES if args.network else MODULES
    modules = args.module or known
    for m in modules:
        if m not in known:
            hint = (" (a network module: add --network)"
                    if m in NETWORK_MODULES else "")
            print("unknown module %s%s (choose from %s)"
                  % (m, hint, ", ".join(known)), file=sys.stderr)
            return 2
    present, missing = [], []
    for m in modules:
        (present if python_has_module(sys.executable, m) else missing).append(m)
    present.sort(key=lambda m: ORDER.index(m) if m in ORDER else 99)

    print("CPython %s test.test_asyncio against %s%s: %s"
          % (sys.version.split()[0], args.loop,
             " (with network tests)" if args.network else "", where))
    for m in missing:
        print("note: %s does not exist on Python %s; skipped"
              % (m, sys.version.split()[0]))
    if args.list:
        for m in present:
            subprocess.run([sys.executable, os.path.abspath(__file__),
                            "--child", m, "--results", os.devnull, "--list",
                            "--loop", args.loop]
                           + (["--network"] if args.network else [])
                           + (["--skips", args.skips] if args.skips
                              else ["--no-skips"])
                           + sum([["-k", k] for k in args.k or ()], []))
        return 0

    t0 = time.monotonic()
    per_module = {}
    skips_used = set()
    with tempfile.TemporaryDirectory(prefix="aioev-cpython-") as workdir:
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as ex:
            futs = {m: ex.submit(run_module, m, args, workdir) for m in present}
            for fut in concurrent.futures.as_completed(futs.values()):
                m = [k for k, v in futs.items() if v is fut][0]
                recs, notes, secs, used = fut.result()
                per_module[m] = (recs, notes)
                skips_used |= used
                c = summarize(recs)
                print("%-16s %s  (%.0fs)" % (m, fmt_counts(c), secs),
                      flush=True)
                for n in notes:
                    print("    note: " + n)
                if args.verbose:
                    for r in recs:
                        print("    %-6s %s" % (r["outcome"].upper(),
                                               short_id(r["id"])))

    all_recs = []
    for m in present:
        all_recs += per_module[m][0]
    bad = [r for r in all_recs if r["outcome"] in ("fail", "error")]
    if bad:
        print("\n" + "=" * 70)
        print("FAILURES AND ERRORS (%d)" % len(bad))
        print("=" * 70)
        for r in bad:
            detail = (r.get("detail") or "").rstrip()
            if args.verbose:
                print("\n--- %s %s\n%s" % (r["outcome"].upper(),
                                          short_id(r["id"]), detail))
            else:
                gist = error_gist(detail)
                if r.get("crash"):
                    gist = r["crash"]
                print("%-5s %s: %s" % (r["outcome"].upper(),
                                       short_id(r["id"]), gist[:160]))
    xpass = [r for r in all_recs if r["outcome"] == "xpass"]
    if xpass:
        print("\nUNEXPECTED SUCCESSES (remove from skips.txt?):")
        for r in xpass:
            print("      " + short_id(r["id"]))

    if args.skips and not args.k and not args.module and not missing:
        stale = [e for e in load_skips(args.skips, args.loop, args.network)
                 if e["line"] not in skips_used]
        if stale:
            print("\nnote: skips.txt entries that matched no test:")
            for e in stale:
                print("      line %d: %s" % (e["line"], e["pattern"]))

    c = summarize(all_recs)
    print("\nSUMMARY [%s%s, Python %s, %.0fs]: %s"
          % (args.loop, ", network" if args.network else "",
             sys.version.split()[0], time.monotonic() - t0,
             fmt_counts(c)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(summary=c, modules={
                m: dict(summary=summarize(per_module[m][0]),
                        notes=per_module[m][1], results=per_module[m][0])
                for m in present}, missing=missing), f, indent=1)

    rc = 0
    if c["rate"] < args.min_pass_rate:
        print("FAIL: pass rate %.1f%% < %.1f%%" % (c["rate"], args.min_pass_rate))
        rc = 1
    if args.strict and (c["failed"] or c["errors"]):
        print("FAIL: --strict and there are failures/errors")
        rc = 1
    if c["crashes"] and not args.allow_crashes:
        print("FAIL: %d crash(es)/timeout(s)" % c["crashes"])
        rc = 1
    if c["ran"] == 0:
        print("FAIL: nothing ran")
        rc = 1
    return rc


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Run CPython's test_asyncio suites against aioev.",
        epilog="See the module docstring for the selection rules.")
    p.add_argument("--module", "-m", action="append", metavar="NAME",
                   help="test module to run (repeatable); default: all of "
                        + ", ".join(MODULES))
    p.add_argument("-k", action="append", metavar="PATTERN",
                   help="only tests whose id (module.Class.test) contains "
                        "PATTERN (or matches it as a glob); repeatable")
    p.add_argument("--loop", choices=["aioev", "asyncio"], default="aioev",
                   help="implementation under test (asyncio = baseline)")
    p.add_argument("--network", action="store_true",
                   help="also run the networking tests: the network tests "
                        "of test_events and the modules "
                        + ", ".join(NETWORK_MODULES))
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-j", "--jobs", type=int,
                   default=min(2, os.cpu_count() or 1),
                   help="modules run in parallel (default 2)")
    p.add_argument("--timeout", type=float, default=30,
                   help="per-test timeout in seconds (default 30)")
    p.add_argument("--module-timeout", type=float, default=900,
                   help="per-child-process timeout in seconds")
    p.add_argument("--max-restarts", type=int, default=25,
                   help="child restarts per module after crashes")
    p.add_argument("--min-pass-rate", type=float, default=95.0,
                   help="exit 1 below this percentage (default 95)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 on any failure or error")
    p.add_argument("--allow-crashes", action="store_true",
                   help="do not exit 1 just because of crashes/timeouts")
    p.add_argument("--skips", default=SKIPS_FILE, help=argparse.SUPPRESS)
    p.add_argument("--no-skips", dest="skips", action="store_const",
                   const=None, help="ignore skips.txt")
    p.add_argument("--list", action="store_true",
                   help="list selected test ids and exit")
    p.add_argument("--json", metavar="FILE", help="write all results here")
    # internal
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--results", help=argparse.SUPPRESS)
    p.add_argument("--done", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child_main(args)
    return parent_main(args)


if __name__ == "__main__":
    sys.exit(main())

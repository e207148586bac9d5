"""aioev's module-level API: new_event_loop, policy, install, run, -m."""

import asyncio
import subprocess
import sys
import textwrap

import pytest

# Policies are deprecated from Python 3.14; aioev keeps them working there
# with a DeprecationWarning, which these tests are not about.
ignore_policy_deprecation = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning")


def test_version(aioev):
    assert isinstance(aioev.__version__, str)
    assert aioev.__version__[0].isdigit()
    try:
        from importlib.metadata import PackageNotFoundError, version
        assert aioev.__version__ == version("aioev")
    except PackageNotFoundError:
        pass


def test_public_names(aioev):
    for name in ("Loop", "new_event_loop", "EventLoopPolicy", "install",
                 "run", "Future", "Task", "__version__"):
        assert hasattr(aioev, name), name


def test_new_event_loop(aioev):
    a = aioev.new_event_loop()
    b = aioev.new_event_loop()
    try:
        assert type(a) is aioev.Loop
        assert a is not b
        assert isinstance(a, asyncio.AbstractEventLoop)
    finally:
        a.close()
        b.close()


def test_loop_class_direct(aioev):
    lp = aioev.Loop()
    try:
        assert lp.run_until_complete(asyncio.sleep(0, "direct")) == "direct"
    finally:
        lp.close()


def test_loop_subclass(aioev):
    class MyLoop(aioev.Loop):
        extra = "attr"

    lp = MyLoop()
    try:
        assert lp.extra == "attr"
        assert lp.run_until_complete(asyncio.sleep(0, 1)) == 1
    finally:
        lp.close()


@ignore_policy_deprecation
def test_event_loop_policy(aioev, restore_policy):
    policy = aioev.EventLoopPolicy()
    assert isinstance(policy, asyncio.AbstractEventLoopPolicy)
    lp = policy.new_event_loop()
    try:
        assert type(lp) is aioev.Loop
    finally:
        lp.close()
    asyncio.set_event_loop_policy(policy)
    lp = asyncio.new_event_loop()
    try:
        assert type(lp) is aioev.Loop
    finally:
        lp.close()


@ignore_policy_deprecation
def test_policy_get_event_loop(aioev, restore_policy):
    asyncio.set_event_loop_policy(aioev.EventLoopPolicy())
    lp = asyncio.new_event_loop()
    asyncio.set_event_loop(lp)
    try:
        assert asyncio.get_event_loop_policy().get_event_loop() is lp
    finally:
        asyncio.set_event_loop(None)
        lp.close()


@ignore_policy_deprecation
def test_install(aioev, restore_policy):
    aioev.install()
    assert isinstance(asyncio.get_event_loop_policy(), aioev.EventLoopPolicy)

    async def main():
        return type(asyncio.get_running_loop())

    assert asyncio.run(main()) is aioev.Loop


@ignore_policy_deprecation
def test_install_then_subprocess(aioev, restore_policy):
    # Up to 3.13, asyncio's Unix subprocess support asks the policy for
    # its child watcher: aioev's policy must be the Unix one, so that
    # programs run under install() (or python -m aioev) can spawn.
    aioev.install()

    async def main():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "print('hi')",
            stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return type(asyncio.get_running_loop()), out, proc.returncode

    assert asyncio.run(main()) == (aioev.Loop, b"hi\n", 0)


def test_run(aioev):
    async def main(x):
        await asyncio.sleep(0.001)
        lp = asyncio.get_running_loop()
        return x, lp, lp.get_debug()

    value, lp, debug = aioev.run(main("v"))
    assert value == "v"
    assert type(lp) is aioev.Loop
    assert debug is False
    assert lp.is_closed()


def test_run_debug(aioev):
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert aioev.run(main(), debug=True) is True


def test_run_exception(aioev):
    async def main():
        raise ValueError("from run")

    with pytest.raises(ValueError, match="from run"):
        aioev.run(main())


def test_run_cancels_leftover_tasks_and_closes_asyncgens(aioev):
    events = []

    async def leftover():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    async def agen():
        try:
            yield 1
        finally:
            events.append("agen closed")

    async def main():
        asyncio.get_running_loop().create_task(leftover())
        g = agen()
        await g.__anext__()
        main.g = g           # keep it alive until shutdown_asyncgens
        await asyncio.sleep(0)

    aioev.run(main())
    assert sorted(events) == ["agen closed", "cancelled"]


def test_run_not_a_coroutine(aioev):
    with pytest.raises((TypeError, ValueError)):
        aioev.run(42)


def test_run_inside_running_loop(aioev):
    async def inner():
        pass

    async def main():
        coro = inner()
        try:
            aioev.run(coro)
        except RuntimeError:
            return "refused"
        finally:
            coro.close()
        return "ran"

    assert aioev.run(main()) == "refused"


def test_run_leaves_no_event_loop_set(aioev):
    async def main():
        pass

    aioev.run(main())
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()


def test_unclosed_loop_resource_warning(loop_factory):
    import gc
    lp = loop_factory()
    lp.run_until_complete(asyncio.sleep(0))
    with pytest.warns(ResourceWarning):
        del lp
        gc.collect()


# ---------------------------------------------------------------------------
# python -m aioev


def run_module(args, env, tmp_path, **kwargs):
    return subprocess.run([sys.executable, "-m", "aioev", *args],
                          capture_output=True, text=True, env=env,
                          cwd=str(tmp_path), timeout=60, **kwargs)


def test_main_runs_script_on_aioev(aioev, tmp_path, subprocess_env):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import asyncio

        async def main():
            loop = asyncio.get_running_loop()
            print(type(loop).__module__, type(loop).__qualname__)
            import aioev
            print(isinstance(loop, aioev.Loop))

        if __name__ == "__main__":
            asyncio.run(main())
    """))
    proc = run_module([str(script)], subprocess_env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[-1] == "True", proc.stdout
    assert "aioev" in lines[-2]
    assert "Loop" in lines[-2]


def test_main_passes_argv(aioev, tmp_path, subprocess_env):
    script = tmp_path / "argv.py"
    script.write_text("import sys\nprint(sys.argv[1:])\n")
    proc = run_module([str(script), "one", "--two"], subprocess_env,
                      tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['one', '--two']"


def test_main_script_exception_exit_code(aioev, tmp_path, subprocess_env):
    script = tmp_path / "fails.py"
    script.write_text(textwrap.dedent("""
        import asyncio

        async def main():
            raise SystemExit(7)

        asyncio.run(main())
    """))
    proc = run_module([str(script)], subprocess_env, tmp_path)
    assert proc.returncode == 7, proc.stderr

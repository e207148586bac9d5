"""python -m aioev script.py [args...]: run a script with aioev as
asyncio's event loop (asyncio.run, get_event_loop, Runner all use it)."""

import runpy
import sys

import aioev


def main():
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print("usage: python -m aioev script.py [args...]\n"
              "       python -m aioev -m module [args...]", file=sys.stderr)
        return 2
    aioev.install()
    if sys.argv[1] == "-m":
        if len(sys.argv) < 3:
            print("python -m aioev -m: a module name is needed",
                  file=sys.stderr)
            return 2
        sys.argv = sys.argv[2:]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
        return 0
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())

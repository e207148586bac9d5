"""Build script for aioev's C extension, aioev._core, linked to system libev.

Build switches (environment variables):
  AIOEV_DEBUG=1   -O0 -g3 with asserts on (NDEBUG undefined)
  AIOEV_ASAN=1    AddressSanitizer build (run with LD_PRELOAD of libasan)
  LIBEV_PREFIX    where libev lives if not in a standard place
"""

import glob
import os
import sys

from setuptools import Extension, setup

LIBEV_HELP = """
aioev needs libev (its header ev.h and its library libev) and neither was
found{where}. Install it first:

  Debian / Ubuntu:  sudo apt-get install libev-dev
  Fedora / RHEL:    sudo dnf install libev-devel
  macOS (Homebrew): brew install libev

or point LIBEV_PREFIX at a prefix holding include/ev.h and lib/libev.*.
"""


def _candidate_prefixes():
    prefix = os.environ.get("LIBEV_PREFIX")
    if prefix:
        yield prefix
    yield from ("/usr", "/usr/local", "/opt/homebrew", "/opt/local")


def find_libev():
    """Return (include_dirs, library_dirs) for libev or exit with help."""
    for prefix in _candidate_prefixes():
        inc = os.path.join(prefix, "include")
        if not os.path.isfile(os.path.join(inc, "ev.h")):
            continue
        libdirs = [os.path.join(prefix, d) for d in ("lib", "lib64")]
        libdirs += glob.glob(os.path.join(prefix, "lib", "*-linux-gnu"))
        for libdir in libdirs:
            if glob.glob(os.path.join(libdir, "libev.*")):
                return [inc], [libdir]
    where = ""
    if os.environ.get("LIBEV_PREFIX"):
        where = " under LIBEV_PREFIX=" + os.environ["LIBEV_PREFIX"]
    sys.exit(LIBEV_HELP.format(where=where))


def extension():
    include_dirs, library_dirs = find_libev()
    cflags = ["-std=c11", "-fvisibility=hidden", "-Wall", "-Wextra",
              "-Wno-unused-parameter", "-Wno-missing-field-initializers",
              "-Wno-cast-function-type",
              "-Werror=implicit-function-declaration"]
    ldflags = []
    undef = []
    if os.environ.get("AIOEV_DEBUG"):
        cflags += ["-O0", "-g3"]
        undef.append("NDEBUG")
    else:
        cflags += ["-O2"]
    if os.environ.get("AIOEV_ASAN"):
        cflags += ["-fsanitize=address", "-fno-omit-frame-pointer", "-g",
                   "-DAIOEV_NO_FREELIST"]
        ldflags += ["-fsanitize=address"]
    return Extension(
        "aioev._core",
        sources=sorted(glob.glob("src/aioev/*.c")),
        depends=sorted(glob.glob("src/aioev/*.h")),
        include_dirs=include_dirs,
        library_dirs=library_dirs,
        runtime_library_dirs=[d for d in library_dirs
                              if not d.startswith("/usr/lib")],
        libraries=["ev"],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
        undef_macros=undef,
    )


setup(ext_modules=[extension()])

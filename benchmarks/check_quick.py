#!/usr/bin/env python3
"""Smoke check (not a test): `python benchmarks/micro.py --quick` works.

Runs the quick benchmark into a temporary directory and checks that it
exits 0, that its JSON has a row per benchmark, and that the stock asyncio
loop produced a number for every row.  uvloop and aioev may be missing
(they are reported as "not available"), but a loop that is importable must
not error.  Prints "check_quick: ok" and exits 0 on success.

    python benchmarks/check_quick.py
"""

import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    sys.path.insert(0, HERE)
    import micro

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, os.path.join(HERE, "micro.py"), "--quick",
               "--rounds", "1", "--outdir", tmp, "--timeout", "60"]
        p = subprocess.run(cmd, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=300)
        print(p.stdout)
        problems = []
        if p.returncode != 0:
            problems.append("micro.py --quick exited %d" % p.returncode)
        path = os.path.join(tmp, "micro_quick.json")
        if not os.path.exists(path):
            problems.append("no micro_quick.json written")
        else:
            with open(path) as f:
                data = json.load(f)
            rows = {r["bench"]: r for r in data["rows"]}
            missing = set(micro.BENCHES) - set(rows)
            if missing:
                problems.append("rows missing: %s" % sorted(missing))
            available = set(micro.LOOPS) - set(data["meta"]["unavailable"])
            if "asyncio" not in available:
                problems.append("stock asyncio reported unavailable")
            for name, row in rows.items():
                for ln in available:
                    cell = row["loops"].get(ln) or {}
                    if not cell.get("median"):
                        problems.append("%s/%s: %s" % (
                            name, ln, cell.get("error", "no result")))
            if not os.path.exists(os.path.join(tmp, "micro_quick.rst")):
                problems.append("no micro_quick.rst written")
    if problems:
        print("check_quick: FAILED")
        for pr in problems:
            print("  - " + pr)
        return 1
    print("check_quick: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())

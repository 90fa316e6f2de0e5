"""Run the benchmarks: ``python -m bench`` runs the default set, ``python -m bench NAME ...`` some.

A benchmark is a module in this package with a ``main() -> None`` that prints
its figures beside a baseline measured in the same run, and records the ones
that have targets with ``bench.report.record``. Add one by adding a module;
modules whose names start with "_" and ``report`` are not benchmarks. Long
ones (``NOT_DEFAULT``) run only when named (or with ``--all``).

Each benchmark runs with its default options (its ``sys.argv`` is just its
name); for other options run it alone: ``python -m bench.NAME --help``. A
benchmark that fails is reported and the others still run; the exit status
is then 1. The run ends with one table: figure, baseline, ratio, target, met?
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback

import bench
from bench import report

NOT_MODULES = {"report"}
NOT_DEFAULT = {"soak"}  # too long for `make bench`
FIRST = ["p2p_baseline", "redis_baseline"]  # baselines first: later benches reuse them


def available() -> list[str]:
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__)
                   if not m.name.startswith("_") and m.name not in NOT_MODULES)
    return [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]


def run_one(name: str) -> bool:
    """Run bench ``name``'s main(); False if it failed."""
    print(f"== bench {name}", flush=True)
    started = time.perf_counter()
    saved = sys.argv
    sys.argv = [f"bench.{name}"]
    try:
        importlib.import_module(f"bench.{name}").main()
    except KeyboardInterrupt:
        raise
    except SystemExit as exc:
        if exc.code not in (None, 0):
            print(f"== bench {name} FAILED: exit {exc.code}", flush=True)
            return False
    except Exception:
        traceback.print_exc()
        print(f"== bench {name} FAILED", flush=True)
        return False
    finally:
        sys.argv = saved
    print(f"== bench {name} done in {time.perf_counter() - started:.0f} s", flush=True)
    return True


def main(argv: list[str]) -> int:
    names = available()
    if argv == ["--all"]:
        chosen = names
    elif argv:
        chosen = argv
    else:
        chosen = [n for n in names if n not in NOT_DEFAULT]
    unknown = [n for n in chosen if n not in names]
    if unknown:
        print(f"unknown benchmark {', '.join(unknown)}; available: {', '.join(names)}")
        return 2
    failed = [name for name in chosen if not run_one(name)]
    print()
    print("== summary")
    print(report.summary())
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

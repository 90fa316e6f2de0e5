"""Run the benchmarks: ``python -m bench`` runs every one, ``python -m bench NAME ...`` some.

A benchmark is a module in this package with a ``main() -> None`` that prints
its figures beside a baseline measured in the same run. Add one by adding a
module; modules whose names start with "_" are not benchmarks.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def available() -> list[str]:
    return sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if not m.name.startswith("_")
    )


def main(argv: list[str]) -> int:
    names = available()
    chosen = argv or names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        print(f"unknown benchmark {', '.join(unknown)}; available: {', '.join(names)}")
        return 2
    for name in chosen:
        print(f"== bench {name}")
        importlib.import_module(f"bench.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""How long `dsclient --help` and `dsclient hashslot KEY` take, beside `python -c pass`.

    python -m bench.cli_startup [--runs 9]

Each command runs as a whole process, the three interleaved round by round
(so a machine slowing down mid-run slows all of them alike), after one
warm-up round; prints min and median wall time of each. Issue 15's target:
under 0.3 s, which needs these commands to import neither py-libp2p nor trio
(they used to take 1.1-2.5 s). A tiny typer app running one command with one
argument is printed too: typer (0.29) coerces every parameter through
pydantic, which it imports only when a command runs, so that is the floor of
`hashslot` (not of `--help`). Only figures of the same run compare.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from bench import report
from dscluster.procs import script

TARGET = 0.3  # seconds
TYPER_FLOOR = """
import typer
app = typer.Typer(rich_markup_mode=None)
@app.command()
def f(x: str) -> None:
    pass
app()
"""


def commands() -> dict[str, list[str]]:
    dsclient = script("dsclient")
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        # typer's own floor for running a command: it coerces every parameter through
        # pydantic (imported then, not for --help)
        "typer app, one argument": [sys.executable, "-c", TYPER_FLOOR, "k"],
        "dsclient --help": [dsclient, "--help"],
        "dsclient hashslot /foo": [dsclient, "hashslot", "/foo"],
        "dsclient hashslot CID": [dsclient, "hashslot",
                                  "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"],
    }


def wall(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def measure(runs: int) -> dict[str, list[float]]:
    cmds = commands()
    for cmd in cmds.values():  # warm-up: page cache, .pyc files
        wall(cmd)
    times: dict[str, list[float]] = {name: [] for name in cmds}
    for _ in range(runs):
        for name, cmd in cmds.items():
            times[name].append(wall(cmd))
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_startup")
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args(argv if argv is not None else sys.argv[1:])
    times = measure(args.runs)
    base = statistics.median(times["python -c pass"])
    print(f"{'command':<26} {'min s':>7} {'median s':>9} {'minus python':>13}  (target < {TARGET} s)")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<26} {min(values):>7.3f} {med:>9.3f} {med - base:>13.3f}")
        if name.startswith("dsclient"):
            report.record(f"{name} wall time", med, "s", base,
                          baseline_name="python -c pass", lower_is_better=True)


if __name__ == "__main__":
    main()

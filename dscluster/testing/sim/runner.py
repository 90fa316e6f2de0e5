"""Running seeds: one at a time or in a pool of worker processes, with progress.

`run_seed` runs one World and, on failure, attaches its last trace lines and
the command that replays it. `outcomes` yields one `Outcome` per seed in seed
order, from a pool of fresh (forkserver) workers when jobs > 1, so the failure
reported is the lowest failing seed, as a sequential run would report it.
`main` is the command line of ``python -m dscluster.testing.simulate``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from dscluster.testing.sim.world import World

DESCRIPTION = "A deterministic, seeded simulator of a whole ds-cluster in one process."


def run_seed(seed: int, **kw: int | bool) -> World:
    world = World(seed, **kw)  # type: ignore[arg-type]
    try:
        world.run()
    except Exception as exc:
        exc.add_note("\n".join(world.trace[-40:]))
        exc.add_note(f"replay: python -m dscluster.testing.simulate --start {seed} --seeds 1 "
                     "--verbose")
        raise
    return world


@dataclass(frozen=True)
class Outcome:
    """What a worker sends back for one seed: its figures, or the failure report."""

    seed: int
    stats: dict[str, int]
    failure: str | None = None
    trace: str | None = None  # the whole trace, with --verbose


def run_one(seed: int, verbose: bool = False) -> Outcome:
    """Run one seed and turn a failure into text (exceptions with notes do not pickle well)."""
    try:
        world = run_seed(seed)
    except Exception as exc:
        lines = [f"seed {seed} FAILED: {exc}", *getattr(exc, "__notes__", [])]
        return Outcome(seed, {}, "\n".join(lines))
    trace = None
    if verbose:
        trace = "\n".join([*world.trace, f"seed {seed}: {world.scenario}, {world.stats}, "
                                          f"{world.now} steps"])
    return Outcome(seed, world.stats, trace=trace)


def _quiet_worker(verbose: bool) -> None:
    logging.basicConfig(level=logging.WARNING if verbose else logging.ERROR)


def outcomes(seeds: range, jobs: int, verbose: bool) -> Iterator[Outcome]:
    """Outcomes in seed order; with jobs > 1 from a pool of fresh worker processes."""
    if jobs <= 1 or len(seeds) <= 1:
        yield from (run_one(seed, verbose) for seed in seeds)
        return
    # forkserver: workers start from a clean interpreter, not a copy of this one's state.
    ctx = multiprocessing.get_context("forkserver")
    chunk = max(1, min(16, len(seeds) // (jobs * 8)))
    with ctx.Pool(jobs, initializer=_quiet_worker, initargs=(verbose,)) as pool:
        # imap keeps seed order, so the failure reported is the lowest failing seed,
        # exactly as a sequential run would report it; leaving the block terminates the pool.
        yield from pool.imap(functools.partial(run_one, verbose=verbose), seeds, chunk)


class Progress:
    """A line on stderr every few seconds: seeds done, rate, ETA, failures."""

    def __init__(self, total: int, every: float = 5.0) -> None:
        self.total, self.every = total, every
        self.began = self.last = time.monotonic()
        self.done = self.failures = 0

    def update(self, failed: bool) -> None:
        self.done += 1
        self.failures += failed
        now = time.monotonic()
        if now - self.last >= self.every and self.done < self.total:
            self.last = now
            rate = self.done / (now - self.began)
            eta = (self.total - self.done) / rate
            print(f"simulate: {self.done}/{self.total} seeds, {rate:.2f} seeds/s, "
                  f"ETA {_duration(eta)}, {self.failures} failed", file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not every platform has affinity
        return os.cpu_count() or 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=default_jobs(),
                        help="worker processes (default: the CPUs this process may use)")
    parser.add_argument("--progress", type=float, default=5.0,
                        help="seconds between progress lines on stderr")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.jobs < 1:
        parser.error("--seeds and --jobs must be at least 1")
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.ERROR)
    began = time.monotonic()
    totals: dict[str, int] = {}
    progress = Progress(args.seeds, args.progress)
    for outcome in outcomes(range(args.start, args.start + args.seeds), args.jobs, args.verbose):
        progress.update(outcome.failure is not None)
        if outcome.failure is not None:
            print(outcome.failure)
            return 1
        for k, v in outcome.stats.items():
            totals[k] = totals.get(k, 0) + v
        if outcome.trace is not None:
            print(outcome.trace)
    elapsed = time.monotonic() - began
    print(f"{args.seeds} seeds passed in {elapsed:.1f} s "
          f"({args.seeds / elapsed:.2f} seeds/s, {args.jobs} jobs): {totals}")
    return 0

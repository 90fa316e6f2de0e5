"""A deterministic, seeded simulator of a whole ds-cluster in one process.

Theory of operation
-------------------
N sans-IO cores run in one process over a simulated network that delays,
reorders, duplicates and drops messages and cuts links, with crashes,
restarts, rebalances and clients reading and writing throughout; every random
choice comes from one random.Random(seed), so a seed is a complete, replayable
trace, and invariants are checked after every step. The parts:

  sim/world.py    the world: cores, disks, the emulated daemon, clients, network
  sim/checks.py   the invariants (one server per key, legal values, epochs,
                  the final agreement)
  sim/runner.py   seeds one by one or in worker processes, progress, the CLI

Run: python -m dscluster.testing.simulate --seeds 20000 [--start S] [--jobs N] [--verbose]
(seeds run in a pool of N worker processes, default one per CPU; progress on stderr).
"""

from __future__ import annotations

import sys

from dscluster.testing.sim.checks import InvariantViolation
from dscluster.testing.sim.runner import Outcome, main, outcomes, run_one, run_seed
from dscluster.testing.sim.world import World

__all__ = ["InvariantViolation", "Outcome", "World", "main", "outcomes", "run_one", "run_seed"]

if __name__ == "__main__":
    sys.exit(main())

"""Sweeper: a node drops its keys of slots it was taken out of (doc/copies.md).

Theory of operation
-------------------
A copy set loses a member by majority: a failover or shrink drops a dead or
frozen copy, set-copies lowers the count, a move hands the slot over. The
member that was dropped may still hold the slot's keys, on a disk that
outlived its absence; they are nobody's copy any more (the set's other
copies hold every acknowledged write), and left there they are stale keys
that `cluster check` reports as strays and that nothing would ever update.

So every `SWEEP_EVERY` seconds this node compares the table with the slots it
has held a copy of in a copy set of two or more (`watched`, seeded from the
table it started with, which is the one it had before it went away). A
watched slot it holds no copy of any more has its keys deleted, a batch at a
time under their locks (`SlotIndexedDatastore.drop_slot`), unless:

* the slot is in one of this node's migrations (one copy, go-ds-cluster's
  way: the migrator moves and deletes those keys itself);
* a primary sent it writes of the slot in the last `LEARN_GRACE` seconds
  while the table did not name it: it is being filled as a new copy (a
  learner, node/refill.py), which the table names only once the grow
  commits (from then on the slot is an ordinary watched one).

Slots held alone (copies 1) are never watched: with one copy, keys on a node
that does not own their slot are a migration's business or a bug to report,
not something to delete. A node that crashes mid-sweep starts from a table
that no longer names it and leaves the rest; `cluster check` reports them.
"""

from __future__ import annotations

import logging
import time

import trio

from dscluster.core.slots import SlotSet
from dscluster.node.driver import CoreDriver
from dscluster.node.keylocks import KeyLocks
from dscluster.node.slotindex import SlotIndexedDatastore

log = logging.getLogger(__name__)

SWEEP_EVERY = 2.0  # seconds between looks at the table
LEARN_GRACE = 60.0  # seconds after a primary's last write of a slot it stays a learner's


class Sweeper:
    def __init__(self, driver: CoreDriver, datastore: SlotIndexedDatastore, locks: KeyLocks,
                 learned: dict[int, float], every: float = SWEEP_EVERY) -> None:
        """``learned``: slot -> time.monotonic() of the last write of it that this node
        took as a copy the table does not name (kept by the replicator)."""
        self._driver = driver
        self._ds = datastore
        self._locks = locks
        self._learned = learned
        self._every = every
        self.watched: set[int] = set()
        self.dropped = 0  # keys deleted, for tests and logs
        self._watch()

    def _watch(self) -> None:
        core = self._driver.core
        for start, end, _epoch, owner, replicas in core.table.copy_runs():
            copies = (owner, *replicas)
            if core.me not in copies:
                continue
            run = range(start, end + 1)
            for slot in run:  # a learner that the table names now: its filling is over
                self._learned.pop(slot, None)
            if len(copies) >= 2:
                self.watched.update(run)
            else:  # held alone: one copy's keys are never swept
                self.watched.difference_update(run)

    def _learning(self, slot: int) -> bool:
        last = self._learned.get(slot)
        return last is not None and time.monotonic() - last < LEARN_GRACE

    def candidates(self) -> list[int]:
        """Watched slots this node holds no copy of, that may be dropped now."""
        core = self._driver.core
        self._watch()
        gone = [s for s in self.watched if core.me not in core.table.copies(s)]
        busy = {s for m in core.migrations for s in m.slots}
        return sorted(s for s in gone if s not in busy and not self._learning(s))

    async def sweep(self) -> int:
        """Drop the keys of every candidate slot; the number of keys deleted."""
        core = self._driver.core
        slots = self.candidates()
        if not slots:
            return 0
        before = self.dropped
        for slot in slots:
            def wanted(slot: int = slot) -> bool:  # a copy again, or being filled as one
                return core.me in core.table.copies(slot) or self._learning(slot)

            self.dropped += await self._ds.drop_slot(slot, self._locks, wanted)
            if not wanted():
                self.watched.discard(slot)
        count = self.dropped - before
        if count:
            log.warning("dropped %d keys of slots %s: this node holds no copy of them any "
                        "more", count, SlotSet.from_slots(slots))
        return count

    async def run(self) -> None:
        while True:
            await trio.sleep(self._every)
            await self.sweep()

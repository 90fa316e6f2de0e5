"""Refiller: a primary's side of re-replication (doc/copies.md).

Theory of operation
-------------------
When the table gives slots this node is primary of fewer copies than the
cluster's ``copies`` setting (a failover or shrink dropped a dead copy, or a
node came back empty), this node fills a new copy on a live member and then
has the core add it by majority (a grow election, core/changes.py). The core
picks the slots and the member (`ClusterCore.refill_plan`); here, in order:

1. **clear**: the new copy drops every key it holds of those slots (left from
   a time it held them before: a key deleted since must not come back);
2. **learn**: from then on every write of those slots is also sent to it
   (node/replicator.py `learners`), and a write it does not confirm is not
   acknowledged, exactly as for an in-sync copy;
3. **copy**: every key of the slots, each chunk read and sent under its keys'
   locks (which writes hold across their forward), so the copy and a write of
   one key reach the new copy in the order this node applied them;
4. **grow**: the core stands for adding the copy, and retries, until the
   table holds it in those slots.

**Moving** slots that have copies (a rebalance, `move`) goes the same way
instead of through a migration: the target is filled and grown into the
copy sets (if it is not in them yet), then the core stands for a
*handover* (the target becomes primary by majority, this node goes last in
the set), the new primary shrinks the extra copy away, and this node then
drops its keys of those slots. No write is ever held on fewer copies than
the set names, and the move is reported as a migration (`moves`).

A failure before step 4 (the member unreachable, a write it did not confirm,
this node no longer primary) drops the learner and the attempt; the next try
starts again at step 1. From step 4 on the learner stays until the table
holds the copy or the core drops the grow: a proposal may already be accepted
somewhere, and an accepted configuration must only name copies that hold
every write (core/election.py). One chunk is in flight at a time, which
throttles the copy behind client traffic; `progress` says how far it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from dscluster.core.slots import SlotSet, key_slot
from dscluster.errors import BadRequestError, DSClusterError, NotFoundError, UnavailableError
from dscluster.node.driver import CoreDriver
from dscluster.node.keylocks import KeyLocks
from dscluster.node.migrator import CHUNK_BYTES
from dscluster.node.replicator import Replicator
from dscluster.node.slotindex import SlotIndexedDatastore
from dscluster.wire import messages as wm

log = logging.getLogger(__name__)

CallPeer = Callable[[str, wm.Request], Awaitable[wm.Response]]
CHECK_EVERY = 1.0  # seconds between looks for slots short of copies
MOVE_TIMEOUT = 300.0  # seconds a move's handover and shrink may take before it gives up
MOVE_IDS = 1 << 40  # move ids start here, apart from the core's migration ids
RETRY_AFTER = 5.0  # seconds after a failed attempt before the next
CLEAR_SLOTS = 1024  # slots per clearing request
PROGRESS_EVERY = 10.0  # seconds between progress lines in the log
SLOT_KEYS = 1 << 30  # keys of one slot listed at once (keys only: a slot holds few)
# Seconds between empty Replicates naming every slot being filled: they tell the new
# copy it is still a learner of them, so its sweeper (node/sweep.py, LEARN_GRACE
# 60 s) does not drop keys already copied while a long fill goes on.
TOUCH_EVERY = 15.0


@dataclass
class Progress:
    target: str
    slots: SlotSet
    phase: str = "clearing"  # clearing, copying, growing (a move: then handing-over, dropping)
    keys: int = 0
    bytes: int = 0
    started: float = 0.0


@dataclass
class Move:
    mid: int
    target: str
    slots: SlotSet
    progress: Progress


class Refiller:
    def __init__(self, driver: CoreDriver, datastore: SlotIndexedDatastore, locks: KeyLocks,
                 replicator: Replicator, call_peer: CallPeer,
                 check_every: float = CHECK_EVERY, retry_after: float = RETRY_AFTER) -> None:
        self._driver = driver
        self._ds = datastore
        self._locks = locks
        self._replicator = replicator
        self._call_peer = call_peer
        self._check_every = check_every
        self._retry_after = retry_after
        self.progress: Progress | None = None
        self._resumed: list[tuple[str, SlotSet]] = []
        self.moves: dict[int, Move] = {}  # queued or running, by id (status lists them)
        self._next_move = MOVE_IDS
        self._wake = trio.Event()
        self.filled = 0  # copies completed (grows committed), for tests and status

    def resume(self) -> None:
        """Before the node serves: grows it proposed before a restart get their
        learners back (a proposal may have been accepted: the copy gets every write)."""
        self._resumed = self._driver.core.unfinished_grows()
        for target, slots in self._resumed:
            log.warning("refill: finishing a grow of %d slots onto %s proposed before a "
                        "restart", len(slots), target)
            for slot in slots:
                self._replicator.learners[slot] = target

    def start_move(self, slots: SlotSet, target: str) -> int:
        """Queue moving ``slots`` (all primary here, with copies) to ``target``; its id."""
        core = self._driver.core
        if target == core.me or target not in core.table.data_nodes():
            raise BadRequestError(f"{target} is not another data member")
        if any(core.table.owner(s) != core.me for s in slots):
            raise BadRequestError("only slots this node is primary of can move from here")
        mid, self._next_move = self._next_move, self._next_move + 1
        self.moves[mid] = Move(mid, target, slots, Progress(target, slots, "queued"))
        self._wake.set()
        log.info("move %d: slots %s to %s (with their copies)", mid, slots, target)
        return mid

    async def run(self) -> None:
        for target, slots in self._resumed:
            await self._grow(target, slots, list(slots))
        while True:
            with trio.move_on_after(self._check_every):
                await self._wake.wait()
            self._wake = trio.Event()
            for move in list(self.moves.values()):
                try:
                    await self._move(move)
                except DSClusterError as exc:
                    log.warning("move %d of %d slots to %s failed: %s", move.mid,
                                len(move.slots), move.target, _one_line(exc))
                finally:
                    del self.moves[move.mid]
            plan = self._driver.core.refill_plan()
            if plan is None:
                continue
            target, slots = plan
            try:
                await self._refill(target, slots)
            except DSClusterError as exc:
                log.warning("refill of %d slots on %s stopped: %s; trying again in %g s",
                            len(slots), target, _one_line(exc), self._retry_after)
                await trio.sleep(self._retry_after)
            finally:
                self.progress = None

    async def _move(self, move: Move) -> None:
        core = self._driver.core
        p = move.progress
        p.started = time.monotonic()
        await self._driver.call(lambda: core.request_handover(move.target, move.slots))
        try:
            missing = [s for s in move.slots if move.target not in core.table.copies(s)]
            if missing:  # fill and grow the target into those copy sets first
                await self._refill(move.target, SlotSet.from_slots(missing), p)
            p.phase = "handing-over"
            with trio.fail_after(MOVE_TIMEOUT):
                while core.handing_over is not None:
                    await trio.sleep(0.1)
                p.phase = "dropping"  # the new primary shrinks a copy past the setting away
                want = core.table.settings.copies
                while any(core.me in (c := core.table.copies(s)) and len(c) > want
                          for s in move.slots):
                    await trio.sleep(0.1)
        except trio.TooSlowError:
            raise UnavailableError(f"the handover to {move.target} did not complete in "
                                   f"{MOVE_TIMEOUT:g} s") from None
        finally:
            if core.handing_over is not None:
                await self._driver.call(lambda: core.request_handover_cancel())
        await self._drop([s for s in move.slots if core.me not in core.table.copies(s)])
        log.warning("move %d: %d slots now on %s (%.1f s)", move.mid, len(move.slots),
                    move.target, time.monotonic() - p.started)

    async def _drop(self, slots: list[int]) -> None:
        """Delete this node's keys of slots it holds no copy of any more."""
        core = self._driver.core
        for slot in slots:
            def copy_again(slot: int = slot) -> bool:  # a refill chose this node: keep them
                return core.me in core.table.copies(slot)

            await self._ds.drop_slot(slot, self._locks, copy_again)

    async def _refill(self, target: str, slots: SlotSet, p: Progress | None = None) -> None:
        self.progress = p = p or Progress(target, slots, started=time.monotonic())
        p.phase = "clearing"
        log.warning("refill: copying %d slots to %s (a new copy)", len(slots), target)
        for chunk in _chunks(list(slots), CLEAR_SLOTS):
            await self._send(target, chunk, clear=True)
        learning = list(slots)
        for slot in learning:
            self._replicator.learners[slot] = target
        try:
            failures = self._replicator.learner_failures
            p.phase = "copying"
            await self._copy_all(target, slots, p)
            if self._replicator.learner_failures != failures:
                raise UnavailableError(f"{target} did not confirm a write while being filled")
            p.phase = "growing"
        except BaseException:
            self._forget(target, learning)
            raise
        await self._grow(target, slots, learning)
        log.warning("refill: %d keys (%.1f MiB) copied to %s in %.1f s", p.keys,
                    p.bytes / 2**20, target, time.monotonic() - p.started)

    async def _grow(self, target: str, slots: SlotSet, learning: list[int]) -> None:
        """Have the core add ``target`` to the copy sets of ``slots``; it stays a
        learner until the table holds it there or the core drops the grow."""
        core = self._driver.core
        for slot in learning:
            self._replicator.learners[slot] = target
        await self._driver.call(lambda: core.request_grow(target, slots))
        last_touch = time.monotonic()
        while core.growing is not None and core.growing[0] == target:
            await trio.sleep(0.1)
            if time.monotonic() - last_touch >= TOUCH_EVERY:
                last_touch = time.monotonic()
                with trio.move_on_after(TOUCH_EVERY):  # best effort: the grow goes on
                    try:
                        await self._touch(target, slots)
                    except DSClusterError as exc:
                        log.info("refill: could not remind %s of the grow: %s", target,
                                 _one_line(exc))
        self._forget(target, learning)
        held = sum(1 for s in slots if target in core.table.copies(s))
        log.warning("refill: %s holds a copy of %d of %d slots now", target, held, len(slots))
        self.filled += 1

    def _forget(self, target: str, learning: list[int]) -> None:
        for slot in learning:
            if self._replicator.learners.get(slot) == target:
                del self._replicator.learners[slot]

    async def _touch(self, target: str, slots: SlotSet) -> None:
        for chunk in _chunks(list(slots), CLEAR_SLOTS):
            await self._send(target, chunk)

    async def _copy_all(self, target: str, slots: SlotSet, p: Progress) -> None:
        last_log = last_touch = time.monotonic()
        for first, last in slots.ranges:
            slot = first
            while slot <= last:
                found = await self._ds.keys_in_slots(slot, last, 1)  # the next slot with keys
                if not found:
                    break
                slot = key_slot(found[0])
                keys = await self._ds.keys_in_slots(slot, slot, SLOT_KEYS)
                for chunk in await self._ds.by_size(keys, CHUNK_BYTES):
                    await self._copy_chunk(target, slot, chunk, p)
                slot += 1
                if time.monotonic() - last_touch >= TOUCH_EVERY:
                    last_touch = time.monotonic()
                    await self._touch(target, slots)
                if time.monotonic() - last_log >= PROGRESS_EVERY:
                    last_log = time.monotonic()
                    log.warning("refill to %s: %d keys, %.1f MiB copied, at slot %d",
                                target, p.keys, p.bytes / 2**20, slot)

    async def _copy_chunk(self, target: str, slot: int, keys: list[str], p: Progress) -> None:
        async with self._locks.hold(keys):
            puts = []
            for key in keys:
                try:
                    puts.append((key, await self._ds.get(key)))
                except NotFoundError:
                    continue  # deleted since it was listed: the learner was sent the delete
            if puts:
                await self._send(target, [slot], puts=tuple(puts))
        p.keys += len(puts)
        p.bytes += sum(len(v) for _, v in puts)

    async def _send(self, target: str, slots: list[int], *, clear: bool = False,
                    puts: tuple[tuple[str, bytes], ...] = ()) -> None:
        core = self._driver.core
        epochs = []
        for slot in slots:
            epoch, owner = core.table.claim(slot)
            if owner != core.me:
                raise UnavailableError(f"slot {slot} is no longer this node's")
            epochs.append((slot, epoch))
        request = wm.Replicate(0, tuple(epochs), puts, (), clear)  # type: ignore[arg-type]
        response = await self._call_peer(target, request)
        if isinstance(response, wm.Fail):
            raise response.error.to_exception()
        if not isinstance(response, wm.Ok):
            raise BadRequestError(f"{target} answered {type(response).__name__}")


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__

"""Migrator: carries out the core's data actions, ListKeys and MoveKeys.

Theory of operation
-------------------
ListKeys asks for up to `limit` local keys of the migrating slots. They come
from the store's slot index (slotindex.py): one range query per slot range,
from a cursor kept per migration. A range the index answers empty is dropped
for good: a slot that is empty stays empty while it moves, since no new key
is born in it (routing ASKs the target for absent keys). When no range is
left the core hears "nothing left". Otherwise the range's cursor moves up to
the first listed key's slot, so later queries do not walk drained slots.

MoveKeys moves its keys in chunks of at most CHUNK_BYTES of values, up to
CHUNKS_IN_FLIGHT at once so the target stores one while the next is on the
wire. Each chunk holds its keys' locks from reading the values until the
local copies are deleted: read, send one Batch (ASKING) to the target over
the store protocol, and only when every item is acknowledged delete the
local copies in one batch. A listed key that is gone by then (deleted
meanwhile, or an index entry a crash left without its key) is deleted too,
which drops its index entry. A failed chunk deletes nothing of its own (earlier chunks
stay moved) and reports move_failed: the core lists again after its next tick.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from dscluster.core.node import Action, ListKeys, MoveKeys
from dscluster.core.slots import key_slot
from dscluster.errors import DSClusterError, NotFoundError
from dscluster.node.driver import CoreDriver
from dscluster.node.keylocks import KeyLocks
from dscluster.node.slotindex import SlotIndexedDatastore
from dscluster.wire import messages as wm

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024  # values per Batch sent to the target (a frame holds 16 MiB)
CHUNKS_IN_FLIGHT = 8  # Batches awaiting the target's answer at once
SendBatch = Callable[[str, wm.Batch], Awaitable[wm.Response]]  # (target peer, request)


class Migrator:
    def __init__(self, driver: CoreDriver, datastore: SlotIndexedDatastore, locks: KeyLocks,
                 send_batch: SendBatch) -> None:
        self._driver = driver
        self._ds = datastore
        self._locks = locks
        self._send_batch = send_batch
        self._cursors: dict[int, list[list[int]]] = {}  # mid -> slot ranges that may hold keys
        self.moved: dict[int, int] = {}  # migration id -> keys moved so far
        self.moved_bytes: dict[int, int] = {}  # migration id -> value bytes moved so far

    async def run(self, action: Action) -> None:
        if isinstance(action, ListKeys):
            await self._list(action)
        else:
            await self._move(action)

    async def _next_keys(self, action: ListKeys) -> list[str]:
        ranges = self._cursors.setdefault(action.mid, [[a, b] for a, b in action.ranges])
        keys: list[str] = []
        i = 0
        while i < len(ranges) and len(keys) < action.limit:
            first, last = ranges[i]
            found = await self._ds.keys_in_slots(first, last, action.limit - len(keys))
            if not found:
                del ranges[i]  # drained, for good: no key is born in a moving slot
                continue
            ranges[i][0] = key_slot(found[0])  # skip the drained slots' tombstones next time
            keys += found
            i += 1
        return keys

    async def _list(self, action: ListKeys) -> None:
        try:
            keys: list[str] | None = await self._next_keys(action)
        except DSClusterError as exc:
            log.warning("migration %d: listing keys failed: %s", action.mid, exc)
            keys = None
        if keys is None:
            # move_failed clears the core's busy flag: it lists again on a later tick.
            await self._driver.report(self._driver.core.move_failed, action.mid)
            return
        if not keys:
            self._cursors.pop(action.mid, None)
            log.info("migration %d: source empty after %d keys", action.mid,
                     self.moved.get(action.mid, 0))
        await self._driver.report(self._driver.core.keys_listed, action.mid, keys)

    async def _move(self, action: MoveKeys) -> None:
        errors: list[DSClusterError] = []
        moved = [0, 0]  # keys, bytes
        in_flight = trio.Semaphore(CHUNKS_IN_FLIGHT)

        async def move(chunk: list[str]) -> None:
            try:
                n, size = await self._move_chunk(action.target, chunk)
                moved[0] += n
                moved[1] += size
            except DSClusterError as exc:
                errors.append(exc)
            finally:
                in_flight.release()

        try:
            chunks = await self._ds.by_size(action.keys, CHUNK_BYTES)
        except DSClusterError as exc:
            chunks, errors = [], [exc]
        async with trio.open_nursery() as nursery:
            for chunk in chunks:
                await in_flight.acquire()
                if errors:
                    in_flight.release()
                    break
                nursery.start_soon(move, chunk)
        total = self._count(action.mid, *moved)
        if errors:
            log.warning("migration %d: moving keys to %s failed after %d of %d: %s",
                        action.mid, action.target, moved[0], len(action.keys), errors[0])
            await self._driver.report(self._driver.core.move_failed, action.mid)
            return
        log.debug("migration %d: %d keys moved to %s", action.mid, total, action.target)
        await self._driver.report(self._driver.core.keys_moved, action.mid, action.keys)

    async def _move_chunk(self, target: str, keys: list[str]) -> tuple[int, int]:
        """Copy keys to target and delete them here, all under their locks."""
        async with self._locks.hold(keys):
            puts = []
            for key in keys:
                try:
                    puts.append((key, await self._ds.get(key)))
                except NotFoundError:
                    continue  # deleted since it was listed
            if puts:
                resp = await self._send_batch(target, wm.Batch(0, tuple(puts), (), True))
                if not isinstance(resp, wm.OkMany) or len(resp.results) != len(puts):
                    raise DSClusterError(f"unexpected answer {type(resp).__name__}")
                failed = [r for r in resp.results if isinstance(r, wm.ErrorInfo)]
                if failed:
                    raise DSClusterError(f"target refused {len(failed)} keys: "
                                         f"{failed[0].message}")
            batch = await self._ds.batch()
            for key in keys:
                batch.delete(key)
            await batch.commit()
        return len(puts), sum(len(v) for _, v in puts)

    def _count(self, mid: int, keys: int, nbytes: int) -> int:
        self.moved[mid] = self.moved.get(mid, 0) + keys
        self.moved_bytes[mid] = self.moved_bytes.get(mid, 0) + nbytes
        return self.moved[mid]

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

MoveKeys holds the keys' locks from reading the values until the local
copies are deleted: read, send one Batch (ASKING) to the target over the
store protocol, and only when every item is acknowledged delete the local
copies in one batch. A listed key that is gone by then (deleted meanwhile,
or an index entry a crash left without its key) is deleted too, which drops
its index entry. Any failure deletes nothing and reports move_failed (the
core retries after its next tick).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from dscluster.core.node import Action, ListKeys, MoveKeys
from dscluster.core.slots import key_slot
from dscluster.errors import DSClusterError, NotFoundError
from dscluster.node.driver import CoreDriver
from dscluster.node.keylocks import KeyLocks
from dscluster.node.slotindex import SlotIndexedDatastore
from dscluster.wire import messages as wm

log = logging.getLogger(__name__)

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
        self.slot_queries = 0

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
            self.slot_queries += 1
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
        try:
            async with self._locks.hold(action.keys):
                puts = []
                for key in action.keys:
                    try:
                        puts.append((key, await self._ds.get(key)))
                    except NotFoundError:
                        continue  # deleted since it was listed
                if puts:
                    resp = await self._send_batch(action.target,
                                                  wm.Batch(0, tuple(puts), (), True))
                    if not isinstance(resp, wm.OkMany) or len(resp.results) != len(puts):
                        raise DSClusterError(f"unexpected answer {type(resp).__name__}")
                    failed = [r for r in resp.results if isinstance(r, wm.ErrorInfo)]
                    if failed:
                        raise DSClusterError(f"target refused {len(failed)} keys: "
                                             f"{failed[0].message}")
                batch = await self._ds.batch()
                for key in action.keys:
                    batch.delete(key)
                await batch.commit()
        except DSClusterError as exc:
            log.warning("migration %d: moving %d keys to %s failed: %s", action.mid,
                        len(action.keys), action.target, exc)
            await self._driver.report(self._driver.core.move_failed, action.mid)
            return
        total = self.moved[action.mid] = self.moved.get(action.mid, 0) + len(puts)
        self.moved_bytes[action.mid] = (self.moved_bytes.get(action.mid, 0)
                                        + sum(len(v) for _, v in puts))
        log.info("migration %d: %d keys moved to %s", action.mid, total, action.target)
        await self._driver.report(self._driver.core.keys_moved, action.mid, action.keys)

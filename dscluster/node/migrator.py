"""Migrator: carries out the core's data actions, ListKeys and MoveKeys.

Theory of operation
-------------------
ListKeys asks for up to `limit` local keys of the migrating slots. The store
has no index by slot, so the first ListKeys of a migration scans every key
once (a keys-only query) and keeps the keys of those slots in a queue; later
ListKeys are served from the queue. No new key is born in a slot while it
moves (routing ASKs the target for absent keys), so when the queue runs dry
one more scan confirms the slots are empty before the core hears "nothing
left". Cost: two full key scans per migration, memory for the moving keys
only (known limitation: a per-slot index would avoid the scans).

MoveKeys holds the keys' locks from reading the values until the local
copies are deleted: read, send one Batch (ASKING) to the target over the
store protocol, and only when every item is acknowledged delete the local
copies in one batch. Any failure deletes nothing and reports move_failed
(the core retries after its next tick).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable

from dscluster.core.node import Action, ListKeys, MoveKeys
from dscluster.core.slots import SlotSet, key_slot
from dscluster.datastore import Datastore, Query
from dscluster.errors import DSClusterError, NotFoundError
from dscluster.node.driver import CoreDriver
from dscluster.node.keylocks import KeyLocks
from dscluster.wire import messages as wm

log = logging.getLogger(__name__)

SendBatch = Callable[[str, wm.Batch], Awaitable[wm.Response]]  # (target peer, request)


class Migrator:
    def __init__(self, driver: CoreDriver, datastore: Datastore, locks: KeyLocks,
                 send_batch: SendBatch) -> None:
        self._driver = driver
        self._ds = datastore
        self._locks = locks
        self._send_batch = send_batch
        self._queues: dict[int, deque[str]] = {}
        self.moved: dict[int, int] = {}  # migration id -> keys moved so far
        self.moved_bytes: dict[int, int] = {}  # migration id -> value bytes moved so far
        self.scans = 0

    async def run(self, action: Action) -> None:
        if isinstance(action, ListKeys):
            await self._list(action)
        else:
            await self._move(action)

    async def _scan(self, slots: SlotSet) -> deque[str]:
        self.scans += 1
        found: deque[str] = deque()
        results = await self._ds.query(Query(keys_only=True))
        try:
            async for entry in results:
                if key_slot(entry.key) in slots:
                    found.append(entry.key)
        finally:
            await results.aclose()
        return found

    async def _list(self, action: ListKeys) -> None:
        try:
            queue = self._queues.get(action.mid)
            if not queue:
                queue = self._queues[action.mid] = await self._scan(SlotSet.of(action.ranges))
            keys = [queue.popleft() for _ in range(min(action.limit, len(queue)))]
        except DSClusterError as exc:
            log.warning("migration %d: listing keys failed: %s", action.mid, exc)
            keys = None
        if keys is None:
            # move_failed clears the core's busy flag: it lists again on a later tick.
            await self._driver.report(self._driver.core.move_failed, action.mid)
            return
        if not keys:
            self._queues.pop(action.mid, None)
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
                    for key, _ in puts:
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

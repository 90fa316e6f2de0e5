"""Per-key locks: client requests and the migrator serialize on the same key.

Theory of operation: the core's migration rule (core/node.py) needs every
client request to hold its key's lock around route() and the datastore call,
and the migrator to hold the locks of a batch from reading the values until
their local copies are deleted. A lock exists only while someone holds or
waits for it, so idle keys cost nothing: a set of held keys, and a parking lot
only for a key someone waits on. Release hands a contended key straight to the
longest waiter (it stays held), so waiters are served in arrival order. Several
keys are always taken in sorted order, so two multi-key holders cannot
deadlock. An uncontended lock is a set insertion, without a scheduler round
trip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import trio


class KeyLocks:
    def __init__(self) -> None:
        self._held: set[str] = set()
        self._waiting: dict[str, trio.lowlevel.ParkingLot] = {}  # only for contended keys

    def __len__(self) -> int:
        return len(self._held)

    def locked(self, key: str) -> bool:
        return key in self._held

    async def _acquire(self, key: str) -> None:
        if key not in self._held:
            self._held.add(key)
            return
        lot = self._waiting.get(key)
        if lot is None:
            lot = self._waiting[key] = trio.lowlevel.ParkingLot()
        try:
            await lot.park()  # woken by _release, which hands the key over held
        except BaseException:
            if not lot and self._waiting.get(key) is lot:
                del self._waiting[key]
            raise

    def _release(self, key: str) -> None:
        lot = self._waiting.get(key)
        if lot:
            lot.unpark()  # the next waiter in arrival order now holds the key
            if not lot:
                del self._waiting[key]
            return
        self._waiting.pop(key, None)
        self._held.discard(key)

    @asynccontextmanager
    async def hold(self, keys: Iterable[str]) -> AsyncIterator[None]:
        """Hold the locks of ``keys`` (duplicates allowed) for the body."""
        taken: list[str] = []
        try:
            for key in sorted(set(keys)):
                await self._acquire(key)
                taken.append(key)
            yield
        finally:
            for key in reversed(taken):
                self._release(key)

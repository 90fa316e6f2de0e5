"""Per-key locks: client requests and the migrator serialize on the same key.

Theory of operation: the core's migration rule (core/node.py) needs every
client request to hold its key's lock around route() and the datastore call,
and the migrator to hold the locks of a batch from reading the values until
their local copies are deleted. A lock exists only while someone holds or
waits for it (a refcounted dict), so idle keys cost nothing. Several keys are
always taken in sorted order, so two multi-key holders cannot deadlock. An
uncontended lock is taken without a scheduler round trip.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import trio


class KeyLocks:
    def __init__(self) -> None:
        self._locks: dict[str, tuple[trio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    def locked(self, key: str) -> bool:
        entry = self._locks.get(key)
        return entry is not None and entry[0].locked()

    async def _acquire(self, key: str) -> None:
        lock, users = self._locks.get(key) or (trio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            lock.acquire_nowait()
        except trio.WouldBlock:
            try:
                await lock.acquire()
            except BaseException:
                self._forget(key)
                raise

    def _release(self, key: str) -> None:
        self._locks[key][0].release()
        self._forget(key)

    def _forget(self, key: str) -> None:
        lock, users = self._locks[key]
        if users == 1:
            del self._locks[key]
        else:
            self._locks[key] = (lock, users - 1)

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

"""SyncDatastore: the async Datastore contract as plain blocking calls.

Theory of operation: scripts and REPLs that do not run trio get a facade. The
store is opened and lives on a trio loop in a background thread
(dscluster/trio_thread.py), and every method hands its coroutine to the loop
and blocks until it finishes, so errors arrive as the same exceptions the
async contract raises. ``close`` closes the store on the loop, then ends the
loop and joins the thread. One store, one loop, one thread; calls from
several threads are serialised by trio.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from dscluster.datastore.base import Batch, Datastore
from dscluster.datastore.key import Key
from dscluster.datastore.query import Entry, Query, Results
from dscluster.trio_thread import TrioThread

log = logging.getLogger(__name__)

__all__ = ["SyncBatch", "SyncDatastore"]


StoreSource = Datastore | Callable[[], "Datastore | Awaitable[Datastore]"] | Any


async def _open(source: StoreSource) -> Datastore:
    """A Datastore from a store, a factory object (``await .open()``) or a callable."""
    if isinstance(source, Datastore):
        return source
    if hasattr(source, "open") and inspect.iscoroutinefunction(source.open):
        ds = await source.open()
    elif callable(source):
        ds = source()
        if inspect.isawaitable(ds):
            ds = await ds
    else:
        raise TypeError(f"cannot open a datastore from {type(source).__name__}")
    if not isinstance(ds, Datastore):
        raise TypeError(f"the factory gave {type(ds).__name__}, not a Datastore")
    return ds


@asynccontextmanager
async def _opened(source: StoreSource) -> AsyncIterator[Datastore]:
    ds = await _open(source)
    try:
        yield ds
    finally:
        if not ds.closed:  # the loop is ending: never leave the store open
            with trio.CancelScope(shield=True):
                await ds.close()


class SyncDatastore:
    """Blocking get/has/get_size/put/delete/query/batch/sync/close over an async store."""

    def __init__(self, source: StoreSource) -> None:
        self._loop = TrioThread("SyncDatastore", lambda: _opened(source))
        self._run = self._loop.run  # DatastoreClosedError once closed

    @property
    def datastore(self) -> Datastore:
        """The async store underneath (use it only from its own loop)."""
        return self._loop.value

    # -- the contract, blocking ------------------------------------------------

    def get(self, key: Key | str) -> bytes:
        return self._run(self.datastore.get, key)

    def has(self, key: Key | str) -> bool:
        return self._run(self.datastore.has, key)

    def get_size(self, key: Key | str) -> int:
        return self._run(self.datastore.get_size, key)

    def put(self, key: Key | str, value: bytes) -> None:
        self._run(self.datastore.put, key, value)

    def delete(self, key: Key | str) -> None:
        self._run(self.datastore.delete, key)

    def sync(self, prefix: Key | str = "/") -> None:
        self._run(self.datastore.sync, prefix)

    def query(self, q: Query | None = None) -> list[Entry]:
        """The whole answer as a list."""

        async def collect() -> list[Entry]:
            return await (await self.datastore.query(q)).rest()

        return self._run(collect)

    def iter_query(self, q: Query | None = None, chunk: int = 256) -> Iterator[Entry]:
        """The answer lazily, ``chunk`` entries per loop round trip; closing it frees the query."""
        results: Results = self._run(self.datastore.query, q)

        async def pull() -> list[Entry]:
            out = []
            async for e in results:
                out.append(e)
                if len(out) >= chunk:
                    break
            return out

        try:
            while True:
                entries = self._run(pull)
                yield from entries
                if len(entries) < chunk:
                    return
        finally:
            if not self.closed:
                self._run(results.aclose)

    def batch(self) -> SyncBatch:
        return SyncBatch(self, self._run(self.datastore.batch))

    def close(self) -> None:
        """Close the store, end the loop, join the thread. Idempotent."""
        if self.closed:
            return
        try:
            self._run(self.datastore.close)
        finally:
            self._loop.stop()

    @property
    def closed(self) -> bool:
        return self._loop.stopped

    def __enter__(self) -> SyncDatastore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncBatch:
    """A Batch whose commit blocks; put and delete only buffer."""

    def __init__(self, owner: SyncDatastore, batch: Batch) -> None:
        self._owner = owner
        self._batch = batch

    def put(self, key: Key | str, value: bytes) -> None:
        self._batch.put(key, value)

    def delete(self, key: Key | str) -> None:
        self._batch.delete(key)

    def __len__(self) -> int:
        return len(self._batch)

    def commit(self) -> None:
        self._owner._run(self._batch.commit)

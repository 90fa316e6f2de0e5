"""The Datastore contract: one async interface every store implements.

Theory of operation: callers use the public async methods (``get``, ``put``,
``query``...). They are written once, here: they turn a str into a Key, reject
anything else with BadKeyError, reject a value that is not bytes-like with
BadRequestError, refuse every call after ``close`` with DatastoreClosedError,
and only then call the backend's underscore method (``_get``, ``_put``...)
with a clean Key and immutable bytes. A backend therefore never re-checks
input, and every backend fails the same way on bad input.

The contract is async (trio) because the node daemon and the cluster client
live on trio. A backend whose library blocks (files with fsync, LevelDB
writes, pymongo) derives from ``BlockingDatastore``, writes plain blocking
methods, and gets them run in worker threads, with ``close`` waiting for
every call and query in flight so the library is never closed under a thread.

Semantics (go-datastore's): a missing key is NotFoundError for ``get`` and
``get_size``, False for ``has``, and not an error for ``delete``. A batch
buffers puts and deletes in order and applies them at ``commit``; an
uncommitted batch changes nothing.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import trio

from dscluster.datastore.key import Key, as_key
from dscluster.datastore.query import Entry, Query, Results
from dscluster.errors import BadRequestError, DatastoreClosedError, NotFoundError

log = logging.getLogger(__name__)

__all__ = ["Batch", "BatchOp", "BlockingDatastore", "Datastore", "as_value"]

T = TypeVar("T")

ROOT = Key.raw("/")


def as_value(value: object) -> bytes:
    """Immutable bytes from bytes, bytearray or memoryview; anything else is a BadRequestError."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise BadRequestError(f"a value must be bytes, not {type(value).__name__}")


@dataclass(frozen=True)
class BatchOp:
    """One buffered write: a put of ``value``, or a delete when ``value`` is None."""

    key: Key
    value: bytes | None

    @property
    def is_delete(self) -> bool:
        return self.value is None


class Batch:
    """Buffers puts and deletes; ``commit`` hands them, in order, to the store."""

    def __init__(self, ds: Datastore) -> None:
        self._ds = ds
        self._ops: list[BatchOp] = []

    def put(self, key: Key | str, value: bytes) -> None:
        self._ops.append(BatchOp(as_key(key), as_value(value)))

    def delete(self, key: Key | str) -> None:
        self._ops.append(BatchOp(as_key(key), None))

    def __len__(self) -> int:
        return len(self._ops)

    async def commit(self) -> None:
        """Apply every buffered op; on failure the ops stay buffered and nothing is lost."""
        self._ds._check_open()
        ops = list(self._ops)
        if ops:
            await self._ds._commit_batch(ops)
        del self._ops[: len(ops)]


class Datastore(abc.ABC):
    """The async datastore contract. Subclasses implement the underscore methods."""

    # True when a committed batch is applied all or nothing (LevelDB, memory).
    atomic_batch: ClassVar[bool] = False

    def __init__(self) -> None:
        self._closed = False

    # -- public API: validation lives here, once ------------------------------

    # get/has/get_size/put/delete spell out _check: they are the hot path, and
    # a local backend's whole call costs a few microseconds.

    async def get(self, key: Key | str) -> bytes:
        k = as_key(key)  # bad keys are reported before a closed store, like Go
        if self._closed:
            self._check_open()
        return await self._get(k)

    async def has(self, key: Key | str) -> bool:
        k = as_key(key)
        if self._closed:
            self._check_open()
        return await self._has(k)

    async def get_size(self, key: Key | str) -> int:
        k = as_key(key)
        if self._closed:
            self._check_open()
        return await self._get_size(k)

    async def put(self, key: Key | str, value: bytes) -> None:
        k = as_key(key)
        if self._closed:
            self._check_open()
        await self._put(k, value if type(value) is bytes else as_value(value))

    async def delete(self, key: Key | str) -> None:
        k = as_key(key)
        if self._closed:
            self._check_open()
        await self._delete(k)

    async def query(self, q: Query | None = None) -> Results:
        self._check_open()
        if q is None:
            q = Query()
        elif not isinstance(q, Query):
            raise BadRequestError(f"query() takes a Query, not {type(q).__name__}")
        return await self._query(q)

    async def batch(self) -> Batch:
        self._check_open()
        return Batch(self)

    async def sync(self, prefix: Key | str = ROOT) -> None:
        k = self._check(prefix)
        await self._sync(k)

    async def close(self) -> None:
        """Release the store; idempotent. Later calls raise DatastoreClosedError."""
        if self._closed:
            return
        self._closed = True
        await self._close()

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise DatastoreClosedError(f"{type(self).__name__} is closed")

    def _check(self, key: object) -> Key:
        k = as_key(key)  # bad keys are reported before a closed store, like Go
        self._check_open()
        return k

    # -- what a backend implements ---------------------------------------------

    @abc.abstractmethod
    async def _get(self, key: Key) -> bytes:
        """The value, or NotFoundError."""

    async def _has(self, key: Key) -> bool:
        try:
            await self._get(key)
        except NotFoundError:
            return False
        return True

    async def _get_size(self, key: Key) -> int:
        return len(await self._get(key))

    @abc.abstractmethod
    async def _put(self, key: Key, value: bytes) -> None: ...

    @abc.abstractmethod
    async def _delete(self, key: Key) -> None:
        """Remove the key; a missing key is not an error."""

    @abc.abstractmethod
    async def _query(self, q: Query) -> Results: ...

    async def _commit_batch(self, ops: Sequence[BatchOp]) -> None:
        """Apply ops in order. Override with the backend's native (atomic) batch."""
        for op in ops:
            if op.value is None:
                await self._delete(op.key)
            else:
                await self._put(op.key, op.value)

    async def _sync(self, prefix: Key) -> None:
        """Make writes under ``prefix`` durable. Nothing to do for volatile stores."""
        return None

    async def _close(self) -> None:
        """Release resources. Called once."""
        return None


class BlockingDatastore(Datastore):
    """A Datastore over a blocking library: write blocking methods, get async ones.

    Each blocking call runs in a worker thread (at most ``max_threads`` at a
    time) unless its name is in ``inline_ops`` -- for calls measured to be
    reliably microseconds, where a thread hop (tens of microseconds) would
    cost more than the call. ``close`` first closes open query results, then
    waits for calls in flight, then runs ``close_blocking`` in a thread.
    """

    inline_ops: ClassVar[frozenset[str]] = frozenset()
    max_threads: ClassVar[int] = 8
    query_chunk: ClassVar[int] = 512

    def __init__(self) -> None:
        super().__init__()
        self._limiter = trio.CapacityLimiter(self.max_threads)
        self._inflight = 0
        self._idle = trio.lowlevel.ParkingLot()
        self._open_results: set[Results] = set()

    # -- what a blocking backend implements ----------------------------------

    @abc.abstractmethod
    def get_blocking(self, key: Key) -> bytes: ...

    def has_blocking(self, key: Key) -> bool:
        try:
            self.get_blocking(key)
        except NotFoundError:
            return False
        return True

    def get_size_blocking(self, key: Key) -> int:
        return len(self.get_blocking(key))

    @abc.abstractmethod
    def put_blocking(self, key: Key, value: bytes) -> None: ...

    @abc.abstractmethod
    def delete_blocking(self, key: Key) -> None: ...

    @abc.abstractmethod
    def query_blocking(self, q: Query) -> tuple[Iterable[Entry], Callable[[], None] | None]:
        """An iterator answering ``q`` fully (use naive_query) and its close function."""

    def commit_blocking(self, ops: Sequence[BatchOp]) -> None:
        for op in ops:
            if op.value is None:
                self.delete_blocking(op.key)
            else:
                self.put_blocking(op.key, op.value)

    def sync_blocking(self, prefix: Key) -> None:
        pass

    def close_blocking(self) -> None:
        pass

    # -- the async side ----------------------------------------------------------

    # Reads named in inline_ops skip the _get coroutine layer: for LevelDB a
    # get is about 1.5 us, so each frame on the way costs a measurable share.

    async def get(self, key: Key | str) -> bytes:
        k = as_key(key)
        if self._closed:
            self._check_open()
        if "get" in self.inline_ops:
            return self.get_blocking(k)
        return await self._call("get", self.get_blocking, k)

    async def has(self, key: Key | str) -> bool:
        k = as_key(key)
        if self._closed:
            self._check_open()
        if "has" in self.inline_ops:
            return self.has_blocking(k)
        return await self._call("has", self.has_blocking, k)

    async def get_size(self, key: Key | str) -> int:
        k = as_key(key)
        if self._closed:
            self._check_open()
        if "get_size" in self.inline_ops:
            return self.get_size_blocking(k)
        return await self._call("get_size", self.get_size_blocking, k)

    async def _call(self, op: str, fn: Callable[..., T], *args: Any) -> T:
        if op in self.inline_ops:
            return fn(*args)
        self._inflight += 1  # before any checkpoint, so close() cannot miss it
        try:
            return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.unpark_all()

    async def _get(self, key: Key) -> bytes:
        return await self._call("get", self.get_blocking, key)

    async def _has(self, key: Key) -> bool:
        return await self._call("has", self.has_blocking, key)

    async def _get_size(self, key: Key) -> int:
        return await self._call("get_size", self.get_size_blocking, key)

    async def _put(self, key: Key, value: bytes) -> None:
        await self._call("put", self.put_blocking, key, value)

    async def _delete(self, key: Key) -> None:
        await self._call("delete", self.delete_blocking, key)

    async def _commit_batch(self, ops: Sequence[BatchOp]) -> None:
        await self._call("commit", self.commit_blocking, ops)

    async def _sync(self, prefix: Key) -> None:
        await self._call("sync", self.sync_blocking, prefix)

    async def _query(self, q: Query) -> Results:
        entries, close = await self._call("query", self.query_blocking, q)
        results: Results

        def forget() -> None:
            self._open_results.discard(results)
            if close is not None:
                close()

        results = Results.from_blocking_iterable(
            entries, forget, chunk=self.query_chunk, limiter=self._limiter
        )
        self._open_results.add(results)
        return results

    async def _close(self) -> None:
        for results in list(self._open_results):
            await results.aclose()
        while self._inflight:
            await self._idle.park()
        await trio.to_thread.run_sync(self.close_blocking)

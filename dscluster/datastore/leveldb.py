"""leveldb: a Datastore over LevelDB (plyvel), byte-compatible with go-ds-leveldb.

Theory of operation. A key is stored under exactly its string's bytes
("/local/pins" -> b"/local/pins") and a value as its bytes, which is what
go-ds-leveldb does, so Kubo's ``datastore/`` directory (its "levelds" mount)
opens as-is and a directory written here opens in Kubo. New databases are
created without compression, as Kubo's default ``"compression": "none"``.

LevelDB keeps keys sorted by bytes, which for UTF-8 is the order of Python
strings: a query's prefix becomes a prefix iterator, and an order by key
(ascending or descending) is the iterator's own order. Everything else a query
asks for is done by ``naive_query`` on the iterator's output. The iterator is
pulled in chunks in a worker thread and closed when the Results are closed,
early or not.

Durability. Every write goes to LevelDB's log first. With ``sync=True`` the log
is fsynced before a write returns: an acknowledged write survives power loss.
Without it, it survives a kill -9 of the process (the OS has the log) but not
power loss; ``sync()`` then forces the log to disk. A batch is one LevelDB
WriteBatch: all of it is applied or none.

Errors: plyvel raises IOError for a failed read or write of LevelDB's files (a
full or read-only disk, vanished files); every data call converts it to
UnavailableError here, so a client sees "unavailable" and retries elsewhere or
later instead of an internal error. After a failed write LevelDB refuses
further writes until the database is reopened (its background error sticks),
so a node whose disk filled up must be restarted once space is freed.

Blocking: a get and a small unsynced put cost microseconds, less than a
thread hop (about 250 us here), so they run inline; synced writes and values
of OFFLOAD_BYTES or more (whose writes may wait for compaction) run in a
worker thread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace

import plyvel

from dscluster.datastore.base import BatchOp, BlockingDatastore
from dscluster.datastore.key import Key
from dscluster.datastore.query import (
    Entry,
    OrderByKey,
    OrderByKeyDescending,
    Query,
    key_range,
    naive_query,
)
from dscluster.errors import ConfigError, NotFoundError, UnavailableError

log = logging.getLogger(__name__)

OFFLOAD_BYTES = 64 * 1024  # values this large are written from a worker thread
INLINE_BATCH_OPS = 64  # larger batches are written from a worker thread


def _unavailable(what: str, exc: plyvel.IOError) -> UnavailableError:
    return UnavailableError(f"LevelDB cannot {what}: {exc}")


class LevelDatastore(BlockingDatastore):
    """A Datastore in a LevelDB directory (created when missing)."""

    inline_ops = frozenset({"get", "has", "get_size"})
    atomic_batch = True

    def __init__(self, path: str | os.PathLike[str], sync: bool = False) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.sync_writes = sync
        try:
            self._db = plyvel.DB(self.path, create_if_missing=True, compression=None)
        except plyvel.IOError as exc:  # most often: another process holds the LOCK
            raise UnavailableError(f"cannot open LevelDB at {self.path}: {exc}") from exc
        except plyvel.Error as exc:
            raise ConfigError(f"cannot open LevelDB at {self.path}: {exc}") from exc

    # -- blocking side ------------------------------------------------------
    def get_blocking(self, key: Key) -> bytes:
        try:
            value = self._db.get(key.bytes())
        except plyvel.IOError as exc:
            raise _unavailable("read", exc) from exc
        if value is None:
            raise NotFoundError(f"{key} not found")
        return value

    def has_blocking(self, key: Key) -> bool:
        try:
            return self._db.get(key.bytes()) is not None
        except plyvel.IOError as exc:
            raise _unavailable("read", exc) from exc

    def put_blocking(self, key: Key, value: bytes) -> None:
        try:
            self._db.put(key.bytes(), value, sync=self.sync_writes)
        except plyvel.IOError as exc:
            raise _unavailable("write", exc) from exc

    def delete_blocking(self, key: Key) -> None:
        try:
            self._db.delete(key.bytes(), sync=self.sync_writes)
        except plyvel.IOError as exc:
            raise _unavailable("write", exc) from exc

    def commit_blocking(self, ops: Sequence[BatchOp]) -> None:
        # One WriteBatch: LevelDB applies all of it or none; later ops win.
        try:
            with self._db.write_batch(sync=self.sync_writes) as wb:
                for op in ops:
                    if op.value is None:
                        wb.delete(op.key.bytes())
                    else:
                        wb.put(op.key.bytes(), op.value)
        except plyvel.IOError as exc:
            raise _unavailable("write", exc) from exc

    def query_blocking(self, q: Query) -> tuple[Iterable[Entry], Callable[[], None] | None]:
        low, high = key_range(q)  # seek: naive_query still checks every entry
        reverse = False
        if q.orders in ((OrderByKey(),), (OrderByKeyDescending(),)):
            # the iterator's own order answers these: naive_query need not sort
            reverse = q.orders == (OrderByKeyDescending(),)
            q = replace(q, orders=())
        values = not q.keys_only or q.returns_sizes or q.needs_values
        it = self._db.iterator(start=None if low is None else low.encode(),
                               stop=None if high is None else high.encode(),
                               reverse=reverse, include_value=values)

        def entries() -> Iterator[Entry]:
            if values:
                for k, v in it:
                    yield Entry(k.decode(), v, len(v))
            else:
                for k in it:
                    yield Entry(k.decode(), None, -1)

        return naive_query(q, entries()), it.close

    def sync_blocking(self, prefix: Key) -> None:
        # An empty synced WriteBatch makes LevelDB fsync its log, so every
        # earlier write is durable. LevelDB cannot sync one prefix alone.
        try:
            with self._db.write_batch(sync=True):
                pass
        except plyvel.IOError as exc:
            raise _unavailable("sync", exc) from exc

    def close_blocking(self) -> None:
        self._db.close()

    # -- async side: writes inline when cheap (reads: inline_ops) ------------
    def _offload(self, nbytes: int) -> bool:
        return self.sync_writes or nbytes >= OFFLOAD_BYTES

    async def _put(self, key: Key, value: bytes) -> None:
        if self.sync_writes or len(value) >= OFFLOAD_BYTES:
            await self._call("put", self.put_blocking, key, value)
        else:
            self.put_blocking(key, value)

    async def _delete(self, key: Key) -> None:
        if self.sync_writes:
            await self._call("delete", self.delete_blocking, key)
        else:
            self.delete_blocking(key)

    async def _commit_batch(self, ops: Sequence[BatchOp]) -> None:
        size = sum(len(op.value) for op in ops if op.value is not None)
        if self._offload(size) or len(ops) > INLINE_BATCH_OPS:
            await self._call("commit", self.commit_blocking, ops)
        else:
            self.commit_blocking(ops)

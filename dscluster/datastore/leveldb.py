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

Writes go through one queue here (``_write_blocking``), LevelDB's own group
commit done in Python: the writer at the head of the queue takes every write
queued behind it (up to GROUP_BYTES) and applies them as one WriteBatch, so
concurrent synced writes share one fsync, as they do inside LevelDB. The
queue exists so that no write ever enters LevelDB behind a failed one: see
"A full disk" below.

Errors: plyvel raises IOError for a failed read or write of LevelDB's files (a
full or read-only disk, vanished files); every data call converts it to
UnavailableError here, so a client sees "unavailable" and retries elsewhere or
later instead of an internal error.

A full disk, and how it heals (measured on a small tmpfs, plyvel 1.5.1 with
LevelDB 1.22; tests/security/test_sec_full_disk.py). A write can fail two ways:

- its record cannot be appended to the log. LevelDB does *not* remember
  that, and takes the next write once space returns; but the failed append
  left a torn record in the log, and when the log is next replayed (reopen,
  restart, crash) its reader drops the rest of that log block, and with it
  writes that were acknowledged after the torn record (20 of 20 small puts
  were lost that way in the experiment);
- the memtable (or a compaction) cannot be written to a table file. LevelDB
  keeps that background error and refuses every later write with it, even
  after space returns, until the database is reopened.

So after any failed write the store is *damaged*: the queue refuses every
later write without handing it to LevelDB. When the failure was a full disk
(ENOSPC, EDQUOT), the next write tries to heal: if the filesystem has room
to reopen (LevelDB replays its logs into a table file on open, so about the
logs' size, plus REOPEN_MARGIN), the store waits for calls and query steps
in flight, closes the database and opens it again (replaying the log up to
the torn record, then starting a new log), and the write goes on. A write
whose own failure is healed that way is retried once. Reads keep being
served while the disk is full; they wait only during a reopen (milliseconds
to a second for a full 4 MiB log). A query left open across a reopen fails
its next step with UnavailableError (never a silently short answer). If the
reopen itself fails (space taken again meanwhile), the store answers
UnavailableError, reads included, and retries the reopen at most every
HEAL_INTERVAL seconds. Other write failures (a read-only disk, I/O errors)
leave the store refusing writes until it is reopened, by a restart.

Blocking: a get and a small unsynced put cost microseconds, less than a
thread hop (about 250 us here), so they run inline; synced writes and values
of OFFLOAD_BYTES or more (whose writes may wait for compaction) run in a
worker thread.
"""

from __future__ import annotations

import collections
import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import plyvel
import trio

from dscluster.datastore.base import BatchOp, BlockingDatastore
from dscluster.datastore.key import Key, as_key
from dscluster.datastore.query import (
    Entry,
    OrderByKey,
    OrderByKeyDescending,
    Query,
    Results,
    key_range,
    naive_query,
)
from dscluster.errors import ConfigError, DSClusterError, NotFoundError, UnavailableError

log = logging.getLogger(__name__)

OFFLOAD_BYTES = 64 * 1024  # values this large are written from a worker thread
INLINE_BATCH_OPS = 64  # larger batches are written from a worker thread
GROUP_BYTES = 1 << 20  # a group commit takes queued writes up to this size (LevelDB's)
# Free space beyond the logs' size before a reopen is tried: the open writes a
# MANIFEST, CURRENT, a new LOG and a new log, each at least one 4 KiB block.
REOPEN_MARGIN = 32 * 1024
HEAL_INTERVAL = 1.0  # seconds between two reopen attempts
DISK_FULL = ("No space left on device", "Disk quota exceeded")

Op = tuple[bytes, "bytes | None"]  # (key, value); None deletes


def _text(exc: BaseException) -> str:
    """plyvel's message without its bytes repr: ``IO error: ...: No space left on device``."""
    arg = exc.args[0] if exc.args else exc
    return arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)


def _unavailable(what: str, exc: plyvel.IOError) -> UnavailableError:
    return UnavailableError(f"LevelDB cannot {what}: {_text(exc)}")


def _free_bytes(path: str) -> int:
    st = os.statvfs(path)  # root may use the blocks reserved for it, as LevelDB does then
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize


def _reopen_needs(path: str) -> int:
    """Bytes an open needs: its logs become a table file, and a new MANIFEST lists every table."""
    logs = tables = 0
    with os.scandir(path) as it:
        for e in it:
            if e.name.endswith(".log"):
                logs += e.stat().st_size
            elif e.name.endswith((".ldb", ".sst")):
                tables += 1
    return logs + 128 * tables + REOPEN_MARGIN


class _Closed:
    """Stands in for the plyvel DB while it is reopened or after a failed reopen."""

    def __init__(self, why: str) -> None:
        self.why = why

    def _refuse(self, *args: object, **kwargs: object) -> Any:
        raise UnavailableError(self.why)

    get = put = delete = write_batch = iterator = _refuse

    def close(self) -> None:
        pass


class _Write:
    __slots__ = ("done", "error", "nbytes", "ops", "sync")

    def __init__(self, ops: Sequence[Op], sync: bool) -> None:
        self.ops = ops
        self.sync = sync
        self.nbytes = sum(len(k) + (0 if v is None else len(v)) for k, v in ops)
        self.done = False
        self.error: str | None = None


class LevelDatastore(BlockingDatastore):
    """A Datastore in a LevelDB directory (created when missing)."""

    inline_ops = frozenset({"get", "has", "get_size"})
    atomic_batch = True

    def __init__(self, path: str | os.PathLike[str], sync: bool = False) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.sync_writes = sync
        self._db: Any = self._open()
        # the write queue (blocking side, any thread)
        self._wcond = threading.Condition(threading.Lock())
        self._wqueue: collections.deque[_Write] = collections.deque()
        self._damage: str | None = None  # why writes are refused; set by a failed write
        self._disk_full = False  # that failure was a full disk: a reopen may heal it
        # healing (async side, the trio thread)
        self._hold = False  # reads and writes must call _ready first (reopening, or closed)
        self._gate: trio.Event | None = None  # set while a reopen runs
        self._down: str | None = None  # the DB is closed: a reopen failed
        self._heal_lock = trio.Lock()
        self._needs: int | None = None  # bytes a reopen needs, measured once per failure burst
        self._last_reopen = -HEAL_INTERVAL
        self._generation = 0  # bumped by each reopen: older query iterators are dead
        self._pulls = 0  # query steps in worker threads
        self._pulls_idle = trio.lowlevel.ParkingLot()
        self.reopens = 0  # successful reopens after a full disk (for tests and logs)

    def _open(self) -> Any:
        try:
            return plyvel.DB(self.path, create_if_missing=True, compression=None)
        except plyvel.IOError as exc:  # most often: another process holds the LOCK
            raise UnavailableError(f"cannot open LevelDB at {self.path}: {_text(exc)}") from exc
        except plyvel.Error as exc:
            raise ConfigError(f"cannot open LevelDB at {self.path}: {_text(exc)}") from exc

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
        self._write_blocking(((key.bytes(), value),), self.sync_writes)

    def delete_blocking(self, key: Key) -> None:
        self._write_blocking(((key.bytes(), None),), self.sync_writes)

    def commit_blocking(self, ops: Sequence[BatchOp]) -> None:
        # One WriteBatch: LevelDB applies all of it or none; later ops win.
        self._write_blocking([(op.key.bytes(), op.value) for op in ops], self.sync_writes)

    def sync_blocking(self, prefix: Key) -> None:
        # An empty synced WriteBatch makes LevelDB fsync its log, so every
        # earlier write is durable. LevelDB cannot sync one prefix alone.
        self._write_blocking((), True, what="sync")

    def _write_blocking(self, ops: Sequence[Op], sync: bool, what: str = "write") -> None:
        """Apply ``ops`` as one atomic write, in a group with the writes queued with it.

        The writer at the head of the queue leads: it takes the writes behind
        it, applies them without holding the lock (others queue meanwhile),
        and hands the outcome to each. A failure marks the store damaged
        before the next leader looks, so no write follows a failed one into
        LevelDB's log.
        """
        w = _Write(ops, sync)
        cond, queue = self._wcond, self._wqueue
        with cond:
            queue.append(w)
            while not w.done and queue[0] is not w:
                cond.wait()
            if w.done:  # a leader wrote it
                if w.error is not None:
                    raise UnavailableError(w.error)
                return
            group = [w]
            size = w.nbytes
            for other in list(queue)[1:]:
                if size + other.nbytes > GROUP_BYTES:
                    break
                group.append(other)
                size += other.nbytes
            error = self._damage
        if error is None:
            error = f"LevelDB cannot {what}: interrupted"  # if _apply raises something else
            try:
                self._apply(group)
                error = None
            except plyvel.IOError as exc:
                error = f"LevelDB cannot {what}: {_text(exc)}"
                self._disk_full = any(s in error for s in DISK_FULL)
                self._damage = error  # before the next leader reads it, under the lock below
            except UnavailableError as exc:  # the database is closed (_Closed)
                error = str(exc)
            finally:
                self._finish(group, error)
        else:
            self._finish(group, error)
        if error is not None:
            raise UnavailableError(error)

    def _finish(self, group: list[_Write], error: str | None) -> None:
        with self._wcond:
            for member in group:
                self._wqueue.popleft()
                member.done = True
                member.error = error
            self._wcond.notify_all()

    def _apply(self, group: list[_Write]) -> None:
        db = self._db
        sync = any(m.sync for m in group)
        if len(group) == 1 and len(group[0].ops) == 1:
            key, value = group[0].ops[0]
            if value is None:
                db.delete(key, sync=sync)
            else:
                db.put(key, value, sync=sync)
            return
        wb = db.write_batch(sync=sync)
        for m in group:
            for key, value in m.ops:
                if value is None:
                    wb.delete(key)
                else:
                    wb.put(key, value)
        wb.write()

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

    def close_blocking(self) -> None:
        self._db.close()

    # -- async side: reads inline (inline_ops), writes inline when cheap -------
    # get/has/get_size are base's, plus one flag test: wait while a reopen runs.

    async def get(self, key: Key | str) -> bytes:
        k = as_key(key)
        if self._closed:
            self._check_open()
        if self._hold:
            await self._ready()
        return self.get_blocking(k)

    async def has(self, key: Key | str) -> bool:
        k = as_key(key)
        if self._closed:
            self._check_open()
        if self._hold:
            await self._ready()
        return self.has_blocking(k)

    async def get_size(self, key: Key | str) -> int:
        k = as_key(key)
        if self._closed:
            self._check_open()
        if self._hold:
            await self._ready()
        return self.get_size_blocking(k)

    async def _put(self, key: Key, value: bytes) -> None:
        await self._write(((key.bytes(), value),),
                          self.sync_writes or len(value) >= OFFLOAD_BYTES)

    async def _delete(self, key: Key) -> None:
        await self._write(((key.bytes(), None),), self.sync_writes)

    async def _commit_batch(self, ops: Sequence[BatchOp]) -> None:
        size = sum(len(op.value) for op in ops if op.value is not None)
        offload = self.sync_writes or size >= OFFLOAD_BYTES or len(ops) > INLINE_BATCH_OPS
        await self._write([(op.key.bytes(), op.value) for op in ops], offload)

    async def _sync(self, prefix: Key) -> None:
        await self._write((), True, sync=True, what="sync")

    async def _write(self, ops: Sequence[Op], offload: bool, sync: bool | None = None,
                     what: str = "write") -> None:
        sync = self.sync_writes if sync is None else sync
        if self._hold or self._damage is not None:
            await self._before_write()
        for attempt in (1, 2):
            try:
                if offload:
                    await self._call(what, self._write_blocking, ops, sync, what)
                else:
                    self._write_blocking(ops, sync, what)
                return
            except UnavailableError:
                # a failure healed at once (space was there: a sticky background
                # error) is retried once; a write is idempotent
                if attempt == 2 or not await self._heal():
                    raise

    async def _before_write(self) -> None:
        await self._ready()
        if self._damage is not None and not await self._heal():
            raise UnavailableError(self._refusal())

    def _refusal(self) -> str:
        if self._down is not None:
            return self._down
        why = f"{self._damage} (writes refused since)"
        if self._disk_full and self._needs is not None:
            why += f"; they resume once {self._needs // 1024} KiB are free"
        return why

    async def _ready(self) -> None:
        """Wait for a reopen in progress; retry a failed one (at most every HEAL_INTERVAL)."""
        while self._gate is not None:
            await self._gate.wait()
        self._check_open()
        if self._down is not None:
            await self._heal()

    async def _heal(self) -> bool:
        """Reopen the database after a full disk once there is room; True when writes resume."""
        async with self._heal_lock:
            if self._damage is None and self._down is None:
                return True  # healed meanwhile (one reopen per failure burst)
            if not self._disk_full or self._closed:
                return False
            if trio.current_time() - self._last_reopen < HEAL_INTERVAL:
                return False
            if self._needs is None:
                self._needs = await trio.to_thread.run_sync(_reopen_needs, self.path)
            if await trio.to_thread.run_sync(_free_bytes, self.path) < self._needs:
                return False
            return await self._reopen()

    async def _reopen(self) -> bool:
        self._gate = trio.Event()
        self._hold = True
        try:
            self._generation += 1  # open query iterators take no further step
            while self._inflight or self._pulls:  # let calls and steps in flight finish
                if self._inflight:
                    await self._idle.park()
                else:
                    await self._pulls_idle.park()
            if self._closed:  # close() came first: it closes the database
                return False
            self._last_reopen = trio.current_time()
            old, self._db = self._db, _Closed(f"LevelDB at {self.path} is being reopened")
            self._inflight += 1  # so that close() waits for it (no checkpoint since the test)
            try:
                self._db = await trio.to_thread.run_sync(self._reopen_blocking, old)
            except DSClusterError as exc:  # UnavailableError (no room after all), ConfigError
                self._down = f"LevelDB at {self.path} is closed: reopening it failed: {exc}"
                self._db = _Closed(self._down)
                log.warning("%s; retrying every %.0f s", self._down, HEAL_INTERVAL)
                return False
            finally:
                self._inflight -= 1
                if self._inflight == 0:
                    self._idle.unpark_all()
            self.reopens += 1
            was, self._damage, self._down, self._needs = self._damage, None, None, None
            self._disk_full = False
            log.warning("LevelDB at %s reopened after a full disk (%s): writes resume",
                        self.path, was)
            return True
        finally:
            self._hold = self._down is not None
            self._gate.set()
            self._gate = None

    def _reopen_blocking(self, old: Any) -> Any:
        old.close()  # nothing uses it: no call, write or query step is in flight
        return self._open()

    async def _query(self, q: Query) -> Results:
        if self._hold:
            await self._ready()
        generation, chunk, limiter = self._generation, self.query_chunk, self._limiter
        # (read before the call: a reopen that starts meanwhile kills this iterator)
        entries, close = await self._call("query", self.query_blocking, q)
        it = iter(entries)
        results: Results

        def pull() -> list[Entry]:
            return list(itertools.islice(it, chunk))

        async def in_thread(fn: Callable[[], Any]) -> Any:
            # counted, and only while the database it iterates is open
            if self._generation != generation:
                raise UnavailableError(f"LevelDB at {self.path} was reopened (after a full "
                                       "disk) during this query: run it again")
            self._pulls += 1
            try:
                return await trio.to_thread.run_sync(fn, limiter=limiter)
            finally:
                self._pulls -= 1
                if self._pulls == 0:
                    self._pulls_idle.unpark_all()

        async def source() -> Any:
            while True:
                batch = await in_thread(pull)
                for e in batch:
                    yield e
                if len(batch) < chunk:
                    return

        async def forget() -> None:
            self._open_results.discard(results)
            if close is not None and self._generation == generation:
                await in_thread(close)  # a reopen closed it already otherwise

        results = Results(source(), forget)
        self._open_results.add(results)
        return results

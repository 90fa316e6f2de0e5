"""SlotIndexedDatastore: the node's datastore, with every key indexed by its slot.

Theory of operation
-------------------
A migration must list the keys of some slots without scanning the whole
store. So every key K stored through this wrapper has an empty index entry
``/.dscluster/slot/SSSSS/K`` (SSSSS: K's slot in five digits, so one slot's
entries are one contiguous key range). Listing a slot is a keys-only prefix
query over its entries: cost proportional to the slot, not to the store.

Invariant: a stored key always has its index entry; otherwise the migrator
would leave the key behind on a node that no longer owns its slot. Writes
keep it through crashes by their order: index puts are applied before the
data, the data before index deletes. A store whose batches are atomic
(LevelDB, memory) takes all of it as one batch. Elsewhere (MongoDB's
unordered bulk writes, flatfs with its index in a LevelDB beside it) a write
is up to three commits in that order. A crash in between leaves at worst an
index entry without its key, which the migrator drops when the key is gone.

The namespace ``/.dscluster`` belongs to the node: queries never return it,
and a get, put or delete of a key under it is a BadKeyError. So is one of
the root key ``/``, whose index entry would end in "/" (no key); the error
names the user's key, never an index key.

A store without the index marker (written before the index existed, or by
another tool) is indexed by one full keys-only scan in ``ensure_index``,
which the daemon runs before it serves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from dscluster.core.slots import key_slot
from dscluster.datastore.base import BatchOp, Datastore
from dscluster.datastore.key import Key
from dscluster.datastore.query import (
    Entry,
    FilterKeyCompare,
    OrderByKey,
    Query,
    Results,
    normalized_prefix,
)
from dscluster.errors import BadKeyError, NotFoundError

if TYPE_CHECKING:
    from dscluster.node.keylocks import KeyLocks

log = logging.getLogger(__name__)

RESERVED = "/.dscluster"
INDEX_PREFIX = RESERVED + "/slot/"
MARKER = Key.raw(RESERVED + "/slot-index-v1")
BUILD_BATCH = 1024  # index entries per batch while building the index
DROP_BATCH = 4096  # keys of a slot deleted per batch by drop_slot


def index_key(key: Key) -> Key:
    s = str(key)
    return Key.raw(f"{INDEX_PREFIX}{key_slot(s):05d}{s}")


def _reserved(key: str) -> bool:
    return key == RESERVED or key.startswith(RESERVED + "/")


def check_user_key(key: str) -> None:
    """BadKeyError, naming ``key``, for a key in the node's own namespace or the root
    key ``/`` (which holds no value here: its index entry would not be a key)."""
    if _reserved(key):
        raise BadKeyError(f"{key}: the namespace {RESERVED} is reserved for the node")
    if key == "/":
        raise BadKeyError("/: the root key cannot hold a value; use a key below it, "
                          "such as /name")


def slot_indexed(ds: Datastore) -> SlotIndexedDatastore:
    """``ds`` with its slot index: kept in ``ds`` itself, or, for a flatfs (which
    takes block keys only), in a LevelDB beside it at ``PATH.slotindex``."""
    if isinstance(ds, SlotIndexedDatastore):
        return ds
    from dscluster.datastore.flatfs import FlatfsDatastore

    if isinstance(ds, FlatfsDatastore):
        from dscluster.datastore.leveldb import LevelDatastore

        return SlotIndexedDatastore(ds, LevelDatastore(ds.path + ".slotindex",
                                                       sync=ds.sync_writes))
    return SlotIndexedDatastore(ds)


@dataclass(frozen=True)
class _NotReserved:
    """Query filter hiding the node's own namespace."""

    def matches(self, entry: Entry) -> bool:
        return not _reserved(entry.key)


class SlotIndexedDatastore(Datastore):
    """``data`` with a slot index kept in ``index`` (default: in ``data`` itself)."""

    def __init__(self, data: Datastore, index: Datastore | None = None) -> None:
        super().__init__()
        self.data = data
        self.index = data if index is None else index
        self._one_batch = index is None and data.atomic_batch

    # -- reads -------------------------------------------------------------------

    def _checked(self, key: Key) -> Key:
        check_user_key(str(key))
        return key

    async def _get(self, key: Key) -> bytes:
        return await self.data.get(self._checked(key))

    async def _has(self, key: Key) -> bool:
        return await self.data.has(self._checked(key))

    async def _get_size(self, key: Key) -> int:
        return await self.data.get_size(self._checked(key))

    async def _query(self, q: Query) -> Results:
        prefix = normalized_prefix(q.prefix)
        if prefix == "" or _reserved(prefix.rstrip("/")):
            q = replace(q, filters=(*q.filters, _NotReserved()))
        return await self.data.query(q)

    async def keys_in_slots(self, first: int, last: int, limit: int) -> list[str]:
        """Up to ``limit`` keys stored in slots ``first``..``last``, in slot order.

        One ordered range query over the index (a seek in LevelDB and MongoDB).
        """
        self._check_open()
        bounds = (FilterKeyCompare(">=", f"{INDEX_PREFIX}{first:05d}/"),
                  FilterKeyCompare("<", f"{INDEX_PREFIX}{last + 1:05d}/"))
        results = await self.index.query(Query(prefix=INDEX_PREFIX, filters=bounds,
                                               orders=(OrderByKey(),), keys_only=True,
                                               limit=limit))
        skip = len(INDEX_PREFIX) + 5
        try:
            return [entry.key[skip:] async for entry in results]
        finally:
            await results.aclose()

    async def by_size(self, keys: Sequence[str], most_bytes: int) -> list[list[str]]:
        """Split ``keys`` into runs holding at most ``most_bytes`` of values (sizes as of
        now; a run holds one key at least). A key gone since it was listed counts 0
        and stays in: its run's reader finds it gone and can drop its index entry."""
        runs: list[list[str]] = [[]]
        size = 0
        for key in keys:
            try:
                n = await self.get_size(key)
            except NotFoundError:
                n = 0
            if runs[-1] and size + n > most_bytes:
                runs.append([])
                size = 0
            runs[-1].append(key)
            size += n
        return [run for run in runs if run]

    # -- writes ------------------------------------------------------------------

    async def drop_slot(self, slot: int, locks: KeyLocks,
                        keep: Callable[[], bool] = lambda: False) -> int:
        """Delete every key of ``slot``, a batch at a time under the keys' locks
        (so no client write of them runs in between); stop once ``keep()`` says the
        slot's keys are wanted here after all. Returns the keys deleted."""
        deleted = 0
        while keys := await self.keys_in_slots(slot, slot, DROP_BATCH):
            async with locks.hold(keys):
                if keep():
                    break
                batch = await self.batch()
                for key in keys:
                    batch.delete(key)
                await batch.commit()
                deleted += len(keys)
        return deleted

    async def _put(self, key: Key, value: bytes) -> None:
        await self._write([BatchOp(self._checked(key), value)])

    async def _delete(self, key: Key) -> None:
        await self._write([BatchOp(self._checked(key), None)])

    async def _commit_batch(self, ops: Sequence[BatchOp]) -> None:
        for op in ops:
            self._checked(op.key)
        await self._write(ops)

    async def _write(self, ops: Sequence[BatchOp]) -> None:
        last = {op.key: op.is_delete for op in ops}  # a key's last op decides its entry
        index_puts = [BatchOp(index_key(k), b"") for k, gone in last.items() if not gone]
        index_deletes = [BatchOp(index_key(k), None) for k, gone in last.items() if gone]
        if self._one_batch:
            await _commit(self.data, [*index_puts, *ops, *index_deletes])
            return
        await _commit(self.index, index_puts)
        await _commit(self.data, ops)
        await _commit(self.index, index_deletes)

    async def has_index(self) -> bool:
        """Whether this store was written through the index (False: new, or wiped)."""
        return await self.index.has(MARKER)

    async def ensure_index(self) -> int:
        """Index every key once if the store has no index yet; returns keys indexed."""
        if await self.index.has(MARKER):
            return 0
        count = 0
        pending: list[BatchOp] = []
        results = await self.data.query(Query(keys_only=True))
        try:
            async for entry in results:
                if _reserved(entry.key):
                    continue
                pending.append(BatchOp(index_key(Key.raw(entry.key)), b""))
                if len(pending) >= BUILD_BATCH:
                    await _commit(self.index, pending)
                    count += len(pending)
                    pending = []
        finally:
            await results.aclose()
        await _commit(self.index, [*pending, BatchOp(MARKER, b"")])
        count += len(pending)
        await self.index.sync()
        if count:
            log.info("slot index built: %d keys indexed", count)
        return count

    async def _sync(self, prefix: Key) -> None:
        await self.data.sync(prefix)
        if self.index is not self.data:
            await self.index.sync()

    async def _close(self) -> None:
        try:
            await self.data.close()
        finally:
            if self.index is not self.data:
                await self.index.close()


async def _commit(store: Datastore, ops: Sequence[BatchOp]) -> None:
    """Commit ops made of checked keys and bytes: the contract's checks are done."""
    if ops:
        store._check_open()
        await store._commit_batch(ops)

"""MountDatastore: several datastores under one key space, by key prefix.

Theory of operation (model: go-datastore's mount): each mount is a prefix Key
and a child store. A key goes to the mount with the longest prefix that is
equal to it or an ancestor of it (on path boundaries: "/blocks" does not
catch "/blocksx"), with the prefix cut off: under mount "/blocks", key
"/blocks/ABC" is the child's "/ABC".

A put to a key no mount covers is a BadKeyError; a get is NotFoundError, has
is False and delete does nothing, as for any absent key.

A query asks every mount that can hold matching keys: the mounts below the
query prefix whole, and the deepest mount at or above it with the rest of
the prefix. Each child answers in the query's order (by key when none is
given), with value filters pushed down; the answers are merged in that order
with a heap, keys get their mount prefix back, and then key filters, the
offset and the limit apply once, globally. A batch is split into one batch
per mount; the mounts are closed with the MountDatastore.
"""

from __future__ import annotations

import functools
import heapq
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, replace

from dscluster.datastore.base import BatchOp, Datastore
from dscluster.datastore.key import Key, as_key
from dscluster.datastore.query import (
    Entry,
    FilterValueCompare,
    OrderByKey,
    Query,
    Results,
    compare_entries,
    naive_results,
)
from dscluster.errors import BadKeyError, ConfigError, NotFoundError

log = logging.getLogger(__name__)

__all__ = ["Mount", "MountDatastore", "merge_ordered", "query_merged"]

ROOT = Key.raw("/")


@dataclass(frozen=True)
class Mount:
    prefix: Key
    datastore: Datastore

    def rest(self, key: Key) -> Key:
        """``key`` as the child sees it (the mount prefix cut off)."""
        if self.prefix == ROOT:
            return key
        tail = str(key)[len(str(self.prefix)) :]
        return Key.raw(tail) if tail else ROOT

    def outer(self, child_key: str) -> str:
        """A child's key string with the mount prefix put back."""
        if self.prefix == ROOT:
            return child_key
        return str(self.prefix) if child_key == "/" else str(self.prefix) + child_key


class MountDatastore(Datastore):
    def __init__(self, mounts: Iterable[tuple[Key | str, Datastore]]) -> None:
        super().__init__()
        found: dict[Key, Datastore] = {}
        for prefix, ds in mounts:
            k = as_key(prefix)
            if k in found:
                raise ConfigError(f"two datastores mounted at {k}")
            if not isinstance(ds, Datastore):
                raise ConfigError(f"mount {k} is not a Datastore: {type(ds).__name__}")
            found[k] = ds
        # Deepest first: the first match in lookup is the longest prefix.
        self.mounts = sorted(
            (Mount(k, ds) for k, ds in found.items()),
            key=lambda m: (-len(m.prefix.namespaces()) if m.prefix != ROOT else 1, str(m.prefix)),
        )

    def lookup(self, key: Key) -> Mount | None:
        for m in self.mounts:
            if m.prefix == key or m.prefix.is_ancestor_of(key):
                return m
        return None

    def _lookup_all(self, prefix: Key) -> list[tuple[Mount, Key]]:
        """Every mount that may hold keys under ``prefix``, with the child's prefix."""
        found = []
        for m in self.mounts:
            if prefix.is_ancestor_of(m.prefix):
                found.append((m, ROOT))
            elif m.prefix == prefix or m.prefix.is_ancestor_of(prefix):
                found.append((m, m.rest(prefix)))
                break  # shallower mounts cannot hold keys under this prefix
        return found

    # -- single keys ----------------------------------------------------------

    async def _get(self, key: Key) -> bytes:
        m = self.lookup(key)
        if m is None:
            raise NotFoundError(str(key))
        return await m.datastore.get(m.rest(key))

    async def _has(self, key: Key) -> bool:
        m = self.lookup(key)
        return m is not None and await m.datastore.has(m.rest(key))

    async def _get_size(self, key: Key) -> int:
        m = self.lookup(key)
        if m is None:
            raise NotFoundError(str(key))
        return await m.datastore.get_size(m.rest(key))

    async def _put(self, key: Key, value: bytes) -> None:
        m = self._mount_for_write(key)
        await m.datastore.put(m.rest(key), value)

    async def _delete(self, key: Key) -> None:
        m = self.lookup(key)
        if m is not None:
            await m.datastore.delete(m.rest(key))

    def _mount_for_write(self, key: Key) -> Mount:
        m = self.lookup(key)
        if m is None:
            raise BadKeyError(f"no datastore is mounted for {key}")
        return m

    # -- batches, sync, close ------------------------------------------------------

    async def _commit_batch(self, ops: Sequence[BatchOp]) -> None:
        # Route everything first: an unmounted put fails the commit before any
        # mount is written, and the ops stay in the caller's batch.
        per_mount: dict[Key, tuple[Mount, list[BatchOp]]] = {}
        for op in ops:
            m = self._mount_for_write(op.key) if op.value is not None else self.lookup(op.key)
            if m is not None:
                per_mount.setdefault(m.prefix, (m, []))[1].append(op)
        for m, mount_ops in per_mount.values():
            batch = await m.datastore.batch()
            for op in mount_ops:
                if op.value is None:
                    batch.delete(m.rest(op.key))
                else:
                    batch.put(m.rest(op.key), op.value)
            await batch.commit()

    async def _sync(self, prefix: Key) -> None:
        for m, rest in self._lookup_all(prefix):
            await m.datastore.sync(rest)

    async def _close(self) -> None:
        errors = []
        for m in self.mounts:
            try:
                await m.datastore.close()
            except Exception as exc:  # close the others anyway; report the first
                log.warning("closing mount %s failed: %s", m.prefix, exc)
                errors.append(exc)
        if errors:
            raise errors[0]

    # -- queries --------------------------------------------------------------------

    async def _query(self, q: Query) -> Results:
        orders = q.orders or (OrderByKey(),)
        child_q = Query(
            filters=tuple(f for f in q.filters if isinstance(f, FilterValueCompare)),
            orders=orders,
            keys_only=q.keys_only and not q.needs_values,
            returns_sizes=q.returns_sizes,
        )
        merged = await query_merged(
            [(m, replace(child_q, prefix=str(rest))) for m, rest in self._lookup_all(Key(q.prefix))],
            orders)
        # The prefix again (the child of a mount equal to it may hold the
        # mount's own key), key filters on full keys, then global paging.
        return naive_results(replace(q, orders=()), merged)


async def query_merged(children: Sequence[tuple[Mount, Query]], orders: Sequence) -> Results:
    """Run each child's query and merge the answers in `orders`; every child's
    results are closed with the merged Results, or at once if one query fails."""
    opened: list[tuple[Mount, Results]] = []
    try:
        for m, child_q in children:
            opened.append((m, await m.datastore.query(child_q)))
    except BaseException:
        for _, child in opened:
            await child.aclose()
        raise

    async def close_all() -> None:
        for _, child in opened:
            await child.aclose()

    return Results(merge_ordered(opened, orders), close_all)


async def merge_ordered(
    heads: list[tuple[Mount, Results]], orders: Sequence
) -> AsyncIterator[Entry]:
    """Merge children's ordered answers into one ordered stream with full keys."""
    if len(heads) == 1:  # the common case: nothing to merge
        m, results = heads[0]
        async for e in results:
            yield Entry(m.outer(e.key), e.value, e.size)
        return
    sort_key = functools.cmp_to_key(functools.partial(compare_entries, orders))
    heap: list[tuple[object, int, Entry]] = []

    async def advance(i: int) -> None:
        m, results = heads[i]
        try:
            e = await results.__anext__()
        except StopAsyncIteration:
            return
        full = Entry(m.outer(e.key), e.value, e.size)
        heapq.heappush(heap, (sort_key(full), i, full))

    for i in range(len(heads)):
        await advance(i)
    while heap:
        _, i, e = heapq.heappop(heap)
        yield e
        await advance(i)

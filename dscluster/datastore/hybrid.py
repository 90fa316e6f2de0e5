"""HybridDatastore: IPFS block keys in flatfs, every other key in LevelDB.

Theory of operation: a key goes to one child by its FORM alone, never by its
value, so a get, has or delete knows where to look without asking both. The
block-shaped keys flatfs can hold (one namespace of ``[0-9A-Z+-_=]``, which
the cluster's "/CIQ..." and "/AFK..." block keys are) go to the ``blocks``
store; every other key (lower case, several namespaces: metadata, user keys)
goes to the ``other`` store. The two key sets are disjoint, so a query asks
both in the query's order (key order when none) and merges the answers as
MountDatastore does; key filters, offset and limit then apply once, globally.
A batch is split into one batch per child (blocks first; atomic only within
each child). Closing the hybrid closes both children.

Why: flatfs writes a 256 KiB block as one file with no compaction, LevelDB
answers small keys an order of magnitude faster than file creates
(doc/datastores.md, "Choosing the node's default").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from dscluster.datastore.base import BatchOp, Datastore
from dscluster.datastore.flatfs import is_flatfs_key
from dscluster.datastore.key import Key
from dscluster.datastore.mount import ROOT, Mount, query_merged
from dscluster.datastore.query import (
    FilterValueCompare,
    OrderByKey,
    Query,
    Results,
    naive_results,
)
from dscluster.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["HybridDatastore"]


class HybridDatastore(Datastore):
    def __init__(self, blocks: Datastore, other: Datastore) -> None:
        super().__init__()
        for name, ds in (("blocks", blocks), ("other", other)):
            if not isinstance(ds, Datastore):
                raise ConfigError(f"hybrid {name} store is not a Datastore: {type(ds).__name__}")
        self.blocks = blocks
        self.other = other

    def child_of(self, key: Key) -> Datastore:
        return self.blocks if is_flatfs_key(str(key)) else self.other

    async def _get(self, key: Key) -> bytes:
        return await self.child_of(key).get(key)

    async def _has(self, key: Key) -> bool:
        return await self.child_of(key).has(key)

    async def _get_size(self, key: Key) -> int:
        return await self.child_of(key).get_size(key)

    async def _put(self, key: Key, value: bytes) -> None:
        await self.child_of(key).put(key, value)

    async def _delete(self, key: Key) -> None:
        await self.child_of(key).delete(key)

    async def _commit_batch(self, ops: Sequence[BatchOp]) -> None:
        per_child: dict[int, list[BatchOp]] = {}
        children = (self.blocks, self.other)
        for op in ops:
            per_child.setdefault(0 if is_flatfs_key(str(op.key)) else 1, []).append(op)
        for i, child_ops in sorted(per_child.items()):
            batch = await children[i].batch()
            for op in child_ops:
                if op.value is None:
                    batch.delete(op.key)
                else:
                    batch.put(op.key, op.value)
            await batch.commit()

    async def _sync(self, prefix: Key) -> None:
        await self.blocks.sync(prefix)
        await self.other.sync(prefix)

    async def _close(self) -> None:
        errors = []
        for ds in (self.blocks, self.other):
            try:
                await ds.close()
            except Exception as exc:  # close the other anyway; report the first
                log.warning("closing the hybrid's %s failed: %s", type(ds).__name__, exc)
                errors.append(exc)
        if errors:
            raise errors[0]

    async def _query(self, q: Query) -> Results:
        orders = q.orders or (OrderByKey(),)
        child_q = Query(
            prefix=q.prefix,
            filters=tuple(f for f in q.filters if isinstance(f, FilterValueCompare)),
            orders=orders,
            keys_only=q.keys_only and not q.needs_values,
            returns_sizes=q.returns_sizes,
        )
        merged = await query_merged(
            [(Mount(ROOT, ds), child_q) for ds in (self.blocks, self.other)], orders)
        return naive_results(replace(q, orders=()), merged)

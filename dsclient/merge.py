"""One query over many nodes: what to push down, and how to merge the answers.

Theory of operation: every node answers the query over its own keys. Prefix,
filters and orders are pushed down unchanged, so each node sends only
matching entries, already sorted. Paging cannot be pushed down as is: the
global page ``[offset, offset+limit)`` may come from any node, so each node is
asked for its first ``offset + limit`` entries (no paging at all without a
limit), the sorted streams are merged by the query's order (ties by key, as
the contract says), and offset and limit are applied once, to the merge.
Without orders the streams are simply concatenated. When the merge compares
values but the caller wants keys only, nodes still send values and the merge
drops them at the end.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

from dscluster.datastore.query import (
    Entry,
    OrderByValue,
    OrderByValueDescending,
    Query,
    compare_entries,
)


def node_query(q: Query) -> Query:
    """The query each node answers for the global query ``q``."""
    limit = q.offset + q.limit if q.limit else 0
    by_value = any(isinstance(o, OrderByValue | OrderByValueDescending) for o in q.orders)
    keys_only = q.keys_only and not by_value
    return replace(q, offset=0, limit=limit, keys_only=keys_only)


def _shape(q: Query, e: Entry) -> Entry:
    if q.keys_only and e.value is not None:
        size = (e.size if e.size >= 0 else len(e.value)) if q.returns_sizes else -1
        return Entry(e.key, None, size)
    return e


async def merge(q: Query, streams: Sequence[AsyncIterator[Entry]]) -> AsyncIterator[Entry]:
    """The global answer to ``q`` from per-node answers to ``node_query(q)``."""
    skipped = sent = 0

    async def ordered() -> AsyncIterator[Entry]:
        if not q.orders:
            for stream in streams:
                async for e in stream:
                    yield e
            return
        cmp = functools.partial(compare_entries, q.orders)
        heads: list[Entry | None] = []
        for stream in streams:
            heads.append(await anext(stream, None))
        while True:
            best = -1
            for i, head in enumerate(heads):
                if head is not None and (best < 0 or cmp(head, heads[best]) < 0):  # type: ignore[arg-type]
                    best = i
            if best < 0:
                return
            entry = heads[best]
            assert entry is not None
            yield entry
            heads[best] = await anext(streams[best], None)

    async for e in ordered():
        if skipped < q.offset:
            skipped += 1
            continue
        yield _shape(q, e)
        sent += 1
        if q.limit and sent >= q.limit:
            return

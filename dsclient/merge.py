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

A key is answered once even when two nodes hold it: during a slot migration
the source still has a key the target already imported (the source deletes
its copy only after the target's durable ack). The source's copy is the
authoritative one, and it is the copy the slot owner in the client's table
serves, so when both copies meet in an ordered merge the owner's wins. With
key order the copies arrive next to each other (one key remembered); any
other order keeps a set of the keys already sent (memory grows with the
answer, like the answer itself when collected).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace

from dscluster.datastore.query import (
    Entry,
    OrderByKey,
    OrderByKeyDescending,
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


async def merge(q: Query, streams: Sequence[AsyncIterator[Entry]],
                peers: Sequence[str] = (),
                owner_of: Callable[[str], str | None] | None = None) -> AsyncIterator[Entry]:
    """The global answer to ``q`` from per-node answers to ``node_query(q)``.

    ``peers[i]`` names the node behind ``streams[i]``; with ``owner_of`` (key ->
    owning peer per the client's table) a key two nodes send comes from its owner.
    """
    skipped = sent = 0

    def owns(i: int, e: Entry) -> bool:
        return owner_of is not None and i < len(peers) and owner_of(e.key) == peers[i]

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
                if head is None:
                    continue
                if best < 0:
                    best = i
                    continue
                c = cmp(head, heads[best])  # type: ignore[arg-type]
                if c < 0 or (c == 0 and owns(i, head) and not owns(best, heads[best])):  # type: ignore[arg-type]
                    best = i
            if best < 0:
                return
            entry = heads[best]
            assert entry is not None
            yield entry
            heads[best] = await anext(streams[best], None)

    # Equal copies are adjacent when the first order is by key (or there are
    # orders and ties on the key land together): remember one key; otherwise all.
    by_key = bool(q.orders) and isinstance(q.orders[0], OrderByKey | OrderByKeyDescending)
    last: str | None = None
    seen: set[str] = set()
    async for e in ordered():
        if by_key:
            if e.key == last:
                continue
            last = e.key
        elif len(streams) > 1:
            if e.key in seen:
                continue
            seen.add(e.key)
        if skipped < q.offset:
            skipped += 1
            continue
        yield _shape(q, e)
        sent += 1
        if q.limit and sent >= q.limit:
            return

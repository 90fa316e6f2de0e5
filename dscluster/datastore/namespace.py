"""Key-transform wrappers: a child datastore seen through a key rewrite.

Theory of operation (model: go-datastore's keytransform and namespace): a
``KeyTransform`` is two functions, ``convert_key`` (outer key -> child key)
and ``invert_key`` (child key -> outer key). ``KeyTransformDatastore`` rewrites
every key on the way in and every result key on the way out. For an arbitrary
transform a query cannot be pushed down (child key order and prefixes mean
nothing outside), so the child is asked for everything and the query is
answered naively on the inverted keys, skipping child keys the transform
cannot invert.

``NamespaceDatastore(prefix, child)`` is the common case: outer "/a" is child
"/prefix/a". Prepending a fixed string keeps string order, string prefixes and
path boundaries, so the whole query -- prefix, filters, orders, offset, limit
-- is handed to the child with its keys rewritten, and only the result keys
are cut back. The wrapper owns its child: closing it closes the child.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from dscluster.datastore.base import BatchOp, Datastore
from dscluster.datastore.key import Key, as_key
from dscluster.datastore.query import (
    Entry,
    FilterKeyCompare,
    FilterKeyPrefix,
    Query,
    Results,
    naive_results,
)
from dscluster.errors import BadKeyError

log = logging.getLogger(__name__)

__all__ = [
    "KeyTransform",
    "KeyTransformDatastore",
    "NamespaceDatastore",
    "PrefixTransform",
]

ROOT = Key.raw("/")


class KeyTransform(Protocol):
    def convert_key(self, key: Key) -> Key: ...

    def invert_key(self, key: Key) -> Key:
        """The outer key, or BadKeyError when ``key`` is not in the transform's image."""
        ...


@dataclass(frozen=True)
class PrefixTransform:
    """Outer "/a" is child "<prefix>/a"."""

    prefix: Key

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", as_key(self.prefix))

    def convert_key(self, key: Key) -> Key:
        return self.prefix.child(key)

    def invert_key(self, key: Key) -> Key:
        if self.prefix == ROOT:
            return key
        if key == self.prefix:
            return ROOT
        if not self.prefix.is_ancestor_of(key):
            raise BadKeyError(f"{key} is not under the namespace {self.prefix}")
        return Key.raw(str(key)[len(str(self.prefix)) :])

    @property
    def string_prefix(self) -> str:
        """What to prepend to a key string ("" for the root namespace)."""
        return "" if self.prefix == ROOT else str(self.prefix)


class KeyTransformDatastore(Datastore):
    """A child datastore seen through any KeyTransform; owns the child."""

    def __init__(self, child: Datastore, transform: KeyTransform) -> None:
        super().__init__()
        self.child = child
        self.transform = transform

    async def _get(self, key: Key) -> bytes:
        return await self.child.get(self.transform.convert_key(key))

    async def _has(self, key: Key) -> bool:
        return await self.child.has(self.transform.convert_key(key))

    async def _get_size(self, key: Key) -> int:
        return await self.child.get_size(self.transform.convert_key(key))

    async def _put(self, key: Key, value: bytes) -> None:
        await self.child.put(self.transform.convert_key(key), value)

    async def _delete(self, key: Key) -> None:
        await self.child.delete(self.transform.convert_key(key))

    async def _commit_batch(self, ops: Sequence[BatchOp]) -> None:
        # One child batch, so the commit is as atomic as the child's.
        batch = await self.child.batch()
        for op in ops:
            if op.value is None:
                batch.delete(self.transform.convert_key(op.key))
            else:
                batch.put(self.transform.convert_key(op.key), op.value)
        await batch.commit()

    async def _sync(self, prefix: Key) -> None:
        await self.child.sync(self.transform.convert_key(prefix))

    async def _close(self) -> None:
        await self.child.close()

    async def _query(self, q: Query) -> Results:
        child_q = Query(keys_only=q.keys_only and not q.needs_values, returns_sizes=q.returns_sizes)
        return naive_results(q, await self._inverted(await self.child.query(child_q)))

    async def _inverted(self, results: Results) -> Results:
        """The child's results with keys turned back into outer keys."""
        invert = self.transform.invert_key

        async def source() -> AsyncIterator[Entry]:
            async for e in results:
                try:
                    key = str(invert(Key.raw(e.key)))
                except BadKeyError:
                    continue  # a child key outside this transform's image
                yield Entry(key, e.value, e.size)

        return Results(source(), results.aclose)


class NamespaceDatastore(KeyTransformDatastore):
    """The child's keys under ``prefix``, seen without it; queries go to the child whole."""

    def __init__(self, prefix: Key | str, child: Datastore) -> None:
        self.prefix_transform = PrefixTransform(as_key(prefix))
        super().__init__(child, self.prefix_transform)

    async def _query(self, q: Query) -> Results:
        p = self.prefix_transform.string_prefix
        filters = []
        for f in q.filters:
            # Prepending the same string to both sides keeps every comparison.
            if isinstance(f, FilterKeyCompare):
                f = FilterKeyCompare(f.op, p + f.key)
            elif isinstance(f, FilterKeyPrefix):
                f = FilterKeyPrefix(p + f.prefix)
            filters.append(f)
        # The child prefix is the namespace (or below it), so only its keys come
        # back. As in go-datastore, the outer root key "/" (the child's
        # namespace key itself) is reachable by get but not listed by queries.
        child_q = replace(
            q,
            prefix=str(self.prefix_transform.convert_key(Key(q.prefix))),
            filters=tuple(filters),
        )
        return _strip_prefix(p, await self.child.query(child_q))


def _strip_prefix(p: str, results: Results) -> Results:
    """Results with ``p`` cut from every key: string slicing, no Key per entry."""
    if not p:
        return results
    n = len(p)

    async def source() -> AsyncIterator[Entry]:
        async for e in results:
            if e.key[n : n + 1] != "/" or not e.key.startswith(p):
                raise BadKeyError(f"child returned {e.key!r} outside the namespace {p}")
            yield Entry(e.key[n:], e.value, e.size)

    return Results(source(), results.aclose)

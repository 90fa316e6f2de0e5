"""MemoryDatastore: a dict behind the Datastore contract.

Theory of operation: every call is a dict operation on the event loop (no
thread hop: nothing here blocks). A query snapshots the matching items when
it is made, so writes during an iteration never disturb it, and answers it
with naive_query. A batch commit applies all ops in one synchronous step, so
it is atomic with respect to every other task.
"""

from __future__ import annotations

from collections.abc import Sequence

from dscluster.datastore.base import BatchOp, Datastore
from dscluster.datastore.key import Key
from dscluster.datastore.query import Entry, Query, Results, naive_query, normalized_prefix
from dscluster.errors import NotFoundError

__all__ = ["MemoryDatastore"]


class MemoryDatastore(Datastore):
    def __init__(self) -> None:
        super().__init__()
        self._data: dict[Key, bytes] = {}

    async def _get(self, key: Key) -> bytes:
        try:
            return self._data[key]
        except KeyError:
            raise NotFoundError(str(key)) from None

    async def _has(self, key: Key) -> bool:
        return key in self._data

    async def _put(self, key: Key, value: bytes) -> None:
        self._data[key] = value

    async def _delete(self, key: Key) -> None:
        self._data.pop(key, None)

    async def _commit_batch(self, ops: Sequence[BatchOp]) -> None:
        for op in ops:
            if op.value is None:
                self._data.pop(op.key, None)
            else:
                self._data[op.key] = op.value

    async def _query(self, q: Query) -> Results:
        prefix = normalized_prefix(q.prefix)
        snapshot = [
            Entry(s, v, len(v))
            for k, v in self._data.items()
            if (s := str(k)).startswith(prefix)
        ]
        return Results.from_iterable(naive_query(q, snapshot))

    async def _close(self) -> None:
        self._data = {}

    def __len__(self) -> int:
        return len(self._data)

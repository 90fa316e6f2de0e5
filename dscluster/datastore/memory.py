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
    atomic_batch = True

    def __init__(self) -> None:
        super().__init__()
        # Entries are stored ready-made (size -1, as most queries answer) so a
        # query does not build one object per key.
        self._data: dict[str, Entry] = {}

    async def _get(self, key: Key) -> bytes:
        try:
            return self._data[str(key)].value  # type: ignore[return-value]
        except KeyError:
            raise NotFoundError(str(key)) from None

    async def _has(self, key: Key) -> bool:
        return str(key) in self._data

    async def _put(self, key: Key, value: bytes) -> None:
        s = str(key)
        self._data[s] = Entry(s, value)

    async def _delete(self, key: Key) -> None:
        self._data.pop(str(key), None)

    async def _commit_batch(self, ops: Sequence[BatchOp]) -> None:
        for op in ops:
            s = str(op.key)
            if op.value is None:
                self._data.pop(s, None)
            else:
                self._data[s] = Entry(s, op.value)

    async def _query(self, q: Query) -> Results:
        prefix = normalized_prefix(q.prefix)
        if prefix:
            snapshot = [e for s, e in self._data.items() if s.startswith(prefix)]
        else:
            snapshot = list(self._data.values())
        return Results.from_iterable(naive_query(q, snapshot))

    async def _close(self) -> None:
        self._data = {}

    def __len__(self) -> int:
        return len(self._data)

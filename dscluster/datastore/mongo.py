"""mongo: a Datastore in one MongoDB collection (pymongo; any MongoDB-wire server).

Theory of operation. Each key is one document::

    {_id: "<key string>", v: BinData(0, <value>), size: <len(value)>}

The key is the ``_id``, so the collection's mandatory unique ``_id`` index is
the only index needed: it keeps keys in order (string order of UTF-8 bytes,
the order of Python strings, under the default "simple" collation) and
answers a prefix as the range ``prefix <= _id < prefix-successor``. ``size``
answers ``get_size`` and keys-only queries with sizes without reading values.

A put is an upsert (replace_one with upsert=True); a batch is one unordered
``bulk_write`` of upserts and deletes (not atomic across keys: MongoDB applies
each document change atomically). A query pushes down the prefix, an order by
key and, when nothing else must be evaluated here, offset and limit;
``naive_query`` does the rest on the cursor's output.

pymongo (the ``mongo`` extra) blocks, so every call runs in a worker thread. Connection trouble
(server down, timeouts, network errors) is UnavailableError; authentication
failure is UnauthorizedError; a value above MongoDB's 16 MiB document limit
is BadRequestError.

Durability is the server's: with the default write concern an acknowledged
put is in the server's memory and journalled within its commit interval
(100 ms for WiredTiger); ``sync=True`` asks for ``j: true`` so an
acknowledged put is in the server's journal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeVar

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
from dscluster.errors import (
    BadRequestError,
    ConfigError,
    NotFoundError,
    UnauthorizedError,
    UnavailableError,
)

try:  # pymongo is the [mongo] extra: a base install runs every other datastore
    import pymongo
    from bson import Binary
    from pymongo import DeleteOne, ReplaceOne
    from pymongo import errors as mongo_errors
    from pymongo.write_concern import WriteConcern
except ImportError as exc:
    raise ConfigError("the mongo datastore needs pymongo: pip install 'ds-cluster[mongo]'"
                      ) from exc

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_VALUE = 16 * 1024 * 1024 - 64 * 1024  # MongoDB's 16 MiB BSON limit, less room for the key
_AUTH_CODES = {13, 18}  # Unauthorized, AuthenticationFailed
_DUPLICATE_KEY = 11000


def _check_size(value: bytes) -> bytes:
    if len(value) > MAX_VALUE:
        raise BadRequestError(
            f"value of {len(value)} bytes exceeds MongoDB's document limit ({MAX_VALUE} bytes)"
        )
    return value


def _document(key: str, value: bytes) -> dict[str, Any]:
    return {"_id": key, "v": Binary(value), "size": len(value)}


def _mapped(fn: Callable[[], T], what: str) -> T:
    """Run a pymongo call, converting its errors to the contract's."""
    try:
        return fn()
    except mongo_errors.ConnectionFailure as exc:  # also AutoReconnect, timeouts
        raise UnavailableError(f"MongoDB unavailable during {what}: {exc}") from exc
    except mongo_errors.OperationFailure as exc:
        if exc.code in _AUTH_CODES:
            raise UnauthorizedError(f"MongoDB refused {what}: {exc}") from exc
        raise UnavailableError(f"MongoDB failed {what}: {exc}") from exc
    except (mongo_errors.DocumentTooLarge, mongo_errors.InvalidDocument) as exc:
        raise BadRequestError(f"MongoDB rejected {what}: {exc}") from exc
    except mongo_errors.PyMongoError as exc:
        raise UnavailableError(f"MongoDB error during {what}: {exc}") from exc


class MongoDatastore(BlockingDatastore):
    """A Datastore in ``collection`` of ``database`` at a MongoDB URI.

    The client connects lazily; ``server_timeout_ms`` bounds how long a call
    waits for an unreachable server before raising UnavailableError.
    """

    def __init__(
        self,
        uri: str,
        database: str = "dscluster",
        collection: str = "datastore",
        *,
        sync: bool = False,
        server_timeout_ms: int = 10_000,
    ) -> None:
        super().__init__()
        try:
            self._client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
                uri, serverSelectionTimeoutMS=server_timeout_ms, connect=False
            )
        except (mongo_errors.ConfigurationError, mongo_errors.InvalidURI, ValueError) as exc:
            raise BadRequestError(f"bad MongoDB URI {uri!r}: {exc}") from exc
        concern = WriteConcern(j=True) if sync else None
        self._col = self._client[database].get_collection(collection, write_concern=concern)
        self.sync_writes = sync

    def get_blocking(self, key: Key) -> bytes:
        k = str(key)
        doc = _mapped(lambda: self._col.find_one({"_id": k}, {"v": 1}), f"get {k}")
        if doc is None:
            raise NotFoundError(f"{k} not found")
        return bytes(doc["v"])

    def has_blocking(self, key: Key) -> bool:
        k = str(key)
        return _mapped(lambda: self._col.find_one({"_id": k}, {"_id": 1}), f"has {k}") is not None

    def get_size_blocking(self, key: Key) -> int:
        k = str(key)
        doc = _mapped(lambda: self._col.find_one({"_id": k}, {"size": 1}), f"get_size {k}")
        if doc is None:
            raise NotFoundError(f"{k} not found")
        return int(doc["size"])

    def put_blocking(self, key: Key, value: bytes) -> None:
        doc = _document(str(key), _check_size(value))
        _mapped(lambda: self._upsert(doc), f"put {key}")

    def _upsert(self, doc: dict[str, Any]) -> None:
        try:
            self._col.replace_one({"_id": doc["_id"]}, doc, upsert=True)
        except mongo_errors.DuplicateKeyError:
            # Two upserts of a new key raced and the other inserted first: ours
            # is now a plain replace and cannot collide again.
            self._col.replace_one({"_id": doc["_id"]}, doc, upsert=True)

    def delete_blocking(self, key: Key) -> None:
        _mapped(lambda: self._col.delete_one({"_id": str(key)}), f"delete {key}")

    def commit_blocking(self, ops: Sequence[BatchOp]) -> None:
        last: dict[str, bytes | None] = {}  # the last op on a key wins
        for op in ops:
            k = str(op.key)
            last.pop(k, None)  # keep the order of last writes
            last[k] = None if op.value is None else _check_size(op.value)
        requests: list[Any] = [
            DeleteOne({"_id": k}) if v is None else ReplaceOne({"_id": k}, _document(k, v), upsert=True)
            for k, v in last.items()
        ]
        _mapped(lambda: self._bulk(requests), f"batch of {len(requests)}")

    def _bulk(self, requests: list[Any]) -> None:
        try:
            self._col.bulk_write(requests, ordered=False)
        except mongo_errors.BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if not errors or any(e.get("code") != _DUPLICATE_KEY for e in errors):
                raise
            # upserts that raced another writer's insert: retry just those
            self._col.bulk_write([requests[e["index"]] for e in errors], ordered=False)

    def query_blocking(self, q: Query) -> tuple[Iterable[Entry], Callable[[], None] | None]:
        low, high = key_range(q)
        # a bound ending in NUL (from > or <=) is left to naive_query: BSON strings avoid NUL
        bounds = {op: k for op, k in (("$gte", low), ("$lt", high))
                  if k is not None and "\0" not in k}
        selector = {"_id": bounds} if bounds else {}
        values = not q.keys_only or q.needs_values
        cursor = self._col.find(selector, None if values else {"v": 0})
        if q.orders in ((OrderByKey(),), (OrderByKeyDescending(),)):
            direction = pymongo.DESCENDING if q.orders == (OrderByKeyDescending(),) else 1
            cursor = cursor.sort("_id", direction)
            q = replace(q, orders=())
        if not q.orders and not q.filters:
            # nothing left to evaluate here: the server pages
            cursor = cursor.skip(q.offset).limit(q.limit)
            q = replace(q, offset=0, limit=0)

        def entries() -> Iterator[Entry]:
            docs = iter(cursor)
            while (doc := _mapped(lambda: next(docs, None), "query")) is not None:
                value = bytes(doc["v"]) if "v" in doc else None
                yield Entry(doc["_id"], value, int(doc.get("size", -1)))

        return naive_query(q, entries()), cursor.close

    def sync_blocking(self, prefix: Key) -> None:
        # Nothing is buffered on this side: every write was acknowledged by the
        # server (and journalled there when sync=True).
        return None

    def close_blocking(self) -> None:
        self._client.close()

    async def drop(self) -> None:
        """Remove the whole collection (tests and benchmarks start clean with it)."""
        self._check_open()
        await self._call("drop", lambda: _mapped(self._col.drop, "drop"))

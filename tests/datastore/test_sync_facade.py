"""SyncDatastore: the blocking facade, called from plain (non-trio) test functions."""

import threading

import pytest

from dscluster.datastore import Entry, MemoryDatastore, Query
from dscluster.datastore.mount import MountDatastore
from dscluster.datastore.query import OrderByKey
from dscluster.datastore.sync import SyncDatastore
from dscluster.errors import BadKeyError, BadRequestError, DatastoreClosedError, NotFoundError
from dscluster.testing.conformance import OpenWith


def test_basic_calls_and_errors() -> None:
    with SyncDatastore(MemoryDatastore()) as ds:
        ds.put("/a/b", b"1")
        assert ds.get("/a/b") == b"1"
        assert ds.has("a/b/")
        assert ds.get_size("/a/b") == 1
        ds.sync("/a")
        ds.delete("/a/b")
        ds.delete("/a/b")
        assert not ds.has("/a/b")
        with pytest.raises(NotFoundError):
            ds.get("/a/b")
        with pytest.raises(BadKeyError):
            ds.get(42)  # type: ignore[arg-type]
        with pytest.raises(BadRequestError):
            ds.put("/a", "text")  # type: ignore[arg-type]
    assert ds.closed
    with pytest.raises(DatastoreClosedError):
        ds.get("/a")
    ds.close()  # idempotent


def test_query_list_and_iterator() -> None:
    with SyncDatastore(MemoryDatastore()) as ds:
        b = ds.batch()
        for i in range(1000):
            b.put(f"/k/{i:04d}", b"%d" % i)
        assert len(b) == 1000
        b.commit()
        q = Query(prefix="/k", orders=(OrderByKey(),), limit=3)
        assert ds.query(q) == [Entry(f"/k/{i:04d}", b"%d" % i) for i in range(3)]
        keys = [e.key for e in ds.iter_query(Query(orders=(OrderByKey(),)), chunk=100)]
        assert keys == [f"/k/{i:04d}" for i in range(1000)]
        it = ds.iter_query(Query(keys_only=True), chunk=10)
        assert next(it).value is None
        it.close()  # frees the query early; the store goes on working
        assert ds.get("/k/0001") == b"1"


def test_factories_and_the_thread_ends() -> None:
    before = threading.active_count()
    async def make() -> MountDatastore:
        return MountDatastore([("/", MemoryDatastore())])

    for source in (MemoryDatastore, make, OpenWith(MemoryDatastore)):
        ds = SyncDatastore(source)
        ds.put("/x", b"y")
        assert ds.get("/x") == b"y"
        ds.close()
    assert threading.active_count() == before


def test_the_store_is_closed_with_the_facade() -> None:
    inner = MemoryDatastore()
    with SyncDatastore(inner) as ds:
        ds.put("/a", b"1")
    assert inner.closed


def test_a_failing_factory_raises_in_the_caller() -> None:
    def broken() -> MemoryDatastore:
        raise BadRequestError("no such store")

    before = threading.active_count()
    with pytest.raises(BadRequestError, match="no such store"):
        SyncDatastore(broken)
    with pytest.raises(TypeError):
        SyncDatastore(42)
    assert threading.active_count() == before

"""mongo backend against a real MongoDB-wire server (SecantusDB unless MONGODB_URI)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import pymongo
import pytest
import trio

from dscluster.datastore.mongo import MAX_VALUE, MongoDatastore
from dscluster.datastore.query import FilterKeyCompare, OrderByKey, OrderByKeyDescending, Query
from dscluster.errors import (
    BadRequestError,
    DatastoreClosedError,
    NotFoundError,
    UnavailableError,
)
from dscluster.testing.conformance import DatastoreSuite, OpenWith

DB = "dscluster_test"


@pytest.fixture
async def ds(mongodb_uri):
    store = MongoDatastore(mongodb_uri, DB, f"t{uuid.uuid4().hex}")
    yield store
    if not store.closed:
        await store.drop()
        await store.close()


@pytest.mark.parametrize("size", [0, 9, 300 * 1024])
async def test_put_get_has_size_delete(ds, size):
    value = os.urandom(size)
    with trio.fail_after(20):
        await ds.put("/a/b", value)
        assert await ds.get("/a/b") == value
        assert await ds.has("/a/b")
        assert await ds.get_size("/a/b") == size
        await ds.delete("/a/b")
        await ds.delete("/a/b")  # missing: not an error
        assert not await ds.has("/a/b")
        with pytest.raises(NotFoundError, match="/a/b"):
            await ds.get("/a/b")
        with pytest.raises(NotFoundError):
            await ds.get_size("/a/b")


async def test_documents_follow_the_documented_schema(ds, mongodb_uri):
    with trio.fail_after(20):
        await ds.put("/x/y", b"\x00\x01value")
        client = pymongo.MongoClient(mongodb_uri)
        try:
            doc = client[DB][ds._col.name].find_one({"_id": "/x/y"})
        finally:
            client.close()
    assert doc == {"_id": "/x/y", "v": b"\x00\x01value", "size": 7}


async def test_bad_values_are_refused_and_lose_nothing(ds):
    with trio.fail_after(20):
        await ds.put("/k", b"kept")
        with pytest.raises(BadRequestError):
            await ds.put("/k", "text")
        with pytest.raises(BadRequestError, match="document limit"):
            await ds.put("/k", b"x" * (MAX_VALUE + 1))
        assert await ds.get("/k") == b"kept"


async def test_batch_is_one_bulk_write_where_the_last_op_wins(ds):
    with trio.fail_after(20):
        await ds.put("/old", b"old")
        batch = await ds.batch()
        for i in range(50):
            batch.put(f"/b/{i:02d}", b"%d" % i)
        batch.delete("/old")
        batch.put("/b/00", b"last")
        batch.delete("/b/01")
        assert not await ds.has("/b/02")
        await batch.commit()
        assert await ds.get("/b/00") == b"last"
        assert not await ds.has("/b/01")
        assert await ds.get("/b/49") == b"49"
        assert not await ds.has("/old")


async def _keys(ds, q):
    return [e.key for e in await (await ds.query(q)).rest()]


async def test_queries_push_prefix_order_and_paging_to_the_server(ds):
    keys = ["/a", "/a/1", "/a/2", "/a/3", "/a0/x", "/ab/1", "/b/1"]
    with trio.fail_after(20):
        for k in keys:
            await ds.put(k, k.encode())
        assert await _keys(ds, Query(prefix="/a", orders=(OrderByKey(),))) == [
            "/a/1",
            "/a/2",
            "/a/3",
        ]
        assert await _keys(ds, Query(prefix="/a", orders=(OrderByKeyDescending(),), limit=2)) == [
            "/a/3",
            "/a/2",
        ]
        assert await _keys(ds, Query(orders=(OrderByKey(),), offset=2, limit=3)) == [
            "/a/2",
            "/a/3",
            "/a0/x",
        ]
        filtered = Query(
            filters=(FilterKeyCompare(">", "/a/2"),), orders=(OrderByKey(),), offset=1, limit=2
        )
        assert await _keys(ds, filtered) == ["/a0/x", "/ab/1"]
        sized = await (await ds.query(Query(prefix="/a", keys_only=True, returns_sizes=True))).rest()
        assert sorted((e.key, e.value, e.size) for e in sized) == [
            ("/a/1", None, 4),
            ("/a/2", None, 4),
            ("/a/3", None, 4),
        ]
        full = await (await ds.query(Query(prefix="/b"))).rest()
        assert [(e.key, e.value) for e in full] == [("/b/1", b"/b/1")]


async def test_early_closed_query_and_close(ds):
    with trio.fail_after(20):
        batch = await ds.batch()
        for i in range(1200):
            batch.put(f"/q/{i:05d}", b"v")
        await batch.commit()
        results = await ds.query(Query(prefix="/q"))
        async for _ in results:
            break
        await results.aclose()
        assert results.closed
        await ds.drop()
        await ds.close()
        with pytest.raises(DatastoreClosedError):
            await ds.get("/q/00000")


async def test_unreachable_server_is_unavailable():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = MongoDatastore(f"mongodb://127.0.0.1:{port}/", DB, "nothing", server_timeout_ms=300)
    with trio.fail_after(20):
        with pytest.raises(UnavailableError, match="MongoDB unavailable"):
            await store.put("/k", b"v")
        with pytest.raises(UnavailableError):
            await store.get("/k")
        await store.close()


def test_bad_uri_is_a_bad_request():
    with pytest.raises(BadRequestError, match="bad MongoDB URI"):
        MongoDatastore("http://not-mongo", DB, "c")


WITHOUT_PYMONGO = r'''
import importlib.abc, sys

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pymongo", "bson"):
            raise ImportError(f"{name} is blocked in this test")

sys.meta_path.insert(0, Block())
import dscluster.cli, dscluster.datastore, dscluster.node, dscluster.serve  # a base install runs a node
from dscluster.datastore.open import open_datastore
from dscluster.errors import ConfigError
assert open_datastore("leveldb", sys.argv[1], "ds", "", "me").closed is False
try:
    open_datastore("mongo", sys.argv[1], "ds", "mongodb://127.0.0.1:1", "me")
except ConfigError as exc:
    print(exc)
'''


def test_without_pymongo_only_the_mongo_backend_is_missing_and_it_says_so(tmp_path):
    proc = subprocess.run([sys.executable, "-c", WITHOUT_PYMONGO, str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("the mongo datastore needs pymongo: "
                                   "pip install 'ds-cluster[mongo]'")


class TestMongoConformance(DatastoreSuite):
    """The shared suite over a 1,000-key query matrix: each query is a server round
    trip over the whole collection, slow on SecantusDB."""

    matrix_size = 1_000

    @pytest.fixture
    def ds_factory(self, mongodb_uri):
        collection = f"c{uuid.uuid4().hex}"  # the same one on reopen: durable
        return OpenWith(lambda: MongoDatastore(mongodb_uri, DB, collection), durable=True)


@pytest.mark.slow
class TestMongoFullConformance(TestMongoConformance):
    matrix_size = 10_000
    deadline = 600.0

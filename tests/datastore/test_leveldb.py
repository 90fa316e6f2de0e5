"""leveldb backend: go-ds-leveldb's key bytes, atomic batches, prefix iterators."""

from __future__ import annotations

import os

import plyvel
import pytest
import trio

from dscluster.datastore.leveldb import LevelDatastore
from dscluster.datastore.query import (
    FilterValueCompare,
    OrderByKey,
    OrderByKeyDescending,
    OrderByValue,
    Query,
)
from dscluster.errors import (
    BadKeyError,
    BadRequestError,
    DatastoreClosedError,
    NotFoundError,
    UnavailableError,
)
from dscluster.testing.conformance import DatastoreSuite, OpenWith


async def test_keys_are_stored_as_their_string_bytes(tmp_path):
    ds = LevelDatastore(tmp_path / "db")
    await ds.put("/local/pins", b"pins")
    await ds.put("a//b/../c/", b"cleaned")  # stored under its cleaned key, as go does
    await ds.put("/ünï/cödé", b"utf8")
    await ds.close()
    raw = plyvel.DB(str(tmp_path / "db"))
    try:
        assert dict(raw) == {
            b"/local/pins": b"pins",
            b"/a/c": b"cleaned",
            "/ünï/cödé".encode(): b"utf8",
        }
    finally:
        raw.close()


async def test_opens_a_leveldb_written_by_another_program(tmp_path):
    raw = plyvel.DB(str(tmp_path / "db"), create_if_missing=True, compression="snappy")
    raw.put(b"/peers/QmPeer", b"addr")
    raw.put(b"/blocks/CIQA", b"block")
    raw.close()
    ds = LevelDatastore(tmp_path / "db")
    assert await ds.get("/peers/QmPeer") == b"addr"
    got = await (await ds.query(Query(prefix="/blocks"))).rest()
    assert [(e.key, e.value) for e in got] == [("/blocks/CIQA", b"block")]
    await ds.close()


@pytest.mark.parametrize("sync", [True, False])
@pytest.mark.parametrize("size", [0, 7, 300 * 1024])
async def test_put_get_has_size_delete(tmp_path, sync, size):
    value = os.urandom(size)
    with trio.fail_after(10):
        ds = LevelDatastore(tmp_path / "db", sync=sync)
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
        await ds.close()


async def test_bad_input_is_refused_and_loses_nothing(tmp_path):
    ds = LevelDatastore(tmp_path / "db")
    await ds.put("/k", b"kept")
    with pytest.raises(BadRequestError):
        await ds.put("/k", 12)
    with pytest.raises(BadKeyError):
        await ds.put(b"/k", b"x")
    assert await ds.get("/k") == b"kept"
    await ds.close()
    with pytest.raises(DatastoreClosedError):
        await ds.get("/k")


async def test_data_survives_reopen(tmp_path):
    ds = LevelDatastore(tmp_path / "db", sync=True)
    await ds.put("/durable", b"yes")
    await ds.close()
    ds = LevelDatastore(tmp_path / "db")
    assert await ds.get("/durable") == b"yes"
    await ds.sync("/")
    await ds.close()


async def test_second_open_of_a_locked_db_is_unavailable(tmp_path):
    ds = LevelDatastore(tmp_path / "db")
    with pytest.raises(UnavailableError, match="cannot open LevelDB"):
        LevelDatastore(tmp_path / "db")
    await ds.close()


@pytest.mark.parametrize("big", [False, True])
async def test_batch_is_one_atomic_write_batch(tmp_path, big):
    ds = LevelDatastore(tmp_path / "db")
    await ds.put("/old", b"old")
    batch = await ds.batch()
    n = 200 if big else 5  # big batches are written from a worker thread
    for i in range(n):
        batch.put(f"/b/{i:03d}", b"%d" % i)
    batch.delete("/old")
    batch.put("/b/000", b"last wins")
    assert not await ds.has("/b/001")  # nothing before commit
    with trio.fail_after(10):
        await batch.commit()
    assert await ds.get("/b/000") == b"last wins"
    assert await ds.get(f"/b/{n - 1:03d}") == b"%d" % (n - 1)
    assert not await ds.has("/old")
    await ds.close()


async def _keys(ds, q):
    return [e.key for e in await (await ds.query(q)).rest()]


async def test_queries_use_prefix_and_native_key_order(tmp_path):
    ds = LevelDatastore(tmp_path / "db")
    for k in ["/a/1", "/a/2", "/a/3", "/ab/1", "/a", "/b/1"]:
        await ds.put(k, k.encode())
    with trio.fail_after(10):
        assert await _keys(ds, Query(prefix="/a", orders=(OrderByKey(),))) == [
            "/a/1",
            "/a/2",
            "/a/3",
        ]
        assert await _keys(ds, Query(prefix="/a/", orders=(OrderByKeyDescending(),))) == [
            "/a/3",
            "/a/2",
            "/a/1",
        ]
        assert await _keys(ds, Query(orders=(OrderByKey(),), offset=1, limit=2)) == [
            "/a/1",
            "/a/2",
        ]
        got = await (await ds.query(Query(prefix="/a", keys_only=True, returns_sizes=True))).rest()
        assert {(e.key, e.value, e.size) for e in got} == {
            ("/a/1", None, 4),
            ("/a/2", None, 4),
            ("/a/3", None, 4),
        }
        assert await _keys(
            ds,
            Query(keys_only=True, filters=(FilterValueCompare(">=", b"/a/2"),),
                  orders=(OrderByValue(),), limit=3),
        ) == ["/a/2", "/a/3", "/ab/1"]
    await ds.close()


async def test_early_closed_query_releases_its_iterator(tmp_path):
    ds = LevelDatastore(tmp_path / "db")
    batch = await ds.batch()
    for i in range(2000):
        batch.put(f"/q/{i:05d}", b"v")
    await batch.commit()
    with trio.fail_after(10):
        results = await ds.query(Query(prefix="/q"))
        async for _ in results:
            break
        await results.aclose()
        assert results.closed
        # an open query left behind is closed by close(), not leaked
        left_open = await ds.query(Query())
        await left_open.__anext__()
        await ds.close()
        assert left_open.closed
    reopened = LevelDatastore(tmp_path / "db")  # the LOCK was released
    assert await reopened.has("/q/01999")
    await reopened.close()


class TestLevelConformance(DatastoreSuite):
    sync = False

    @pytest.fixture
    def ds_factory(self, tmp_path):
        return OpenWith(lambda: LevelDatastore(tmp_path / "db", sync=self.sync), durable=True)


@pytest.mark.slow
class TestLevelSyncConformance(TestLevelConformance):
    sync = True

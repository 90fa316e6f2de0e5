"""SlotIndexedDatastore: the conformance suite through the index, and the index itself."""

from __future__ import annotations

import os
import uuid

import pytest
import trio

from dscluster.core.slots import key_slot
from dscluster.datastore import Key, MemoryDatastore, Query
from dscluster.datastore.flatfs import FlatfsDatastore
from dscluster.datastore.leveldb import LevelDatastore
from dscluster.errors import BadKeyError, DatastoreClosedError
from dscluster.node.slotindex import MARKER, SlotIndexedDatastore, index_key
from dscluster.testing.conformance import DatastoreSuite, OpenWith
from tests.datastore.test_hybrid import open_hybrid


def open_level(path: os.PathLike[str] | str) -> SlotIndexedDatastore:
    return SlotIndexedDatastore(LevelDatastore(os.path.join(path, "db")))


def open_flatfs(path: os.PathLike[str] | str) -> SlotIndexedDatastore:
    return SlotIndexedDatastore(FlatfsDatastore(os.path.join(path, "blocks"), sync=False),
                                LevelDatastore(os.path.join(path, "index")))


def open_indexed_hybrid(path: os.PathLike[str] | str) -> SlotIndexedDatastore:
    """Block keys in flatfs, the index (not block keys) in the hybrid's LevelDB."""
    return SlotIndexedDatastore(open_hybrid(path))


class TestIndexedMemory(DatastoreSuite):
    @pytest.fixture
    def ds_factory(self):
        return OpenWith(lambda: SlotIndexedDatastore(MemoryDatastore()))


class TestIndexedLevelDB(DatastoreSuite):
    @pytest.fixture
    def ds_factory(self, tmp_path):
        return OpenWith(lambda: open_level(tmp_path), durable=True)


class TestIndexedFlatfs(DatastoreSuite):
    """flatfs keeps block keys; its index lives in a LevelDB beside it."""

    hierarchical_keys = False
    matrix_size = 2_000

    @pytest.fixture
    def ds_factory(self, tmp_path):
        return OpenWith(lambda: open_flatfs(tmp_path), durable=True)


async def test_mongo_keeps_the_index_in_its_collection(mongodb_uri):
    """MongoDB's unordered bulk writes: the index is kept by ordered commits."""
    from dscluster.datastore.mongo import MongoDatastore

    ds = SlotIndexedDatastore(MongoDatastore(mongodb_uri, "dscluster-test",
                                             f"slotindex-{uuid.uuid4().hex}"))
    keys = [f"/m/{i}" for i in range(300)]
    try:
        batch = await ds.batch()
        for k in keys:
            batch.put(k, b"v")
        await batch.commit()
        for k in keys[:100]:
            await ds.delete(k)
        alive = keys[100:]
        assert sorted(await ds.keys_in_slots(0, 16383, 1000)) == sorted(alive)
        for slot, expected in list(_keys_by_slot(alive).items())[:50]:
            assert await ds.keys_in_slots(slot, slot, 100) == sorted(expected)
        results = await ds.query(Query(keys_only=True))
        assert sorted([e.key async for e in results]) == sorted(alive)
    finally:
        await ds.data.drop()  # type: ignore[attr-defined]
        await ds.close()


def _keys_by_slot(keys: list[str]) -> dict[int, list[str]]:
    by_slot: dict[int, list[str]] = {}
    for k in keys:
        by_slot.setdefault(key_slot(k), []).append(k)
    return by_slot


@pytest.mark.parametrize("opener", [open_level, open_flatfs, open_indexed_hybrid],
                         ids=["leveldb", "flatfs", "hybrid"])
async def test_slot_keys_follow_puts_overwrites_deletes_and_batches(tmp_path, opener):
    block = opener is not open_level
    keys = [f"/CIQK{i:04d}" if block else f"/k/{i}" for i in range(600)]
    ds = opener(tmp_path)
    try:
        for k in keys[:300]:
            await ds.put(k, b"v")
        batch = await ds.batch()
        for k in keys[300:]:
            batch.put(k, b"w")
        await batch.commit()
        await ds.put(keys[0], b"overwritten")  # an overwrite keeps one entry
        gone = keys[::3]
        for k in gone[:50]:
            await ds.delete(k)
        batch = await ds.batch()
        for k in gone[50:]:
            batch.delete(k)
        # the last op on a key decides: put-then-delete is gone, delete-then-put stays
        batch.put(keys[1], b"x")
        batch.delete(keys[1])
        batch.delete(keys[2])
        batch.put(keys[2], b"y")
        await batch.commit()
        alive = sorted(set(keys) - set(gone) - {keys[1]})
        for slot, expected in _keys_by_slot(alive).items():
            assert await ds.keys_in_slots(slot, slot, 1000) == sorted(expected)
        for slot in _keys_by_slot(gone + [keys[1]]).keys() - _keys_by_slot(alive).keys():
            assert await ds.keys_in_slots(slot, slot, 1000) == []
        slot, many = max(_keys_by_slot(alive).items(), key=lambda kv: len(kv[1]))
        assert await ds.keys_in_slots(slot, slot, 1) == sorted(many)[:1]
    finally:
        await ds.close()


async def test_index_namespace_is_hidden_and_reserved(tmp_path):
    ds = open_level(tmp_path)
    try:
        await ds.put("/a/b", b"1")
        await ds.put("/z", b"2")
        for q in (Query(), Query(prefix="/"), Query(keys_only=True, limit=5),
                  Query(prefix="/.dscluster")):
            results = await ds.query(q)
            keys = [e.key async for e in results]
            assert keys == [] if q.prefix == "/.dscluster" else sorted(keys) == ["/a/b", "/z"]
        for bad in ("/.dscluster", "/.dscluster/slot/00001/a", str(MARKER)):
            with pytest.raises(BadKeyError):
                await ds.put(bad, b"x")
            with pytest.raises(BadKeyError):
                await ds.get(bad)
            with pytest.raises(BadKeyError):
                await ds.delete(bad)
        batch = await ds.batch()
        batch.put("/ok", b"1")
        batch.put("/.dscluster/x", b"1")
        with pytest.raises(BadKeyError):
            await batch.commit()
        assert not await ds.has("/ok")  # the whole batch was refused
        assert await ds.has("/.dsclusterish") is False  # only the exact namespace is reserved
    finally:
        await ds.close()


async def test_ensure_index_indexes_a_store_written_without_it(tmp_path):
    raw = LevelDatastore(tmp_path / "db")
    keys = [f"/old/{i}" for i in range(3000)]
    batch = await raw.batch()
    for k in keys:
        batch.put(k, b"v")
    await batch.commit()
    ds = SlotIndexedDatastore(raw)
    try:
        assert await ds.ensure_index() == 3000
        assert await ds.ensure_index() == 0  # the marker makes it once only
        for slot, expected in list(_keys_by_slot(keys).items())[:200]:
            assert await ds.keys_in_slots(slot, slot, 100) == sorted(expected)
        results = await ds.query(Query(keys_only=True))
        assert sorted([e.key async for e in results]) == sorted(keys)
    finally:
        await ds.close()


async def test_write_order_leaves_at_worst_an_index_entry_without_its_key(tmp_path):
    """The data store fails mid-write: the key may be indexed but never stored unindexed."""
    data = FlatfsDatastore(tmp_path / "blocks", sync=False)
    index = LevelDatastore(tmp_path / "index")
    ds = SlotIndexedDatastore(data, index)
    await ds.put("/CIQKEEP", b"v")
    await data.close()  # the data side "crashes"
    with pytest.raises(DatastoreClosedError):
        await ds.put("/CIQLOST", b"v")
    with pytest.raises(DatastoreClosedError):
        await ds.delete("/CIQKEEP")
    # index put came first: LOST is indexed without data; KEEP kept its entry
    assert await index.has(index_key(Key("/CIQLOST")))
    assert await index.has(index_key(Key("/CIQKEEP")))
    await index.close()
    ds = open_flatfs(tmp_path)
    try:
        assert await ds.get("/CIQKEEP") == b"v"
        assert not await ds.has("/CIQLOST")
        assert await ds.keys_in_slots(key_slot("/CIQLOST"), key_slot("/CIQLOST"), 10) == ["/CIQLOST"]
        await ds.delete("/CIQLOST")  # what the migrator does with a key that is gone
        assert await ds.keys_in_slots(key_slot("/CIQLOST"), key_slot("/CIQLOST"), 10) == []
    finally:
        await ds.close()


async def test_closing_closes_a_separate_index(tmp_path):
    with trio.fail_after(10):
        ds = open_flatfs(tmp_path)
        await ds.close()
        assert ds.data.closed and ds.index.closed


async def test_keys_in_slots_spans_a_range_in_slot_order(tmp_path):
    ds = open_level(tmp_path)
    keys = [f"/r/{i}" for i in range(2000)]
    try:
        for k in keys:
            await ds.put(k, b"v")
        everything = await ds.keys_in_slots(0, 16383, 10_000)
        assert sorted(everything) == sorted(keys)
        assert [key_slot(k) for k in everything] == sorted(key_slot(k) for k in keys)
        lo, hi = 5000, 9000
        inside = sorted((key_slot(k), k) for k in keys if lo <= key_slot(k) <= hi)
        assert await ds.keys_in_slots(lo, hi, 10_000) == [k for _, k in inside]
        assert await ds.keys_in_slots(lo, hi, 7) == [k for _, k in inside][:7]
    finally:
        await ds.close()


async def test_by_size_splits_by_value_bytes_and_keeps_gone_keys(tmp_path):
    ds = open_level(tmp_path)
    try:
        for i, n in enumerate([400, 400, 400, 1500, 10]):
            await ds.put(f"/s/{i}", b"x" * n)
        keys = [f"/s/{i}" for i in range(5)] + ["/s/gone"]
        runs = await ds.by_size(keys, 1000)
        # 400+400, then 400 (the 1500 would pass 1000), the 1500 alone (a run holds
        # one key at least), then 10 and the gone key counted as 0
        assert runs == [["/s/0", "/s/1"], ["/s/2"], ["/s/3"], ["/s/4", "/s/gone"]]
        assert await ds.by_size([], 1000) == []
    finally:
        await ds.close()


async def test_drop_slot_deletes_the_slots_keys_under_their_locks_and_can_stop(tmp_path):
    from dscluster.node.keylocks import KeyLocks

    ds = open_level(tmp_path)
    locks = KeyLocks()
    try:
        keys = [f"/d/{i}" for i in range(3000)]
        for k in keys:
            await ds.put(k, b"v")
        slot = max({key_slot(k) for k in keys}, key=lambda s: sum(key_slot(k) == s for k in keys))
        mine = [k for k in keys if key_slot(k) == slot]
        other = next(k for k in keys if key_slot(k) != slot)
        async with trio.open_nursery() as nursery:
            async with locks.hold([mine[0]]):
                nursery.start_soon(ds.drop_slot, slot, locks)
                await trio.sleep(0.05)
                assert await ds.has(mine[0])  # drop_slot waits for the held lock
        assert await ds.keys_in_slots(slot, slot, 10) == []
        assert [k for k in mine if await ds.has(k)] == [] and await ds.has(other)
        # keep() says yes before the first batch: nothing is deleted
        for k in mine:
            await ds.put(k, b"v")
        await ds.drop_slot(slot, locks, lambda: True)
        assert len(await ds.keys_in_slots(slot, slot, 10_000)) == len(mine)
    finally:
        await ds.close()

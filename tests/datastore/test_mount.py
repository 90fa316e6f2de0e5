"""MountDatastore: the suite over several mounts, routing, merged queries, errors."""

import pytest
import trio

from dscluster.datastore import Key, MemoryDatastore, Query
from dscluster.datastore.mount import MountDatastore
from dscluster.datastore.query import (
    FilterKeyCompare,
    FilterValueCompare,
    OrderByKeyDescending,
    OrderByValue,
)
from dscluster.errors import BadKeyError, ConfigError, NotFoundError
from dscluster.testing.conformance import DatastoreSuite, OpenWith


def spread() -> MountDatastore:
    # The suite's keys fall into several of these: its "/g1/..." and "/g5/..."
    # groups, the "/foo/bar" subtree of its prefix test, and the root.
    return MountDatastore(
        [
            ("/", MemoryDatastore()),
            ("/g1", MemoryDatastore()),
            ("/g5", MemoryDatastore()),
            ("/foo/bar", MemoryDatastore()),
        ]
    )


class TestMount(DatastoreSuite):
    @pytest.fixture
    def ds_factory(self) -> OpenWith:
        return OpenWith(spread)


async def make() -> tuple[MountDatastore, MemoryDatastore, MemoryDatastore, MemoryDatastore]:
    root, blocks, deep = MemoryDatastore(), MemoryDatastore(), MemoryDatastore()
    ds = MountDatastore([(Key("/blocks"), blocks), ("/", root), ("/blocks/deep", deep)])
    return ds, root, blocks, deep


async def test_longest_prefix_routing_on_path_boundaries() -> None:
    ds, root, blocks, deep = await make()
    await ds.put("/blocks/ABC", b"1")
    await ds.put("/blocks/deep/x", b"2")
    await ds.put("/blocksx/y", b"3")  # a string prefix only: goes to the root mount
    await ds.put("/blocks", b"4")  # the mount key itself is the child's "/"
    assert await blocks.get("/ABC") == b"1"
    assert await deep.get("/x") == b"2"
    assert await root.get("/blocksx/y") == b"3"
    assert await blocks.get("/") == b"4"
    assert await ds.get("/blocks") == b"4"
    assert await ds.get_size("/blocks/deep/x") == 1
    await ds.delete("/blocks/ABC")
    assert not await blocks.has("/ABC")


async def test_queries_merge_mounts_in_order_and_page_globally() -> None:
    ds, root, blocks, deep = await make()
    model = {}
    for i in range(30):
        for prefix in ("/blocks", "/blocks/deep", "/a", "/z"):
            key = f"{prefix}/k{i:02d}"
            model[key] = b"%02d" % ((i * 7) % 30)
            await ds.put(key, model[key])
    every = sorted(model)
    got = [e.key for e in await (await ds.query(Query())).rest()]
    assert got == every  # merged by key when the query has no order
    q = Query(orders=(OrderByKeyDescending(),), offset=5, limit=50)
    assert [e.key for e in await (await ds.query(q)).rest()] == every[::-1][5:55]
    q = Query(orders=(OrderByValue(),), limit=10, keys_only=True)
    want = sorted(model, key=lambda k: (model[k], k))[:10]
    got_entries = await (await ds.query(q)).rest()
    assert [e.key for e in got_entries] == want
    assert all(e.value is None for e in got_entries)
    q = Query(prefix="/blocks", filters=(FilterKeyCompare("<", "/blocks/deep/k05"),))
    got = sorted(e.key for e in await (await ds.query(q)).rest())
    assert got == [k for k in every if k.startswith("/blocks/") and k < "/blocks/deep/k05"]
    q = Query(prefix="/blocks/deep", filters=(FilterValueCompare("=", b"00"),))
    assert [e.key for e in await (await ds.query(q)).rest()] == ["/blocks/deep/k00"]


async def test_query_early_close_closes_every_mount() -> None:
    ds, *_ = await make()
    for prefix in ("/blocks", "/blocks/deep", "/a"):
        for i in range(100):
            await ds.put(f"{prefix}/k{i:03d}", b"v")
    with trio.fail_after(10):
        results = await ds.query(Query())
        async for _ in results:
            break
        await results.aclose()
        assert results.closed
        assert len(await (await ds.query(Query(keys_only=True))).rest()) == 300


async def test_unmounted_keys() -> None:
    only = MemoryDatastore()
    ds = MountDatastore([("/blocks", only)])
    with pytest.raises(BadKeyError):
        await ds.put("/other/x", b"1")
    with pytest.raises(NotFoundError):
        await ds.get("/other/x")
    with pytest.raises(NotFoundError):
        await ds.get_size("/other/x")
    assert not await ds.has("/other/x")
    await ds.delete("/other/x")  # absent: not an error
    assert await (await ds.query(Query())).rest() == []

    # A batch with an unmounted put writes nothing and keeps its ops.
    batch = await ds.batch()
    batch.put("/blocks/A", b"a")
    batch.put("/other/B", b"b")
    with pytest.raises(BadKeyError):
        await batch.commit()
    assert len(batch) == 2
    assert not await only.has("/A")


async def test_bad_mount_tables() -> None:
    with pytest.raises(ConfigError):
        MountDatastore([("/a", MemoryDatastore()), ("/a/", MemoryDatastore())])
    with pytest.raises(ConfigError):
        MountDatastore([("/a", object())])  # type: ignore[list-item]
    with pytest.raises(BadKeyError):
        MountDatastore([(5, MemoryDatastore())])  # type: ignore[list-item]


async def test_close_closes_every_mount() -> None:
    ds, root, blocks, deep = await make()
    await ds.close()
    assert root.closed and blocks.closed and deep.closed

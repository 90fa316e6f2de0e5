"""MemoryDatastore: the conformance suite, plus what only a dict store promises."""

import pytest

from dscluster.datastore import Key, MemoryDatastore, Query
from dscluster.testing.conformance import DatastoreSuite, OpenWith


class TestMemory(DatastoreSuite):
    @pytest.fixture
    def ds_factory(self) -> OpenWith:
        return OpenWith(MemoryDatastore)


async def test_query_is_a_snapshot() -> None:
    ds = MemoryDatastore()
    for i in range(10):
        await ds.put(f"/k{i}", b"v")
    results = await ds.query(Query())
    await ds.put("/late", b"v")
    await ds.delete("/k0")
    keys = {e.key async for e in results}
    assert keys == {f"/k{i}" for i in range(10)}
    assert await ds.has(Key("/late"))


async def test_async_context_manager_closes() -> None:
    async with MemoryDatastore() as ds:
        await ds.put("/a", b"1")
        assert len(ds) == 1
    assert ds.closed

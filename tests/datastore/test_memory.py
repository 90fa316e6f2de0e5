"""MemoryDatastore: the conformance suite, plus what only a dict store promises."""

import threading

import pytest
import trio
import trio.testing

from dscluster.datastore import BlockingDatastore, Entry, Key, MemoryDatastore, Query, naive_query
from dscluster.errors import DatastoreClosedError, NotFoundError
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


# -- BlockingDatastore, the thread-offloading base, over a plain dict --------


class ThreadedDict(BlockingDatastore):
    """A dict served from worker threads: the smallest BlockingDatastore."""

    query_chunk = 64  # several chunks per query in the suite

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, bytes] = {}
        self.threads: set[int] = set()
        self.open_iterators = 0
        self.release = threading.Event()
        self.release.set()

    def get_blocking(self, key: Key) -> bytes:
        self.threads.add(threading.get_ident())
        self.release.wait()
        try:
            return self.data[str(key)]
        except KeyError:
            raise NotFoundError(str(key)) from None

    def put_blocking(self, key: Key, value: bytes) -> None:
        self.threads.add(threading.get_ident())
        self.data[str(key)] = value

    def delete_blocking(self, key: Key) -> None:
        self.data.pop(str(key), None)

    def query_blocking(self, q: Query):  # type: ignore[no-untyped-def]
        entries = [Entry(k, v) for k, v in self.data.items()]
        self.open_iterators += 1

        def close() -> None:
            self.open_iterators -= 1

        return naive_query(q, entries), close


class TestThreadedDict(DatastoreSuite):
    matrix_size = 2_000  # TestMemory runs the full matrix; this checks the threading

    @pytest.fixture
    def ds_factory(self) -> OpenWith:
        return OpenWith(ThreadedDict)


async def test_blocking_calls_run_in_threads() -> None:
    ds = ThreadedDict()
    await ds.put("/a", b"1")
    assert await ds.get("/a") == b"1"
    assert threading.get_ident() not in ds.threads


async def test_close_waits_for_calls_and_queries_in_flight() -> None:
    ds = ThreadedDict()
    for i in range(200):
        await ds.put(f"/k{i}", b"v")
    results = await ds.query(Query())
    assert (await results.__anext__()).key
    assert ds.open_iterators == 1
    ds.release.clear()  # the next get blocks in its thread until released
    got: list[bytes] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:

            async def slow_get() -> None:
                got.append(await ds.get("/k1"))

            nursery.start_soon(slow_get)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ds.close)
            await trio.testing.wait_all_tasks_blocked()
            assert not got  # close is waiting for the get in flight
            ds.release.set()
    assert got == [b"v"]
    assert results.closed and ds.open_iterators == 0
    with pytest.raises(DatastoreClosedError):
        await ds.get("/k1")

"""The datastore conformance suite: one set of tests every Datastore must pass.

Theory of operation (model: go-datastore's test/suite.go): ``DatastoreSuite``
is a plain class of async pytest tests. A backend hooks in by subclassing it in
its own test file and providing a ``ds_factory`` fixture -- an object with
``async open() -> Datastore`` and a bool ``durable`` (opening again after
close on a durable store gives the same data)::

    class TestFlatfs(DatastoreSuite):
        @pytest.fixture
        def ds_factory(self, tmp_path):
            return OpenWith(lambda: FlatfsDatastore.create(tmp_path / "fs"), durable=True)

Stores that only accept single-level keys of ``[0-9A-Z+-_=]`` (flatfs) set
``hierarchical_keys = False``: the suite then uses such keys only and skips
path-prefix queries. Expected answers are computed by a small reference in
this file, written independently of ``naive_query``, so a backend that
delegates to ``naive_query`` is still checked against something else.
Every test runs under a hard ``trio.fail_after`` deadline (``deadline``).

The module imports without pytest (reference_query and OpenWith are plain
code): pytest is imported only to register the ``ds`` fixture and to skip,
and an expected exception that is missing is a plain AssertionError.
"""

from __future__ import annotations

import contextlib
import functools
import operator
import random
import threading
import unittest
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

import trio

from dscluster.datastore.base import Datastore
from dscluster.datastore.key import Key
from dscluster.datastore.query import (
    Entry,
    FilterKeyCompare,
    FilterKeyPrefix,
    FilterValueCompare,
    OrderByKey,
    OrderByKeyDescending,
    OrderByValue,
    OrderByValueDescending,
    Query,
)
from dscluster.errors import (
    BadKeyError,
    BadRequestError,
    DatastoreClosedError,
    NotFoundError,
)

__all__ = ["DatastoreFactory", "DatastoreSuite", "OpenWith", "reference_query"]

MATRIX_SIZE = 10_000
BAD_KEYS: tuple[object, ...] = (None, 123, 1.5, b"/bytes", ["/a"], object())
BAD_VALUES: tuple[object, ...] = ("text", None, 12, [1, 2], object())


class DatastoreFactory(Protocol):
    durable: bool

    async def open(self) -> Datastore: ...


@dataclass(frozen=True)
class OpenWith:
    """A DatastoreFactory from a callable returning a Datastore (or an awaitable of one)."""

    make: Callable[[], Datastore | Awaitable[Datastore]]
    durable: bool = False

    async def open(self) -> Datastore:
        ds = self.make()
        if isinstance(ds, Datastore):
            return ds
        return await ds


# -- an independent reference for query answers ----------------------------

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def reference_query(q: Query, model: dict[str, bytes]) -> list[Entry]:
    """The contract's answer to ``q`` over ``model``; ordered only if ``q.orders``."""
    cleaned = str(Key(q.prefix))
    prefix = "" if q.prefix == "" or cleaned == "/" else cleaned + "/"
    items = [(k, v) for k, v in model.items() if k.startswith(prefix)]
    for f in q.filters:
        if isinstance(f, FilterValueCompare):
            items = [(k, v) for k, v in items if _OPS[f.op](v, f.value)]
        elif isinstance(f, FilterKeyCompare):
            items = [(k, v) for k, v in items if _OPS[f.op](k, f.key)]
        elif isinstance(f, FilterKeyPrefix):
            items = [(k, v) for k, v in items if k.startswith(f.prefix)]
        else:
            raise AssertionError(f"reference does not know {f!r}")
    # Stable sorts, least significant first: the key breaks ties, then the
    # orders from last to first.
    items.sort(key=lambda kv: kv[0])
    for o in reversed(q.orders):
        by_value = isinstance(o, OrderByValue | OrderByValueDescending)
        descending = isinstance(o, OrderByKeyDescending | OrderByValueDescending)
        items.sort(key=operator.itemgetter(1 if by_value else 0), reverse=descending)
    end = q.offset + q.limit if q.limit else None
    items = items[q.offset : end]
    return [
        Entry(k, None if q.keys_only else v, len(v) if q.returns_sizes else -1) for k, v in items
    ]


_F = TypeVar("_F", bound=Callable[..., Any])


def _fixture(fn: _F) -> _F:
    """pytest.fixture(fn) when pytest is installed; without it the suite still imports."""
    try:
        import pytest
    except ImportError:
        return fn
    return pytest.fixture(fn)  # type: ignore[return-value]


def _skip(reason: str) -> None:
    """pytest.skip (pytest-trio reports it, not a SkipTest inside a nursery); SkipTest without."""
    try:
        import pytest
    except ImportError:
        raise unittest.SkipTest(reason) from None
    pytest.skip(reason)


@contextlib.contextmanager
def _raises(kind: type[BaseException]) -> Iterator[None]:
    """pytest.raises(kind) without pytest: other exceptions propagate, none fails."""
    try:
        yield
    except kind:
        return
    raise AssertionError(f"DID NOT RAISE {kind.__name__}")


def _bounded(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    @functools.wraps(test)
    async def run(self: DatastoreSuite, *args: Any, **kwargs: Any) -> None:
        with trio.fail_after(self.deadline):
            await test(self, *args, **kwargs)

    return run


def _task_count() -> int:
    """Tasks alive in this trio run (for leak checks)."""
    stack = [trio.lowlevel.current_root_task()]
    n = 0
    while stack:
        task = stack.pop()
        n += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return n


async def _all(ds: Datastore, q: Query | None = None) -> list[Entry]:
    results = await ds.query(q or Query())
    async with results:
        return [e async for e in results]


class DatastoreSuite:
    """Subclass as ``Test<Backend>`` and provide a ``ds_factory`` fixture."""

    hierarchical_keys: bool = True
    deadline: float = 60.0
    # Keys in the query matrix; a backend that pays an fsync per file may lower
    # it in its fast run (and keep the full size in a slow-marked subclass).
    matrix_size: int = MATRIX_SIZE

    # -- fixtures and helpers --------------------------------------------------

    @_fixture
    async def ds(self, ds_factory: DatastoreFactory):  # type: ignore[no-untyped-def]
        store = await ds_factory.open()
        try:
            yield store
        finally:
            await store.close()

    def key(self, group: int | str, i: int) -> str:
        """The i-th key of a group, in the key style the store accepts."""
        if self.hierarchical_keys:
            return f"/g{group}/k{i:05d}"
        return f"/G{str(group).upper()}-K{i:05d}"

    def group_prefix(self, group: int | str) -> str:
        """A FilterKeyPrefix string selecting a group's keys (and, as a string, groups 1x)."""
        return f"/g{group}" if self.hierarchical_keys else f"/G{str(group).upper()}"

    async def fill(self, ds: Datastore, model: dict[str, bytes]) -> None:
        batch = await ds.batch()
        for k, v in model.items():
            batch.put(k, v)
        await batch.commit()

    def matrix_model(self) -> dict[str, bytes]:
        # 12 groups: "/g1" is a string prefix of "/g10" and "/g11" but not a
        # path prefix. 1,000 distinct values over 10,000 keys: many ties.
        return {self.key(i % 12, i): b"%03d" % ((i * 7919) % 1000) for i in range(self.matrix_size)}

    async def check_query(self, ds: Datastore, q: Query, model: dict[str, bytes]) -> None:
        got = await _all(ds, q)
        want = reference_query(q, model)
        if q.orders:
            assert got == want, f"{q}: order or content differs"
            return
        if not (q.offset or q.limit):
            assert sorted(got, key=lambda e: e.key) == want, f"{q}: content differs"
            return
        # Unordered paging: any page of the right size from the right set.
        full = {e.key: e for e in reference_query(replace(q, offset=0, limit=0), model)}
        assert len(got) == len(want), f"{q}: {len(got)} entries, want {len(want)}"
        assert len({e.key for e in got}) == len(got), f"{q}: duplicate entries"
        for e in got:
            assert full.get(e.key) == e, f"{q}: unexpected {e}"

    # -- basic operations -------------------------------------------------------

    @_bounded
    async def test_put_get_has_size_delete(self, ds: Datastore) -> None:
        k = self.key(0, 1)
        await ds.put(k, b"hello")
        assert await ds.get(k) == b"hello"
        assert await ds.get(Key(k)) == b"hello"
        assert await ds.has(k)
        assert await ds.get_size(k) == 5
        await ds.delete(k)
        assert not await ds.has(k)
        with _raises(NotFoundError):
            await ds.get(k)

    @_bounded
    async def test_overwrite(self, ds: Datastore) -> None:
        k = self.key(0, 2)
        await ds.put(k, b"first value")
        await ds.put(k, b"second")
        assert await ds.get(k) == b"second"
        assert await ds.get_size(k) == 6
        assert [e.key for e in await _all(ds)] == [k]

    @_bounded
    async def test_missing_key(self, ds: Datastore) -> None:
        k = self.key(0, 3)
        with _raises(NotFoundError):
            await ds.get(k)
        with _raises(NotFoundError):
            await ds.get_size(k)
        assert await ds.has(k) is False
        await ds.delete(k)  # deleting a missing key is not an error
        await ds.delete(k)

    @_bounded
    async def test_str_keys_are_cleaned(self, ds: Datastore) -> None:
        if self.hierarchical_keys:
            await ds.put("a//b/./c/", b"v")
            assert await ds.get(Key("/a/b/c")) == b"v"
            assert [e.key for e in await _all(ds)] == ["/a/b/c"]
        else:
            await ds.put("ABC", b"v")
            assert await ds.get(Key("/ABC")) == b"v"
            assert [e.key for e in await _all(ds)] == ["/ABC"]

    @_bounded
    async def test_empty_value(self, ds: Datastore) -> None:
        k = self.key(0, 4)
        await ds.put(k, b"")
        assert await ds.get(k) == b""
        assert await ds.has(k)
        assert await ds.get_size(k) == 0
        assert await _all(ds, Query(returns_sizes=True)) == [Entry(k, b"", 0)]

    @_bounded
    async def test_binary_values(self, ds: Datastore) -> None:
        model = {self.key(1, i): bytes([i]) * (i % 5 + 1) for i in range(256)}
        model[self.key(2, 0)] = bytes(range(256))
        model[self.key(2, 1)] = bytes(range(255, -1, -1)) * 3
        await self.fill(ds, model)
        await ds.put(self.key(2, 2), bytearray(b"\x00\xff"))  # type: ignore[arg-type]  # bytes-like
        await ds.put(self.key(2, 3), memoryview(b"\x80\x00\x7f"))  # type: ignore[arg-type]
        model[self.key(2, 2)] = b"\x00\xff"
        model[self.key(2, 3)] = b"\x80\x00\x7f"
        for k, v in model.items():
            got = await ds.get(k)
            assert type(got) is bytes and got == v, k
        await self.check_query(ds, Query(orders=(OrderByValue(),)), model)

    @_bounded
    async def test_large_value(self, ds: Datastore) -> None:
        value = random.Random(4).randbytes(4 * 1024 * 1024)
        k = self.key(0, 5)
        await ds.put(k, value)
        assert await ds.get(k) == value
        assert await ds.get_size(k) == len(value)
        (e,) = await _all(ds, Query(keys_only=True, returns_sizes=True))
        assert e == Entry(k, None, len(value))

    # -- queries ------------------------------------------------------------------

    @_bounded
    async def test_query_prefix_on_path_boundaries(self, ds: Datastore) -> None:
        if not self.hierarchical_keys:
            keys = ["/A", "/B", "/AB"]
            for k in keys:
                await ds.put(k, b"x")
            for prefix in ("", "/"):
                got = sorted(e.key for e in await _all(ds, Query(prefix=prefix)))
                assert got == sorted(keys)
            return
        for k in ["/foo", "/foo/bar", "/foo/bar/baz", "/foobar", "/foo2/x", "/fo/o"]:
            await ds.put(k, k.encode())
        expect = {
            "/foo": ["/foo/bar", "/foo/bar/baz"],
            "/foo/": ["/foo/bar", "/foo/bar/baz"],
            "foo": ["/foo/bar", "/foo/bar/baz"],
            "/foo/bar": ["/foo/bar/baz"],
            "/fo": ["/fo/o"],
            "/foo/ba": [],  # a string prefix of "/foo/bar" only
            "": ["/fo/o", "/foo", "/foo/bar", "/foo/bar/baz", "/foo2/x", "/foobar"],
            "/": ["/fo/o", "/foo", "/foo/bar", "/foo/bar/baz", "/foo2/x", "/foobar"],
        }
        for prefix, want in expect.items():
            got = sorted(e.key for e in await _all(ds, Query(prefix=prefix)))
            assert got == want, prefix
        for e in await _all(ds, Query(prefix="/foo")):
            assert e.value == e.key.encode()

    @_bounded
    async def test_query_matrix_10k(self, ds: Datastore) -> None:
        """Every query option and their combinations over 10,000 keys, inserted once."""
        model = self.matrix_model()
        await self.fill(ds, model)
        n = self.matrix_size
        mid_key = self.key(5, n // 2)
        g1 = self.group_prefix(1)
        queries = [Query(), Query(prefix="/"), Query(keys_only=True)]
        if self.hierarchical_keys:
            queries += [
                Query(prefix="/g1"),
                Query(prefix="/g1/"),
                Query(prefix="g1"),
                Query(prefix="/g1/k0"),  # a string prefix of keys, not a path prefix
                Query(prefix="/g"),
                Query(prefix="/nothing"),
            ]
        for op in _OPS:
            queries.append(Query(filters=(FilterValueCompare(op, b"500"),)))
            queries.append(Query(filters=(FilterKeyCompare(op, mid_key),)))
        queries += [
            Query(filters=(FilterKeyPrefix(g1),)),
            Query(filters=(FilterKeyPrefix(g1 + "0"),)),
            Query(filters=(FilterKeyPrefix(g1), FilterValueCompare(">", b"900"))),
        ]
        for order in (OrderByKey(), OrderByKeyDescending(), OrderByValue(), OrderByValueDescending()):
            queries.append(Query(orders=(order,)))
        queries += [
            Query(orders=(OrderByValue(), OrderByKeyDescending())),
            Query(orders=(OrderByValueDescending(), OrderByKey())),
        ]
        by_key = (OrderByKey(),)
        for offset, limit in [(0, 1), (0, 10), (10, 0), (10, 10), (n - 5, 10), (n, 0),
                              (2 * n, 5), (0, n), (0, 2 * n)]:
            queries.append(Query(orders=by_key, offset=offset, limit=limit))
            queries.append(Query(offset=offset, limit=limit))
        queries += [
            Query(returns_sizes=True, limit=100, orders=by_key),
            Query(keys_only=True, returns_sizes=True),
            Query(keys_only=True, orders=(OrderByValue(),), limit=50),
            Query(keys_only=True, filters=(FilterValueCompare("=", b"007"),)),
            Query(
                prefix="/g1" if self.hierarchical_keys else "",
                filters=(FilterValueCompare(">=", b"200"), FilterKeyCompare("<", mid_key)),
                orders=(OrderByValueDescending(),),
                offset=5,
                limit=40,
                keys_only=True,
                returns_sizes=True,
            ),
        ]
        for q in queries:
            await self.check_query(ds, q, model)

    @_bounded
    async def test_order_is_stable(self, ds: Datastore) -> None:
        model = {self.key(3, i): b"%d" % (i % 3) for i in range(300)}
        await self.fill(ds, model)
        for order in (OrderByValue(), OrderByValueDescending(), OrderByKeyDescending()):
            q = Query(orders=(order,))
            first = await _all(ds, q)
            assert first == await _all(ds, q)
            assert first == reference_query(q, model)
        paged = []
        for offset in range(0, 300, 70):
            paged += await _all(ds, Query(orders=(OrderByValue(),), offset=offset, limit=70))
        assert paged == reference_query(Query(orders=(OrderByValue(),)), model)

    @_bounded
    async def test_early_close_of_a_query(self, ds: Datastore) -> None:
        model = {self.key(4, i): b"v%d" % i for i in range(2_000)}
        await self.fill(ds, model)
        await _all(ds, Query(limit=1))  # let the backend start any threads it keeps
        tasks, threads = _task_count(), threading.active_count()
        for _ in range(20):
            results = await ds.query(Query())
            got = []
            async for e in results:
                got.append(e)
                if len(got) == 3:
                    break
            await results.aclose()
            await results.aclose()  # idempotent
            assert len(got) == 3
        async with await ds.query(Query(orders=(OrderByKey(),))) as results:
            first = await results.__anext__()
        assert first.key == min(model)
        assert _task_count() <= tasks
        assert threading.active_count() <= threads + 4, "query threads leaked"
        await ds.put(self.key(4, 9_999), b"after")
        assert await ds.get(self.key(4, 9_999)) == b"after"
        assert len(await _all(ds, Query(keys_only=True))) == len(model) + 1

    # -- batches ------------------------------------------------------------------

    @_bounded
    async def test_batch_commit_makes_all_visible(self, ds: Datastore) -> None:
        gone, kept, new = self.key(5, 1), self.key(5, 2), self.key(5, 3)
        await ds.put(gone, b"old")
        await ds.put(kept, b"old")
        batch = await ds.batch()
        batch.put(new, b"new")
        batch.delete(gone)
        batch.put(kept, b"newer")
        for i in range(100):
            batch.put(self.key(6, i), b"%d" % i)
        assert len(batch) == 103
        assert not await ds.has(new)  # nothing before commit
        assert await ds.get(gone) == b"old"
        await batch.commit()
        assert await ds.get(new) == b"new"
        assert not await ds.has(gone)
        assert await ds.get(kept) == b"newer"
        for i in range(100):
            assert await ds.get(self.key(6, i)) == b"%d" % i

    @_bounded
    async def test_batch_ops_apply_in_order(self, ds: Datastore) -> None:
        a, b = self.key(7, 1), self.key(7, 2)
        batch = await ds.batch()
        batch.put(a, b"1")
        batch.delete(a)  # put then delete: gone
        batch.delete(b)
        batch.put(b, b"2")  # delete then put: present
        batch.put(b, b"3")  # last put wins
        await batch.commit()
        assert not await ds.has(a)
        assert await ds.get(b) == b"3"

    @_bounded
    async def test_uncommitted_batch_leaves_nothing(self, ds: Datastore) -> None:
        keep = self.key(8, 1)
        await ds.put(keep, b"keep")
        batch = await ds.batch()
        batch.put(self.key(8, 2), b"x")
        batch.delete(keep)
        del batch
        assert await ds.get(keep) == b"keep"
        assert not await ds.has(self.key(8, 2))
        assert [e.key for e in await _all(ds)] == [keep]

    @_bounded
    async def test_batch_rejects_bad_input_and_keeps_the_rest(self, ds: Datastore) -> None:
        batch = await ds.batch()
        batch.put(self.key(9, 1), b"ok")
        for bad in BAD_KEYS:
            with _raises(BadKeyError):
                batch.put(bad, b"x")  # type: ignore[arg-type]
            with _raises(BadKeyError):
                batch.delete(bad)  # type: ignore[arg-type]
        for bad in BAD_VALUES:
            with _raises(BadRequestError):
                batch.put(self.key(9, 2), bad)  # type: ignore[arg-type]
        assert len(batch) == 1
        await batch.commit()
        assert await ds.get(self.key(9, 1)) == b"ok"
        assert not await ds.has(self.key(9, 2))

    # -- sync, durability, concurrency ---------------------------------------------

    @_bounded
    async def test_sync(self, ds: Datastore) -> None:
        k = self.key(10, 1)
        await ds.put(k, b"synced")
        for prefix in (Key("/"), Key(k).parent(), Key(k), k, "/"):
            await ds.sync(prefix)
        await ds.sync()
        assert await ds.get(k) == b"synced"

    @_bounded
    async def test_reopen_keeps_data(self, ds_factory: DatastoreFactory) -> None:
        if not ds_factory.durable:
            _skip("volatile store")
        model = {self.key(11, i): b"%d" % i for i in range(50)}
        ds = await ds_factory.open()
        try:
            await self.fill(ds, model)
            await ds.put(self.key(11, 100), b"single")
            await ds.delete(self.key(11, 0))
        finally:
            await ds.close()
        del model[self.key(11, 0)]
        model[self.key(11, 100)] = b"single"
        ds = await ds_factory.open()
        try:
            for k, v in model.items():
                assert await ds.get(k) == v
            assert not await ds.has(self.key(11, 0))
            await self.check_query(ds, Query(orders=(OrderByKey(),)), model)
        finally:
            await ds.close()

    @_bounded
    async def test_concurrent_tasks(self, ds: Datastore) -> None:
        n_tasks, per_task = 100, 5
        seen_missing: list[str] = []

        async def worker(t: int) -> None:
            for j in range(per_task):
                k = self.key(12, t * per_task + j)
                await ds.put(k, b"%d-%d" % (t, j))
                assert await ds.get(k) == b"%d-%d" % (t, j)
                other = self.key(12, ((t + 1) % n_tasks) * per_task + j)
                try:
                    v = await ds.get(other)
                    assert v == b"%d-%d" % ((t + 1) % n_tasks, j)
                except NotFoundError:
                    seen_missing.append(other)  # not written yet: fine

        async with trio.open_nursery() as nursery:
            for t in range(n_tasks):
                nursery.start_soon(worker, t)
        entries = await _all(ds, Query(orders=(OrderByKey(),)))
        assert len(entries) == n_tasks * per_task
        for e in entries:
            t, j = divmod(int(e.key[-5:]), per_task)
            assert e.value == b"%d-%d" % (t, j)

    # -- errors -------------------------------------------------------------------

    @_bounded
    async def test_bad_keys_are_rejected(self, ds: Datastore) -> None:
        for bad in BAD_KEYS:
            for call in (ds.get, ds.has, ds.get_size, ds.delete, ds.sync):
                with _raises(BadKeyError):
                    await call(bad)  # type: ignore[arg-type]
            with _raises(BadKeyError):
                await ds.put(bad, b"x")  # type: ignore[arg-type]
        assert await _all(ds) == []

    @_bounded
    async def test_bad_values_are_rejected_and_lose_nothing(self, ds: Datastore) -> None:
        k = self.key(13, 1)
        await ds.put(k, b"original")
        for bad in BAD_VALUES:
            with _raises(BadRequestError):
                await ds.put(k, bad)  # type: ignore[arg-type]
            with _raises(BadRequestError):
                await ds.put(self.key(13, 2), bad)  # type: ignore[arg-type]
        assert await ds.get(k) == b"original"
        assert not await ds.has(self.key(13, 2))
        for bad_query in ("/prefix", 0, {"prefix": "/"}):
            with _raises(BadRequestError):
                await ds.query(bad_query)  # type: ignore[arg-type]

    @_bounded
    async def test_use_after_close(self, ds_factory: DatastoreFactory) -> None:
        ds = await ds_factory.open()
        k = self.key(14, 1)
        await ds.put(k, b"v")
        pending = await ds.batch()
        pending.put(self.key(14, 2), b"w")
        open_results = await ds.query(Query())
        await ds.close()
        await ds.close()  # idempotent
        assert ds.closed
        for call in (ds.get, ds.has, ds.get_size, ds.delete, ds.sync):
            with _raises(DatastoreClosedError):
                await call(k)
        with _raises(DatastoreClosedError):
            await ds.put(k, b"x")
        with _raises(DatastoreClosedError):
            await ds.query(Query())
        with _raises(DatastoreClosedError):
            await ds.batch()
        with _raises(DatastoreClosedError):
            await pending.commit()
        # A query opened before close may end or raise DatastoreClosedError; never crash.
        try:
            _ = [e async for e in open_results]
        except DatastoreClosedError:
            pass
        await open_results.aclose()

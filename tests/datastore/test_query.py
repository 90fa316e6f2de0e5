"""naive_query and Results: the reference semantics every backend must match."""

import pytest
import trio

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
    Results,
    key_range,
    naive_query,
    naive_results,
    normalized_prefix,
)
from dscluster.errors import BadRequestError

ENTRIES = [
    Entry("/a", b"3"),
    Entry("/a/b", b"1"),
    Entry("/a/b/c", b"2"),
    Entry("/a/d", b"2"),
    Entry("/ab", b"0"),
    Entry("/b", b"9"),
]


def keys(q: Query) -> list[str]:
    return [e.key for e in naive_query(q, ENTRIES)]


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", ["/a", "/a/b", "/a/b/c", "/a/d", "/ab", "/b"]),
        ("/", ["/a", "/a/b", "/a/b/c", "/a/d", "/ab", "/b"]),
        ("/a", ["/a/b", "/a/b/c", "/a/d"]),  # neither "/a" itself nor "/ab"
        ("/a/", ["/a/b", "/a/b/c", "/a/d"]),
        ("a", ["/a/b", "/a/b/c", "/a/d"]),
        ("/a/b", ["/a/b/c"]),
        ("/a/b/./", ["/a/b/c"]),
        ("/zz", []),
    ],
)
def test_prefix_is_on_path_boundaries(prefix: str, expected: list[str]) -> None:
    assert sorted(keys(Query(prefix=prefix))) == expected


def test_normalized_prefix() -> None:
    assert normalized_prefix("") == ""
    assert normalized_prefix("/") == ""
    assert normalized_prefix("//x//") == "/x/"


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (FilterValueCompare("=", b"2"), ["/a/b/c", "/a/d"]),
        (FilterValueCompare("!=", b"2"), ["/a", "/a/b", "/ab", "/b"]),
        (FilterValueCompare(">", b"2"), ["/a", "/b"]),
        (FilterValueCompare(">=", b"2"), ["/a", "/a/b/c", "/a/d", "/b"]),
        (FilterValueCompare("<", b"2"), ["/a/b", "/ab"]),
        (FilterValueCompare("<=", b"1"), ["/a/b", "/ab"]),
        (FilterKeyCompare("=", "/a/d"), ["/a/d"]),
        (FilterKeyCompare("!=", "/a/d"), ["/a", "/a/b", "/a/b/c", "/ab", "/b"]),
        (FilterKeyCompare(">", "/a/d"), ["/ab", "/b"]),
        (FilterKeyCompare(">=", "/a/d"), ["/a/d", "/ab", "/b"]),
        (FilterKeyCompare("<", "/a/b"), ["/a"]),
        (FilterKeyCompare("<=", "/a/b"), ["/a", "/a/b"]),
        (FilterKeyPrefix("/a"), ["/a", "/a/b", "/a/b/c", "/a/d", "/ab"]),  # a string prefix
        (FilterKeyPrefix("/a/"), ["/a/b", "/a/b/c", "/a/d"]),
    ],
)
def test_each_filter(flt: object, expected: list[str]) -> None:
    assert sorted(keys(Query(filters=(flt,)))) == expected


def test_filters_all_apply() -> None:
    q = Query(filters=[FilterKeyPrefix("/a"), FilterValueCompare("<", b"3")])
    assert sorted(keys(q)) == ["/a/b", "/a/b/c", "/a/d", "/ab"]


def test_orders_and_ties_broken_by_key() -> None:
    assert keys(Query(orders=(OrderByKey(),))) == sorted(e.key for e in ENTRIES)
    assert keys(Query(orders=(OrderByKeyDescending(),))) == sorted(
        (e.key for e in ENTRIES), reverse=True
    )
    # "/a/b/c" and "/a/d" share value 2: ties go by ascending key in both directions
    assert keys(Query(orders=(OrderByValue(),))) == ["/ab", "/a/b", "/a/b/c", "/a/d", "/a", "/b"]
    assert keys(Query(orders=(OrderByValueDescending(),))) == [
        "/b", "/a", "/a/b/c", "/a/d", "/a/b", "/ab"
    ]
    # a second order decides ties of the first
    q = Query(orders=(OrderByValue(), OrderByKeyDescending()))
    assert keys(q) == ["/ab", "/a/b", "/a/d", "/a/b/c", "/a", "/b"]


def test_then_offset_then_limit() -> None:
    ordered = sorted(e.key for e in ENTRIES)
    by_key = (OrderByKey(),)
    assert keys(Query(orders=by_key, offset=2)) == ordered[2:]
    assert keys(Query(orders=by_key, limit=2)) == ordered[:2]
    assert keys(Query(orders=by_key, offset=1, limit=3)) == ordered[1:4]
    assert keys(Query(orders=by_key, offset=5, limit=3)) == ordered[5:]
    assert keys(Query(orders=by_key, offset=50)) == []
    # the prefix and filters come before paging
    q = Query(prefix="/a", filters=(FilterValueCompare(">=", b"2"),), orders=by_key, offset=1)
    assert keys(q) == ["/a/d"]


def test_keys_only_and_sizes() -> None:
    (e,) = naive_query(Query(prefix="/a/b", keys_only=True), ENTRIES)
    assert e == Entry("/a/b/c", None, -1)
    (e,) = naive_query(Query(prefix="/a/b", keys_only=True, returns_sizes=True), ENTRIES)
    assert e == Entry("/a/b/c", None, 1)
    (e,) = naive_query(Query(prefix="/a/b", returns_sizes=True), ENTRIES)
    assert e == Entry("/a/b/c", b"2", 1)
    # value filters still see values when keys_only strips them from the answer
    q = Query(filters=(FilterValueCompare("=", b"9"),), keys_only=True)
    assert list(naive_query(q, ENTRIES)) == [Entry("/b", None, -1)]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": -1},
        {"offset": -2},
        {"limit": "3"},
        {"offset": True},
        {"prefix": b"/a"},
        {"filters": ("x",)},
        {"orders": (FilterKeyPrefix("/"),)},
    ],
)
def test_bad_queries_are_rejected(kwargs: dict) -> None:
    with pytest.raises(BadRequestError):
        Query(**kwargs)


def test_bad_filters_are_rejected() -> None:
    with pytest.raises(BadRequestError):
        FilterValueCompare("~", b"x")
    with pytest.raises(BadRequestError):
        FilterValueCompare("=", "x")  # type: ignore[arg-type]
    with pytest.raises(BadRequestError):
        FilterKeyCompare("=", b"/x")  # type: ignore[arg-type]
    with pytest.raises(BadRequestError):
        FilterKeyPrefix(None)  # type: ignore[arg-type]


def test_query_is_frozen_and_hashable() -> None:
    q = Query(prefix="/a", filters=[FilterKeyPrefix("/a")], orders=[OrderByKey()])
    assert q == Query(prefix="/a", filters=(FilterKeyPrefix("/a"),), orders=(OrderByKey(),))
    assert hash(q) == hash(Query(prefix="/a", filters=(FilterKeyPrefix("/a"),), orders=(OrderByKey(),)))
    with pytest.raises(AttributeError):
        q.limit = 3  # type: ignore[misc]


# -- Results ----------------------------------------------------------------


async def test_results_from_iterable_closes_once() -> None:
    closed = []
    r = Results.from_iterable(ENTRIES, close=lambda: closed.append(1))
    async with r:
        assert [e.key async for e in r] == [e.key for e in ENTRIES]
        assert r.closed  # exhausting the results closes them
    await r.aclose()
    assert closed == [1]


async def test_results_rest_and_early_close() -> None:
    closed = []

    async def aclose() -> None:
        closed.append("async")

    r = Results.from_iterable(iter(ENTRIES), close=aclose)
    assert (await r.__anext__()).key == "/a"
    assert [e.key for e in await r.rest()] == [e.key for e in ENTRIES[1:]]
    assert closed == ["async"]

    r = Results.from_iterable(ENTRIES, close=aclose)
    async for _ in r:
        break
    await r.aclose()
    assert closed == ["async", "async"]
    assert [e async for e in r] == []  # a closed Results yields nothing


async def test_results_from_async_iter_closes_the_generator() -> None:
    finished = trio.Event()

    async def gen():
        try:
            for e in ENTRIES:
                yield e
        finally:
            finished.set()

    r = Results.from_async_iter(gen())
    assert (await r.__anext__()).key == "/a"
    await r.aclose()
    assert finished.is_set()


async def test_blocking_iterable_runs_in_chunks_and_closes_in_a_thread() -> None:
    import threading

    pulled_in: set[int] = set()
    closed_in: list[int] = []

    def produce():
        for i in range(1000):
            pulled_in.add(threading.get_ident())
            yield Entry(f"/k{i:04d}", b"v")

    def close() -> None:
        closed_in.append(threading.get_ident())

    with trio.fail_after(10):
        r = Results.from_blocking_iterable(produce(), close, chunk=100)
        got = [e async for e in r]
    assert len(got) == 1000
    assert threading.get_ident() not in pulled_in
    assert closed_in and closed_in[0] != threading.get_ident()

    with trio.fail_after(10):
        r = Results.from_blocking_iterable(produce(), close, chunk=100)
        async for _ in r:
            break
        await r.aclose()
    assert len(closed_in) == 2


async def test_naive_results_stops_reading_when_the_page_is_full() -> None:
    read: list[str] = []

    def produce():
        for e in ENTRIES:
            read.append(e.key)
            yield e

    inner = Results.from_iterable(produce())
    out = naive_results(Query(offset=1, limit=2, keys_only=True), inner)
    assert [e async for e in out] == [Entry("/a/b", None), Entry("/a/b/c", None)]
    assert read == ["/a", "/a/b", "/a/b/c"]
    assert inner.closed


async def test_naive_results_agrees_with_naive_query() -> None:
    queries = [
        Query(prefix="/a", orders=(OrderByValueDescending(),), offset=1, limit=2),
        Query(filters=(FilterKeyPrefix("/a"),), orders=(OrderByKey(),), limit=3),
        Query(orders=(OrderByValue(),), keys_only=True, returns_sizes=True),
    ]
    for q in queries:
        got = await naive_results(q, Results.from_iterable(ENTRIES)).rest()
        assert got == list(naive_query(q, ENTRIES)), q


ALL_FILTERS = [FilterKeyCompare(op, k) for op in ("=", "!=", ">", ">=", "<", "<=")
               for k in ("/a", "/a/b", "/ab", "/c")]


@pytest.mark.parametrize("prefix", ["", "/a", "/a/b", "/zz"])
@pytest.mark.parametrize("flt", [None, *ALL_FILTERS])
def test_key_range_holds_every_answer_and_narrows(prefix: str, flt: FilterKeyCompare | None) -> None:
    q = Query(prefix=prefix, filters=() if flt is None else (flt,))
    low, high = key_range(q)
    for key in keys(q):  # a seek to [low, high) loses no answer
        assert (low is None or key >= low) and (high is None or key < high)
    if prefix:
        assert low is not None and high is not None
    if flt is not None and flt.op in ("=", ">=", ">"):
        assert low is not None and low >= flt.key
    if flt is not None and flt.op in ("=", "<", "<="):
        assert high is not None and high <= flt.key + "\0"


def test_key_range_of_equal_is_one_key() -> None:
    low, high = key_range(Query(filters=(FilterKeyCompare("=", "/a/b"),)))
    assert low == "/a/b" and high == "/a/b\0"
    assert key_range(Query()) == (None, None)

"""Queries over a datastore: the Query value, filters, orders and Results.

Theory of operation: a Query is a frozen description; backends answer it with a
Results, an async iterator of Entry. The meaning of every query is defined by
``naive_query`` (go-datastore's NaiveQueryApply), applied in this order:

1. prefix, on path boundaries: "/foo" matches "/foo/bar" but neither "/foo"
   itself nor "/foobar"; "" and "/" match everything;
2. filters, all of which must match;
3. orders, compared one after the other, ties broken by key (ascending), so
   every ordered query has one answer;
4. offset, then limit (0 means no limit);
5. keys_only drops values; returns_sizes keeps the value's size (else -1).

A backend that can do some of this natively (a sorted LevelDB scan, a Mongo
filter) does so and must give the same answer; one that cannot feeds its
entries to ``naive_query``. Without orders, the order of results is
unspecified.

Results own resources (threads, cursors, iterators): ``aclose`` releases them,
whether the iteration ended or the caller stopped early. Use ``async with``.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import operator
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import trio

from dscluster.errors import BadRequestError

log = logging.getLogger(__name__)

__all__ = [
    "Entry",
    "Filter",
    "FilterKeyCompare",
    "FilterKeyPrefix",
    "FilterValueCompare",
    "Order",
    "OrderByKey",
    "OrderByKeyDescending",
    "OrderByValue",
    "OrderByValueDescending",
    "Query",
    "Results",
    "compare_entries",
    "naive_query",
    "naive_results",
    "key_range",
    "normalized_prefix",
    "sort_entries",
]

_OPS: dict[str, Callable[[int, int], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def _cmp(a: str | bytes, b: str | bytes) -> int:
    return (a > b) - (a < b)  # type: ignore[operator]


def _check_op(op: object) -> None:
    if op not in _OPS:
        raise BadRequestError(f"unknown filter operator {op!r}; use one of {sorted(_OPS)}")


@dataclass(frozen=True)
class Entry:
    """One result: the key as a string, the value (None when keys_only) and its size."""

    key: str
    value: bytes | None
    size: int = -1


# -- filters ----------------------------------------------------------------


@runtime_checkable
class Filter(Protocol):
    def matches(self, entry: Entry) -> bool: ...


@dataclass(frozen=True)
class FilterValueCompare:
    """Compare the entry's value (bytes order) with ``value`` using ``op``."""

    op: str
    value: bytes

    def __post_init__(self) -> None:
        _check_op(self.op)
        if not isinstance(self.value, bytes):
            raise BadRequestError("FilterValueCompare.value must be bytes")

    def matches(self, entry: Entry) -> bool:
        if entry.value is None:
            return False
        return _OPS[self.op](_cmp(entry.value, self.value), 0)


@dataclass(frozen=True)
class FilterKeyCompare:
    """Compare the entry's key (string order) with ``key`` using ``op``."""

    op: str
    key: str

    def __post_init__(self) -> None:
        _check_op(self.op)
        if not isinstance(self.key, str):
            raise BadRequestError("FilterKeyCompare.key must be a str")

    def matches(self, entry: Entry) -> bool:
        return _OPS[self.op](_cmp(entry.key, self.key), 0)


@dataclass(frozen=True)
class FilterKeyPrefix:
    """A plain string prefix of the key (unlike Query.prefix, no path boundary)."""

    prefix: str

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str):
            raise BadRequestError("FilterKeyPrefix.prefix must be a str")

    def matches(self, entry: Entry) -> bool:
        return entry.key.startswith(self.prefix)


# -- orders -----------------------------------------------------------------


@runtime_checkable
class Order(Protocol):
    def compare(self, a: Entry, b: Entry) -> int: ...


@dataclass(frozen=True)
class OrderByKey:
    def compare(self, a: Entry, b: Entry) -> int:
        return _cmp(a.key, b.key)


@dataclass(frozen=True)
class OrderByKeyDescending:
    def compare(self, a: Entry, b: Entry) -> int:
        return -_cmp(a.key, b.key)


@dataclass(frozen=True)
class OrderByValue:
    def compare(self, a: Entry, b: Entry) -> int:
        return _cmp(a.value or b"", b.value or b"")


@dataclass(frozen=True)
class OrderByValueDescending:
    def compare(self, a: Entry, b: Entry) -> int:
        return -_cmp(a.value or b"", b.value or b"")


_VALUE_ORDERS = (OrderByValue, OrderByValueDescending)


def sort_entries(orders: tuple[Order, ...], entries: Iterable[Entry]) -> list[Entry]:
    """Entries sorted by ``orders``, ties broken by ascending key (go's query.Less)."""
    out = sorted(entries, key=_by_key)
    if not all(isinstance(o, _KNOWN_ORDERS) for o in orders):
        out.sort(key=functools.cmp_to_key(functools.partial(compare_entries, orders)))
        return out
    # Python's sort is stable (also with reverse=True): sorting by the least
    # significant order first gives the multi-order result, far faster than a
    # comparison function.
    for o in reversed(orders):
        by = _by_key if isinstance(o, OrderByKey | OrderByKeyDescending) else _by_value
        out.sort(key=by, reverse=isinstance(o, OrderByKeyDescending | OrderByValueDescending))
    return out


def _by_key(e: Entry) -> str:
    return e.key


def _by_value(e: Entry) -> bytes:
    return e.value or b""


_KNOWN_ORDERS = (OrderByKey, OrderByKeyDescending, OrderByValue, OrderByValueDescending)


def compare_entries(orders: Iterable[Order], a: Entry, b: Entry) -> int:
    """go-datastore's query.Less as a three-way compare: orders in turn, then the key."""
    for order in orders:
        c = order.compare(a, b)
        if c:
            return c
    return _cmp(a.key, b.key)


# -- the query --------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    prefix: str = ""
    filters: tuple[Filter, ...] = field(default=())
    orders: tuple[Order, ...] = field(default=())
    limit: int = 0
    offset: int = 0
    keys_only: bool = False
    returns_sizes: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str):
            raise BadRequestError("Query.prefix must be a str")
        # Lists are accepted for convenience; the frozen value keeps tuples.
        object.__setattr__(self, "filters", tuple(self.filters))
        object.__setattr__(self, "orders", tuple(self.orders))
        for f in self.filters:
            if not isinstance(f, Filter):
                raise BadRequestError(f"not a query filter: {f!r}")
        for o in self.orders:
            if not isinstance(o, Order):
                raise BadRequestError(f"not a query order: {o!r}")
        for name in ("limit", "offset"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise BadRequestError(f"Query.{name} must be an int >= 0, got {v!r}")

    @property
    def needs_values(self) -> bool:
        """Whether answering needs values even when keys_only (value filters or orders)."""
        return any(isinstance(f, FilterValueCompare) for f in self.filters) or any(
            isinstance(o, _VALUE_ORDERS) for o in self.orders
        )


def normalized_prefix(prefix: str) -> str:
    """The string prefix a key must start with to match Query.prefix ("" matches all)."""
    from dscluster.datastore.key import clean_path

    if prefix == "":
        return ""
    p = clean_path(prefix)
    return "" if p == "/" else p + "/"


def successor(prefix: str) -> str:
    """The least string greater than every string starting with ``prefix`` (not "")."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def key_range(q: Query) -> tuple[str | None, str | None]:
    """The narrowest [low, high) key range holding every answer to ``q`` (None: open).

    From the prefix and the key comparisons among the filters, so a sorted
    backend can seek instead of walking every key; the query is still
    evaluated in full on what the range yields.
    """
    low: str | None = None
    high: str | None = None

    def at_least(k: str) -> None:
        nonlocal low
        low = k if low is None else max(low, k)

    def below(k: str) -> None:
        nonlocal high
        high = k if high is None else min(high, k)

    prefix = normalized_prefix(q.prefix)
    if prefix:
        at_least(prefix)
        below(successor(prefix))
    for f in q.filters:
        if not isinstance(f, FilterKeyCompare):
            continue
        after = f.key + "\0"  # the least string greater than f.key
        if f.op in (">=", "="):
            at_least(f.key)
        elif f.op == ">":
            at_least(after)
        if f.op in ("<=", "="):
            below(after)
        elif f.op == "<":
            below(f.key)
    return low, high


def _shape(q: Query, e: Entry) -> Entry:
    """Apply keys_only and returns_sizes to one entry."""
    size = e.size
    if e.value is not None:
        size = len(e.value)
    if not q.returns_sizes:
        size = -1
    value = None if q.keys_only else e.value
    if value is e.value and size == e.size:
        return e
    return Entry(e.key, value, size)


def naive_query(q: Query, entries: Iterable[Entry]) -> Iterator[Entry]:
    """Answer ``q`` over ``entries`` (each with its value) with the contract's semantics."""
    prefix = normalized_prefix(q.prefix)
    it: Iterable[Entry] = entries
    if prefix:
        it = (e for e in it if e.key.startswith(prefix))
    for f in q.filters:
        it = filter(f.matches, it)
    if q.orders:
        it = sort_entries(q.orders, it)
    it = iter(it)
    for _ in range(q.offset):
        if next(it, None) is None:
            return
    for n, e in enumerate(it):
        if q.limit and n >= q.limit:
            return
        yield _shape(q, e)


# -- results ----------------------------------------------------------------

CloseFn = Callable[[], "Awaitable[None] | None"]


class Results:
    """An async iterator of Entry that owns its resources; always ``aclose`` it.

    ``aclose`` is idempotent and waits for a step in progress, so a backend's
    close callback never runs while its iterator is in use by a worker thread.
    """

    def __init__(self, source: AsyncIterator[Entry], close: CloseFn | None = None) -> None:
        self._source = source
        self._close_fn = close
        self._closed = False
        # A flag, not a trio.Lock: taking a lock per entry costs more than most
        # entries. Only aclose waits on it (in the parking lot).
        self._busy = False
        self._idle = trio.lowlevel.ParkingLot()

    # constructors

    @classmethod
    def from_iterable(cls, iterable: Iterable[Entry], close: CloseFn | None = None) -> Results:
        """Results over an in-memory iterable, iterated on the event loop."""
        it = iter(iterable)

        async def source() -> AsyncIterator[Entry]:
            for n, e in enumerate(it):
                yield e
                if n % 256 == 255:  # a long in-memory answer lets other tasks run
                    await trio.lowlevel.checkpoint()

        return cls(source(), close)

    @classmethod
    def from_async_iter(
        cls, aiter: AsyncIterator[Entry] | Iterable[Entry], close: CloseFn | None = None
    ) -> Results:
        if not hasattr(aiter, "__anext__"):
            return cls.from_iterable(aiter, close)  # type: ignore[arg-type]
        return cls(aiter, close)  # type: ignore[arg-type]

    @classmethod
    def from_blocking_iterable(
        cls,
        iterable: Iterable[Entry],
        close: Callable[[], None] | None = None,
        *,
        chunk: int = 512,
        limiter: trio.CapacityLimiter | None = None,
    ) -> Results:
        """Results over a blocking iterator (a LevelDB scan, a Mongo cursor).

        Entries are pulled ``chunk`` at a time in a worker thread, so one thread
        hop is paid per chunk, not per entry; ``close`` also runs in a thread.
        """
        it = iter(iterable)

        def pull() -> list[Entry]:
            return list(itertools.islice(it, chunk))

        async def source() -> AsyncIterator[Entry]:
            while True:
                batch = await trio.to_thread.run_sync(pull, limiter=limiter)
                for e in batch:
                    yield e
                if len(batch) < chunk:
                    return

        async def close_in_thread() -> None:
            if close is not None:
                await trio.to_thread.run_sync(close, limiter=limiter)

        return cls(source(), close_in_thread)

    # iteration

    def __aiter__(self) -> Results:
        return self

    async def __anext__(self) -> Entry:
        if self._busy:
            raise trio.BusyResourceError("another task is already iterating these results")
        if self._closed:
            raise StopAsyncIteration
        self._busy = True
        try:
            return await self._source.__anext__()
        except StopAsyncIteration:
            await self._close_now()
            raise
        finally:
            self._busy = False
            if self._idle:
                self._idle.unpark_all()

    async def rest(self) -> list[Entry]:
        """All remaining entries; closes the results."""
        try:
            return [e async for e in self]
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Release resources; waits for a step in progress in another task."""
        while self._busy:
            await self._idle.park()
        await self._close_now()

    async def _close_now(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            aclose = getattr(self._source, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            if self._close_fn is not None:
                r = self._close_fn()
                if inspect.isawaitable(r):
                    await r

    @property
    def closed(self) -> bool:
        return self._closed

    async def __aenter__(self) -> Results:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def naive_results(q: Query, results: Results) -> Results:
    """Apply ``q`` to a stream of results without reading more than needed.

    Wrappers use this on what their children return (filters on rewritten
    keys, global offset and limit after a merge). Orders collect everything.
    """
    prefix = normalized_prefix(q.prefix)

    def matches(e: Entry) -> bool:
        return (not prefix or e.key.startswith(prefix)) and all(f.matches(e) for f in q.filters)

    async def source() -> AsyncIterator[Entry]:
        skipped = sent = 0
        if q.orders:
            collected = sort_entries(q.orders, [e async for e in results if matches(e)])
            for e in collected[q.offset : q.offset + q.limit if q.limit else None]:
                yield _shape(q, e)
            return
        async for e in results:
            if not matches(e):
                continue
            if skipped < q.offset:
                skipped += 1
                continue
            yield _shape(q, e)
            sent += 1
            if q.limit and sent >= q.limit:
                return  # stop reading the child as soon as the page is full

    return Results(source(), results.aclose)


def without_paging(q: Query) -> Query:
    """``q`` with offset and limit removed (for children whose answers are merged)."""
    return replace(q, offset=0, limit=0)

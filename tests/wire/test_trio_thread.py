"""TrioThread: one resource on a trio loop in a background thread, called from plain code."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from dscluster.errors import NotFoundError
from dscluster.trio_thread import TrioThread


class Resource:
    def __init__(self) -> None:
        self.closed = False
        self.loop_thread = threading.get_ident()

    async def where(self) -> int:
        await trio.sleep(0)
        return threading.get_ident()

    async def fail(self) -> None:
        raise NotFoundError("/nope")


def test_calls_run_on_the_loop_thread_and_stop_closes_the_resource() -> None:
    before = threading.active_count()
    made: list[Resource] = []

    @asynccontextmanager
    async def opened() -> AsyncIterator[Resource]:
        res = Resource()
        made.append(res)
        try:
            yield res
        finally:
            await trio.lowlevel.checkpoint()
            res.closed = True

    loop = TrioThread("test-loop", opened)
    assert threading.active_count() == before + 1
    assert loop.run(loop.value.where) == made[0].loop_thread != threading.get_ident()
    with pytest.raises(NotFoundError, match="/nope"):  # the async code's own exception
        loop.run(loop.value.fail)
    loop.stop()
    loop.stop()  # idempotent
    assert made[0].closed and loop.stopped
    assert threading.active_count() == before


def test_an_error_while_opening_is_raised_in_the_constructor() -> None:
    before = threading.active_count()

    @asynccontextmanager
    async def broken() -> AsyncIterator[Resource]:
        await trio.sleep(0)
        raise NotFoundError("no store here")
        yield Resource()  # pragma: no cover

    with pytest.raises(NotFoundError, match="no store here"):
        TrioThread("test-broken", broken)
    assert threading.active_count() == before

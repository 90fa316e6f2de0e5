"""A trio loop in a background thread, holding one resource: the blocking facades' engine.

Theory of operation: code that does not run trio (scripts, REPLs, pytest
fixtures that outlive one test's trio run) still wants our async objects.
``TrioThread(name, open_resource)`` starts one daemon thread running
``trio.run``; on that loop it enters ``open_resource()`` (an async context
manager: a datastore, a client with its nursery, a whole test cluster) and
waits. The constructor returns once the resource is open, or raises the error
that opening it raised (in the caller's thread). ``run(fn, *args)`` hands a
coroutine to the loop (``trio.from_thread.run``) and blocks until it
finishes, so errors arrive as the exceptions the async code raises; calls from
several threads are serialised by trio. ``stop()`` leaves the context manager
(its exit closes the resource, shielded from cancellation), ends the loop and
joins the thread. A daemon thread: a forgotten ``stop()`` must not hang
interpreter exit. Used by dsclient.api.Client, dscluster.datastore.sync and
the tests' threaded cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Generic, TypeVar

import trio

from dscluster.errors import DatastoreClosedError

__all__ = ["TrioThread"]

T = TypeVar("T")
R = TypeVar("R")


class TrioThread(Generic[T]):
    def __init__(self, name: str,
                 open_resource: Callable[[], AbstractAsyncContextManager[T]]) -> None:
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._value: T | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._stopped = False
        self.name = name
        self._thread = threading.Thread(target=trio.run, args=(self._main, open_resource),
                                        name=name, daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            error, self._error = self._error, None
            raise error

    async def _main(self, open_resource: Callable[[], AbstractAsyncContextManager[T]]) -> None:
        # The constructor waits for _ready and then reads _error: set _error first.
        try:
            async with open_resource() as value:
                self._value = value
                self._token = trio.lowlevel.current_trio_token()
                self._stop = trio.Event()
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # reported to the constructor's caller
            if self._ready.is_set():
                raise
            self._error = exc
            self._ready.set()

    @property
    def value(self) -> T:
        """The open resource (use it only on the loop: through ``run``)."""
        assert self._value is not None
        return self._value

    @property
    def stopped(self) -> bool:
        return self._stopped

    def run(self, fn: Callable[..., Awaitable[R]], *args: Any) -> R:
        """``await fn(*args)`` on the loop; blocks the calling thread until it is done.
        DatastoreClosedError once ``stop`` was called."""
        if self._stopped:
            raise DatastoreClosedError(f"{self.name} is closed")
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def stop(self, timeout: float | None = None) -> None:
        """Close the resource, end the loop and join the thread (at most ``timeout``
        seconds). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        assert self._stop is not None
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(timeout)

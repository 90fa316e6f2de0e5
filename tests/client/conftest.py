"""A live 3-node cluster (real libp2p hosts on 127.0.0.1) shared by a module's tests.

pytest-trio gives every test its own trio run, so a cluster that outlives one
test runs in a thread with its own trio loop; tests reach it over loopback
like any client, and run code on its loop with ``call``.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio

from dscluster.datastore.query import Query
from dscluster.testing.cluster import InProcessCluster, local_cluster


class ThreadedCluster:
    def __init__(self, base_dir: str, n: int = 3) -> None:
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.cluster: InProcessCluster
        self._thread = threading.Thread(target=trio.run, args=(self._main, base_dir, n),
                                        daemon=True, name="test-cluster")
        self._thread.start()
        self._ready.wait(60)
        if self._error is not None:
            raise self._error

    async def _main(self, base_dir: str, n: int) -> None:
        try:
            async with local_cluster(base_dir, n) as cluster:
                self.cluster = cluster
                self._token = trio.lowlevel.current_trio_token()
                self._stop = trio.Event()
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    @property
    def bootstrap(self) -> list[str]:
        return [self.cluster.nodes[0].addrs[0]]

    @property
    def identity(self):  # type: ignore[no-untyped-def]
        return self.cluster.client_identity

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``fn(*args)`` on the cluster's loop (blocking the caller's thread)."""
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def wipe(self) -> None:
        async def wipe_all() -> None:
            for node in self.cluster.nodes:
                results = await node.datastore.query(Query(keys_only=True))
                keys = [e.key for e in await results.rest()]
                batch = await node.datastore.batch()
                for k in keys:
                    batch.delete(k)
                await batch.commit()

        self.call(wipe_all)

    async def async_call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """``call`` from inside another trio run (a test)."""
        return await trio.to_thread.run_sync(self.call, fn, *args)

    async def async_wipe(self) -> None:
        await trio.to_thread.run_sync(self.wipe)

    def close(self) -> None:
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)


@pytest.fixture(scope="module")
def live_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedCluster]:
    cluster = ThreadedCluster(str(tmp_path_factory.mktemp("cluster")))
    try:
        yield cluster
    finally:
        cluster.close()

"""A live 3-node cluster (real libp2p hosts on 127.0.0.1) shared by a module's tests.

pytest-trio gives every test its own trio run, so a cluster that outlives one
test runs in a thread with its own trio loop; tests reach it over loopback
like any client, and run code on its loop with ``call``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio

from dscluster.datastore.query import Query
from dscluster.testing.cluster import InProcessCluster, local_cluster
from dscluster.trio_thread import TrioThread


class ThreadedCluster:
    def __init__(self, base_dir: str, n: int = 3) -> None:
        self._loop = TrioThread("test-cluster", lambda: local_cluster(base_dir, n))
        self.cluster: InProcessCluster = self._loop.value

    @property
    def bootstrap(self) -> list[str]:
        return [self.cluster.nodes[0].addrs[0]]

    @property
    def identity(self):  # type: ignore[no-untyped-def]
        return self.cluster.client_identity

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run ``fn(*args)`` on the cluster's loop (blocking the caller's thread)."""
        return self._loop.run(fn, *args)

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
        self._loop.stop(30)


@pytest.fixture(scope="module")
def live_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedCluster]:
    cluster = ThreadedCluster(str(tmp_path_factory.mktemp("cluster")))
    try:
        yield cluster
    finally:
        cluster.close()

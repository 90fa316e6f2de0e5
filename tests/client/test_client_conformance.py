"""The shared datastore suite against ClusterClient over a live 3-node cluster."""

from __future__ import annotations

import pytest
import trio

from dsclient.client import ClusterClient
from dscluster.datastore.base import Datastore
from dscluster.testing.conformance import DatastoreSuite


class ClientFactory:
    durable = True  # the data lives in the cluster, not in the client

    def __init__(self, nursery: trio.Nursery, cluster) -> None:  # type: ignore[no-untyped-def]
        self.nursery = nursery
        self.cluster = cluster

    async def open(self) -> Datastore:
        return await ClusterClient.start(self.nursery, self.cluster.identity,
                                         bootstrap=self.cluster.bootstrap)


class TestClusterClient(DatastoreSuite):
    # 2000 entries spread over all three nodes still make every offset/limit
    # page of the matrix a fan-out merge across nodes; the full 10k matrix is
    # TestClusterClientFullMatrix (slow run).
    matrix_size = 2_000
    deadline = 180.0  # a shared 2-core machine; the suite's own default is 60 s

    @pytest.fixture
    async def ds_factory(self, nursery, live_cluster):  # type: ignore[no-untyped-def]
        await live_cluster.async_wipe()
        return ClientFactory(nursery, live_cluster)


@pytest.mark.slow
class TestClusterClientFullMatrix(TestClusterClient):
    matrix_size = 10_000

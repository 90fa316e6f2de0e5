"""The blocking Client (dsclient.api) on its TrioThread, against a cluster on another one."""

from __future__ import annotations

import pytest

from dsclient.api import Client
from dscluster.errors import DatastoreClosedError, DSClusterError
from dscluster.testing.cluster import local_cluster
from dscluster.trio_thread import TrioThread


def test_sync_client_stores_and_reads_then_closes(tmp_path) -> None:
    cluster_loop = TrioThread("test-cluster", lambda: local_cluster(str(tmp_path), 2))
    try:
        cluster = cluster_loop.value
        with Client(bootstrap=[cluster.nodes[0].addrs[0]],
                    identity=cluster.client_identity) as client:
            cid = client.put(b"hello from a plain thread")
            assert client.get(cid) == b"hello from a plain thread"
            client.put_key("/sync/k", b"v")
            assert client.get_key("/sync/k") == b"v"
        with pytest.raises(DatastoreClosedError):
            client.get_key("/sync/k")
    finally:
        cluster_loop.stop(30)


def test_sync_client_startup_error_is_one_plain_exception() -> None:
    with pytest.raises(DSClusterError) as err:
        Client(bootstrap=["/ip4/127.0.0.1/tcp/1/p2p/not-a-peer-id"])
    assert not isinstance(err.value, BaseExceptionGroup)

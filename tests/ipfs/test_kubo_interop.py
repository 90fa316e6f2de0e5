"""Our bitswap node against real Kubo (in a child process), both directions."""

from __future__ import annotations

import random

import pytest
from multiformats import CID

from dscluster.blocks import block_key
from dscluster.datastore.flatfs import FlatfsDatastore
from dscluster.datastore.memory import MemoryDatastore
from dscluster.errors import NotFoundError
from dscluster.testing.kubo import open_kubo
from ipfs_plugin.node import open_node, serve
from tests.ipfs.helpers import build_file, flatfs_blocks, leaf_file, read_file

MiB = 1024 * 1024


async def store_dag(store, dag) -> None:
    for cid, block in dag.blocks.items():
        await store.put(block_key(cid), block)


async def test_kubo_downloads_files_from_our_node(tmp_path, nursery):
    rng = random.Random(7)
    files = {
        "small": leaf_file(b"hello from ds-cluster\n"),  # one dag-pb leaf
        "chunked": await build_file(rng.randbytes(700_000)),  # CIDv0, three 256 KiB chunks
        "big-raw": await build_file(rng.randbytes(2 * MiB + 5), chunk=MiB, raw_leaves=True),
    }
    contents = {}
    store = FlatfsDatastore.create(tmp_path / "flatfs", sync=False)
    for name, dag in files.items():
        await store_dag(store, dag)
        contents[name] = await read_file(store, dag.root)
    addr = await nursery.start(serve, store)

    plan = {
        "connect": [addr],
        "download": [[str(dag.root), str(tmp_path / name)] for name, dag in files.items()],
    }
    async with open_kubo(plan, tmp_path, timeout=60) as child:
        await child.result()  # Kubo's own addresses
        assert (await child.result())["ok"], "Kubo could not connect to our node"
        for name in files:
            result = await child.result()
            assert result["ok"], f"Kubo failed to download {name}"
            assert (tmp_path / name).read_bytes() == contents[name]


async def test_we_fetch_a_dag_kubo_added(tmp_path):
    rng = random.Random(8)
    added = rng.randbytes(600_000)
    (tmp_path / "added.bin").write_bytes(added)
    # Kubo's add cannot be asked for 1 MiB raw leaves here, so we write such a
    # DAG into its flatfs before it starts: Kubo serves blocks over 512 KiB.
    big_content = rng.randbytes(MiB + MiB // 2)
    big = await build_file(big_content, chunk=MiB, raw_leaves=True)
    plan = {"blocks": flatfs_blocks(big), "add": [str(tmp_path / "added.bin")], "wait_stdin": True}
    store = MemoryDatastore()
    async with open_kubo(plan, tmp_path, timeout=60) as child:
        kubo_addr = await child.multiaddr()
        added_cid = (await child.result())["cid"]
        async with open_node(store) as node:
            peer = await node.connect(kubo_addr)
            stats = await node.bitswap.fetch_dag(big.root, peer)
            assert (stats.blocks, stats.fetched) == (3, 3)
            stats = await node.bitswap.fetch_dag(CID.decode(added_cid), peer)
            assert (stats.blocks, stats.fetched) == (4, 4)
            with pytest.raises(NotFoundError):
                await node.bitswap.fetch_blocks(peer, [leaf_file(b"nobody has this").root])
    # every block was checked against its CID on arrival; read_file checks again
    assert await read_file(store, CID.decode(added_cid)) == added
    assert await read_file(store, big.root) == big_content

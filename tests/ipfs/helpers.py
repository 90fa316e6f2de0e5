"""Helpers for the IPFS tests: UnixFS files (built by dsclient.unixfs) and a Kubo child process."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from multiformats import CID

from dsclient.unixfs import DatastoreBlockStore, MemoryBlockStore, add_stream, cat
from dsclient.unixfs.importer import ImportOptions, make_leaf
from dsclient.unixfs.pb import DataType, UnixFSData, encode_data
from dscluster.blocks import block_key
from dscluster.ipld.cids import sha256_cid
from dscluster.ipld.dagpb import PBLink, PBNode, encode_node

KUBO_CHILD = Path(__file__).with_name("kubo_child.py")


# -- UnixFS files ------------------------------------------------------------


@dataclass
class UnixfsFile:
    root: CID
    blocks: dict[CID, bytes] = field(default_factory=dict)


class _RecordingStore(MemoryBlockStore):
    """A MemoryBlockStore that also remembers each block's CID."""

    def __init__(self) -> None:
        super().__init__()
        self.by_cid: dict[CID, bytes] = {}

    async def put_many(self, blocks: list[tuple[CID, bytes]]) -> None:
        await super().put_many(blocks)
        self.by_cid.update(blocks)


async def build_file(content: bytes, chunk: int = 262144, raw_leaves: bool = False) -> UnixfsFile:
    """The DAG `ipfs add` builds (CIDv1 with raw leaves when asked, as `--cid-version 1`)."""
    store = _RecordingStore()
    root = await add_stream(
        [content], store, cid_version=1 if raw_leaves else 0, chunker=f"size-{chunk}"
    )
    return UnixfsFile(root, store.by_cid)


def leaf_file(content: bytes) -> UnixfsFile:
    """A file of one dag-pb block, built without an event loop (for parameters and sync tests)."""
    child, block = make_leaf(content, ImportOptions.create())
    return UnixfsFile(child.cid, {child.cid: block})


def oversized_file(content: bytes) -> UnixfsFile:
    """A file whose one raw leaf is larger than any chunker makes (other peers may serve such)."""
    leaf = sha256_cid(content, 1, "raw")
    data = encode_data(UnixFSData(DataType.FILE, filesize=len(content), blocksizes=(len(content),)))
    block = encode_node(PBNode((PBLink(leaf, "", len(content)),), data))
    root = sha256_cid(block, 1, "dag-pb")
    return UnixfsFile(root, {leaf: content, root: block})


async def read_file(store: Any, cid: CID) -> bytes:
    """Reassemble a UnixFS file from the blocks in a Datastore (each checked against its CID)."""
    return b"".join([piece async for piece in cat(cid, DatastoreBlockStore(store))])


def flatfs_blocks(dag: UnixfsFile) -> dict[str, str]:
    """A DAG as kubo_child's "blocks" plan entry (flatfs key -> hex)."""
    return {block_key(cid)[1:]: data.hex() for cid, data in dag.blocks.items()}


# -- Kubo in a child process ---------------------------------------------------


class KuboChild:
    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._lines = b""

    async def result(self) -> dict[str, Any]:
        """The next RESULT line the child prints (other output is Kubo's chatter)."""
        assert self.process.stdout is not None
        while True:
            while b"\n" not in self._lines:
                chunk = await self.process.stdout.receive_some(65536)
                if not chunk:
                    raise AssertionError(f"Kubo child exited ({self.process.poll()})")
                self._lines += chunk
            line, self._lines = self._lines.split(b"\n", 1)
            if line.startswith(b"RESULT "):
                return json.loads(line[len(b"RESULT ") :])

    async def multiaddr(self) -> str:
        info = await self.result()
        return f"{info['addrs'][0]}/p2p/{info['peer_id']}"


@asynccontextmanager
async def kubo(plan: dict[str, Any], workdir: Path, timeout: float = 60) -> AsyncIterator[KuboChild]:
    """Run kubo_child.py with this plan in workdir; killed by PID on the way out."""
    repo = workdir / "kubo-repo"
    repo.mkdir(parents=True)
    plan_file = workdir / "kubo-plan.json"
    plan_file.write_text(json.dumps({"repo": str(repo), **plan}))
    process = await trio.lowlevel.open_process(
        [sys.executable, str(KUBO_CHILD), str(plan_file)],
        cwd=workdir,  # Kubo writes its logs into the working directory
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        with trio.fail_after(timeout):
            yield KuboChild(process)
    finally:
        with trio.CancelScope(shield=True):
            if process.stdin is not None:
                await process.stdin.aclose()
            with trio.move_on_after(5):
                await process.wait()
            if process.poll() is None:
                os.kill(process.pid, 9)
                await process.wait()


def chunk_count(size: int, chunk: int = 262144) -> int:
    return max(1, math.ceil(size / chunk))

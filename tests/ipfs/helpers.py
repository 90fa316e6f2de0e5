"""Helpers for the IPFS tests: a UnixFS file builder/reader and a Kubo child process."""

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
from multiformats import CID, multihash

from dscluster.blocks import block_key
from ipfs_plugin import dagpb
from ipfs_plugin import protobuf as pb

KUBO_CHILD = Path(__file__).with_name("kubo_child.py")
UNIXFS_FILE = 2


# -- UnixFS files ------------------------------------------------------------


def _unixfs(data: bytes | None, filesize: int, blocksizes: list[int] = ()) -> bytes:  # type: ignore[assignment]
    out = pb.varint_field(1, UNIXFS_FILE)
    if data:
        out += pb.bytes_field(2, data)
    out += pb.varint_field(3, filesize)
    for size in blocksizes:
        out += pb.varint_field(4, size)
    return out


def _cid(version: int, codec: str, data: bytes) -> CID:
    digest = multihash.get("sha2-256").digest(data)
    return CID("base58btc" if version == 0 else "base32", version, codec, digest)


@dataclass
class UnixfsFile:
    root: CID
    blocks: dict[CID, bytes] = field(default_factory=dict)


def build_file(content: bytes, chunk: int = 262144, raw_leaves: bool = False) -> UnixfsFile:
    """A one-level UnixFS file DAG (as `ipfs add` builds files of up to 174 chunks)."""
    version = 1 if raw_leaves else 0
    chunks = [content[i : i + chunk] for i in range(0, len(content), chunk)] or [b""]
    leaves: list[tuple[CID, bytes, int]] = []
    for piece in chunks:
        if raw_leaves:
            block = piece
            leaves.append((_cid(1, "raw", block), block, len(piece)))
        else:
            block = dagpb.encode_node(dagpb.Node(data=_unixfs(piece, len(piece))))
            leaves.append((_cid(0, "dag-pb", block), block, len(piece)))
    dag = UnixfsFile(leaves[0][0], {cid: block for cid, block, _ in leaves})
    if len(leaves) == 1 and not raw_leaves:
        return dag
    assert len(leaves) <= 174, "one level only"
    links = tuple(dagpb.Link(cid, "", len(block)) for cid, block, _ in leaves)
    root = dagpb.encode_node(
        dagpb.Node(links, _unixfs(None, len(content), [size for *_, size in leaves]))
    )
    dag.root = _cid(version, "dag-pb", root)
    dag.blocks[dag.root] = root
    return dag


async def read_file(store: Any, cid: CID) -> bytes:
    """Reassemble a UnixFS file from the blocks in a store (checking each hash)."""
    block = await store.get(block_key(cid))
    assert multihash.digest(block, "sha2-256") == bytes(cid.digest), f"{cid} corrupt"
    if cid.codec.name == "raw":
        return block
    node = dagpb.decode_node(block)
    inline = b""
    for number, _, value in pb.iter_fields(node.data or b""):
        if number == 2:
            inline = bytes(value)  # type: ignore[arg-type]
    parts = [inline] + [await read_file(store, link.cid) for link in node.links]
    return b"".join(parts)


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

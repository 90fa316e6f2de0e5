"""Read UnixFS DAGs back: file bytes as a stream, files and directories to disk, stat.

Theory of operation. Every block is fetched through ``fetch``, which hashes
the bytes and compares them with the CID before anything else looks at them;
a mismatch, or bytes that do not decode as the CID's codec says, raise
CorruptBlockError naming that block's CID.

``cat`` walks a file DAG depth first with a queue of pending blocks. It
fetches the next ``window`` blocks of the queue concurrently, then consumes
them in order: a leaf yields its bytes; the first internal node met puts its
children (and the already fetched rest of the window) back at the front of
the queue. So at most ``window`` blocks are in flight or held, whatever the
file size, and bytes come out in file order. The fetching nursery closes
before anything is yielded, as an async generator must.

``get_to_path`` writes a file to ``dest.part`` and renames it into place, so
a failed export leaves no half-written file under the real name. Names read
from directory nodes are untrusted: one that is empty, "." or "..", or holds
a "/" or NUL is refused before any path is built from it.
"""

from __future__ import annotations

import enum
import os
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import trio
from multiformats import CID

from dsclient.unixfs.blockstore import BlockStore, verify_block
from dsclient.unixfs.errors import plain_errors
from dsclient.unixfs.pb import DataType, PBLink, PBNode, UnixFSData, decode_data, decode_node
from dscluster.blocks import parse_cid
from dscluster.errors import BadRequestError, CorruptBlockError, ProtocolError

WINDOW = 32
THREAD_VERIFY_BYTES = 1024 * 1024


class NodeType(enum.Enum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    RAW = "raw"  # a raw block: a file of one chunk added with raw leaves


@dataclass(frozen=True)
class Link:
    name: str
    cid: CID
    tsize: int


@dataclass(frozen=True)
class Stat:
    """What ``ipfs files stat`` reports, for the root block only (no DAG walk)."""

    cid: CID
    type: NodeType
    size: int  # file bytes (symlink: target length; directory: 0)
    cumulative_size: int  # root block plus the Tsize of every link
    blocks: int  # links in the root, as Kubo counts "Blocks"
    links: tuple[Link, ...]


@dataclass(frozen=True)
class Node:
    """A decoded, verified block: raw bytes, or a dag-pb node with its UnixFS Data."""

    cid: CID
    block: bytes
    pb: PBNode | None
    unixfs: UnixFSData | None

    @property
    def type(self) -> NodeType:
        if self.unixfs is None:
            return NodeType.RAW
        if self.unixfs.type in (DataType.FILE, DataType.RAW):
            return NodeType.FILE
        if self.unixfs.type is DataType.DIRECTORY:
            return NodeType.DIRECTORY
        if self.unixfs.type is DataType.SYMLINK:
            return NodeType.SYMLINK
        raise CorruptBlockError(self.cid, f"unsupported UnixFS type {self.unixfs.type.name}")

    @property
    def links(self) -> tuple[PBLink, ...]:
        return self.pb.links if self.pb is not None else ()

    @property
    def data(self) -> bytes:
        """A file node's own bytes (before its children's)."""
        if self.unixfs is None:
            return self.block
        return self.unixfs.data or b""


def decode(cid: CID, block: bytes) -> Node:
    """Verify and decode one block; CorruptBlockError names it when either fails."""
    verify_block(cid, block)
    codec = cid.codec.name
    if codec == "raw":
        return Node(cid, block, None, None)
    if codec != "dag-pb":
        raise CorruptBlockError(cid, f"codec {codec} is not UnixFS")
    try:
        pb = decode_node(block)
        if pb.data is None:
            raise ProtocolError("dag-pb node without UnixFS Data")
        unixfs = decode_data(pb.data)
    except ProtocolError as exc:
        raise CorruptBlockError(cid, f"not a UnixFS node: {exc}") from exc
    return Node(cid, block, pb, unixfs)


async def fetch(store: BlockStore, cid: CID) -> Node:
    block = await store.get(cid)
    if len(block) >= THREAD_VERIFY_BYTES:
        return await trio.to_thread.run_sync(decode, cid, block)
    return decode(cid, block)


async def _fetch_many(store: BlockStore, cids: list[CID]) -> list[Node]:
    nodes: list[Node | None] = [None] * len(cids)

    async def one(i: int) -> None:
        nodes[i] = await fetch(store, cids[i])

    with plain_errors():
        async with trio.open_nursery() as nursery:
            for i in range(len(cids)):
                nursery.start_soon(one, i)
    return [n for n in nodes if n is not None]


async def cat(cid: CID | str, store: BlockStore, *, window: int = WINDOW) -> AsyncIterator[bytes]:
    """The bytes of a file DAG, in order; BadRequestError for a directory or symlink."""
    root = await fetch(store, parse_cid(cid))
    if root.type not in (NodeType.FILE, NodeType.RAW):
        raise BadRequestError(f"{root.cid} is a {root.type.value}, not a file")
    async for data in _file_bytes(root, store, window):
        yield data


async def _file_bytes(root: Node, store: BlockStore, window: int) -> AsyncIterator[bytes]:
    queue: deque[CID | Node] = deque([root])
    while queue:
        batch = [queue.popleft() for _ in range(min(window, len(queue)))]
        missing = [item for item in batch if not isinstance(item, Node)]
        fetched = iter(await _fetch_many(store, missing))
        nodes = [item if isinstance(item, Node) else next(fetched) for item in batch]
        for i, node in enumerate(nodes):
            if node.type not in (NodeType.FILE, NodeType.RAW):
                raise CorruptBlockError(node.cid, f"a {node.type.value} inside a file")
            if node.data:
                yield node.data
            if node.links:
                # Children come before the rest of this window, in order.
                queue.extendleft(reversed(nodes[i + 1 :]))
                queue.extendleft(reversed([link.cid for link in node.links]))
                break


async def stat(cid: CID | str, store: BlockStore) -> Stat:
    node = await fetch(store, parse_cid(cid))
    kind = node.type
    links = tuple(Link(link.name, link.cid, link.tsize) for link in node.links)
    if kind is NodeType.RAW:
        size = len(node.block)
    elif kind is NodeType.FILE:
        assert node.unixfs is not None
        size = node.unixfs.filesize if node.unixfs.filesize is not None else len(node.data)
    elif kind is NodeType.SYMLINK:
        size = len(node.data)
    else:
        size = 0
    cumulative = len(node.block) + sum(link.tsize for link in links)
    return Stat(node.cid, kind, size, cumulative, len(links), links)


def _check_name(parent: CID, name: str) -> str:
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise BadRequestError(f"directory {parent} has an unsafe entry name {name!r}")
    return name


async def get_to_path(cid: CID | str, store: BlockStore, dest: str | os.PathLike[str]) -> None:
    """Write the file, directory or symlink at ``cid`` to ``dest`` (which must not exist)."""
    target = Path(dest)
    if os.path.lexists(target):
        raise BadRequestError(f"{target} already exists")
    await _export(await fetch(store, parse_cid(cid)), store, target)


async def _export(node: Node, store: BlockStore, dest: Path) -> None:
    kind = node.type
    if kind is NodeType.DIRECTORY:
        names = [_check_name(node.cid, link.name) for link in node.links]
        await trio.to_thread.run_sync(dest.mkdir)
        for name, link in zip(names, node.links, strict=True):
            await _export(await fetch(store, link.cid), store, dest / name)
    elif kind is NodeType.SYMLINK:
        await trio.to_thread.run_sync(os.symlink, os.fsdecode(node.data), dest)
    else:
        await _write_file(node, store, dest)


async def _write_file(root: Node, store: BlockStore, dest: Path) -> None:
    part = dest.with_name(dest.name + ".part")
    f = await trio.to_thread.run_sync(open, part, "wb")
    try:
        try:
            async for data in _file_bytes(root, store, WINDOW):
                await trio.to_thread.run_sync(f.write, data)
        finally:
            f.close()
        await trio.to_thread.run_sync(os.replace, part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise

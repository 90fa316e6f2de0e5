"""Import files and directories as UnixFS DAGs whose CIDs match ``ipfs add``.

Theory of operation. A file is cut into fixed-size chunks; each chunk becomes
a leaf (a dag-pb UnixFS File node holding the bytes, or with raw leaves the
bytes themselves as a ``raw`` block). Leaves are linked by Kubo's balanced
layout: a node has at most 174 links, every leaf sits at the same depth, and
every node is full except those on the rightmost path. A file of one chunk is
its leaf; an empty file is an empty leaf.

``BalancedLayout`` builds that tree as leaves arrive, holding one open list of
children per level. When a level already has 174 children and another one
comes, the full list is sealed into a parent node one level up. ``finish``
seals every open level, even one holding a single child (Kubo wraps a lone
last child, it never promotes it), and the top level's node is the root. So
memory is 174 links per level, whatever the file size.

Every link carries Tsize, the cumulative size of the child's DAG (its block
plus its children's Tsizes, or the raw bytes' length); every File node carries
the file size under it and each child's size in ``blocksizes``.

A directory is a dag-pb node of Type Directory with one link per entry,
sorted by name, each carrying the entry's Tsize. Names starting with "." are
left out unless ``hidden`` is set, as ``ipfs add -r`` does. Kubo switches a
directory to a HAMT shard when its estimated size (names plus CID bytes)
reaches 256 KiB; sharding is not implemented, so such a directory is refused
rather than given a CID that Kubo would not give.

I/O: file reads and leaf hashing run in a worker thread, a batch of chunks at
a time (hashlib releases the GIL), while a second task stores the previous
batch; the channel between them holds two batches, which bounds memory.
"""

from __future__ import annotations

import logging
import os
import stat as stat_mod
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import trio
from multiformats import CID

from dsclient.unixfs.blockstore import BlockStore
from dsclient.unixfs.chunker import DEFAULT_CHUNKER, Rechunker, parse_chunker
from dsclient.unixfs.errors import plain_errors
from dsclient.unixfs.pb import DataType, PBLink, PBNode, UnixFSData, encode_data, encode_node
from dscluster.errors import BadRequestError, NotFoundError
from dscluster.ipld.cids import cid_to_bytes, sha256_cid

logger = logging.getLogger(__name__)

MAX_LINKS = 174  # Kubo's DefaultLinksPerBlock
HAMT_SHARDING_SIZE = 256 * 1024  # Kubo's default Internal.UnixFSShardingSizeThreshold
BATCH_BYTES = 4 * 1024 * 1024  # chunks read and hashed per worker-thread call
MAX_BATCH_CHUNKS = 1024
THREAD_MIN_BYTES = 1024 * 1024  # below this, hashing inline is cheaper than a thread hop
# Batches stored at once: while one waits for its slowest node, others are on the
# wire. Memory: about (2 x STORE_WORKERS + 1) x BATCH_BYTES of chunks at most.
STORE_WORKERS = 4

Progress = Callable[[int], None]


@dataclass(frozen=True)
class ImportOptions:
    cid_version: int = 0
    raw_leaves: bool = False
    chunk_size: int = 262144
    hidden: bool = False

    @classmethod
    def create(
        cls,
        *,
        cid_version: int = 0,
        raw_leaves: bool | None = None,
        chunker: str = DEFAULT_CHUNKER,
        hidden: bool = False,
    ) -> ImportOptions:
        """Kubo's defaults: raw leaves follow the CID version unless set explicitly."""
        if cid_version not in (0, 1):
            raise BadRequestError(f"unsupported CID version {cid_version}: use 0 or 1")
        leaves = cid_version == 1 if raw_leaves is None else raw_leaves
        return cls(cid_version, leaves, parse_chunker(chunker), hidden)


@dataclass(frozen=True)
class Child:
    """What a parent needs to link to a node: its CID, Tsize and file size."""

    cid: CID
    tsize: int
    filesize: int


Block = tuple[CID, bytes]


def dag_pb_cid(block: bytes, cid_version: int) -> CID:
    return sha256_cid(block, cid_version, "dag-pb")


def raw_cid(block: bytes) -> CID:
    # Raw blocks have no CIDv0 form: Kubo makes raw leaves CIDv1 even with --cid-version 0.
    return sha256_cid(block, 1, "raw")


def make_leaf(chunk: bytes, opts: ImportOptions) -> tuple[Child, bytes]:
    if opts.raw_leaves:
        return Child(raw_cid(chunk), len(chunk), len(chunk)), chunk
    data = UnixFSData(DataType.FILE, data=chunk or None, filesize=len(chunk))
    block = encode_node(PBNode(data=encode_data(data)))
    return Child(dag_pb_cid(block, opts.cid_version), len(block), len(chunk)), block


def make_leaves(chunks: list[bytes], opts: ImportOptions) -> list[tuple[Child, bytes]]:
    return [make_leaf(chunk, opts) for chunk in chunks]


class BalancedLayout:
    """Kubo's balanced DAG, built incrementally (see the module docstring)."""

    def __init__(self, opts: ImportOptions) -> None:
        self._opts = opts
        self._levels: list[list[Child]] = [[]]

    def add(self, leaf: Child) -> list[Block]:
        """Take the next leaf; return the internal blocks this sealed."""
        out: list[Block] = []
        self._push(0, leaf, out)
        return out

    def finish(self) -> tuple[Child, list[Block]]:
        """The root and the last internal blocks. The layout must have had a leaf."""
        out: list[Block] = []
        levels = self._levels
        if not levels[0]:
            raise ValueError("finish() of a layout without leaves")
        depth = 0
        while depth < len(levels) - 1:  # sealing may open a new top level
            parent = self._seal(levels[depth], out)
            levels[depth] = []
            self._push(depth + 1, parent, out)
            depth += 1
        top = levels[-1]
        root = top[0] if len(top) == 1 else self._seal(top, out)
        self._levels = [[]]
        return root, out

    def _push(self, depth: int, child: Child, out: list[Block]) -> None:
        if depth == len(self._levels):
            self._levels.append([])
        if len(self._levels[depth]) == MAX_LINKS:
            parent = self._seal(self._levels[depth], out)
            self._levels[depth] = []
            self._push(depth + 1, parent, out)
        self._levels[depth].append(child)

    def _seal(self, children: list[Child], out: list[Block]) -> Child:
        filesize = sum(c.filesize for c in children)
        data = UnixFSData(
            DataType.FILE, filesize=filesize, blocksizes=tuple(c.filesize for c in children)
        )
        links = tuple(PBLink(c.cid, "", c.tsize) for c in children)
        block = encode_node(PBNode(links, encode_data(data)))
        cid = dag_pb_cid(block, self._opts.cid_version)
        out.append((cid, block))
        return Child(cid, len(block) + sum(c.tsize for c in children), filesize)


def directory_block(entries: dict[str, Child], opts: ImportOptions) -> tuple[Child, bytes]:
    """A basic UnixFS directory; links sorted by name bytes, as dag-pb requires."""
    names = sorted(entries, key=lambda name: name.encode("utf-8"))
    estimated = sum(len(n.encode("utf-8")) + len(cid_to_bytes(entries[n].cid)) for n in names)
    if estimated >= HAMT_SHARDING_SIZE:
        raise BadRequestError(
            f"directory of {len(names)} entries needs HAMT sharding (estimated size "
            f"{estimated} >= {HAMT_SHARDING_SIZE}), which is not implemented"
        )
    links = tuple(PBLink(entries[n].cid, n, entries[n].tsize) for n in names)
    block = encode_node(PBNode(links, encode_data(UnixFSData(DataType.DIRECTORY))))
    tsize = len(block) + sum(link.tsize for link in links)
    return Child(dag_pb_cid(block, opts.cid_version), tsize, 0), block


def symlink_block(target: str, opts: ImportOptions) -> tuple[Child, bytes]:
    data = UnixFSData(DataType.SYMLINK, data=target.encode("utf-8"))
    block = encode_node(PBNode(data=encode_data(data)))
    return Child(dag_pb_cid(block, opts.cid_version), len(block), 0), block


LeafSource = Callable[[], Awaitable[list[tuple[Child, bytes]]]]


class Importer:
    """One add: owns the task that stores blocks while the next batch is hashed."""

    def __init__(
        self,
        store: BlockStore,
        opts: ImportOptions,
        send: trio.MemorySendChannel[list[Block]],
        progress: Progress | None = None,
    ) -> None:
        self.opts = opts
        self._store = store
        self._send = send
        self._progress = progress
        self.bytes_done = 0

    async def emit(self, blocks: list[Block]) -> None:
        if blocks:
            await self._send.send(blocks)

    def _advance(self, nbytes: int) -> None:
        self.bytes_done += nbytes
        if self._progress is not None and nbytes:
            self._progress(self.bytes_done)

    async def file_from_leaves(self, next_leaves: LeafSource) -> Child:
        layout = BalancedLayout(self.opts)
        seen_leaf = False
        while leaves := await next_leaves():
            seen_leaf = True
            blocks: list[Block] = []
            for child, block in leaves:
                blocks.append((child.cid, block))
                blocks.extend(layout.add(child))
            await self.emit(blocks)
            self._advance(sum(child.filesize for child, _ in leaves))
        if not seen_leaf:  # an empty file is one empty leaf
            child, block = make_leaf(b"", self.opts)
            await self.emit([(child.cid, block)])
            return child
        root, blocks = layout.finish()
        await self.emit(blocks)
        return root

    async def file_from_binary(self, f: BinaryIO) -> Child:
        batch = max(1, min(MAX_BATCH_CHUNKS, BATCH_BYTES // self.opts.chunk_size))
        size, opts = self.opts.chunk_size, self.opts

        def read_and_hash() -> list[tuple[Child, bytes]]:
            chunks = []
            for _ in range(batch):
                chunk = _read_full(f, size)
                if not chunk:
                    break
                chunks.append(chunk)
            return make_leaves(chunks, opts)

        async def next_leaves() -> list[tuple[Child, bytes]]:
            return await trio.to_thread.run_sync(read_and_hash)

        return await self.file_from_leaves(next_leaves)

    async def file_from_pieces(self, pieces: AsyncIterable[bytes] | Iterable[bytes]) -> Child:
        rechunker = Rechunker(self.opts.chunk_size)
        want = max(1, min(MAX_BATCH_CHUNKS, BATCH_BYTES // self.opts.chunk_size))
        iterator = _aiter(pieces)
        done = False

        async def next_leaves() -> list[tuple[Child, bytes]]:
            nonlocal done
            chunks: list[bytes] = []
            while not done and len(chunks) < want:
                try:
                    piece = await iterator.__anext__()
                except StopAsyncIteration:
                    done = True
                    chunks.extend(rechunker.flush())
                    break
                chunks.extend(rechunker.feed(bytes(piece)))
            if sum(len(c) for c in chunks) >= THREAD_MIN_BYTES:
                return await trio.to_thread.run_sync(make_leaves, chunks, self.opts)
            return make_leaves(chunks, self.opts)

        return await self.file_from_leaves(next_leaves)

    async def path(self, path: Path) -> Child:
        """A file, directory or symlink at ``path`` (not followed), recursively."""
        info = await trio.to_thread.run_sync(os.lstat, path)
        if stat_mod.S_ISLNK(info.st_mode):
            target = await trio.to_thread.run_sync(os.readlink, path)
            child, block = symlink_block(os.fsdecode(target), self.opts)
            await self.emit([(child.cid, block)])
            return child
        if stat_mod.S_ISREG(info.st_mode):
            f = await trio.to_thread.run_sync(_open_binary, path)
            try:
                return await self.file_from_binary(f)
            finally:
                f.close()
        if stat_mod.S_ISDIR(info.st_mode):
            return await self.directory(path)
        raise BadRequestError(f"{path}: not a regular file, directory or symlink")

    async def directory(self, path: Path) -> Child:
        names = await trio.to_thread.run_sync(os.listdir, path)
        entries: dict[str, Child] = {}
        for name in sorted(names):
            if name.startswith(".") and not self.opts.hidden:
                continue
            entries[name] = await self.path(path / name)
        child, block = directory_block(entries, self.opts)
        await self.emit([(child.cid, block)])
        return child


def _open_binary(path: Path) -> BinaryIO:
    return open(path, "rb")


def _read_full(f: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes, short only at end of file (a pipe may return less per read)."""
    chunk = f.read(size)
    if not chunk or len(chunk) == size:
        return chunk
    parts = [chunk]
    got = len(chunk)
    while got < size:
        more = f.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


async def _aiter_sync(pieces: Iterable[bytes]):  # type: ignore[no-untyped-def]
    for piece in pieces:
        yield piece


def _aiter(pieces: AsyncIterable[bytes] | Iterable[bytes]):  # type: ignore[no-untyped-def]
    if isinstance(pieces, AsyncIterable):
        return pieces.__aiter__()
    return _aiter_sync(pieces).__aiter__()


async def _store_blocks(store: BlockStore, recv: trio.MemoryReceiveChannel[list[Block]]) -> None:
    async with recv:
        async for blocks in recv:
            await store.put_many(blocks)


async def run_import(
    store: BlockStore,
    opts: ImportOptions,
    progress: Progress | None,
    body: Callable[[Importer], Awaitable[Child]],
) -> Child:
    """Run ``body`` with an Importer whose blocks are stored concurrently; wait for the last put."""
    send, recv = trio.open_memory_channel[list[Block]](STORE_WORKERS)
    with plain_errors():
        async with trio.open_nursery() as nursery:
            async with recv:
                for _ in range(STORE_WORKERS):
                    nursery.start_soon(_store_blocks, store, recv.clone())
            async with send:
                root = await body(Importer(store, opts, send, progress))
    logger.debug("imported %s (%d bytes)", root.cid, root.filesize)
    return root


async def add_path(
    path: str | os.PathLike[str],
    store: BlockStore,
    opts: ImportOptions,
    *,
    recursive: bool = False,
    progress: Progress | None = None,
) -> CID:
    target = Path(path)
    try:
        info = await trio.to_thread.run_sync(os.stat, target)
    except FileNotFoundError:
        raise NotFoundError(f"{target}: no such file or directory") from None
    if stat_mod.S_ISDIR(info.st_mode):
        if not recursive:
            raise BadRequestError(f"{target} is a directory: add it recursively")
        root = await run_import(store, opts, progress, lambda imp: imp.directory(target))
        return root.cid
    if not stat_mod.S_ISREG(info.st_mode):
        raise BadRequestError(f"{target}: not a regular file or directory")
    # The named file itself is read through a symlink, as `ipfs add link` reads its target.
    f = await trio.to_thread.run_sync(_open_binary, target)
    try:
        root = await run_import(store, opts, progress, lambda imp: imp.file_from_binary(f))
    finally:
        f.close()
    return root.cid

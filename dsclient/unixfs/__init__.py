"""UnixFS import and export with Kubo's CIDs, over any BlockStore.

``add_path`` and ``add_stream`` build the DAG that ``ipfs add`` builds (same
options, same CIDs); ``cat``, ``get_to_path`` and ``stat`` read it back,
checking every block against its CID. See doc/client.md, "UnixFS".
"""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import BinaryIO, cast

from multiformats import CID

from dsclient.unixfs import exporter, importer
from dsclient.unixfs.blockstore import (
    BlockStore,
    DatastoreBlockStore,
    MemoryBlockStore,
    verify_block,
)
from dsclient.unixfs.chunker import DEFAULT_CHUNKER
from dsclient.unixfs.exporter import Link, NodeType, Stat
from dsclient.unixfs.importer import ImportOptions, Progress

__all__ = [
    "BlockStore",
    "DatastoreBlockStore",
    "ImportOptions",
    "Link",
    "MemoryBlockStore",
    "NodeType",
    "Progress",
    "Stat",
    "add_path",
    "add_stream",
    "cat",
    "get_to_path",
    "stat",
    "verify_block",
]


async def add_path(
    path: str | os.PathLike[str],
    store: BlockStore,
    *,
    cid_version: int = 0,
    raw_leaves: bool | None = None,
    chunker: str = DEFAULT_CHUNKER,
    recursive: bool = False,
    hidden: bool = False,
    progress: Progress | None = None,
) -> CID:
    """Add a file (or, with ``recursive``, a directory) as ``ipfs add [-r]`` does.

    ``progress`` is called with the number of file bytes imported so far.
    """
    opts = ImportOptions.create(
        cid_version=cid_version, raw_leaves=raw_leaves, chunker=chunker, hidden=hidden
    )
    return await importer.add_path(path, store, opts, recursive=recursive, progress=progress)


async def add_stream(
    source: BinaryIO | AsyncIterable[bytes] | Iterable[bytes],
    store: BlockStore,
    *,
    cid_version: int = 0,
    raw_leaves: bool | None = None,
    chunker: str = DEFAULT_CHUNKER,
    progress: Progress | None = None,
) -> CID:
    """Add the bytes of a binary file object or of an (async) iterable of pieces of any size.

    A file object is read in a worker thread, chunk by chunk; pieces are cut
    into chunks exactly as a file of the same bytes would be.
    """
    opts = ImportOptions.create(cid_version=cid_version, raw_leaves=raw_leaves, chunker=chunker)
    if isinstance(source, io.IOBase):  # not its line iterator: read() it in chunks
        binary = cast(BinaryIO, source)
        root = await importer.run_import(
            store, opts, progress, lambda imp: imp.file_from_binary(binary)
        )
    else:
        pieces = cast(AsyncIterable[bytes] | Iterable[bytes], source)
        root = await importer.run_import(
            store, opts, progress, lambda imp: imp.file_from_pieces(pieces)
        )
    return root.cid


async def cat(cid: CID | str, store: BlockStore) -> AsyncIterator[bytes]:
    """The bytes of the file at ``cid``, in order, every block verified."""
    async for data in exporter.cat(cid, store):
        yield data


async def get_to_path(cid: CID | str, store: BlockStore, dest: str | os.PathLike[str]) -> None:
    """Write the file, directory or symlink at ``cid`` to the new path ``dest``."""
    await exporter.get_to_path(cid, store, dest)


async def stat(cid: CID | str, store: BlockStore) -> Stat:
    """Type, size, cumulative size and links of the root block of ``cid``."""
    return await exporter.stat(cid, store)

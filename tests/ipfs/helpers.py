"""Helpers for the IPFS tests: UnixFS files built by dsclient.unixfs, as Kubo would see them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from multiformats import CID

from dsclient.unixfs import DatastoreBlockStore, MemoryBlockStore, add_stream, cat
from dsclient.unixfs.importer import ImportOptions, make_leaf
from dsclient.unixfs.pb import DataType, UnixFSData, encode_data
from dscluster.blocks import block_key
from dscluster.ipld.cids import sha256_cid
from dscluster.ipld.dagpb import PBLink, PBNode, encode_node

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
    """A DAG as a Kubo plan's "blocks" entry (flatfs key -> hex; see dscluster.testing.kubo)."""
    return {block_key(cid)[1:]: data.hex() for cid, data in dag.blocks.items()}


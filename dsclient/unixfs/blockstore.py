"""Where UnixFS blocks live: a three-method interface and its adapters.

Theory of operation: the importer and exporter only ever put blocks in
batches, get one block, or ask whether one exists, so any store that can do
that (a dict, a local Datastore, the cluster client) can hold a UnixFS DAG.
Blocks are addressed by CID but stored under ``block_key(cid)``, which
depends on the multihash only: a CIDv0 and a CIDv1 of the same bytes are one
block, as in Kubo.

The store is not trusted: readers check every block against its CID with
``verify_block`` before using it.
"""

from __future__ import annotations

from typing import Protocol

from multiformats import CID

from dscluster.blocks import block_key
from dscluster.errors import CorruptBlockError, NotFoundError
from dscluster.ipld.cids import block_matches

__all__ = [
    "BlockStore",
    "DatastoreBlockStore",
    "MemoryBlockStore",
    "verify_block",
]


class BlockStore(Protocol):
    async def put_many(self, blocks: list[tuple[CID, bytes]]) -> None: ...

    async def get(self, cid: CID) -> bytes:
        """The block's bytes; NotFoundError when it is absent."""
        ...

    async def has(self, cid: CID) -> bool: ...


class _Batch(Protocol):
    def put(self, key: str, value: bytes) -> None: ...

    async def commit(self) -> None: ...


class _Datastore(Protocol):
    """The part of dscluster's Datastore contract this adapter uses."""

    async def get(self, key: str) -> bytes: ...

    async def has(self, key: str) -> bool: ...

    async def batch(self) -> _Batch: ...


def verify_block(cid: CID, data: bytes) -> None:
    """Raise CorruptBlockError unless ``data`` hashes to ``cid``'s multihash."""
    try:
        matches = block_matches(cid, data)
    except Exception as exc:  # an unsupported hash function cannot be trusted
        raise CorruptBlockError(cid, f"cannot verify hash {cid.hashfun.name}: {exc}") from exc
    if not matches:
        raise CorruptBlockError(cid)


class MemoryBlockStore:
    """A dict of blocks by multihash bytes: for tests, benchmarks and dry runs."""

    def __init__(self) -> None:
        self.blocks: dict[bytes, bytes] = {}

    async def put_many(self, blocks: list[tuple[CID, bytes]]) -> None:
        for cid, data in blocks:
            self.blocks[cid.digest] = data

    async def get(self, cid: CID) -> bytes:
        try:
            return self.blocks[cid.digest]
        except KeyError:
            raise NotFoundError(f"block {cid} not found") from None

    async def has(self, cid: CID) -> bool:
        return cid.digest in self.blocks


class DatastoreBlockStore:
    """Blocks in any dscluster Datastore, one batch per ``put_many``."""

    def __init__(self, ds: _Datastore) -> None:
        self._ds = ds

    async def put_many(self, blocks: list[tuple[CID, bytes]]) -> None:
        batch = await self._ds.batch()
        for cid, data in blocks:
            batch.put(block_key(cid), data)
        await batch.commit()

    async def get(self, cid: CID) -> bytes:
        try:
            return await self._ds.get(block_key(cid))
        except NotFoundError:
            raise NotFoundError(f"block {cid} not found") from None

    async def has(self, cid: CID) -> bool:
        return await self._ds.has(block_key(cid))

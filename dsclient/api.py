"""The Python API: content-addressed blocks, UnixFS files and raw keys in the cluster.

Theory of operation: ``AsyncClient`` is the API on trio. It holds one
ClusterClient and a ``DatastoreBlockStore`` over it, so every block lives
under ``dscluster.blocks.block_key(cid)`` -- the same keys an IPFS node
writes through ipfs_plugin. ``put`` stores bytes as one block and returns
its CID (CIDv1, raw codec, sha2-256); ``get`` checks the bytes against the
CID before returning them (CorruptBlockError otherwise). ``add``/``cat``/
``get_file``/``stat`` are UnixFS, with the CIDs ``ipfs add`` gives.

``Client`` is the same API, blocking, for scripts and notebooks: it runs a
trio loop in one background thread, where the AsyncClient lives, and hands
each call to it (dscluster/trio_thread.py); errors arrive as the same
exceptions. Close it (or use ``with``) to stop the thread.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
from multiformats import CID

from dsclient import unixfs
from dsclient.client import ClientOptions, ClusterClient, config_table, options_for_config
from dsclient.routing import RoutingTable
from dsclient.unixfs import DatastoreBlockStore, Stat, verify_block
from dscluster.blocks import block_key, parse_cid
from dscluster.config import load_client_config
from dscluster.datastore.query import Entry, Query
from dscluster.errors import DSClusterError, NotFoundError
from dscluster.ipld.cids import sha256_cid
from dscluster.net.host import Identity
from dscluster.trio_thread import TrioThread

log = logging.getLogger(__name__)

__all__ = ["AsyncClient", "Client"]

Ref = CID | str


class AsyncClient:
    """Blocks, files and keys in the cluster, on trio. Open with ``connect``/``from_config``."""

    def __init__(self, cluster: ClusterClient) -> None:
        self.cluster = cluster
        self.blocks = DatastoreBlockStore(cluster)

    # -- opening ----------------------------------------------------------------------

    @classmethod
    async def start(cls, nursery: trio.Nursery, *, config: str | os.PathLike[str] | None = None,
                    bootstrap: Sequence[str] = (), identity: Identity | None = None,
                    options: ClientOptions = ClientOptions()) -> AsyncClient:
        """A client whose tasks live in ``nursery`` until ``aclose()``."""
        table: RoutingTable | None = None
        if config is not None:
            cfg = load_client_config(config)
            identity = identity or cfg.identity.identity()
            table = config_table(cfg)
            options = options_for_config(config, options)  # DIR/swarm.key: private network
        cluster = await ClusterClient.start(nursery, identity, bootstrap=bootstrap, table=table,
                                            options=options)
        return cls(cluster)

    @classmethod
    @asynccontextmanager
    async def connect(cls, bootstrap: Sequence[str] = (), *, identity: Identity | None = None,
                      config: str | os.PathLike[str] | None = None,
                      options: ClientOptions = ClientOptions()) -> AsyncIterator[AsyncClient]:
        async with trio.open_nursery() as nursery:
            client = await cls.start(nursery, config=config, bootstrap=bootstrap,
                                     identity=identity, options=options)
            try:
                yield client
            finally:
                with trio.CancelScope(shield=True):
                    await client.aclose()

    @classmethod
    def from_config(cls, path: str | os.PathLike[str],
                    options: ClientOptions = ClientOptions()) -> Any:
        """``async with AsyncClient.from_config(path) as c``: the client of a config file."""
        return cls.connect(config=path, options=options)

    async def aclose(self) -> None:
        await self.cluster.close()

    # -- blocks --------------------------------------------------------------------------

    async def put(self, data: bytes) -> CID:
        """Store ``data`` as one block; its CID (v1, raw, sha2-256) is the reference."""
        cid = sha256_cid(bytes(data), 1, "raw")
        await self.cluster.put(block_key(cid), bytes(data))
        return cid

    async def get(self, ref: Ref) -> bytes:
        """The block's bytes, checked against the CID (CorruptBlockError if they differ)."""
        cid = parse_cid(ref)
        try:
            data = await self.cluster.get(block_key(cid))
        except NotFoundError:
            raise NotFoundError(f"block {cid} not found") from None
        verify_block(cid, data)
        return data

    async def exists(self, ref: Ref) -> bool:
        return await self.cluster.has(block_key(parse_cid(ref)))

    async def delete(self, ref: Ref) -> None:
        await self.cluster.delete(block_key(parse_cid(ref)))

    # -- UnixFS files -------------------------------------------------------------------

    async def add(self, path: str | os.PathLike[str], **opts: Any) -> CID:
        """``ipfs add`` of a file (or, with recursive=True, a directory); options as
        dsclient.unixfs.add_path: cid_version, raw_leaves, chunker, hidden, progress."""
        return await unixfs.add_path(path, self.blocks, **opts)

    async def add_bytes(self, data: bytes, **opts: Any) -> CID:
        return await unixfs.add_stream([bytes(data)], self.blocks, **opts)

    def cat(self, cid: Ref) -> AsyncIterator[bytes]:
        """The file's bytes, piece by piece, every block verified."""
        return unixfs.cat(parse_cid(cid), self.blocks)

    async def cat_bytes(self, cid: Ref) -> bytes:
        return b"".join([piece async for piece in self.cat(cid)])

    async def get_file(self, cid: Ref, dest: str | os.PathLike[str]) -> None:
        """Write the file or directory at ``cid`` to the new path ``dest``."""
        await unixfs.get_to_path(parse_cid(cid), self.blocks, dest)

    async def stat(self, cid: Ref) -> Stat:
        return await unixfs.stat(parse_cid(cid), self.blocks)

    # -- plain keys --------------------------------------------------------------------

    async def put_key(self, key: str, value: bytes) -> None:
        await self.cluster.put(key, value)

    async def get_key(self, key: str) -> bytes:
        return await self.cluster.get(key)

    async def delete_key(self, key: str) -> None:
        await self.cluster.delete(key)

    async def query(self, q: Query | None = None, **fields: Any) -> list[Entry]:
        """All entries answering ``q`` (or ``Query(**fields)``), e.g. ``query(prefix="/a")``."""
        results = await self.cluster.query(q if q is not None else Query(**fields))
        return await results.rest()


class Client:
    """The AsyncClient API as blocking calls, with a trio loop in a background thread.

    ``Client(bootstrap=[...])`` or ``Client.from_config(path)``; ``close()`` when done.
    """

    def __init__(self, bootstrap: Sequence[str] = (), *, identity: Identity | None = None,
                 config: str | os.PathLike[str] | None = None,
                 options: ClientOptions = ClientOptions()) -> None:
        @asynccontextmanager
        async def started() -> AsyncIterator[AsyncClient]:
            async with trio.open_nursery() as nursery:
                client = await AsyncClient.start(
                    nursery, config=config, bootstrap=bootstrap, identity=identity,
                    options=options)
                try:
                    yield client
                finally:
                    with trio.CancelScope(shield=True):
                        await client.aclose()

        try:
            self._loop = TrioThread("Client", started)
        except BaseException as exc:
            raise _plain(exc) from None
        self._run = self._loop.run  # DatastoreClosedError once closed

    @classmethod
    def from_config(cls, path: str | os.PathLike[str],
                    options: ClientOptions = ClientOptions()) -> Client:
        return cls(config=path, options=options)

    @property
    def aio(self) -> AsyncClient:
        """The AsyncClient underneath (use it only on the client's own loop)."""
        return self._loop.value

    def put(self, data: bytes) -> CID:
        return self._run(self.aio.put, data)

    def get(self, ref: Ref) -> bytes:
        return self._run(self.aio.get, ref)

    def exists(self, ref: Ref) -> bool:
        return self._run(self.aio.exists, ref)

    def delete(self, ref: Ref) -> None:
        self._run(self.aio.delete, ref)

    def add(self, path: str | os.PathLike[str], **opts: Any) -> CID:
        return self._run(lambda: self.aio.add(path, **opts))

    def add_bytes(self, data: bytes, **opts: Any) -> CID:
        return self._run(lambda: self.aio.add_bytes(data, **opts))

    def cat(self, cid: Ref) -> bytes:
        """The whole file in memory; ``iter_cat`` for large files."""
        return self._run(self.aio.cat_bytes, cid)

    def iter_cat(self, cid: Ref) -> Iterator[bytes]:
        """The file's bytes piece by piece, memory bounded."""
        pieces = self.aio.cat(cid)

        async def step() -> bytes | None:
            return await anext(pieces, None)

        try:
            while (piece := self._run(step)) is not None:
                yield piece
        finally:
            if not self._loop.stopped:
                self._run(pieces.aclose)  # type: ignore[attr-defined]

    def get_file(self, cid: Ref, dest: str | os.PathLike[str]) -> None:
        self._run(self.aio.get_file, cid, dest)

    def stat(self, cid: Ref) -> Stat:
        return self._run(self.aio.stat, cid)

    def put_key(self, key: str, value: bytes) -> None:
        self._run(self.aio.put_key, key, value)

    def get_key(self, key: str) -> bytes:
        return self._run(self.aio.get_key, key)

    def delete_key(self, key: str) -> None:
        self._run(self.aio.delete_key, key)

    def query(self, q: Query | None = None, **fields: Any) -> list[Entry]:
        return self._run(lambda: self.aio.query(q, **fields))

    def close(self) -> None:
        """Close the cluster connection and stop the loop thread. Idempotent."""
        self._loop.stop(30)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _plain(exc: BaseException) -> BaseException:
    """Our error inside nursery exception groups (the first DSClusterError leaf), else exc."""
    stack = [exc]
    while stack:
        e = stack.pop(0)
        if isinstance(e, BaseExceptionGroup):
            stack[:0] = list(e.exceptions)
        elif isinstance(e, DSClusterError):
            return e
    return exc

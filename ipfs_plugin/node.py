"""A runnable IPFS-facing node: a libp2p host plus bitswap over a Datastore.

``serve`` keeps a node up, answering bitswap wants from the datastore, until
cancelled; ``fetch_dag`` starts a short-lived node, connects to one peer and
pulls a whole DAG into the datastore. Both take any dscluster Datastore (a
MemoryDatastore, a FlatfsDatastore, later the cluster client) and keep blocks
under dscluster.blocks.block_key(cid). py-libp2p's host already answers
identify and ping, which Kubo needs before it treats us as a bitswap peer.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NoReturn

import multiaddr
import trio
from libp2p.peer.id import ID as PeerID
from libp2p.peer.peerinfo import info_from_p2p_addr
from trio import TaskStatus  # type: ignore[attr-defined]  # exported at runtime

from dscluster.blocks import parse_cid
from dscluster.datastore.base import Datastore
from dscluster.errors import BadRequestError
from dscluster.net.host import HostHandle, Identity, open_host
from ipfs_plugin.bitswap import Bitswap, FetchStats

logger = logging.getLogger(__name__)

DEFAULT_LISTEN = ("/ip4/127.0.0.1/tcp/0",)


@dataclass(frozen=True)
class BitswapNode:
    handle: HostHandle
    bitswap: Bitswap

    @property
    def peer_id(self) -> PeerID:
        return self.handle.peer_id

    @property
    def multiaddrs(self) -> list[str]:
        """Dialable addresses, each ending in /p2p/<peer id>."""
        return self.handle.addrs

    async def connect(self, peer_multiaddr: str) -> PeerID:
        """Dial a peer given as one multiaddr ending in /p2p/<peer id>."""
        try:
            info = info_from_p2p_addr(multiaddr.Multiaddr(peer_multiaddr))
        except Exception as exc:  # multiaddr raises several unrelated types
            raise BadRequestError(f"not a peer multiaddr: {peer_multiaddr!r}: {exc}") from exc
        await self.handle.connect(info.peer_id, [str(a) for a in info.addrs])
        return info.peer_id


@asynccontextmanager
async def open_node(
    datastore: Datastore,
    identity: Identity | None = None,
    listen: Sequence[str] = DEFAULT_LISTEN,
) -> AsyncIterator[BitswapNode]:
    """A listening host (Noise + yamux) with bitswap serving and fetching into the datastore."""
    try:
        async with open_host(identity, listen) as handle:
            bitswap = Bitswap(handle.host, datastore)
            bitswap.start()  # before any peer connects, so identify lists the bitswap protocols
            try:
                yield BitswapNode(handle, bitswap)
            finally:
                with trio.CancelScope(shield=True):
                    await bitswap.aclose()
    except BaseExceptionGroup as group:
        # py-libp2p runs the host in nurseries, which wrap whatever the body
        # raised (a NotFoundError, say) in exception groups: give it back bare.
        leaf = _sole_leaf(group)
        if leaf is None or isinstance(leaf, trio.Cancelled):
            raise
        raise leaf  # noqa: B904 -- the group is kept as __context__


def _sole_leaf(group: BaseExceptionGroup) -> BaseException | None:
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else None


async def serve(
    datastore: Datastore,
    identity: Identity | None = None,
    listen: Sequence[str] = DEFAULT_LISTEN,
    *,
    task_status: TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve the datastore's blocks over bitswap until cancelled.

    ``task_status.started`` receives the node's first multiaddr (with /p2p/).
    """
    async with open_node(datastore, identity, listen) as node:
        logger.info("bitswap node listening on %s", ", ".join(node.multiaddrs))
        task_status.started(node.multiaddrs[0])
        await trio.sleep_forever()
    raise AssertionError("unreachable")


async def fetch_dag(
    datastore: Datastore,
    cid: str,
    peer_multiaddr: str,
    *,
    identity: Identity | None = None,
) -> FetchStats:
    """Pull the DAG under cid from the peer into the datastore.

    No timeout of its own: bound it with trio.fail_after / move_on_after.
    """
    root = parse_cid(cid)
    async with open_node(datastore, identity) as node:
        peer = await node.connect(peer_multiaddr)
        return await node.bitswap.fetch_dag(root, peer)

"""A bitswap 1.2.0 peer (also 1.1.0 and 1.0.0) on py-libp2p streams.

Theory of operation. Bitswap streams are one-way. Every message a peer sends
us arrives on a stream *it* opened, which we only read; everything we send
goes on one outbound stream per peer that *we* open and keep (new streams are
expensive in py-libp2p). The two roles share those streams:

- Server: each wantlist entry is answered at once from the blockstore:
  want-block -> the block, want-have -> HAVE, and DONT_HAVE for a missing block
  when the peer asked for it (sendDontHave). We keep no ledger: a peer that
  cancels has already been answered, and Kubo re-sends what it still wants.
- Client: ``fetch_blocks`` registers the wanted CIDs, sends want-block with
  sendDontHave, and waits. A received block is accepted only when the CID
  rebuilt from its prefix and data (bitswap_message.cid_from_prefix) is one we
  want: a block that does not hash to a wanted CID is never stored. It is
  written to the blockstore before the waiter wakes. ``fetch_dag`` walks a DAG
  breadth first (dag-pb links; raw blocks are leaves), a window of CIDs per
  round trip, skipping blocks the blockstore already holds.

Blocks live in any dscluster Datastore under dscluster.blocks.block_key(cid).
A malformed message resets that one stream, is logged, and the peer keeps
being served.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID as PeerID
from multiformats import CID

from dscluster.blocks import block_key
from dscluster.datastore.base import Datastore
from dscluster.errors import DSClusterError, NotFoundError, ProtocolError, UnavailableError
from dscluster.ipld.dagpb import child_cids
from dscluster.net.streams import reset_stream
from ipfs_plugin import bitswap_message as bm
from ipfs_plugin.framing import FrameReader, frame

logger = logging.getLogger(__name__)

# One reply message carries blocks up to about this size (plus one block), so a
# message stays below bm.MAX_MESSAGE_SIZE even with a 2 MiB block in it.
REPLY_TARGET_SIZE = 1024 * 1024
FETCH_WINDOW = 64  # CIDs asked for per round trip while walking a DAG


@dataclass
class _Want:
    """One CID the client is waiting for."""

    cid: CID
    done: trio.Event = field(default_factory=trio.Event)
    dont_have_from: set[PeerID] = field(default_factory=set)


@dataclass
class _Outbox:
    """Our one outbound stream to a peer; the lock keeps frames whole."""

    lock: trio.Lock = field(default_factory=trio.Lock)
    stream: Any = None
    protocol: str = bm.PROTOCOL_1_2_0


class _Unavailable(enum.Enum):
    TOKEN = enum.auto()


UNAVAILABLE = _Unavailable.TOKEN  # the datastore failed: neither the block nor DONT_HAVE


@dataclass(frozen=True)
class FetchStats:
    blocks: int  # blocks in the DAG
    fetched: int  # of those, received from the peer (the rest were already stored)
    bytes_fetched: int


class Bitswap:
    def __init__(
        self, host: Any, blockstore: Datastore, *, max_block_size: int = bm.MAX_BLOCK_SIZE
    ) -> None:
        self._host = host
        self._store = blockstore
        self._max_block_size = max_block_size
        self._outboxes: dict[PeerID, _Outbox] = {}
        self._wants: dict[str, _Want] = {}  # block key -> want

    def start(self) -> None:
        """Serve every bitswap version on the host (before peers connect, so
        identify advertises them)."""
        for protocol in bm.PROTOCOLS:
            self._host.set_stream_handler(protocol, self._handle_stream)

    async def aclose(self) -> None:
        for outbox in self._outboxes.values():
            if outbox.stream is not None:
                with trio.move_on_after(1):
                    await _close_quietly(outbox.stream)
        self._outboxes.clear()

    # -- inbound ---------------------------------------------------------------

    async def _handle_stream(self, stream: Any) -> None:
        peer = stream.muxed_conn.peer_id
        reader = FrameReader(stream, bm.MAX_MESSAGE_SIZE)
        try:
            while True:
                try:
                    data = await reader.read_frame()
                except UnavailableError as exc:  # the stream failed or stalled mid-frame
                    logger.debug("bitswap: stream from %s ended: %s", peer, exc)
                    break
                if data is None:
                    break
                await self._receive(peer, bm.decode(data))
        except ProtocolError as exc:
            logger.warning("bitswap: dropping stream from %s: %s", peer, exc)
            await reset_stream(stream, timeout=1)
        except StreamError as exc:
            logger.debug("bitswap: stream from %s ended: %r", peer, exc)
        except DSClusterError as exc:  # our reply could not go out, or the datastore failed
            logger.warning("bitswap: stopped serving a stream from %s: %s", peer, exc)
        finally:
            with trio.move_on_after(1):
                await _close_quietly(stream)

    async def _receive(self, peer: PeerID, message: bm.Message) -> None:
        for block in message.blocks:
            await self._accept_block(peer, block)
        for presence in message.presences:
            want = self._wants.get(block_key(presence.cid))
            if want is not None and presence.type is bm.PresenceType.DONT_HAVE:
                want.dont_have_from.add(peer)
                want.done.set()
        if message.wants:
            await self._answer(peer, message.wants)

    async def _accept_block(self, peer: PeerID, block: bm.Block) -> None:
        key = block_key(block.cid)
        want = self._wants.get(key)
        if want is None:
            logger.debug("bitswap: unwanted block %s from %s", block.cid, peer)
            return
        if len(block.data) > self._max_block_size:
            raise ProtocolError(f"block {block.cid} is {len(block.data)} bytes, over the limit")
        await self._store.put(key, block.data)
        want.done.set()

    async def _answer(self, peer: PeerID, wants: Sequence[bm.WantEntry]) -> None:
        blocks: list[bm.Block] = []
        presences: list[bm.Presence] = []
        for entry in wants:
            if entry.cancel:
                continue  # answered when it arrived; nothing is queued
            data = await self._lookup(entry.cid)
            if data is UNAVAILABLE:
                continue
            if data is None:
                if entry.send_dont_have:
                    presences.append(bm.Presence(entry.cid, bm.PresenceType.DONT_HAVE))
            elif entry.want_type is bm.WantType.HAVE:
                presences.append(bm.Presence(entry.cid, bm.PresenceType.HAVE))
            else:
                blocks.append(bm.Block(entry.cid, data))
        for message in _pack_replies(blocks, presences):
            await self._send(peer, message)

    async def _lookup(self, cid: CID) -> bytes | None | _Unavailable:
        try:
            data = await self._store.get(block_key(cid))
        except NotFoundError:
            return None
        except DSClusterError as exc:  # not "don't have": say nothing, the peer asks again
            logger.warning("bitswap: cannot read %s: %s", cid, exc)
            return UNAVAILABLE
        if len(data) > self._max_block_size:
            logger.warning("bitswap: not serving %s: %d bytes is over the limit", cid, len(data))
            return None
        return data

    # -- outbound --------------------------------------------------------------

    async def _send(self, peer: PeerID, message: bm.Message) -> None:
        """Send on our own stream to the peer, reopening it once if it broke."""
        outbox = self._outboxes.setdefault(peer, _Outbox())
        async with outbox.lock:
            for attempt in (1, 2):
                try:
                    if outbox.stream is None:
                        outbox.stream = await self._host.new_stream(peer, list(bm.PROTOCOLS))
                        outbox.protocol = str(outbox.stream.get_protocol())
                    await outbox.stream.write(frame(bm.encode(message, outbox.protocol)))
                    return
                except StreamError as exc:
                    if outbox.stream is not None:
                        await reset_stream(outbox.stream)
                    outbox.stream = None
                    if attempt == 2:
                        raise UnavailableError(f"bitswap: cannot send to {peer}: {exc}") from exc
                except Exception as exc:  # new_stream raises several unrelated types
                    outbox.stream = None
                    raise UnavailableError(f"bitswap: cannot open a stream to {peer}: {exc}") from exc

    # -- client ----------------------------------------------------------------

    async def fetch_blocks(self, peer: PeerID, cids: Iterable[CID]) -> dict[CID, bytes]:
        """Ask the peer for these blocks, store them, and return them.

        NotFoundError when the peer says it does not have one; the caller
        bounds the wait (trio.fail_after / move_on_after), since a 1.0/1.1
        peer never says so.
        """
        wanted = list(dict.fromkeys(cids))
        mine: list[_Want] = []
        for cid in wanted:
            key = block_key(cid)
            if key not in self._wants:
                self._wants[key] = _Want(cid)
                mine.append(self._wants[key])
        try:
            entries = tuple(
                bm.WantEntry(cid, bm.WantType.BLOCK, send_dont_have=True) for cid in wanted
            )
            await self._send(peer, bm.Message(wants=entries))
            for cid in wanted:
                want = self._wants[block_key(cid)]
                await want.done.wait()
                if peer in want.dont_have_from:
                    raise NotFoundError(f"peer {peer} does not have block {cid}")
            return {cid: await self._store.get(block_key(cid)) for cid in wanted}
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                cancels = tuple(bm.WantEntry(w.cid, cancel=True) for w in mine)
                if cancels:
                    await self._send_quietly(peer, bm.Message(wants=cancels))
            raise
        finally:
            for want in mine:
                self._wants.pop(block_key(want.cid), None)

    async def fetch_dag(
        self, root: CID, peer: PeerID, *, window: int = FETCH_WINDOW
    ) -> FetchStats:
        """Pull every block of the DAG under root from the peer into the blockstore."""
        queue: deque[CID] = deque([root])
        seen: set[str] = {block_key(root)}
        blocks = fetched = nbytes = 0
        while queue:
            batch = [queue.popleft() for _ in range(min(window, len(queue)))]
            stored: dict[CID, bytes] = {}
            missing: list[CID] = []
            for cid in batch:
                if await self._store.has(block_key(cid)):
                    stored[cid] = await self._store.get(block_key(cid))
                else:
                    missing.append(cid)
            if missing:
                got = await self.fetch_blocks(peer, missing)
                fetched += len(got)
                nbytes += sum(len(d) for d in got.values())
                stored.update(got)
            for cid in batch:  # keep the walk in DAG order
                blocks += 1
                for child in child_cids(cid, stored[cid]):
                    if (key := block_key(child)) not in seen:
                        seen.add(key)
                        queue.append(child)
        return FetchStats(blocks, fetched, nbytes)

    async def _send_quietly(self, peer: PeerID, message: bm.Message) -> None:
        try:
            await self._send(peer, message)
        except UnavailableError as exc:
            logger.debug("bitswap: %s", exc)


def _pack_replies(
    blocks: list[bm.Block], presences: list[bm.Presence]
) -> list[bm.Message]:
    """Split an answer into messages of about REPLY_TARGET_SIZE each."""
    messages: list[bm.Message] = []
    batch: list[bm.Block] = []
    size = 0
    for block in blocks:
        if batch and size + len(block.data) > REPLY_TARGET_SIZE:
            messages.append(bm.Message(blocks=tuple(batch)))
            batch, size = [], 0
        batch.append(block)
        size += len(block.data)
    if batch or presences:
        messages.append(bm.Message(blocks=tuple(batch), presences=tuple(presences)))
    return messages


async def _close_quietly(stream: Any) -> None:
    try:
        await stream.close()
    except Exception as exc:  # closing a broken stream fails in many ways; nothing to save
        logger.debug("bitswap: close: %r", exc)

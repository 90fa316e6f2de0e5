"""Gossip transport: the core's messages over long-lived libp2p streams.

Theory of operation
-------------------
Each peer gets one outbound stream (GOSSIP_PROTOCOL) owned by a sender task
that drains a bounded queue: core messages (core/messages.py, on the one
wire codec) go out and come in through a FramedStream (net/framed.py). Gossip tolerates loss (the core retransmits
and re-pings), so a full queue drops the message rather than blocking the
driver, and a broken stream is reopened with exponential backoff: a peer that
restarts is reached again within `max_backoff` seconds of coming back.

Inbound, a stream is accepted only from a cluster member (the Noise-verified
peer ID); each frame is decoded and stepped into the core. Garbage, an
oversized frame, a message of another protocol or one the core refuses
resets that stream only, with one warning line; the peer may open a fresh one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio
from libp2p.abc import INetStream

from dscluster.core.messages import Message, core_message
from dscluster.errors import BadRequestError, ProtocolError, UnavailableError
from dscluster.net.framed import FramedStream, FrameLimits
from dscluster.net.host import HostHandle, parse_peer_id, prepare_dial
from dscluster.net.streams import reset_stream
from dscluster.node.driver import CoreDriver
from dscluster.wire.messages import GOSSIP_PROTOCOL

log = logging.getLogger(__name__)

MAX_GOSSIP_FRAME = 4 * 1024 * 1024  # a full table with every node fits many times over
QUEUE_SIZE = 256
READ_SIZE = 64 * 1024


class GossipLinks:
    """Outbound queues per peer and the inbound stream handler."""

    def __init__(self, host: HostHandle, nursery: trio.Nursery,
                 addrs_of: Callable[[str], list[str]], max_backoff: float = 2.0,
                 write_timeout: float = 10.0) -> None:
        self._host = host
        self._nursery = nursery
        self._addrs_of = addrs_of
        self._max_backoff = max_backoff
        self._limits = FrameLimits(max_frame_size=MAX_GOSSIP_FRAME, read_size=READ_SIZE,
                                   write_timeout=write_timeout)
        self._queues: dict[str, trio.MemorySendChannel[Message]] = {}
        self.driver: CoreDriver | None = None
        self.dropped = 0
        self.refused_streams = 0
        self.broken_streams = 0

    # -- outbound ----------------------------------------------------------------

    def send(self, peer: str, msg: Message) -> None:
        queue = self._queues.get(peer)
        if queue is None:
            queue, receive = trio.open_memory_channel[Message](QUEUE_SIZE)
            self._queues[peer] = queue
            self._nursery.start_soon(self._sender, peer, receive)
        try:
            queue.send_nowait(msg)
        except trio.WouldBlock:
            self.dropped += 1  # the peer is unreachable or slow; the core will retry

    async def _sender(self, peer: str, queue: trio.MemoryReceiveChannel[Message]) -> None:
        backoff = 0.1
        stream: FramedStream | None = None
        connected = False
        try:
            while True:
                msg = await queue.receive()
                if stream is None:
                    try:
                        stream = FramedStream(await self._open(peer), self._limits)
                    except UnavailableError as exc:
                        if connected:
                            log.info("gossip link to %s down: %s", peer, exc)
                        connected = False
                        await trio.sleep(backoff)
                        backoff = min(backoff * 2, self._max_backoff)
                        continue  # msg dropped: later ones carry newer state
                    if not connected:
                        log.info("gossip link to %s up", peer)
                    connected, backoff = True, 0.1
                try:
                    await stream.send(msg)
                except BadRequestError as exc:  # over the frame limit: nothing was sent
                    log.error("gossip message to %s not sent: %s", peer, exc)
                except UnavailableError as exc:
                    log.debug("gossip write to %s failed: %s", peer, exc)
                    await stream.reset()
                    stream = None
        finally:
            if stream is not None:
                await stream.reset()

    async def _open(self, peer: str) -> INetStream:
        pid = parse_peer_id(peer)
        addrs = self._addrs_of(peer)
        if addrs:
            await self._host.connect(pid, addrs, timeout=5)
        host = self._host.host
        try:
            with trio.fail_after(5):
                # Never disconnect here on a failed stream: the connection also
                # carries store RPCs. prepare_dial drops it only when it is dead.
                await prepare_dial(host, pid)
                return await host.new_stream(pid, [GOSSIP_PROTOCOL])  # type: ignore[list-item]
        except trio.TooSlowError as exc:
            raise UnavailableError(f"opening gossip to {peer} timed out") from exc
        except Exception as exc:  # py-libp2p raises assorted types
            raise UnavailableError(f"cannot open gossip to {peer}: {exc!r}") from exc

    # -- inbound --------------------------------------------------------------------

    async def handle_stream(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id.to_base58()
        driver = self.driver
        if driver is None or not driver.is_member(peer):
            self.refused_streams += 1
            log.warning("refused gossip from %s: not a cluster member", peer)
            await reset_stream(stream)
            return
        fs = FramedStream(stream, self._limits)
        try:
            while (msg := await fs.receive()) is not None:
                await driver.step(peer, core_message(msg))
        except ProtocolError as exc:
            self.broken_streams += 1
            log.warning("reset gossip stream from %s: %s", peer, exc)
        except UnavailableError as exc:  # the stream broke: the peer reconnects
            log.debug("gossip stream from %s ended: %s", peer, exc)
        finally:
            await fs.reset()


"""What a peer the node does not know can cost it, bounded before it sends a byte.

Theory of operation
-------------------
Noise proves a peer's ID when its connection is set up, so the node knows at
once whether the peer is a member or a client with a role (``trusted``).
Everyone else is a *stranger*: it may ask to join (with the secret) or learn
that it is unauthorized, and nothing else, so it needs very little. Every
resource a stranger can make the node hold is capped, before any frame body
is read (doc/security.md, "Bounds"):

- connections: at most ``ConnectionCaps.max_strangers`` stranger connections
  at once (dscluster/net/libp2p_fixes.py, where inbound connections are
  admitted);
- streams: at most ``streams_per_stranger`` open streams per stranger and
  ``stranger_streams`` for all strangers together, counted from the moment a
  stream arrives (protocol negotiation included); more are reset at once;
- bytes per stream: py-libp2p's yamux buffers a stream's unread data, and a
  peer that ignores its window could fill that without bound; libp2p_fixes
  closes the connection of a peer that sends beyond the window it was given
  (256 KiB for a stream nobody reads fast);
- frames: the store and admin protocols read a stranger with
  ``RpcLimits.for_stranger()`` (64 KiB frames, read 64 KiB at a time, 2 s to
  finish a started frame; 4 requests in flight), the join protocol with its own small frames, and
  gossip resets a stranger's stream without reading it.

So all strangers together hold at most ``stranger_streams`` x (256 KiB
window + 64 KiB frame + 64 KiB read) = 12 MiB of stream data, plus the
connections themselves (measured in tests/security/test_sec_strangers.py).

A host with no trust function (a client, a test host) treats every peer as
trusted: it only talks to peers it chose to dial.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from libp2p.abc import IHost, INetStream

from dscluster.logutil import RateLimitedLog
from dscluster.net.streams import reset_stream

log = logging.getLogger(__name__)

STRANGER_FRAME = 64 * 1024  # largest frame a stranger may send (a join hello, a small request)


@dataclass(frozen=True)
class StrangerLimits:
    streams_per_stranger: int = 2  # open streams of one stranger, any protocol
    stranger_streams: int = 32  # open streams of all strangers together


@dataclass
class Admission:
    """One host's view of who is trusted, and what its strangers hold now."""

    trusted: Callable[[str], bool] | None = None  # None: every peer is trusted
    limits: StrangerLimits = field(default_factory=StrangerLimits)
    streams_of: Counter[str] = field(default_factory=Counter)
    streams: int = 0  # strangers' streams open now
    refused_streams: int = 0
    refusals: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(log))

    def is_stranger(self, peer: str) -> bool:
        return self.trusted is not None and not self.trusted(peer)


def admission_of(host: IHost) -> Admission:
    """The host's Admission (created, trusting everyone, on first use)."""
    return admission_of_network(host.get_network())


def admission_of_network(network: Any) -> Admission:
    found: Admission | None = network.__dict__.get("_dscluster_admission")
    if found is None:
        found = network.__dict__["_dscluster_admission"] = Admission()
        _guard_streams(network, found)
    return found


def set_trust(host: IHost, trusted: Callable[[str], bool] | None,
              limits: StrangerLimits | None = None) -> Admission:
    """From now on, peers for which ``trusted`` is False are strangers on this host."""
    admission = admission_of(host)
    admission.trusted = trusted
    if limits is not None:
        admission.limits = limits
    return admission


def _guard_streams(network: Any, admission: Admission) -> None:
    """Wrap the swarm's one handler of new streams (it negotiates, then runs ours)."""
    handle: Callable[[INetStream], Awaitable[None]] = network.common_stream_handler

    async def guarded(stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id.to_base58()
        if not admission.is_stranger(peer):
            await handle(stream)
            return
        limits = admission.limits
        if admission.streams_of[peer] >= limits.streams_per_stranger \
                or admission.streams >= limits.stranger_streams:
            admission.refused_streams += 1
            admission.refusals.warning(
                "stranger-streams", peer, "reset a stream of %s: it is not authorized here "
                "and strangers hold %d streams (%d its own; at most %d, %d each)",
                peer, admission.streams, admission.streams_of[peer],
                limits.stranger_streams, limits.streams_per_stranger)
            await reset_stream(stream, timeout=1)
            return
        admission.streams += 1
        admission.streams_of[peer] += 1
        try:
            await handle(stream)
        finally:
            admission.streams -= 1
            admission.streams_of[peer] -= 1
            if not admission.streams_of[peer]:
                del admission.streams_of[peer]

    network.common_stream_handler = guarded

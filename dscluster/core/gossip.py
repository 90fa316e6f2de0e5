"""Gossip timing and failure detection.

Theory of operation
-------------------
Every `heartbeat_ticks` a node pings every other data node (and, until it
knows the table, its seeds). In a large cluster `fanout` limits this, as in
Redis, to a few peers chosen at random (the injected random.Random) plus any
peer not pinged for half the PFAIL timeout. A Ping carries the table digest (a hash per
bucket of 256 slots, one for the membership and one for the client roles);
when digests agree that is all that travels. The receiver answers with a Pong
carrying its own digest plus its claims in the buckets that differed (and its
membership or its client entries, tombstones included, when those hashes
differed); the pinger merges them and pushes back (TableDelta) whatever it
still holds newer. One round trip converges two nodes, since merge is a
per-slot, per-node and per-client max (table.py): a node that was down
catches up on roles it missed in its first exchange after coming back.

Failure detection follows Redis. Any message from a peer counts as a
heartbeat. A peer not heard from for more than `pfail_ticks` is PFAIL
(suspected) by this node; each Ping/Pong carries the sender's PFAIL list. A
node turns a suspect to FAIL when a majority of the data nodes (itself
included) reported it PFAIL within `fail_window_ticks`; FAIL then spreads in
the `failed` list of pings. The peer is UP again as soon as it is heard from.
A FAIL report about a peer we heard from recently is ignored, so stale gossip
cannot knock down a node we can see.

A node may report *itself* FAIL (a node whose disk was wiped, core/node.py
`withdraw`): that report alone makes it FAIL here, heard from or not, for
as long as it keeps making it, so its copies fail over without waiting for
silence.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class GossipConfig:
    heartbeat_ticks: int = 1
    pfail_ticks: int = 5
    fail_window_ticks: int = 10
    retry_ticks: int = 3  # migration messages are retransmitted this often
    batch_keys: int = 4096  # keys per MoveKeys (the migrator sends them in 1 MiB chunks)
    fanout: int = 0  # peers pinged per heartbeat (0: all); others still within pfail_ticks / 2
    election_ticks: int = 4  # a copy-set election not decided by then is retried (core/changes.py)
    # A member never heard from since this node started is not suspected for this
    # many ticks more: nodes of a cluster start seconds apart, and failing over the
    # slots of one still starting is churn (the daemon uses DAEMON_GOSSIP's).
    startup_grace_ticks: int = 0


DAEMON_GOSSIP = GossipConfig(startup_grace_ticks=20)  # 10 s at the default 0.5 s tick


class Liveness(enum.Enum):
    UP = "up"
    PFAIL = "pfail"
    FAIL = "fail"


class FailureDetector:
    def __init__(self, me: str, config: GossipConfig) -> None:
        self._me = me
        self._cfg = config
        self._now = 0
        self._last_heard: dict[str, int] = {}
        self._reports: dict[str, dict[str, int]] = {}  # suspect -> reporter -> tick
        self._failed: set[str] = set()
        self._withdrawn: set[str] = set()  # peers that report themselves FAIL

    def tick(self) -> None:
        self._now += 1

    def watch(self, peers: list[str]) -> None:
        """Start (or stop) the clocks of the peers we expect heartbeats from."""
        wanted = set(peers) - {self._me}
        for peer in wanted - self._last_heard.keys():
            self._last_heard[peer] = self._now + self._cfg.startup_grace_ticks
        for peer in self._last_heard.keys() - wanted:
            del self._last_heard[peer]
            self._reports.pop(peer, None)
            self._failed.discard(peer)
            self._withdrawn.discard(peer)

    def heard_from(self, peer: str) -> None:
        if peer in self._last_heard:
            self._last_heard[peer] = self._now
            self._failed.discard(peer)
            self._reports.pop(peer, None)

    def _recently_heard(self, peer: str) -> bool:
        return self._now - self._last_heard.get(peer, -(10**9)) <= self._cfg.pfail_ticks

    def suspects(self) -> tuple[str, ...]:
        return tuple(sorted(p for p in self._last_heard if not self._recently_heard(p)))

    def failed(self) -> tuple[str, ...]:
        return tuple(sorted(self._failed | self._withdrawn))

    def on_report(self, reporter: str, suspects: tuple[str, ...], failed: tuple[str, ...]) -> None:
        if reporter in self._last_heard:
            if reporter in failed:
                self._withdrawn.add(reporter)
            else:
                self._withdrawn.discard(reporter)
        for peer in suspects:
            if peer in self._last_heard:
                self._reports.setdefault(peer, {})[reporter] = self._now
        for peer in failed:
            if peer in self._last_heard and not self._recently_heard(peer):
                self._failed.add(peer)

    def evaluate(self, voters: list[str]) -> list[str]:
        """Promote PFAIL to FAIL where a majority of `voters` agrees; returns new FAILs."""
        quorum = len(voters) // 2 + 1
        newly = []
        for peer in self.suspects():
            if peer in self._failed:
                continue
            fresh = {r for r, t in self._reports.get(peer, {}).items()
                     if self._now - t <= self._cfg.fail_window_ticks and r in voters}
            if self._me in voters:
                fresh.add(self._me)
            if len(fresh) >= quorum:
                self._failed.add(peer)
                newly.append(peer)
        return newly

    def liveness(self, peer: str) -> Liveness:
        if peer in self._failed or peer in self._withdrawn:
            return Liveness.FAIL
        if peer in self._last_heard and not self._recently_heard(peer):
            return Liveness.PFAIL
        return Liveness.UP

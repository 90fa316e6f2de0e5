"""Copy-set changes by majority: failover elections, in-sync shrinks and grows.

Theory of operation
-------------------
A slot's *configuration* is its entry in the table: an epoch and a copy set,
primary first, every member of which is in sync (holds every acknowledged
write; core/replication.py). A configuration changes in exactly three ways,
and each is a proposal decided by a majority of the data members:

* **failover** — a replica takes over from a primary that is FAIL in the
  voter's view (Redis Cluster's replica election);
* **shrink** — a primary drops a copy that stopped acknowledging (Kafka's
  ISR shrink, PacificA's reconfiguration);
* **grow** — a primary adds a copy that has caught up.

The rule is Redis's one vote per epoch made strict by Paxos's two phases, so
that no acknowledged write can be lost to a stale candidate:

1. *Vote* (Redis's FAILOVER_AUTH_REQUEST / ACK). The candidate picks an epoch
   above every epoch it knows and asks every member. A member grants at most
   one vote per epoch and never one for an epoch at or below its last
   (`Acceptor.promised`, persisted before the vote is sent); for a failover it
   also needs the old primary FAIL in its own view. A grant carries the
   highest configuration the member knows or has accepted for each slot
   asked about.
2. *Propose.* With grants from a majority, the candidate takes, slot by slot,
   the highest configuration among them and derives the new one from *that*
   (a failover needs the failed node still primary there and the candidate
   in sync; a shrink or grow needs the candidate primary there); slots where
   it cannot are dropped. It sends the new configurations at its epoch.
3. *Accept.* A member accepts unless it has since promised a higher epoch.
   With a majority accepting, the candidate has **won**: its configuration is
   committed, and only now may it go into the table (with the election's
   epoch, so it wins every merge), and the candidate act on it.

Why it is safe: two candidates cannot both win one epoch, since each member
votes once per epoch and two majorities share a member. And a configuration
C committed at epoch E is the base of every later winner: a candidate at
E' > E has grants from a majority, which shares a member with C's accepting
majority; that member accepted C before promising E' (after promising E' it
would have refused C), so it reports C or something accepted later, which by
the same argument derives from C. So committed configurations form one
chain per slot, each derived from the one before, and the data rule
(replication.py: a write is acknowledged only once every in-sync copy holds
it; a copy refuses a primary older than what it knows) carries every
acknowledged write along the chain. An uncommitted proposal never reaches
the table; a later candidate that sees it builds on it, which is safe for the
same reason as in Paxos.

This module is pure: the caller delivers messages, persists `Acceptor`
state before sending what it returns, and supplies the members, the epochs
and the FAIL view (core/changes.py does, inside ClusterCore). The messages
are registered on the wire by core/messages.py (tags 104-107).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from dscluster.core.slots import SlotSet
from dscluster.errors import BadRequestError
from dscluster.wire.schema import Tagged


@dataclass(frozen=True, order=True)
class Config:
    """One slot's configuration: epoch, then the in-sync copy set, primary first."""

    epoch: int
    copies: tuple[str, ...]

    @property
    def primary(self) -> str:
        return self.copies[0] if self.copies else ""


NO_CONFIG = Config(-1, ())

SlotConfigs = tuple[tuple[int, int, Config], ...]  # runs (start, end, config)


def config_runs(configs: Mapping[int, Config]) -> SlotConfigs:
    """Per-slot configs as runs of consecutive slots with equal configs."""
    runs: list[tuple[int, int, Config]] = []
    for slot in sorted(configs):
        c = configs[slot]
        if runs and runs[-1][1] + 1 == slot and runs[-1][2] == c:
            runs[-1] = (runs[-1][0], slot, c)
        else:
            runs.append((slot, slot, c))
    return tuple(runs)


def per_slot(runs: SlotConfigs) -> dict[int, Config]:
    return {s: c for start, end, c in runs for s in range(start, end + 1)}


class Kind(enum.Enum):
    FAILOVER = "failover"  # subject: the failed primary
    SHRINK = "shrink"  # subject: the copy the primary drops
    GROW = "grow"  # subject: the copy the primary adds
    RENEW = "renew"  # subject: the primary itself; the same copies at a higher epoch
    HANDOVER = "handover"  # subject: an in-sync copy that becomes primary (a slot move)


@dataclass(frozen=True)
class VoteRequest(Tagged):
    epoch: int
    candidate: str
    kind: Kind
    subject: str
    slots: SlotSet


@dataclass(frozen=True)
class Vote(Tagged):
    epoch: int
    voter: str
    granted: bool
    known: SlotConfigs = ()  # the highest config the voter knows or accepted, per slot
    promised: int = 0  # the voter's promise (above the request's epoch on a refusal)


@dataclass(frozen=True)
class Propose(Tagged):
    epoch: int
    candidate: str
    configs: SlotConfigs


@dataclass(frozen=True)
class Accepted(Tagged):
    epoch: int
    voter: str
    ok: bool
    promised: int = 0


@dataclass
class Acceptor:
    """A member's side: its promise and the configurations it accepted. Persist it."""

    me: str
    promised: int = 0  # the highest epoch voted for (Redis's lastVoteEpoch)
    accepted: dict[int, Config] = field(default_factory=dict)

    def known(self, slot: int, table: Callable[[int], Config]) -> Config:
        return max(self.accepted.get(slot, NO_CONFIG), table(slot))

    def on_vote_request(self, req: VoteRequest, table: Callable[[int], Config],
                        failed: Iterable[str]) -> Vote:
        """Grant at most one vote per epoch; `table(slot)` is the committed config."""
        grant = req.epoch > self.promised and (req.kind is not Kind.FAILOVER
                                               or req.subject in set(failed))
        if not grant:
            return Vote(req.epoch, self.me, False, (), self.promised)
        self.promised = req.epoch  # persisted before the vote leaves (the caller's job)
        known = {s: self.known(s, table) for s in req.slots}
        return Vote(req.epoch, self.me, True, config_runs(known), self.promised)

    def on_propose(self, p: Propose) -> Accepted:
        """Accept unless a higher epoch was promised since (or a config is already newer)."""
        configs = per_slot(p.configs)
        if all(self.accepted.get(s) == c for s, c in configs.items()):
            return Accepted(p.epoch, self.me, True, self.promised)  # a retransmission
        if p.epoch < self.promised or any(self.accepted.get(s, NO_CONFIG).epoch >= p.epoch
                                          for s in configs):
            return Accepted(p.epoch, self.me, False, self.promised)
        self.promised = p.epoch
        self.accepted.update(configs)
        return Accepted(p.epoch, self.me, True, self.promised)


class Outcome(enum.Enum):
    VOTING = "voting"
    PROPOSING = "proposing"
    WON = "won"
    LOST = "lost"


def derive(kind: Kind, candidate: str, subject: str, base: Config, epoch: int) -> Config | None:
    """The configuration this change makes of `base`, or None if it does not apply there."""
    copies = base.copies
    if kind is Kind.RENEW:
        # A copy fenced at an epoch whose election came to nothing (a candidate that
        # timed out while this primary lived) refuses it until it moves above that.
        return Config(epoch, copies) if base.primary == candidate else None
    if kind is Kind.HANDOVER:
        # The primary hands the slot to one of its in-sync copies and goes last (the
        # new primary shrinks it away if the set is longer than the setting).
        if base.primary == candidate and subject in copies[1:]:
            rest = tuple(c for c in copies if c not in (candidate, subject))
            return Config(epoch, (subject, *rest, candidate))
        if base.primary == subject and candidate in copies[1:]:
            return Config(epoch, copies)  # done already, its commit unseen: again
        return None
    if base.primary == candidate and (subject in copies) == (kind is Kind.GROW):
        # This change was already proposed and accepted somewhere, its commit unseen
        # (an Accepted lost): propose that configuration again, as Paxos adopts the
        # highest accepted value, or the slot could never be taken.
        return Config(epoch, copies)
    if kind is Kind.FAILOVER:
        if base.primary != subject or candidate not in copies[1:]:
            return None
        return Config(epoch, (candidate, *(c for c in copies[1:] if c != candidate)))
    if base.primary != candidate:
        return None
    if kind is Kind.SHRINK:
        return Config(epoch, tuple(c for c in copies if c != subject)) \
            if subject in copies[1:] else None
    return Config(epoch, (*copies, subject)) if subject not in copies else None


class Election:
    """The candidate's side of one change to the configurations of `slots`."""

    def __init__(self, me: str, epoch: int, kind: Kind, subject: str, slots: SlotSet,
                 members: Iterable[str]) -> None:
        self.members = frozenset(members)
        if me not in self.members:
            raise BadRequestError("only a member may stand for election")
        if kind is Kind.FAILOVER and subject == me:
            raise BadRequestError("a node does not fail over from itself")
        self.me, self.epoch, self.kind, self.subject, self.slots = me, epoch, kind, subject, slots
        self.quorum = len(self.members) // 2 + 1
        self.outcome = Outcome.VOTING
        self.grants: dict[str, SlotConfigs] = {}
        self.refused: set[str] = set()
        self.accepts: set[str] = set()
        self.proposal: dict[int, Config] = {}
        self.bases: dict[int, Config] = {}  # what each proposed config was derived from
        self.highest_promise = epoch

    def request(self) -> VoteRequest:
        return VoteRequest(self.epoch, self.me, self.kind, self.subject, self.slots)

    def on_vote(self, v: Vote) -> Propose | None:
        """Count a vote; the proposal once a majority granted (None otherwise)."""
        if (self.outcome is not Outcome.VOTING or v.epoch != self.epoch
                or v.voter not in self.members):
            return None
        if not v.granted:
            self._refuse(v.voter, v.promised)
            return None
        self.grants[v.voter] = v.known
        if len(self.grants) < self.quorum:
            return None
        highest: dict[int, Config] = {}
        for known in self.grants.values():
            for slot, c in per_slot(known).items():
                highest[slot] = max(highest.get(slot, NO_CONFIG), c)
        for slot in self.slots:
            base = highest.get(slot, NO_CONFIG)
            new = derive(self.kind, self.me, self.subject, base, self.epoch)
            if new is not None:
                self.proposal[slot] = new
                self.bases[slot] = base
        if not self.proposal:
            self.outcome = Outcome.LOST
            return None
        self.outcome = Outcome.PROPOSING
        self.refused = set()  # a member that refused its vote may still accept (Paxos)
        return Propose(self.epoch, self.me, config_runs(self.proposal))

    def on_accepted(self, a: Accepted) -> bool:
        """Count an acceptance; True exactly once, when the change is committed."""
        if (self.outcome is not Outcome.PROPOSING or a.epoch != self.epoch
                or a.voter not in self.members):
            return False
        if not a.ok:
            self._refuse(a.voter, a.promised)
            return False
        self.accepts.add(a.voter)
        if len(self.accepts) >= self.quorum:
            self.outcome = Outcome.WON
            return True
        return False

    def _refuse(self, voter: str, promised: int) -> None:
        """A refusal; LOST once a majority can no longer be reached this epoch."""
        self.refused.add(voter)
        self.highest_promise = max(self.highest_promise, promised)  # retry above it
        counted = self.accepts if self.outcome is Outcome.PROPOSING else set(self.grants)
        if len(self.members) - len(self.refused - counted) < self.quorum:
            self.outcome = Outcome.LOST

    def won(self) -> SlotConfigs:
        """The committed configurations (only once WON): for the table, at `epoch`."""
        if self.outcome is not Outcome.WON:
            raise BadRequestError(f"the election at epoch {self.epoch} is {self.outcome.value}")
        return config_runs(self.proposal)

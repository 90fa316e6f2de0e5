"""Replicated writes: when a primary may acknowledge, when a copy must refuse.

Theory of operation
-------------------
A slot's committed configuration (core/election.py `Config`: an epoch and the
in-sync copy set, primary first) comes from the table. Two pure objects carry
the data rules, modelled on Kafka's in-sync replicas (the high watermark
moves only when every in-sync replica has the record), PacificA (a primary
commits only with all its secondaries) and Redis's `min-replicas-to-write`:

* `PrimaryWrites`, on the primary: `submit` a write for a slot, send the
  returned `Replicate` to every other in-sync copy, and acknowledge the
  client only when `on_ack` returns `Done` — that is, once **every** in-sync
  copy of the slot's current configuration holds the write. A configuration
  change arrives through `set_config` and must carry a higher epoch (a
  different copy set at the same epoch is refused: an in-sync set changes only
  with a new epoch, agreed by a majority, election.py). A shrink lets pending
  writes complete with the copies left; a grow makes them wait for the new
  copy too (`Resend`); losing the primary role fails them. A refusal from a
  copy that knows a newer epoch **fences** the primary for the slot: its
  pending writes fail and it accepts no more until it learns a configuration
  newer than that epoch. With `min_copies`, a write is refused outright while
  the in-sync set is smaller.
* `CopyGuard`, on every copy: refuses a `Replicate` whose epoch is below the
  highest it knows for the slot — from its table, or from a fence it raised
  itself when it stood for or voted in an election (`fence`) — and one
  claiming a known epoch from another primary. A write from a newer epoch than
  it knows is accepted and raises its fence: newer primaries are legitimate,
  and older ones are shut out from then on.

Failed writes are *unknown*, not undone: a copy may hold one, so the client
must treat it like a write whose reply was lost (it may or may not count).
Why no acknowledged write is lost (doc/copies.md): an acknowledged write is on
every in-sync copy of the primary's configuration; a new primary comes from
that set (election.py derives each configuration from the committed one
before), fences itself before it can win, and so the old primary cannot
acknowledge anything it lacks; shrinks only drop copies from a set that
still holds the write at the primary.

The caller stores a write durably before sending `ReplicateAck` (the copy)
and before the write counts as held at the primary. No I/O here.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from dscluster.core.election import NO_CONFIG, Config
from dscluster.errors import BadRequestError, MovedError, UnavailableError

WriteId = Hashable


@dataclass(frozen=True)
class Replicate:
    """Primary -> copy: store this write (the payload travels beside it)."""

    write_id: WriteId
    slot: int
    epoch: int
    primary: str


@dataclass(frozen=True)
class ReplicateAck:
    write_id: WriteId
    slot: int
    epoch: int
    copy: str


@dataclass(frozen=True)
class ReplicateRefused:
    write_id: WriteId
    slot: int
    copy: str
    known_epoch: int  # the epoch the copy knows; above the primary's


@dataclass(frozen=True)
class Done:
    """Every in-sync copy holds the write: acknowledge the client (at `epoch`)."""

    write_id: WriteId
    epoch: int


@dataclass(frozen=True)
class Failed:
    """The write's fate is unknown (a copy may hold it): tell the client to retry."""

    write_id: WriteId
    reason: str


@dataclass(frozen=True)
class Resend:
    """Send this pending write to a copy that joined the in-sync set."""

    write_id: WriteId
    peer: str


Decision = Done | Failed | Resend


@dataclass
class _Pending:
    slot: int
    waiting: set[str]
    acked: set[str] = field(default_factory=set)


class PrimaryWrites:
    """The primary's side: pending writes and the acknowledgements they wait for."""

    def __init__(self, me: str, min_copies: int = 1) -> None:
        if min_copies < 1:
            raise ValueError("min_copies counts the primary: at least 1")
        self.me, self.min_copies = me, min_copies
        self.configs: dict[int, Config] = {}
        self.fenced: dict[int, int] = {}  # slot -> an epoch a copy knows, above ours
        self.pending: dict[WriteId, _Pending] = {}

    def config(self, slot: int) -> Config:
        return self.configs.get(slot, NO_CONFIG)

    def submit(self, write_id: WriteId, slot: int) -> tuple[tuple[str, Replicate], ...] | Done:
        """Start a write (already stored here): (peer, message) to send, or Done at once.

        Raises MovedError if this node is not the slot's primary, UnavailableError
        while it is fenced or has fewer than `min_copies` in-sync copies.
        """
        c = self.config(slot)
        if c.primary != self.me:
            raise MovedError(slot, c.primary)  # c.primary "": not known yet
        if slot in self.fenced:
            raise UnavailableError(f"slot {slot}: a copy knows epoch {self.fenced[slot]}, "
                                   f"newer than ours ({c.epoch})")
        if len(c.copies) < self.min_copies:
            raise UnavailableError(f"slot {slot}: {len(c.copies)} in-sync copies, "
                                   f"fewer than {self.min_copies}")
        if write_id in self.pending:
            raise BadRequestError(f"write {write_id!r} is already pending")
        others = set(c.copies[1:])
        if not others:
            return Done(write_id, c.epoch)
        self.pending[write_id] = _Pending(slot, others)
        return tuple((peer, Replicate(write_id, slot, c.epoch, self.me)) for peer in c.copies[1:])

    def on_ack(self, ack: ReplicateAck) -> Done | None:
        p = self.pending.get(ack.write_id)
        if p is None or p.slot != ack.slot:
            return None  # late, duplicated or for a write already settled
        p.acked.add(ack.copy)  # a copy that holds it, holds it (whatever epoch it said)
        p.waiting.discard(ack.copy)
        return self._settle(ack.write_id, p)

    def on_refused(self, ref: ReplicateRefused) -> list[Failed]:
        """A copy knows a newer epoch: fence the slot and fail what is pending there."""
        if ref.known_epoch <= self.config(ref.slot).epoch:
            return []  # not newer than what we know: a stale refusal
        self.fenced[ref.slot] = max(self.fenced.get(ref.slot, 0), ref.known_epoch)
        return self._fail_slot(ref.slot, f"fenced: {ref.copy} knows epoch {ref.known_epoch}")

    def set_config(self, slot: int, config: Config) -> list[Decision]:
        """A committed configuration from the table; returns what it settles."""
        old = self.config(slot)
        if config.epoch < old.epoch or config == old:
            return []
        if config.epoch == old.epoch:
            raise BadRequestError(f"slot {slot}: copy set changed without a new epoch "
                                  f"({old.copies} -> {config.copies} at {config.epoch})")
        self.configs[slot] = config
        if self.fenced.get(slot, 0) <= config.epoch:
            self.fenced.pop(slot, None)
        if config.primary != self.me:
            return list(self._fail_slot(slot, f"not primary since epoch {config.epoch}"))
        out: list[Decision] = []
        need = set(config.copies[1:])
        for wid, p in list(self.pending.items()):
            if p.slot != slot:
                continue
            p.waiting = need - p.acked
            out.extend(Resend(wid, peer) for peer in sorted(p.waiting) if peer not in old.copies)
            done = self._settle(wid, p)
            if done is not None:
                out.append(done)
        return out

    def _settle(self, wid: WriteId, p: _Pending) -> Done | None:
        if p.waiting:
            return None
        del self.pending[wid]
        return Done(wid, self.config(p.slot).epoch)

    def _fail_slot(self, slot: int, reason: str) -> list[Failed]:
        failed = [wid for wid, p in self.pending.items() if p.slot == slot]
        for wid in failed:
            del self.pending[wid]
        return [Failed(wid, reason) for wid in failed]


class CopyGuard:
    """A copy's fence: which primaries' writes it may take, per slot."""

    def __init__(self, me: str) -> None:
        self.me = me
        self.known: dict[int, Config] = {}  # committed configurations learnt
        self.fences: dict[int, int] = {}  # epochs promised in elections, or seen newer

    def learn(self, slot: int, config: Config) -> None:
        if config > self.known.get(slot, NO_CONFIG):
            self.known[slot] = config

    def fence(self, slot: int, epoch: int) -> None:
        """Refuse every primary older than `epoch` (standing for or voting in an election)."""
        self.fences[slot] = max(self.fences.get(slot, 0), epoch)

    def floor(self, slot: int) -> int:
        return max(self.known.get(slot, NO_CONFIG).epoch, self.fences.get(slot, 0))

    def on_replicate(self, msg: Replicate) -> ReplicateAck | ReplicateRefused:
        """Accept (the caller stores the write durably, then sends the ack) or refuse."""
        known = self.known.get(msg.slot, NO_CONFIG)
        floor = self.floor(msg.slot)
        stale = msg.epoch < floor
        other_primary = msg.epoch == known.epoch and msg.primary != known.primary
        if stale or other_primary:
            return ReplicateRefused(msg.write_id, msg.slot, self.me, max(floor, msg.epoch + 1))
        if msg.epoch > known.epoch:
            self.fence(msg.slot, msg.epoch)  # a newer primary: older ones are shut out
        return ReplicateAck(msg.write_id, msg.slot, msg.epoch, self.me)

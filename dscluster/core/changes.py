"""CopyChanges: when a node stands for a copy-set change, and its side as a voter.

Theory of operation
-------------------
core/election.py holds the rules of one change (failover, shrink, grow by
majority); this module decides when to stand and carries the messages, inside
ClusterCore (which calls it from `tick` and `step` and persists `acceptor`
before anything it sends, per the Ready contract).

* **When to stand.** Every heartbeat, a node with no election running looks,
  in this order, for
  - a *failover*: slots whose primary is FAIL in its view and whose first
    replica not FAIL is this node. In-sync copies are equal (every one holds
    every acknowledged write), so the table's order ranks them, where Redis
    ranks replicas by replication offset: one candidate per slot is the
    usual case, and a second one only costs a retry;
  - a *shrink*: slots this node is primary of with a replica FAIL in its
    view (one such replica per election), so that writes of those slots,
    which stop while a copy cannot confirm them, resume on the copies left;
    likewise a copy on a retired node, and the last copy of a set longer
    than the `copies` setting (`dsclient cluster set-copies`);
  then a *renew* of slots whose writes a copy refused as fenced (a copy
  that stood or voted in an election that came to nothing stays fenced
  above the slot's epoch: the same copy set at a higher epoch lifts that),
  and then the *grow* the node asked for (`grow`: a new copy that holds
  every key of the slots, filled by node/refill.py while it was sent every
  write as a learner).
  Slots in a migration are left alone (the migration owns their entries).
* **Standing.** The epoch is above every epoch the node knows and every
  promise it was told of; the node fences its own copies of those slots at
  it (so the primary it replaces cannot get another write confirmed here),
  votes for itself and asks every other data member.
* **Staggering.** The survivors of a dead node are candidates for different
  slots of it at once, and one vote per epoch would split them: a change
  that falls due waits one tick per live member before this one (in the
  sorted order of members), so the first candidate usually wins alone.
* **Retries.** An election not decided within `election_ticks` is dropped;
  the next try waits a random 1..`election_ticks` x 2^losses ticks (losses
  in a row, at most 4 doublings; so candidates do not collide forever, as
  Redis's random failover delay and Raft's randomized timeouts) and stands
  higher.
* **Winning** hands the committed configurations to the core, which writes
  them into the table at the election's epoch and tells every member.

A voter checks that a request or proposal comes from the candidate it names
and that the candidate is a data member; the rest is `Acceptor`'s rules.
The copy fence (`guard`) lives here because voting raises it too; the
node's replicator asks it about every replicated write.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

from dscluster.core.election import (
    Accepted,
    Acceptor,
    Config,
    Election,
    Kind,
    Outcome,
    Propose,
    SlotConfigs,
    Vote,
    VoteRequest,
    config_runs,
    per_slot,
)
from dscluster.core.replication import CopyGuard
from dscluster.core.slots import SLOT_COUNT, SlotSet
from dscluster.core.table import SlotTable
from dscluster.errors import ProtocolError

if TYPE_CHECKING:
    from dscluster.core.messages import Message

log = logging.getLogger(__name__)

Send = Callable[[str, "Message"], None]


def table_config(table: SlotTable, slot: int) -> Config:
    """The slot's committed configuration as the table holds it."""
    epoch, owner = table.claim(slot)
    return Config(epoch, table.copies(slot)) if owner else Config(epoch, ())


MAX_BACKOFF_DOUBLINGS = 4  # a lost election's retry window grows to 16 x election_ticks

class CopyChanges:
    def __init__(self, me: str, acceptor: Acceptor, *, send: Send, rng: random.Random,
                 election_ticks: int) -> None:
        self.me = me
        self.acceptor = acceptor
        self.dirty = False  # the acceptor changed: persist before sending
        self.guard = CopyGuard(me)
        for slot, config in acceptor.accepted.items():  # fences survive a restart
            if me in config.copies:
                self.guard.fence(slot, config.epoch)
        self._send = send
        self._rng = rng
        self._ticks = max(1, election_ticks)
        self.running: Election | None = None
        self._deadline = 0
        self._next_try = 0
        self._losses = 0  # elections lost or timed out in a row (the backoff grows)
        self._due_since: int | None = None  # when a change first fell due
        self._highest_promise = acceptor.promised
        self.won: list[tuple[Kind, str, SlotConfigs]] = []  # committed, for the core to apply
        # A grow the node asked for once the new copy holds every key (node/refill.py):
        # stood for, and retried, until the table holds the copy in those slots.
        self.grow: tuple[str, SlotSet] | None = None
        self.renew: set[int] = set()  # slots whose copies refused this primary's writes
        # A slot move with copies (node/refill.py): hand the primary role to a copy.
        self.handover: tuple[str, SlotSet] | None = None

    # -- the candidate ---------------------------------------------------------------

    def tick(self, now: int, table: SlotTable, failed: Sequence[str], epoch: int,
             busy: Callable[[int], bool]) -> int:
        """Stand for a change if one is due; returns the epoch in use (>= `epoch`)."""
        if self.running is not None:
            if self.running.outcome in (Outcome.VOTING, Outcome.PROPOSING) and now < self._deadline:
                return epoch
            log.info("%s: %s election at epoch %d %s", self.me, self.running.kind.value,
                     self.running.epoch, "lost" if self.running.outcome is Outcome.LOST
                     else "timed out")
            self._highest_promise = max(self._highest_promise, self.running.highest_promise)
            self.running = None
            # Three primaries shrinking at once (set-copies 1) kept refusing each other
            # with a fixed 1..election_ticks wait: double the window per loss in a row.
            self._losses = min(self._losses + 1, MAX_BACKOFF_DOUBLINGS)
            self._next_try = now + self._rng.randint(1, self._ticks << self._losses)
        if now < self._next_try:
            return epoch
        change = (self._due(table, set(failed), busy) if table.has_replicas() else None) \
            or self._renew_due(table, busy) or self._grow_due(table, busy) \
            or self._handover_due(table, busy)
        if change is None:
            self._due_since = None
            return epoch
        if self._due_since is None:
            # Candidates for different slots would split the votes of one epoch: stand
            # one tick apart, in the order of the live members.
            live = [n for n in table.data_nodes() if n not in failed]
            self._due_since = now
            self._next_try = now + (live.index(self.me) if self.me in live else 0)
            if now < self._next_try:
                return epoch
        kind, subject, slots = change
        if kind is Kind.RENEW:
            self.renew.difference_update(slots)  # one try; a later refusal asks again
        new_epoch = max(epoch, self.acceptor.promised, self._highest_promise) + 1
        election = Election(self.me, new_epoch, kind, subject, slots, table.data_nodes())
        self.running, self._deadline = election, now + self._ticks
        log.warning("%s: standing for %s of %s on %d slots at epoch %d", self.me, kind.value,
                    subject, len(slots), new_epoch)
        for slot in slots:
            self.guard.fence(slot, new_epoch)
        request = election.request()
        self._on_vote(election, self._vote(request, table, failed))
        for peer in self._voters(election):
            self._send(peer, request)
        return new_epoch

    def _due(self, table: SlotTable, failed: set[str],
             busy: Callable[[int], bool]) -> tuple[Kind, str, SlotSet] | None:
        failover: dict[str, list[int]] = {}
        shrink: dict[str, list[int]] = {}
        members = set(table.data_nodes())
        want = table.settings.copies
        moving = set(self.handover[1]) if self.handover else set()  # keep the extra copy
        for start, end, _epoch, owner, replicas in table.copy_runs():  # cached per bucket
            if not replicas or (owner != self.me and self.me not in replicas):
                continue
            if owner in failed:
                alive = [c for c in replicas if c not in failed]
                if not alive or alive[0] != self.me:
                    continue
                found = failover.setdefault(owner, [])
            elif owner == self.me:
                # a FAIL copy, one of a retired node, or the last one of too many
                # (but not a slot being handed over: its extra copy is the new primary)
                dead = [c for c in replicas if c in failed or c not in members]
                extra = not dead and len(replicas) + 1 > want
                if extra:
                    dead = [replicas[-1]]
                if not dead:
                    continue
                found = shrink.setdefault(dead[0], [])
                if extra:
                    found.extend(s for s in range(start, end + 1)
                                 if not busy(s) and s not in moving)
                    continue
            else:
                continue
            found.extend(s for s in range(start, end + 1) if not busy(s))
        failover = {k: v for k, v in failover.items() if v}
        shrink = {k: v for k, v in shrink.items() if v}
        for kind, by_subject in ((Kind.FAILOVER, failover), (Kind.SHRINK, shrink)):
            if by_subject:
                subject = min(by_subject)
                return kind, subject, SlotSet.from_slots(by_subject[subject])
        return None

    def _voters(self, election: Election) -> frozenset[str]:
        """Whom to ask: every member but me and, for a failover, the FAIL primary (it
        still counts in the quorum; asking it is a wasted send). A shrink's subject
        is asked: it may be alive (a copy past the setting, a retired node)."""
        dead = {election.subject} if election.kind is Kind.FAILOVER else set()
        return election.members - {self.me} - dead

    def _renew_due(self, table: SlotTable,
                   busy: Callable[[int], bool]) -> tuple[Kind, str, SlotSet] | None:
        """Slots the node asked to renew (`renew`: a copy refused their writes as
        fenced above their epoch) that are still this node's."""
        self.renew = {s for s in self.renew if table.owner(s) == self.me}
        left = [s for s in sorted(self.renew) if not busy(s)]
        return (Kind.RENEW, self.me, SlotSet.from_slots(left)) if left else None

    def _handover_due(self, table: SlotTable,
                      busy: Callable[[int], bool]) -> tuple[Kind, str, SlotSet] | None:
        """The handover the node asked for (`handover`), on the slots still its own."""
        if self.handover is None:
            return None
        subject, slots = self.handover
        left = [s for s in slots if table.owner(s) == self.me]
        if not left or subject not in table.data_nodes():
            self.handover = None  # committed, or no longer ours to hand over
            return None
        due = [s for s in left if subject in table.replicas(s) and not busy(s)]
        return (Kind.HANDOVER, subject, SlotSet.from_slots(due)) if due else None  # or: filling

    def _grow_due(self, table: SlotTable,
                  busy: Callable[[int], bool]) -> tuple[Kind, str, SlotSet] | None:
        """The grow the node asked for (`grow`), on the slots still without that copy."""
        if self.grow is None:
            return None
        subject, slots = self.grow
        left = [s for s in slots if table.owner(s) == self.me
                and subject not in table.copies(s) and not busy(s)]
        if not left or subject not in table.data_nodes():
            self.grow = None  # committed, or no longer ours to grow
            return None
        return Kind.GROW, subject, SlotSet.from_slots(left)

    def on_vote(self, sender: str, vote: Vote) -> None:
        if vote.voter != sender:
            return
        if not vote.granted:  # even late: the next try stands above that promise
            self._highest_promise = max(self._highest_promise, vote.promised)
        if self.running is not None:
            self._on_vote(self.running, vote)

    def _on_vote(self, election: Election, vote: Vote) -> None:
        proposal = election.on_vote(vote)
        if proposal is None:
            return
        for peer in self._voters(election):
            self._send(peer, proposal)
        self._on_accepted(election, self._accept(proposal))

    def on_accepted(self, sender: str, accepted: Accepted) -> None:
        if self.running is not None and accepted.voter == sender:
            self._on_accepted(self.running, accepted)

    def _on_accepted(self, election: Election, accepted: Accepted) -> None:
        if election.on_accepted(accepted):
            log.warning("%s: won %s of %s at epoch %d", self.me, election.kind.value,
                        election.subject, election.epoch)
            self.won.append((election.kind, election.subject, election.won()))
            self.running = None
            self._losses = 0

    # -- the voter --------------------------------------------------------------------

    def _vote(self, request: VoteRequest, table: SlotTable, failed: Sequence[str]) -> Vote:
        before = self.acceptor.promised
        vote = self.acceptor.on_vote_request(request, lambda s: table_config(table, s), failed)
        if self.acceptor.promised != before:
            self.dirty = True
        if vote.granted:
            for slot in request.slots:
                if self.me in table.copies(slot):
                    self.guard.fence(slot, request.epoch)
        return vote

    def _accept(self, proposal: Propose) -> Accepted:
        accepted = self.acceptor.on_propose(proposal)
        if accepted.ok:
            self.dirty = True  # promise or configurations may have changed: persist first
            for slot, config in per_slot(proposal.configs).items():
                if self.me in config.copies:
                    self.guard.fence(slot, config.epoch)
        return accepted

    def on_vote_request(self, sender: str, request: VoteRequest, table: SlotTable,
                        failed: Sequence[str]) -> None:
        if request.candidate != sender or sender not in table.data_nodes():
            log.info("%s: vote request from %s for %s ignored", self.me, sender,
                     request.candidate)
            return
        self._send(sender, self._vote(request, table, failed))

    def on_propose(self, sender: str, proposal: Propose, table: SlotTable) -> None:
        if proposal.candidate != sender or sender not in table.data_nodes():
            return
        self._send(sender, self._accept(proposal))

    def forget_committed(self, table: SlotTable) -> None:
        """Drop accepted configurations the table already holds or passed (they are
        only needed until committed ones reach the table); keeps the state small."""
        stale = [s for s, c in self.acceptor.accepted.items()
                 if table_config(table, s).epoch >= c.epoch]
        for slot in stale:
            del self.acceptor.accepted[slot]
        if stale:
            self.dirty = True



def acceptor_to_obj(promised: int, accepted: Mapping[int, Config]) -> dict[str, object]:
    """The acceptor's persisted form (in state.cbor, beside the table)."""
    return {"promised": promised,
            "accepted": [[a, b, c.epoch, list(c.copies)] for a, b, c in config_runs(accepted)]}


def acceptor_from_obj(obj: object) -> tuple[int, dict[int, Config]]:
    """(promised, accepted) from the persisted form; absent (None): a fresh acceptor."""
    if obj is None:
        return 0, {}
    if not isinstance(obj, dict):
        raise ProtocolError("persisted acceptor is not a map")
    promised, accepted = obj.get("promised"), obj.get("accepted")
    if type(promised) is not int or not isinstance(accepted, list):
        raise ProtocolError("persisted acceptor has bad fields")
    configs: dict[int, Config] = {}
    for run in accepted:
        if (not isinstance(run, list) or len(run) != 4 or type(run[0]) is not int
                or type(run[1]) is not int or type(run[2]) is not int
                or not isinstance(run[3], list) or not all(isinstance(c, str) for c in run[3])
                or not 0 <= run[0] <= run[1] < SLOT_COUNT):
            raise ProtocolError("persisted acceptor has a bad accepted run")
        for slot in range(run[0], run[1] + 1):
            configs[slot] = Config(run[2], tuple(run[3]))
    return promised, configs


__all__ = ["CopyChanges", "acceptor_from_obj", "acceptor_to_obj", "table_config"]

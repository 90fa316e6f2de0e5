"""The slot-migration state machine, as a transition table.

Theory of operation
-------------------
A migration moves a set of slots from a source to a target while clients keep
working. Both sides keep a `Migration` record and persist it with the table.

Source:  PREPARING --begin_acked--> MIGRATING --source_empty--> HANDOFF --handoff_acked--> done
         PREPARING --abort--> done            (nothing can have moved yet)
Target:  IMPORTING --handoff--> done (the target claims the slots)
         IMPORTING --abort--> done

1. The source records PREPARING and sends MigrateBegin. Routing is unchanged.
2. The target records IMPORTING (persisted) and acks; from now it serves
   requests for those slots that come with ASKING.
3. On the ack the source records MIGRATING: missing keys are answered with
   ASK, so no new key is created at the source. The daemon moves existing keys
   in batches (list, copy to target, target stores durably and acks, delete
   here), each key locked for the whole copy-then-delete.
4. When a listing comes back empty the source holds no key of the slots: it
   records HANDOFF and sends Handoff with its epoch.
5. The target claims the slots with an epoch above anything it or the source
   has seen, persists, acks and gossips the new claims. The source finishes on
   the ack or on hearing by gossip that no slot is its own any more (the
   target's claims, or newer ones: the target may have moved slots on before
   the source heard, and it ignores a Handoff it already handled).

A migration interrupted by a restart resumes from its persisted phase (the
daemon re-lists keys; retransmissions are idempotent thanks to the migration
id). Once MIGRATING, keys may already sit at the target, so abort is refused:
the migration can only be resumed. Duplicated or late messages map to
self-loops (`IGNORED`) rather than errors; any other event raises
BadRequestError, like h11's LocalProtocolError.

`Migrations` is the machine itself: it holds this node's outgoing and
incoming records, retransmits on ticks, answers the migration messages and
asks the daemon for data actions. The core around it (node.py) owns the slot
table and the epoch; the machine reads them, and the claim of the slots at the
target and the merge of the target's claims at the source stay with the core.

Data actions and the per-key lock the daemon must keep:
  ListKeys(mid, ranges, limit): list up to `limit` local keys whose slot is in
    `ranges`; report keys_listed(mid, keys) (empty: nothing left).
  MoveKeys(mid, target, keys): for each key take its lock (the same per-key
    lock every client request holds around route() and the datastore
    operation), read the value, send the batch to the target (ASKING), wait
    until the target has stored it durably, delete the local copies, release
    the locks, and report keys_moved; if the target did not acknowledge,
    delete nothing, release the locks and report move_failed. A client request
    for a locked key waits (or is told to retry) and routes afresh afterwards,
    so a write racing a move is neither lost (it lands before the read or
    after the delete, when the key is absent here and the request is ASKed
    to the target) nor resurrected.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from dscluster.core.gossip import GossipConfig
from dscluster.core.messages import (
    Handoff,
    HandoffAck,
    Message,
    MigrateAbort,
    MigrateBegin,
    MigrateBeginAck,
)
from dscluster.core.slots import SlotSet, key_slot, normalize_ranges
from dscluster.core.table import NodeRole, SlotTable
from dscluster.errors import BadRequestError, ProtocolError

log = logging.getLogger(__name__)


class Phase(enum.Enum):
    PREPARING = "preparing"
    MIGRATING = "migrating"
    HANDOFF = "handoff"
    IMPORTING = "importing"
    DONE = "done"


class Event(enum.Enum):
    BEGIN_ACKED = "begin_acked"
    SOURCE_EMPTY = "source_empty"
    HANDOFF = "handoff"
    HANDOFF_ACKED = "handoff_acked"
    ABORT = "abort"


TRANSITIONS: dict[tuple[Phase, Event], Phase] = {
    (Phase.PREPARING, Event.BEGIN_ACKED): Phase.MIGRATING,
    (Phase.PREPARING, Event.ABORT): Phase.DONE,
    (Phase.MIGRATING, Event.SOURCE_EMPTY): Phase.HANDOFF,
    (Phase.HANDOFF, Event.HANDOFF_ACKED): Phase.DONE,
    (Phase.IMPORTING, Event.HANDOFF): Phase.DONE,
    (Phase.IMPORTING, Event.ABORT): Phase.DONE,
}

# Events that may legitimately arrive again (duplicates, retransmissions): no-ops.
IGNORED: frozenset[tuple[Phase, Event]] = frozenset({
    (Phase.MIGRATING, Event.BEGIN_ACKED),
    (Phase.HANDOFF, Event.BEGIN_ACKED),
})


@dataclass(frozen=True)
class Migration:
    mid: int  # chosen by the source, unique per source
    slots: SlotSet
    source: str
    target: str
    phase: Phase

    def on(self, event: Event) -> Migration:
        """The migration after `event`; raises BadRequestError if illegal here."""
        if (self.phase, event) in IGNORED:
            return self
        nxt = TRANSITIONS.get((self.phase, event))
        if nxt is None:
            raise BadRequestError(
                f"migration {self.mid} of {self.slots} is {self.phase.value}: "
                f"{event.value} is not allowed")
        return replace(self, phase=nxt)

    @property
    def moving_keys(self) -> bool:
        """The source answers missing keys with ASK (keys may live at the target)."""
        return self.phase in (Phase.MIGRATING, Phase.HANDOFF)

    def to_obj(self) -> dict[str, Any]:
        return {"mid": self.mid, "ranges": [list(r) for r in self.slots.ranges],
                "source": self.source, "target": self.target, "phase": self.phase.value}

    @classmethod
    def from_obj(cls, obj: Any) -> Migration:
        try:
            ranges = normalize_ranges(tuple(r) for r in obj["ranges"])
            mid, source, target = obj["mid"], obj["source"], obj["target"]
            if type(mid) is not int or not isinstance(source, str) or not isinstance(target, str):
                raise TypeError("bad migration fields")
            return cls(mid, SlotSet(ranges), source, target, Phase(obj["phase"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"bad migration record: {exc}") from exc


@dataclass(frozen=True)
class ListKeys:
    mid: int
    ranges: tuple[tuple[int, int], ...]
    limit: int


@dataclass(frozen=True)
class MoveKeys:
    mid: int
    target: str
    keys: tuple[str, ...]


Action = ListKeys | MoveKeys


class Migrations:
    """This node's migrations, outgoing (it is the source) and incoming (the target).

    `send` and `act` append to the core's outbox, in order with its own
    messages; `now` and `epoch` read the core's tick count and epoch. `dirty`
    says the records changed since the core last persisted them."""

    def __init__(self, me: str, records: Iterable[Migration], next_mid: int, *,
                 config: GossipConfig, send: Callable[[str, Message], None],
                 act: Callable[[Action], None], now: Callable[[], int],
                 epoch: Callable[[], int]) -> None:
        self.me = me
        self._cfg = config
        self._send = send
        self._act = act
        self._now = now
        self._epoch = epoch
        self.next_mid = next_mid
        self.dirty = False
        self._out: dict[int, Migration] = {}
        self._in: dict[tuple[str, int], Migration] = {}
        for m in records:
            if m.source == me:
                self._out[m.mid] = m
            else:
                self._in[(m.source, m.mid)] = m
        self._busy: set[int] = set()  # migrations with a data action outstanding
        self._last_sent: dict[tuple[str, int], int] = {}

    def resume_all(self) -> None:
        """A restarted node resumes where it stopped."""
        for m in self._out.values():
            self._resume(m)

    # -- queries -----------------------------------------------------------------------

    @property
    def records(self) -> tuple[Migration, ...]:
        return tuple(self._out.values()) + tuple(self._in.values())

    def migrating_to(self, slot: int) -> str | None:
        for m in self._out.values():
            if m.moving_keys and slot in m.slots:
                return m.target
        return None

    def importing_from(self, slot: int) -> str | None:
        for m in self._in.values():
            if slot in m.slots:
                return m.source
        return None

    def busy(self, slot: int) -> bool:
        """Is the slot in any migration record of this node (either direction)?"""
        return any(slot in m.slots for m in (*self._out.values(), *self._in.values()))

    def outgoing(self, mid: int) -> Migration | None:
        return self._out.get(mid)

    # -- time --------------------------------------------------------------------------

    def tick(self) -> None:
        for m in list(self._out.values()):
            self._retransmit(m)
        for m in self._in.values():
            if self._due((m.source, m.mid)):  # probe: is the source still migrating?
                self._send(m.source, MigrateBeginAck(m.mid))

    def _due(self, key: tuple[str, int]) -> bool:
        last = self._last_sent.get(key)
        now = self._now()
        if last is None or now - last >= self._cfg.retry_ticks:
            self._last_sent[key] = now
            return True
        return False

    def _retransmit(self, m: Migration) -> None:
        if m.phase is Phase.PREPARING and self._due((m.target, m.mid)):
            self._send(m.target, MigrateBegin(m.mid, m.slots.ranges))
        elif m.phase is Phase.HANDOFF and self._due((m.target, m.mid)):
            self._send(m.target, Handoff(m.mid, self._epoch()))
        elif m.phase is Phase.MIGRATING and m.mid not in self._busy:
            self._list_keys(m)

    def _resume(self, m: Migration) -> None:
        self._last_sent.pop((m.target, m.mid), None)
        self._retransmit(m)

    # -- admin -------------------------------------------------------------------------

    def start(self, slots: SlotSet, target: str, table: SlotTable) -> int:
        """Begin moving `slots` (all owned here) to `target`; returns the migration id."""
        if not len(slots):
            raise BadRequestError("no slots to migrate")
        node = table.nodes.get(target)
        if target == self.me or node is None or node.role is not NodeRole.DATA:
            raise BadRequestError(f"{target} is not a data node of this cluster")
        not_mine = [s for s in slots if table.owner(s) != self.me]
        if not_mine:
            raise BadRequestError(f"slots {SlotSet.from_slots(not_mine)} are not owned here")
        busy = set(slots) & {s for m in self.records for s in m.slots}
        if busy:
            raise BadRequestError(f"slots {SlotSet.from_slots(busy)} are already migrating")
        mid = self.next_mid
        self.next_mid += 1
        m = Migration(mid, slots, self.me, target, Phase.PREPARING)
        self._out[mid] = m
        self.dirty = True
        self._resume(m)
        return mid

    def abort(self, mid: int) -> None:
        m = self._out.get(mid)
        if m is None:
            raise BadRequestError(f"no outgoing migration {mid}")
        m.on(Event.ABORT)  # raises once keys may have moved
        del self._out[mid]
        self.dirty = True
        self._send(m.target, MigrateAbort(mid))

    # -- data action outcomes -------------------------------------------------------------

    def _migrating(self, mid: int) -> Migration:
        m = self._out.get(mid)
        if m is None or m.phase is not Phase.MIGRATING:
            raise BadRequestError(f"migration {mid} is not moving keys")
        return m

    def _list_keys(self, m: Migration) -> None:
        self._busy.add(m.mid)
        self._act(ListKeys(m.mid, m.slots.ranges, self._cfg.batch_keys))

    def keys_listed(self, mid: int, keys: Sequence[str]) -> None:
        m = self._migrating(mid)
        self._busy.discard(mid)
        stray = [k for k in keys if key_slot(k) not in m.slots]
        if stray:
            raise BadRequestError(f"listed keys outside migration {mid}: {stray[:3]}")
        if keys:
            self._busy.add(mid)
            self._act(MoveKeys(mid, m.target, tuple(keys)))
            return
        m = self._out[mid] = m.on(Event.SOURCE_EMPTY)
        self.dirty = True
        self._resume(m)

    def keys_moved(self, mid: int, keys: Sequence[str]) -> None:
        m = self._migrating(mid)
        self._busy.discard(mid)
        self._list_keys(m)

    def move_failed(self, mid: int) -> None:
        self._migrating(mid)
        self._busy.discard(mid)  # the next tick lists and tries again

    # -- messages --------------------------------------------------------------------------

    def finish_handoffs(self, table: SlotTable) -> None:
        # Done once no slot of the migration is ours any more. Only the target can
        # claim them over our claim (we refuse imports of slots we own and start no
        # other migration of them), but it may already have moved some of them on
        # before we hear its claims: waiting for `owner == target` would then wait
        # forever, since a target that finished ignores our late Handoff.
        for mid, m in list(self._out.items()):
            if m.phase is Phase.HANDOFF and all(table.owner(s) != self.me for s in m.slots):
                del self._out[mid]
                self.dirty = True

    def on_migrate_begin(self, sender: str, msg: MigrateBegin, table: SlotTable) -> None:
        key = (sender, msg.mid)
        if key not in self._in:
            try:
                slots = SlotSet.of(msg.ranges)
            except ValueError as exc:
                raise ProtocolError(f"bad ranges in MigrateBegin: {exc}") from exc
            clash = [s for s in slots if table.owner(s) == self.me
                     or self.importing_from(s) is not None]
            if clash or not len(slots):
                log.warning("%s: refusing import %s from %s", self.me, msg.mid, sender)
                return
            self._in[key] = Migration(msg.mid, slots, sender, self.me, Phase.IMPORTING)
            self.dirty = True
        self._last_sent[key] = self._now()
        self._send(sender, MigrateBeginAck(msg.mid))

    def on_migrate_begin_ack(self, sender: str, msg: MigrateBeginAck) -> None:
        m = self._out.get(msg.mid)
        if m is None or m.target != sender:
            self._send(sender, MigrateAbort(msg.mid))  # a probe for an import we forgot
            return
        nxt = m.on(Event.BEGIN_ACKED)
        if nxt != m:
            self._out[msg.mid] = nxt
            self.dirty = True
            self._resume(nxt)

    def on_migrate_abort(self, sender: str, msg: MigrateAbort) -> None:
        m = self._in.pop((sender, msg.mid), None)
        if m is not None:
            m.on(Event.ABORT)
            self.dirty = True

    def on_handoff(self, sender: str, msg: Handoff) -> Migration | None:
        """The finished import whose slots the core now claims, or None (done or unknown)."""
        m = self._in.get((sender, msg.mid))
        if m is None:
            return None  # already done (the source also learns it by gossip) or unknown
        m.on(Event.HANDOFF)
        del self._in[(sender, msg.mid)]
        self.dirty = True
        return m

    def awaits_handoff_ack(self, sender: str, msg: HandoffAck) -> bool:
        m = self._out.get(msg.mid)
        return m is not None and m.target == sender and m.phase is Phase.HANDOFF

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
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any

from dscluster.core.slots import SlotSet, normalize_ranges
from dscluster.errors import BadRequestError, ProtocolError


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

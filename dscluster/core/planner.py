"""The rebalance planner: which slots move where for a target membership.

Theory of operation
-------------------
Each target member gets a quota of slots proportional to its weight:
``floor(SLOT_COUNT * w / W)``, and the few left-over slots go to the members
with the largest fractional share, then to those that already own the most
(so they need not receive slots only to give others away). A node over its
quota is a donor of exactly its surplus, a node under it a receiver of exactly
its deficit; nodes leaving the cluster have quota 0. Every slot that moves
leaves a donor and lands on a receiver, and no slot moves twice, so the plan
moves ``sum(max(0, owned - quota))`` slots: the fewest any plan reaching
these quotas can move. Donors give away the tail of their highest ranges, so
what stays and what moves both remain few, contiguous ranges.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dscluster.core.slots import SLOT_COUNT, SlotSet
from dscluster.core.table import SlotTable
from dscluster.errors import BadRequestError


@dataclass(frozen=True)
class Move:
    slots: SlotSet
    source: str
    target: str


def quotas(weights: Mapping[str, float], owned: Mapping[str, int]) -> dict[str, int]:
    """Slots each member should own; sums to SLOT_COUNT."""
    if not weights:
        raise BadRequestError("a cluster needs at least one member")
    if any(not (w > 0 and math.isfinite(w)) for w in weights.values()):
        raise BadRequestError("weights must be positive numbers")
    total = sum(weights.values())
    ideal = {n: SLOT_COUNT * w / total for n, w in weights.items()}
    out = {n: math.floor(x) for n, x in ideal.items()}
    left = SLOT_COUNT - sum(out.values())
    order = sorted(weights, key=lambda n: (-(ideal[n] - out[n]), -owned.get(n, 0), n))
    for n in order[:left]:
        out[n] += 1
    return out


def plan(table: SlotTable, members: Sequence[str] | Mapping[str, float]) -> list[Move]:
    """Moves that bring `table` to an even (or weighted) split over `members`."""
    weights = dict(members) if isinstance(members, Mapping) else {m: 1.0 for m in members}
    if not table.is_complete():
        raise BadRequestError("the slot table is not complete yet")
    owned: dict[str, SlotSet] = {}
    for start, end, _, owner in table.runs():
        owned[owner] = owned.get(owner, SlotSet()) | SlotSet(((start, end),))
    target = quotas(weights, {n: len(s) for n, s in owned.items()})
    pool: list[tuple[str, SlotSet]] = []  # donors' surplus, in donor order
    for node in sorted(owned):
        extra = len(owned[node]) - target.get(node, 0)
        if extra > 0:
            pool.append((node, owned[node].tail(extra)[1]))  # the tail of its highest ranges
    moves: list[Move] = []
    for receiver in sorted(target):
        need = target[receiver] - len(owned.get(receiver, SlotSet()))
        while need > 0:
            donor, slots = pool[0]
            give, rest = slots.head(need)
            moves.append(Move(give, donor, receiver))
            need -= len(give)
            if len(rest):
                pool[0] = (donor, rest)
            else:
                pool.pop(0)
    return moves


def apply(table: SlotTable, moves: Sequence[Move]) -> dict[str, int]:
    """Slot counts after `moves` (for checking plans)."""
    counts = {n: c for n, c in table.slot_counts().items() if n}
    for m in moves:
        counts[m.source] -= len(m.slots)
        counts[m.target] = counts.get(m.target, 0) + len(m.slots)
    return {n: c for n, c in counts.items() if c}

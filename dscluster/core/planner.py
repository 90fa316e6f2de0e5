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

Copies (`plan_copies`, doc/copies.md). With ``copies = k`` every slot gets
``r = min(k, n) - 1`` replicas besides its primary, on distinct members. The
primaries are `plan`'s. Replicas are placed by *pair quotas*: a primary ``x``
with ``p_x`` slots owes ``p_x * r`` replica places, spread over the other
``n - 1`` members as evenly as integers allow (``floor`` or ``ceil`` of
``p_x * r / (n - 1)`` each, the ceilings going to the members with the fewest
replica places so far), so a dead node's slots have their copies on every
other node and their load is shared, not dumped on one peer; and since the
primaries are even, so are every node's replica totals (tests state the
bound). Placement then keeps every current copy it can: a node that already
holds a slot (its primary or a replica before the plan) stays a replica of
it while that pair's quota lasts, and only the remaining places are filled,
each with the member with the most quota left, staying with the same member
for consecutive slots so that copy sets remain few, contiguous runs. So an
added or removed node moves little more than its own share of copies.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dscluster.core.slots import SLOT_COUNT, SlotSet
from dscluster.core.table import MAX_COPIES, ClusterSettings, SlotTable
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


@dataclass(frozen=True)
class CopyPlan:
    """Where every slot's copies should be: `plan`'s primary moves, then the copy sets."""

    moves: tuple[Move, ...]  # primary moves, as `plan` gives them
    copy_sets: tuple[tuple[int, int, tuple[str, ...]], ...]  # (start, end, primary first)

    def copies(self, slot: int) -> tuple[str, ...]:
        for start, end, copy_set in self.copy_sets:  # few runs; a linear scan is fine
            if start <= slot <= end:
                return copy_set
        raise IndexError(slot)

    def by_slot(self) -> list[tuple[str, ...]]:
        out: list[tuple[str, ...]] = []
        for start, end, copy_set in self.copy_sets:
            out.extend([copy_set] * (end - start + 1))
        return out

    def counts(self) -> dict[str, tuple[int, int]]:
        """(primary slots, replica slots) per node."""
        out: dict[str, list[int]] = {}
        for start, end, copy_set in self.copy_sets:
            for place, node in enumerate(copy_set):
                out.setdefault(node, [0, 0])[place > 0] += end - start + 1
        return {n: (p, r) for n, (p, r) in sorted(out.items())}

    def added(self, table: SlotTable) -> dict[str, SlotSet]:
        """The slots each node must receive a copy of (it holds none before the plan)."""
        out: dict[str, list[int]] = {}
        for slot, copy_set in enumerate(self.by_slot()):
            held = table.copies(slot)
            for node in copy_set:
                if node not in held:
                    out.setdefault(node, []).append(slot)
        return {n: SlotSet.from_slots(s) for n, s in sorted(out.items())}


def plan_copies(table: SlotTable, members: Sequence[str] | Mapping[str, float],
                copies: int) -> CopyPlan:
    """Primary moves and copy sets of `copies` copies per slot over `members`."""
    if type(copies) is not int or not 1 <= copies <= MAX_COPIES:
        raise BadRequestError(f"copies must be an integer from 1 to {MAX_COPIES}")
    moves = plan(table, members)  # checks members and completeness
    names = sorted(members)
    primary = [table.owner(s) or "" for s in range(SLOT_COUNT)]
    for m in moves:
        for slot in m.slots:
            primary[slot] = m.target
    r = min(copies, len(names)) - 1
    quota = _pair_quotas(names, primary, r)
    rem = dict(quota)  # pair quota not used yet
    left = {n: 0 for n in names}  # each primary's slots not placed yet
    for x in primary:
        left[x] += 1
    member_set = set(names)
    totals = {n: 0 for n in names}  # replica places given so far (a tie-break)
    sticky: dict[tuple[str, int], str] = {}  # (primary, place) -> member filled last
    chosen: list[tuple[str, ...]] = []
    for slot in range(SLOT_COUNT):
        x = primary[slot]
        lx = left[x]
        left[x] -= 1
        # Members whose quota with x needs every slot x has left must take this one;
        # taking them keeps rem <= left for all, which (every slot of x needing r places,
        # the quotas summing to r * left) is exactly what keeps the rest placeable.
        reps = [y for y in names if y != x and rem[x, y] >= lx]
        for y in table.copies(slot):  # then keep who holds the slot already
            if len(reps) < r and y != x and y in member_set and y not in reps and rem[x, y] > 0:
                reps.append(y)
        while len(reps) < r:  # then fill: the same member as the slot before, or the most owed
            place = len(reps)
            y = sticky.get((x, place), "")
            if not y or y in reps or rem[x, y] <= 0:
                y = max((n for n in names if n != x and n not in reps),
                        key=lambda n: (rem[x, n], -totals[n], n))
                sticky[x, place] = y
            reps.append(y)
        for y in reps:
            rem[x, y] -= 1
            totals[y] += 1
        chosen.append(tuple(reps))
    runs: list[tuple[int, int, tuple[str, ...]]] = []
    for slot in range(SLOT_COUNT):
        copy_set = (primary[slot], *chosen[slot])
        if runs and runs[-1][2] == copy_set:
            runs[-1] = (runs[-1][0], slot, copy_set)
        else:
            runs.append((slot, slot, copy_set))
    return CopyPlan(tuple(moves), tuple(runs))


def with_copies(table: SlotTable, copies: int) -> SlotTable:
    """A new cluster's table with `copies` copies per slot, placed by `plan_copies`.

    For a table whose primaries are already even (``SlotTable.initial``): each
    slot keeps its claim and gains its replicas; the setting is version 0, as
    one read from config.json. BadRequestError if primaries would have to move.
    """
    members = table.data_nodes()
    placed = plan_copies(table, members, copies)
    if placed.moves:
        raise BadRequestError("with_copies needs even primaries: rebalance first")
    out = table.copy()
    for start, end, copy_set in placed.copy_sets:
        for slot in range(start, end + 1):
            out.assign(SlotSet.of([(slot, slot)]), table.claim(slot), copy_set[1:])
    out.merge_settings(ClusterSettings(copies, 0))
    return out


def _pair_quotas(names: list[str], primary: list[str], r: int) -> dict[tuple[str, str], int]:
    """How many of x's slots each other member y is a replica of (see the docstring)."""
    owned = {n: 0 for n in names}
    for x in primary:
        owned[x] += 1
    quota = {(x, y): 0 for x in names for y in names}
    if r == 0:
        return quota
    others = len(names) - 1
    totals = {n: 0 for n in names}
    extras = {}
    for x in names:  # every row's even part first, then the ceilings where totals are lowest
        base, extras[x] = divmod(owned[x] * r, others)
        for y in names:
            if y != x:
                quota[x, y] = base
                totals[y] += base
    for x in sorted(names, key=lambda n: (-extras[n], n)):
        for y in sorted((y for y in names if y != x), key=lambda n: (totals[n], n))[:extras[x]]:
            quota[x, y] += 1
            totals[y] += 1
    return quota

"""Replica placement (planner.plan_copies): spread, balance, little movement."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dscluster.core.planner import CopyPlan, plan, plan_copies
from dscluster.core.slots import SLOT_COUNT, SlotSet
from dscluster.core.table import SlotTable
from dscluster.errors import BadRequestError


def placed(plan_: CopyPlan, table: SlotTable) -> SlotTable:
    """`table` with the plan carried out (every copy set at a fresh epoch)."""
    out = table.copy()
    for start, end, copy_set in plan_.copy_sets:
        out.assign(SlotSet.of([(start, end)]), (out.max_epoch() + 1, copy_set[0]), copy_set[1:])
    return out


def check_placement(p: CopyPlan, table: SlotTable, members: list[str], copies: int) -> None:
    n, r = len(members), min(copies, len(members)) - 1
    primaries = [table.owner(s) for s in range(SLOT_COUNT)]
    for m in plan(table, members):
        for s in m.slots:
            primaries[s] = m.target
    by_slot = p.by_slot()
    owned: dict[str, int] = {}
    pairs: dict[tuple[str, str], int] = {}
    for slot, copy_set in enumerate(by_slot):
        assert copy_set[0] == primaries[slot]  # the primaries are plan()'s
        assert len(copy_set) == r + 1 and len(set(copy_set)) == r + 1  # never two on one node
        assert set(copy_set) <= set(members)
        owned[copy_set[0]] = owned.get(copy_set[0], 0) + 1
        for y in copy_set[1:]:
            pairs[copy_set[0], y] = pairs.get((copy_set[0], y), 0) + 1
    counts = p.counts()
    prim = [counts.get(m, (0, 0))[0] for m in members]
    reps = [counts.get(m, (0, 0))[1] for m in members]
    assert max(prim) - min(prim) <= 1
    assert max(reps) - min(reps) <= 2  # the stated bound (doc/copies.md)
    for x in members:  # x's replica places spread evenly over every other member
        if r:
            share = owned.get(x, 0) * r / (n - 1)
            for y in members:
                if y != x:
                    assert share - 1 < pairs.get((x, y), 0) < share + 1
            # so when x dies, its slots' surviving copies are on many nodes
            holders = {y for (a, y) in pairs if a == x}
            assert len(holders) >= min(n - 1, copies, owned.get(x, 0) * r)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 7), st.integers(1, 4),
       st.lists(st.integers(0, 8), min_size=1, max_size=8, unique=True),
       st.lists(st.tuples(st.integers(0, SLOT_COUNT - 1), st.integers(0, 3000),
                          st.integers(0, 6)), max_size=3),
       st.integers(1, 4))
def test_placement_is_valid_even_and_spread(n, copies, target_ids, skew, old_copies) -> None:
    ids = [f"n{i}" for i in range(n)]
    table = SlotTable.initial(ids)
    for start, length, who in skew:  # uneven primaries
        table.assign(SlotSet.of([(start, min(SLOT_COUNT - 1, start + length))]), (1, ids[who % n]))
    table = placed(plan_copies(table, ids, old_copies), table)  # existing replicas, any count
    members = [f"n{i}" for i in target_ids]
    p = plan_copies(table, members, copies)
    check_placement(p, table, members, copies)
    assert list(p.moves) == plan(table, members)
    again = placed(p, table)  # a placed plan is a fixed point: nothing more moves
    assert plan_copies(again, members, copies).added(again) == {}


def test_three_nodes_two_copies_from_the_initial_split() -> None:
    table = SlotTable.initial(["a", "b", "c"])
    p = plan_copies(table, ["a", "b", "c"], 2)
    assert p.moves == ()
    assert p.counts() == {"a": (5461, 5462), "b": (5462, 5461), "c": (5461, 5461)}
    # a's slots 0-5460: half have b as the replica, half c; contiguous runs
    assert p.copy_sets == ((0, 2730, ("a", "b")), (2731, 5460, ("a", "c")),
                           (5461, 8191, ("b", "a")), (8192, 10922, ("b", "c")),
                           (10923, 13653, ("c", "a")), (13654, 16383, ("c", "b")))
    assert p.added(table) == {"a": SlotSet.of([(5461, 8191), (10923, 13653)]),
                              "b": SlotSet.of([(0, 2730), (13654, 16383)]),
                              "c": SlotSet.of([(2731, 5460), (8192, 10922)])}


def test_one_copy_is_the_primary_plan_alone() -> None:
    table = SlotTable.initial(["a", "b", "c"])
    p = plan_copies(table, ["a", "b", "c", "d"], 1)
    assert list(p.moves) == plan(table, ["a", "b", "c", "d"])
    assert all(len(cs) == 1 for _, _, cs in p.copy_sets)
    to_d = SlotSet()
    for m in p.moves:
        to_d = to_d | m.slots
    assert p.added(table) == {"d": to_d} and len(to_d) == SLOT_COUNT // 4


def test_more_copies_than_nodes_places_one_on_each() -> None:
    p = plan_copies(SlotTable.initial(["a", "b"]), ["a", "b"], 3)
    assert all(sorted(cs) == ["a", "b"] for _, _, cs in p.copy_sets)


def test_bad_copies_are_refused() -> None:
    for bad in (0, 17, 2.0):
        with pytest.raises(BadRequestError):
            plan_copies(SlotTable.initial(["a"]), ["a"], bad)  # type: ignore[arg-type]


def _ideal_moves(n: int, copies: int) -> tuple[float, float]:
    """Copies the added node must receive; copies a removed node held (to re-create)."""
    add = min(copies, n + 1) * SLOT_COUNT / (n + 1)
    remove = min(copies, n) * SLOT_COUNT / n
    return add, remove


@pytest.mark.parametrize("n", range(2, 10))
@pytest.mark.parametrize("copies", [2, 3, 4])
def test_adding_or_removing_a_node_moves_a_bounded_number_of_copies(n, copies) -> None:
    """At most 2.5 times the copies the change itself forces (measured: at most 2.2).

    Pair quotas are exact (that is what spreads a dead node's load), so some copies
    between the remaining nodes are reshuffled too; see doc/copies.md.
    """
    ids = [f"n{i}" for i in range(n)]
    table = placed(plan_copies(SlotTable.initial(ids), ids, copies), SlotTable.initial(ids))
    ideal_add, ideal_remove = _ideal_moves(n, copies)
    grown = plan_copies(table, [*ids, "z"], copies)
    check_placement(grown, table, [*ids, "z"], copies)
    added = grown.added(table)
    assert len(added["z"]) == pytest.approx(ideal_add, abs=2)
    assert sum(len(s) for s in added.values()) <= 2.5 * ideal_add
    shrunk = plan_copies(table, ids[1:], copies)
    check_placement(shrunk, table, ids[1:], copies)
    assert sum(len(s) for s in shrunk.added(table).values()) <= 2.5 * ideal_remove
    assert len(grown.copy_sets) <= 2 * (n + 1) ** 2  # copy sets stay few, contiguous runs

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dscluster.core.planner import apply, plan
from dscluster.core.slots import SLOT_COUNT, SlotSet
from dscluster.core.table import SlotTable
from dscluster.errors import BadRequestError


def moved(moves) -> int:
    return sum(len(m.slots) for m in moves)


def test_adding_a_fourth_node_moves_a_quarter_evenly_from_the_three() -> None:
    table = SlotTable.initial(["a", "b", "c"])
    moves = plan(table, ["a", "b", "c", "d"])
    assert moved(moves) == SLOT_COUNT // 4
    assert {m.target for m in moves} == {"d"}
    given_away = {m.source: len(m.slots) for m in moves}
    assert sorted(given_away) == ["a", "b", "c"]
    assert max(given_away.values()) - min(given_away.values()) <= 1
    assert apply(table, moves) == {"a": 4096, "b": 4096, "c": 4096, "d": 4096}
    assert all(len(m.slots.ranges) == 1 for m in moves)  # each donor gives one range


def test_removing_a_node_spreads_its_slots_over_the_rest() -> None:
    table = SlotTable.initial(["a", "b", "c", "d"])
    moves = plan(table, ["a", "b", "c"])
    assert moved(moves) == 4096 and {m.source for m in moves} == {"d"}
    counts = apply(table, moves)
    assert "d" not in counts and max(counts.values()) - min(counts.values()) <= 1


def test_balanced_cluster_plans_nothing_and_weights_are_honoured() -> None:
    table = SlotTable.initial(["a", "b"])
    assert plan(table, ["a", "b"]) == []
    counts = apply(table, plan(table, {"a": 3.0, "b": 1.0}))
    assert counts == {"a": 12288, "b": 4096}


def test_bad_membership_is_refused() -> None:
    table = SlotTable.initial(["a"])
    for members in ([], {"a": 0.0}, {"a": float("nan")}):
        with pytest.raises(BadRequestError):
            plan(table, members)
    with pytest.raises(BadRequestError):
        plan(SlotTable.empty(), ["a"])


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.lists(st.integers(0, 7), min_size=1, max_size=8, unique=True),
       st.lists(st.tuples(st.integers(0, SLOT_COUNT - 1), st.integers(0, 3000), st.integers(0, 5)),
                max_size=4))
def test_plans_are_minimal_and_even(n: int, target_ids: list[int], skew) -> None:
    ids = [f"n{i}" for i in range(n)]
    table = SlotTable.initial(ids)
    for start, length, who in skew:  # make the start uneven
        table.assign(SlotSet.of([(start, min(SLOT_COUNT - 1, start + length))]), (1, ids[who % n]))
    members = [f"n{i}" for i in target_ids]
    moves = plan(table, members)
    counts = apply(table, moves)
    assert set(counts) <= set(members) and sum(counts.values()) == SLOT_COUNT
    assert max(counts.values()) - min(counts.get(m, 0) for m in members) <= 1
    # minimal: every node keeps min(owned, final) slots, so nothing moves that need not
    before = {k: v for k, v in table.slot_counts().items()}
    lower_bound = sum(max(0, before.get(m, 0) - counts.get(m, 0)) for m in before)
    assert moved(moves) == lower_bound
    seen: set[int] = set()
    for m in moves:  # no slot moves twice, each from its current owner
        assert not seen & set(m.slots)
        seen |= set(m.slots)
        assert all(table.owner(s) == m.source for s in m.slots)

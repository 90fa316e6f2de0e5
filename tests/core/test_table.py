import json

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dscluster.core.slots import SLOT_COUNT, SlotSet
from dscluster.core.table import NodeInfo, NodeRole, SlotTable
from dscluster.errors import ConfigError, ProtocolError
from dscluster.tableconfig import table_from_config, table_to_config

PEERS = ["QmA", "QmB", "QmC", "QmD"]

# A table view: a few claims laid over the initial split, in the first two buckets
claims_st = st.lists(
    st.tuples(st.integers(0, 511), st.integers(0, 40), st.integers(0, 3), st.sampled_from(PEERS)),
    max_size=6,
)
nodes_st = st.lists(
    st.builds(NodeInfo, st.sampled_from(PEERS), st.sampled_from([(), ("/ip4/127.0.0.1/tcp/1",)]),
              st.sampled_from(list(NodeRole)), st.integers(0, 3)),
    max_size=3,
)


def make_view(claims: list[tuple[int, int, int, str]], nodes: list[NodeInfo]) -> SlotTable:
    table = SlotTable.initial(PEERS[:3])
    for start, length, epoch, owner in claims:
        table.assign(SlotSet.of([(start, min(start + length, SLOT_COUNT - 1))]), (epoch, owner))
    table.merge_nodes(nodes)
    return table


view_st = st.builds(make_view, claims_st, nodes_st)


def merged(*views: SlotTable) -> SlotTable:
    out = views[0].copy()
    for v in views[1:]:
        out.merge(v)
    return out


@settings(max_examples=60, deadline=None)
@given(view_st, view_st, view_st)
def test_merge_is_a_semilattice(a: SlotTable, b: SlotTable, c: SlotTable) -> None:
    assert merged(a, b) == merged(b, a)
    assert merged(merged(a, b), c) == merged(a, merged(b, c))
    assert merged(a, a) == a
    assert merged(a, b, b) == merged(a, b)


@settings(max_examples=30, deadline=None)
@given(st.lists(view_st, min_size=2, max_size=4), st.randoms(use_true_random=False))
def test_any_delivery_order_converges(views: list[SlotTable], rnd) -> None:
    """Nodes gossiping pairwise in random order, with duplicates, all reach the join."""
    expected = merged(*views)
    nodes = [v.copy() for v in views]
    pairs = [(i, j) for i in range(len(nodes)) for j in range(len(nodes)) if i != j]
    deliveries = pairs * 2
    rnd.shuffle(deliveries)
    for i, j in deliveries + pairs:  # a final round so every view has reached every node
        nodes[j].merge(nodes[i])
    for i, j in pairs:
        nodes[j].merge(nodes[i])
    assert all(n == expected for n in nodes)


def test_higher_epoch_wins_and_equal_epoch_tie_breaks_by_owner() -> None:
    t = SlotTable.initial(["QmA", "QmB"])
    u = t.copy()
    u.assign(SlotSet.of([(0, 9)]), (3, "QmB"))
    t.assign(SlotSet.of([(5, 14)]), (3, "QmC"))
    result = u.merge(t, me="QmB")
    assert u.claim(0) == (3, "QmB") and u.claim(5) == (3, "QmC") and u.claim(14) == (3, "QmC")
    # QmB lost slots 5..9 in an equal-epoch collision: it is told so it can bump its epoch
    assert [slot for slot, _, _ in result.lost] == [5, 6, 7, 8, 9]
    assert t.merge(u, me="QmC").lost == []


def test_membership_merge_retires_with_higher_version() -> None:
    t = SlotTable.initial(["QmA", "QmB"])
    assert not t.merge_nodes([NodeInfo("QmB", (), NodeRole.RETIRED, 0)])
    assert t.merge_nodes([NodeInfo("QmB", (), NodeRole.RETIRED, 2)])
    assert t.data_nodes() == ["QmA"]


def test_cbor_round_trip_and_digest() -> None:
    t = SlotTable.initial(PEERS[:3], {"QmA": ["/ip4/127.0.0.1/tcp/4001"]})
    t.assign(SlotSet.of([(100, 300)]), (2, "QmC"))
    u = SlotTable.from_cbor(t.to_cbor())
    assert u == t and u.digest() == t.digest()
    v = SlotTable.initial(PEERS[:3])
    assert v.differing_buckets(t.digest()) == [0, 1]
    v.merge_runs(t.runs([0, 1]))
    assert v.differing_buckets(t.digest()) == []
    assert v.digest().members != t.digest().members


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\xff", cbor2.dumps([1, 2]), cbor2.dumps({"runs": [[0, 10, 0, "a"]], "nodes": []}),
     cbor2.dumps({"runs": [[0, SLOT_COUNT - 1, 0, "a"], [0, 0, 1, "b"]], "nodes": []}),
     cbor2.dumps({"runs": [[0, SLOT_COUNT - 1, "x", "a"]], "nodes": []}),
     cbor2.dumps({"runs": [[0, SLOT_COUNT - 1, 0, "a"]], "nodes": [{"id": 3}]})],
)
def test_cbor_decoder_rejects_garbage(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        SlotTable.from_cbor(data)


def test_config_form_round_trip_and_go_form() -> None:
    t = SlotTable.initial(["QmA", "QmB", "QmC"], {"QmA": ["/ip4/127.0.0.1/tcp/4001"]})
    t.assign(SlotSet.of([(0, 99)]), (4, "QmC"))
    written = json.loads(json.dumps(table_to_config(t)))
    assert written[2]["slots"] == [{"start": 0, "end": 99, "epoch": 4},
                                   {"start": 10923, "end": 16383, "epoch": 0}]
    assert table_from_config(written) == t
    go_form = [{"id": "QmA", "slots": {"start": 0, "end": 5460}, "swarm": "/ip4/1.2.3.4/tcp/1"},
               {"id": "QmB", "slots": {"start": 5461, "end": 10922}},
               {"id": "QmC", "slots": {"start": 10923, "end": 16383}}]
    g = table_from_config(go_form)
    assert g.runs() == SlotTable.initial(["QmA", "QmB", "QmC"]).runs()
    assert g.nodes["QmA"].addrs == ("/ip4/1.2.3.4/tcp/1",)


@pytest.mark.parametrize(
    "nodes",
    [None, [], [1], [{"id": ""}], [{"id": "a", "slots": "0-5"}],
     [{"id": "a", "slots": {"start": 0, "end": 16383}}, {"id": "a", "slots": []}],
     [{"id": "a", "slots": {"start": 0, "end": 100}}],
     [{"id": "a", "slots": {"start": 0, "end": 16384}}],
     [{"id": "a", "slots": [{"start": 0, "end": 16383}]}, {"id": "b", "slots": {"start": 5, "end": 5}}],
     [{"id": "a", "slots": {"start": 0, "end": 16383}, "swarm": 5}],
     [{"id": "a", "slots": {"start": 0, "end": 16383}, "role": "boss"}]],
)
def test_config_decoder_rejects_garbage(nodes) -> None:
    with pytest.raises(ConfigError):
        table_from_config(nodes)

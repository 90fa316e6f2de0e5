"""Copy sets and the `copies` setting in the slot table (doc/copies.md)."""

import json

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dscluster.core.slots import SLOT_COUNT, SlotSet
from dscluster.core.table import (
    ClientInfo,
    ClientRole,
    ClusterSettings,
    NodeInfo,
    NodeRole,
    SlotTable,
    decode_copy_runs,
)
from dscluster.errors import ConfigError, ProtocolError
from dscluster.tableconfig import (
    settings_from_config,
    settings_to_config,
    table_from_config,
    table_to_config,
)

PEERS = ["QmA", "QmB", "QmC", "QmD"]

# One change to a view: slots [start, start + length] get (epoch, owner) and, when
# `reps` is not None, the replicas drawn from the other peers (a copy set change).
change_st = st.tuples(st.integers(0, 600), st.integers(0, 40), st.integers(0, 3),
                      st.sampled_from(PEERS),
                      st.none() | st.lists(st.sampled_from(PEERS), max_size=3, unique=True))
settings_st = st.builds(ClusterSettings, st.integers(1, 3), st.integers(0, 2))
nodes_st = st.lists(st.builds(NodeInfo, st.sampled_from(PEERS), st.just(()),
                              st.sampled_from(list(NodeRole)), st.integers(0, 3)), max_size=2)


def make_view(changes, nodes, setting) -> SlotTable:
    table = SlotTable.initial(PEERS[:3])
    for start, length, epoch, owner, reps in changes:
        slots = SlotSet.of([(start, min(start + length, SLOT_COUNT - 1))])
        replicas = [r for r in reps or () if r != owner]
        table.assign(slots, (epoch, owner), replicas)
    table.merge_nodes(nodes)
    table.merge_settings(setting)
    return table


view_st = st.builds(make_view, st.lists(change_st, max_size=6), nodes_st, settings_st)


def merged(*views: SlotTable) -> SlotTable:
    out = views[0].copy()
    for v in views[1:]:
        out.merge(v)
    return out


def entries(table: SlotTable) -> list:
    return [table.entry(s) for s in range(SLOT_COUNT)]


@settings(max_examples=80, deadline=None)
@given(view_st, view_st, view_st)
def test_merge_with_copy_sets_is_a_semilattice(a, b, c) -> None:
    ab = merged(a, b)
    assert ab == merged(b, a)
    assert merged(ab, c) == merged(a, merged(b, c))
    assert merged(a, a) == a and merged(ab, b) == ab
    # the join is the per-slot max of full entries (epoch, owner, replicas), and of settings
    assert entries(ab) == [max(x, y) for x, y in zip(entries(a), entries(b), strict=True)]
    assert ab.settings == max(a.settings, b.settings, key=ClusterSettings.order_key)
    assert ab.dominates(a) and ab.dominates(b)
    # digests agree exactly when the tables do
    assert ab.digest() == merged(b, a).digest()
    assert (a.digest() == b.digest()) == (a == b)


@settings(max_examples=30, deadline=None)
@given(st.lists(view_st, min_size=2, max_size=4), st.randoms(use_true_random=False))
def test_any_delivery_order_converges_with_copy_sets(views, rnd) -> None:
    """Pairwise merges in random order, with duplicates, every form of the wire:
    whole tables, bucket runs with replicas, and plain runs (a node that predates copies)."""
    expected = merged(*views)
    nodes = [v.copy() for v in views]
    pairs = [(i, j) for i in range(len(nodes)) for j in range(len(nodes)) if i != j]
    deliveries = pairs * 2
    rnd.shuffle(deliveries)
    for k, (i, j) in enumerate(deliveries):
        how = k % 3
        if how == 0:
            nodes[j].merge(nodes[i])
        elif how == 1:  # a Pong: the differing buckets' entries
            diff = nodes[j].differing_buckets(nodes[i].digest())
            nodes[j].merge_copy_runs(nodes[i].copy_runs(diff))
        else:  # plain claims only: may raise claims, never lowers an entry
            before = nodes[j].copy()
            nodes[j].merge_runs(nodes[i].runs())
            assert nodes[j].dominates(before)
    for _ in range(2):
        for i, j in pairs:
            nodes[j].merge(nodes[i])
    assert all(n == expected for n in nodes)
    assert all(n.digest() == expected.digest() for n in nodes)


def test_replicas_at_equal_claim_win_and_a_new_claim_starts_without_them() -> None:
    t = SlotTable.initial(["QmA", "QmB", "QmC"])
    u = t.copy()
    u.assign(SlotSet.of([(0, 9)]), (1, "QmA"), ["QmB", "QmC"])
    assert u.copies(5) == ("QmA", "QmB", "QmC") and u.replicas(5) == ("QmB", "QmC")
    assert u.entry(10) == (0, "QmA", ())
    # an old node gossips the plain claim (1, QmA): it loses to the entry with replicas
    assert u.merge_runs([(0, 9, 1, "QmA")]).changed == []
    assert u.copies(0) == ("QmA", "QmB", "QmC")
    t.merge(u)
    assert t == u and t.digest() == u.digest()
    # a migration flip (a higher plain claim) replaces the copy set with its primary alone
    assert u.merge_runs([(0, 4, 2, "QmB")]).changed == [0, 1, 2, 3, 4]
    assert u.copies(0) == ("QmB",) and u.copies(5) == ("QmA", "QmB", "QmC")
    assert u.replica_slots_of("QmC") == SlotSet.of([(5, 9)])
    assert u.replica_counts() == {"QmB": 5, "QmC": 5}


def test_equal_epoch_loss_with_replicas_is_reported() -> None:
    t = SlotTable.initial(["QmA", "QmB"])
    t.assign(SlotSet.of([(0, 3)]), (4, "QmA"), ["QmB"])
    result = t.merge_copy_runs([(0, 1, 4, "QmC", ("QmA",))], me="QmA")
    assert [slot for slot, _, _ in result.lost] == [0, 1]
    assert t.copies(0) == ("QmC", "QmA")


def test_no_two_copies_of_a_slot_on_one_node() -> None:
    t = SlotTable.initial(["QmA", "QmB"])
    for reps in (["QmA"], ["QmB", "QmB"], [""]):
        with pytest.raises(ValueError):
            t.assign(SlotSet.of([(0, 0)]), (1, "QmA"), reps)
    assert t.copies(0) == ("QmA",)  # nothing changed
    with pytest.raises(ProtocolError):
        decode_copy_runs([[0, 3, 1, "QmA", ["QmB", "QmA"]]])
    assert decode_copy_runs([[0, 3, 1, "QmA", ["QmB"]], [4, 4, 0, "QmB"]]) == [
        (0, 3, 1, "QmA", ("QmB",)), (4, 4, 0, "QmB", ())]
    with pytest.raises(ProtocolError):
        decode_copy_runs([[0, 3, -1, "", ["QmB"]]])


# Written by the code before copies (commit 4d34fdf): SlotTable.initial(QmA..QmC),
# slots 100-300 claimed (2, QmC), one read-only client. State files hold this form.
OLD_TABLE = bytes.fromhex(
    "a36472756e7385840018630063516d4184186419012c0263516d438419012d1915540063516d41"
    "84191555192aaa0063516d4284192aab193fff0063516d43656e6f64657383a462696463516d41"
    "65616464727381772f6970342f3132372e302e302e312f7463702f3430303164726f6c65646461"
    "74616776657273696f6e01a462696463516d426561646472738064726f6c656464617461677665"
    "7273696f6e01a462696463516d436561646472738064726f6c6564646174616776657273696f6e"
    "0167636c69656e747381a362696463516d5864726f6c6569726561642d6f6e6c79677665727369"
    "6f6e05")
OLD_DIGEST = {0: "c2f8132457c50f18", 1: "4705255098f9b947", 63: "ae9ed7a097f4746c",
              "members": "3e476c5cee4cbc73", "roles": "0c4ed7582d42b1eb"}


def test_a_table_written_before_copies_decodes_and_encodes_the_same() -> None:
    t = SlotTable.from_cbor(OLD_TABLE)
    assert t.settings == ClusterSettings(1, 0) and not t.has_replicas()
    assert t.copies(200) == ("QmC",) and t.copies(0) == ("QmA",)
    assert t.client_role("QmX") is ClientRole.READ_ONLY
    assert t.to_cbor() == OLD_TABLE  # no new keys while there is nothing to say
    d = t.digest()
    assert {0: d.buckets[0].hex(), 1: d.buckets[1].hex(), 63: d.buckets[63].hex(),
            "members": d.members.hex(), "roles": d.roles.hex()} == OLD_DIGEST


def test_cbor_round_trip_with_copy_sets_and_settings() -> None:
    t = SlotTable.initial(PEERS[:3])
    t.assign(SlotSet.of([(0, 5460)]), (1, "QmA"), ["QmB"])
    t.assign(SlotSet.of([(5461, 5470)]), (1, "QmB"), ["QmC", "QmA"])
    t.merge_settings(ClusterSettings(2, 7))
    t.merge_clients([ClientInfo("QmX", ClientRole.ADMIN, 1)])
    obj = cbor2.loads(t.to_cbor())
    assert obj["replicas"] == [[0, 5460, ["QmB"]], [5461, 5470, ["QmC", "QmA"]]]
    assert obj["settings"] == {"copies": 2, "version": 7}
    u = SlotTable.from_cbor(t.to_cbor())
    assert u == t and u.digest() == t.digest()
    assert u.digest().members != SlotTable.from_cbor(OLD_TABLE).digest().members


@pytest.mark.parametrize("extra", [
    {"replicas": 3}, {"replicas": [[0, 1]]}, {"replicas": [[0, 1, []]]},
    {"replicas": [[0, 1, ["a"]]]},  # the primary twice
    {"replicas": [[0, 1, ["b", "b"]]]}, {"replicas": [[0, 1, ["b"]], [1, 2, ["c"]]]},
    {"replicas": [[0, SLOT_COUNT, ["b"]]]}, {"replicas": [[0, 1, [7]]]},
    {"settings": 2}, {"settings": {"copies": 0}}, {"settings": {"copies": 1, "version": -1}},
    {"settings": {"copies": "2"}}])
def test_cbor_decoder_rejects_bad_copies(extra) -> None:
    obj = {"runs": [[0, SLOT_COUNT - 1, 0, "a"]], "nodes": [], **extra}
    with pytest.raises(ProtocolError):
        SlotTable.from_cbor(cbor2.dumps(obj))


def test_config_form_with_copies_round_trips_and_go_form_reads_as_one_copy() -> None:
    go_doc = {"nodes": [{"id": "QmA", "slots": {"start": 0, "end": 16383}}]}
    assert settings_from_config(go_doc) == ClusterSettings(1, 0)
    plain = table_from_config(go_doc["nodes"], settings_from_config(go_doc))
    assert settings_to_config(plain) == {} and "replicas" not in table_to_config(plain)[0]
    t = SlotTable.initial(PEERS[:3], {"QmA": ["/ip4/127.0.0.1/tcp/4001"]})
    t.assign(SlotSet.of([(0, 99)]), (4, "QmA"), ["QmB", "QmC"])
    t.assign(SlotSet.of([(100, 199)]), (4, "QmA"), ["QmC"])
    t.merge_settings(ClusterSettings(3, 0))
    doc = json.loads(json.dumps({"nodes": table_to_config(t), **settings_to_config(t)}))
    assert doc["copies"] == 3
    assert doc["nodes"][0]["slots"][0] == {"start": 0, "end": 199, "epoch": 4}
    assert doc["nodes"][2]["replicas"] == [{"start": 0, "end": 99, "copy": 2},
                                           {"start": 100, "end": 199, "copy": 1}]
    assert table_from_config(doc["nodes"], settings_from_config(doc)) == t


@pytest.mark.parametrize("replicas", [
    [{"start": 0, "end": 5, "copy": 1}],  # QmA is the primary of 0-5
    [{"start": 6000, "end": 6001, "copy": 2}],  # copy 2 without a copy 1
    [{"start": 0, "end": 5}], [{"start": 0, "end": 5, "copy": 0}], "0-5", [3]])
def test_config_decoder_rejects_bad_replicas(replicas) -> None:
    nodes = [{"id": "QmA", "slots": {"start": 0, "end": 5460}, "replicas": replicas},
             {"id": "QmB", "slots": {"start": 5461, "end": 16383}}]
    with pytest.raises(ConfigError):
        table_from_config(nodes)


def test_config_two_nodes_as_the_same_copy_are_refused() -> None:
    nodes = [{"id": "QmA", "slots": {"start": 0, "end": 16383}},
             {"id": "QmB", "replicas": [{"start": 0, "end": 5, "copy": 1}]},
             {"id": "QmC", "replicas": [{"start": 5, "end": 5, "copy": 1}]}]
    with pytest.raises(ConfigError, match="two copies numbered 1"):
        table_from_config(nodes)
    for bad in (0, 17, "2", 2.0):
        with pytest.raises(ConfigError):
            settings_from_config({"copies": bad})

"""ClusterCore driven through a fake in-process network (etcd-raft's `network` style)."""

import random

import cbor2
import pytest

from dscluster.core.gossip import GossipConfig, Liveness
from dscluster.core.messages import (
    Handoff,
    HandoffAck,
    MigrateAbort,
    MigrateBegin,
    MigrateBeginAck,
    Ping,
    Pong,
    TableDelta,
    decode,
    encode,
)
from dscluster.core.migration import Event, Migration, Phase
from dscluster.core.node import ClusterCore, ListKeys, MoveKeys, PersistentState
from dscluster.core.routing import Ask, Moved, Serve
from dscluster.core.slots import SlotSet, key_slot
from dscluster.core.table import NodeInfo, SlotTable
from dscluster.errors import BadRequestError, ProtocolError, UnavailableError

CFG = GossipConfig(heartbeat_ticks=1, pfail_ticks=3, fail_window_ticks=6, retry_ticks=2,
                   batch_keys=2)
IDS = ["A", "B", "C"]


class Net:
    """Cores, their datastores and disks, and links that can be cut."""

    def __init__(self, cores: list[ClusterCore]) -> None:
        self.cores = {c.me: c for c in cores}
        self.data: dict[str, dict[str, str]] = {c.me: {} for c in cores}
        self.disk: dict[str, bytes] = {}
        self.cut: set[str] = set()  # isolated nodes
        self.cut_links: set[frozenset[str]] = set()  # pairs that cannot hear each other
        self.hold_actions = False
        self.actions: list[tuple[str, object]] = []

    def flush(self, limit: int = 100) -> None:
        for _ in range(limit):
            busy = False
            for me, core in list(self.cores.items()):
                rd = core.ready()
                if rd.state is not None:
                    self.disk[me] = rd.state.to_cbor()
                for peer, msg in rd.messages:
                    busy = True
                    if (me not in self.cut and peer not in self.cut and peer in self.cores
                            and frozenset((me, peer)) not in self.cut_links):
                        self.cores[peer].step(me, decode(encode(msg)))
                for action in rd.actions:
                    busy = True
                    if self.hold_actions:
                        self.actions.append((me, action))
                    else:
                        self.run_action(me, action)
                core.advance(rd)
            if not busy:
                return

    def run_action(self, me: str, action: object) -> None:
        core, data = self.cores[me], self.data[me]
        if isinstance(action, ListKeys):
            slots = SlotSet(action.ranges)
            core.keys_listed(action.mid, sorted(k for k in data if key_slot(k) in slots)[:action.limit])
        elif isinstance(action, MoveKeys):
            target = self.cores[action.target]
            assert all(target.accepts_import(k, me) for k in action.keys)
            self.data[action.target].update({k: data[k] for k in action.keys})
            for k in action.keys:
                del data[k]
            core.keys_moved(action.mid, list(action.keys))

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            for core in self.cores.values():
                core.tick()
            self.flush()


def cluster(ids: list[str] = IDS) -> Net:
    table = SlotTable.initial(ids)
    return Net([ClusterCore.bootstrap(i, table, rng=random.Random(i), config=CFG) for i in ids])


def keys_in(slots: range, count: int) -> list[str]:
    out, i = [], 0
    while len(out) < count:
        key = f"/k/{i}"
        if key_slot(key) in slots:
            out.append(key)
        i += 1
    return out


def test_route_serves_owner_and_moves_others() -> None:
    net = cluster()
    a, b = net.cores["A"], net.cores["B"]
    key = "/foo"  # slot 3194: A's range 0-5460
    assert a.route(key, exists_locally=False, asking=False) == Serve()
    assert b.route(key, exists_locally=True, asking=True) == Moved(3194, "A")
    joiner = ClusterCore.joining("D", ["A"], rng=random.Random(0), config=CFG)
    with pytest.raises(UnavailableError):
        joiner.route(key, exists_locally=False, asking=False)


def test_gossip_converges_and_is_cheap_when_tables_agree() -> None:
    net = cluster()
    net.tick(2)
    pings = [m for _, m in net.cores["A"].ready().messages]
    net.cores["A"].tick()
    rd = net.cores["A"].ready()
    assert pings == [] and all(isinstance(m, Ping) for _, m in rd.messages)
    assert all(len(encode(m)) < 1000 for _, m in rd.messages)
    net.flush()
    # a node that fell behind (here: a claim it never heard) catches up in one exchange
    net.cores["C"].table.assign(SlotSet.of([(0, 9)]), (7, "C"))
    net.tick(1)
    assert all(c.table.claim(5) == (7, "C") for c in net.cores.values())
    assert net.cores["A"].epoch == net.cores["B"].epoch == 7


def test_full_migration_moves_keys_and_flips_ownership_with_a_new_epoch() -> None:
    net = cluster()
    a, b, c = (net.cores[i] for i in IDS)
    slots = range(100, 200)
    keys = keys_in(slots, 5)
    net.data["A"].update({k: "v-" + k for k in keys})
    net.hold_actions = True
    mid = a.start_migration(SlotSet.of([(100, 199)]), "B")
    net.flush()
    assert [m.phase for m in a.migrations] == [Phase.MIGRATING]
    assert [m.phase for m in b.migrations] == [Phase.IMPORTING]
    k, missing = keys[0], keys_in(slots, 6)[5]
    s = key_slot(k)
    # Redis's rules while the slot migrates
    assert a.route(k, exists_locally=True, asking=False) == Serve(forward_deletes_to="B")
    assert a.route(missing, exists_locally=False, asking=False) == Ask(key_slot(missing), "B")
    assert b.route(k, exists_locally=False, asking=True) == Serve()
    assert b.route(k, exists_locally=False, asking=False) == Moved(s, "A")
    assert c.route(k, exists_locally=False, asking=False) == Moved(s, "A")
    assert b.accepts_import(k, "A") and not b.accepts_import(k, "C")
    # the daemon now carries out the actions: list, move in batches of 2, list until empty
    net.hold_actions = False
    for me, action in net.actions:
        net.run_action(me, action)
    net.flush()
    assert net.data["B"] == {k: "v-" + k for k in keys} and net.data["A"] == {}
    assert a.migrations == () and b.migrations == ()
    for core in (a, b, c):
        assert core.table.claim(150) == (1, "B"), core.me
        assert core.route(k, exists_locally=False, asking=False) == (
            Serve() if core.me == "B" else Moved(s, "B"))
    with pytest.raises(BadRequestError):
        a.keys_listed(mid, [])


def test_restart_mid_migration_resumes_from_persisted_state() -> None:
    net = cluster()
    keys = keys_in(range(0, 50), 3)
    net.data["A"].update({k: "x" for k in keys})
    net.hold_actions = True
    net.cores["A"].start_migration(SlotSet.of([(0, 49)]), "B")
    net.flush()
    # A dies with its first ListKeys unexecuted, B dies too; both come back from disk
    net.actions.clear()
    net.hold_actions = False
    for me in ("A", "B"):
        state = PersistentState.from_cbor(net.disk[me])
        net.cores[me] = ClusterCore(me, state, rng=random.Random(1), config=CFG)
    assert [m.phase for m in net.cores["B"].migrations] == [Phase.IMPORTING]
    net.flush()
    net.tick(3)
    assert net.data["A"] == {} and set(net.data["B"]) == set(keys)
    assert all(c.table.owner(10) == "B" for c in net.cores.values())


def test_lost_handoff_ack_is_finished_by_gossip() -> None:
    net = cluster()
    a = net.cores["A"]
    a.start_migration(SlotSet.of([(0, 9)]), "B")
    net.flush(limit=2)  # begin, ack; A lists (empty) and sends Handoff
    net.cut.add("A")
    net.flush()
    net.cut.clear()
    assert [m.phase for m in a.migrations] in ([Phase.HANDOFF], [])
    net.tick(4)
    assert a.migrations == () and a.table.owner(5) == "B"


def test_abort_only_before_keys_can_move_and_illegal_transitions_raise() -> None:
    net = cluster()
    a, b = net.cores["A"], net.cores["B"]
    mid = a.start_migration(SlotSet.of([(0, 9)]), "B")
    a.abort_migration(mid)
    net.flush()
    assert a.migrations == () and b.migrations == ()
    net.hold_actions = True
    mid = a.start_migration(SlotSet.of([(0, 9)]), "B")
    net.flush()
    with pytest.raises(BadRequestError):
        a.abort_migration(mid)
    m = Migration(1, SlotSet.of([(0, 1)]), "A", "B", Phase.HANDOFF)
    with pytest.raises(BadRequestError):
        m.on(Event.ABORT)
    assert m.on(Event.BEGIN_ACKED) is m  # a duplicate ack is a no-op


@pytest.mark.parametrize("slots,target", [
    (SlotSet.of([(6000, 6001)]), "B"),  # owned by B, not A
    (SlotSet.of([(0, 1)]), "A"),  # to itself
    (SlotSet.of([(0, 1)]), "Z"),  # not a member
    (SlotSet(), "B"),
])
def test_bad_migration_requests_are_refused(slots: SlotSet, target: str) -> None:
    a = cluster().cores["A"]
    with pytest.raises(BadRequestError):
        a.start_migration(slots, target)
    assert a.migrations == ()


def test_overlapping_migrations_are_refused() -> None:
    a = cluster().cores["A"]
    a.start_migration(SlotSet.of([(0, 10)]), "B")
    with pytest.raises(BadRequestError):
        a.start_migration(SlotSet.of([(10, 20)]), "C")


def test_failure_detection_pfail_then_fail_by_majority_then_up() -> None:
    net = cluster()
    net.tick(2)
    net.cut.add("C")
    net.tick(CFG.pfail_ticks + 1)
    assert net.cores["A"].liveness("C") in (Liveness.PFAIL, Liveness.FAIL)
    net.tick(2)
    assert net.cores["A"].liveness("C") is Liveness.FAIL
    assert net.cores["B"].liveness("C") is Liveness.FAIL
    assert net.cores["A"].liveness("B") is Liveness.UP
    net.cut.clear()
    net.tick(1)
    assert net.cores["A"].liveness("C") is Liveness.UP


def test_one_suspicious_node_cannot_fail_a_peer_alone() -> None:
    net = cluster(["A", "B", "C", "D", "E"])
    net.tick(1)
    net.cut.add("E")
    net.cut.add("D")  # D cannot vote; A, B, C are a majority of 5 and agree
    net.tick(CFG.pfail_ticks + 3)
    assert net.cores["A"].liveness("E") is Liveness.FAIL
    solo = cluster(["A", "B", "C"])
    solo.tick(1)
    # only A stops hearing from C: B still hears C, so C never gets a majority
    solo.cores["A"].step("B", Ping((b"",) * 64, b"", 0, (), ()))
    for _ in range(CFG.fail_window_ticks):
        solo.cores["A"].tick()
        solo.cores["A"].ready()
    assert solo.cores["A"].liveness("C") is Liveness.PFAIL


def test_joining_node_learns_the_table_and_becomes_a_member() -> None:
    net = cluster()
    d = ClusterCore.joining("D", ["A"], rng=random.Random(4), config=CFG)
    net.cores["D"], net.data["D"] = d, {}
    net.tick(1)
    assert d.table == net.cores["A"].table and "D" not in d.table.nodes
    net.cores["A"].add_member("D", ["/ip4/127.0.0.1/tcp/4001"])
    net.tick(2)
    assert all(c.table.nodes["D"].addrs == ("/ip4/127.0.0.1/tcp/4001",)
               for c in net.cores.values())
    with pytest.raises(BadRequestError):
        net.cores["A"].remove_member("B")  # still owns slots
    net.cores["A"].remove_member("D")
    net.tick(2)
    assert all(c.table.data_nodes() == IDS for c in net.cores.values())


def test_epoch_collision_loser_bumps_its_epoch() -> None:
    net = cluster()
    a, c = net.cores["A"], net.cores["C"]
    a.table.assign(SlotSet.of([(0, 0)]), (5, "A"))
    c.table.assign(SlotSet.of([(0, 0)]), (5, "C"))
    a.step("C", TableDelta(((0, 0, 5, "C"),)))
    assert a.table.claim(0) == (5, "C") and a.epoch == 6


def test_messages_round_trip_and_garbage_is_a_protocol_error() -> None:
    t = SlotTable.initial(IDS)
    d = t.digest()
    msgs = [Ping(d.buckets, d.members, 3, ("B",), ("C",)),
            Pong(d.buckets, d.members, 3, (), (), tuple(t.runs()), (NodeInfo("A"),)),
            TableDelta(((0, 5, 1, "A"),)), MigrateBegin(1, ((0, 5),)), MigrateBeginAck(1),
            MigrateAbort(1), Handoff(1, 4), HandoffAck(1, ((0, 5),), 5)]
    for m in msgs:
        assert decode(encode(m)) == m
    for junk in [b"", b"\x00\x01", cbor2.dumps([]), cbor2.dumps({"t": "nope"}),
                 cbor2.dumps([Ping.TAG]), cbor2.dumps([Handoff.TAG, "1", 2]),
                 cbor2.dumps([TableDelta.TAG, [[0, 99999, 1, "A"]], []]),
                 cbor2.dumps([TableDelta.TAG, [], [[""]]]),
                 cbor2.dumps([MigrateBegin.TAG, 1, [[0]]])]:
        with pytest.raises(ProtocolError):
            decode(junk)
    with pytest.raises(ProtocolError):
        PersistentState.from_cbor(b"\xff")
    a = cluster().cores["A"]
    with pytest.raises(ProtocolError):
        a.step("B", Ping((b"x",), b"", 0))  # wrong digest size
    with pytest.raises(ProtocolError):
        a.step("B", MigrateBegin(9, ((5, 2),)))  # inverted range


def test_persist_before_send_state_comes_with_the_ack() -> None:
    net = cluster()
    net.cores["A"].start_migration(SlotSet.of([(0, 9)]), "B")
    rd = net.cores["A"].ready()
    assert rd.state is not None and isinstance(rd.messages[0][1], MigrateBegin)
    net.cores["A"].advance(rd)
    net.cores["B"].step("A", rd.messages[0][1])
    rd_b = net.cores["B"].ready()
    # the ack travels in the same Ready as the IMPORTING record it acknowledges
    assert rd_b.state is not None and [m.phase for m in rd_b.state.migrations] == [Phase.IMPORTING]
    assert (("A", MigrateBeginAck(1)) in rd_b.messages)


def test_fanout_limits_pings_yet_every_peer_hears_within_half_the_timeout() -> None:
    ids = [f"N{i}" for i in range(9)]
    cfg = GossipConfig(heartbeat_ticks=1, pfail_ticks=6, fanout=2)
    table = SlotTable.initial(ids)
    core = ClusterCore.bootstrap("N0", table, rng=random.Random(3), config=cfg)
    core.advance(core.ready())
    heard: dict[str, list[int]] = {p: [] for p in ids[1:]}
    for now in range(1, 25):
        core.tick()
        rd = core.ready()
        core.advance(rd)
        pinged = [p for p, m in rd.messages if isinstance(m, Ping)]
        assert len(pinged) < len(ids) - 1 or now == 1  # the first beat reaches everyone
        for p in pinged:
            heard[p].append(now)
    for times in heard.values():
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert times and max(gaps, default=0) <= cfg.pfail_ticks // 2 + 1


def test_copy_sets_and_settings_travel_by_gossip_and_old_peers_still_read_the_claims() -> None:
    from dscluster.core.table import ClusterSettings

    net = cluster()
    net.tick(2)
    a = net.cores["A"]
    # A copy set at a fresh epoch and a new setting, made on A alone (as an election would)
    a.table.assign(SlotSet.of([(10, 20)]), (9, "A"), ["B", "C"])
    a.table.merge_settings(ClusterSettings(copies=3, version=1))
    net.tick(2)
    for core in net.cores.values():
        assert core.table.copies(15) == ("A", "B", "C")
        assert core.table.copies(21) == (core.table.owner(21),)
        assert core.table.settings == ClusterSettings(copies=3, version=1)
        assert core.table.digest() == a.table.digest()
    # A peer from before copies reads only the fields it knows: the claims.
    raw = cbor2.loads(encode(a._delta([0])))
    assert raw[4] == [[10, 20, 9, "A", ["B", "C"]]]
    older = decode(cbor2.dumps(raw[:4]))
    assert (10, 20, 9, "A") in older.runs and older.replicas == ()
    # A copy set naming one node twice is garbage from the wire.
    raw[4] = [[10, 20, 9, "A", ["B", "A"]]]
    with pytest.raises(ProtocolError, match="two copies"):
        decode(cbor2.dumps(raw))

"""Client roles in the slot table: the merge rule, the digest, the codec, and convergence.

The rule (table.py): one ClientInfo per client peer; the greater (version, rank)
wins, where at equal versions the weaker role wins and a tombstone (NONE) beats
every grant. A per-peer max over a total order: commutative, associative,
idempotent, so any gossip order converges, including for a node that was down.
"""

import random

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dscluster.core.gossip import GossipConfig
from dscluster.core.messages import Ping, Pong, TableDelta, decode, encode
from dscluster.core.node import ClusterCore, PersistentState
from dscluster.core.table import ClientInfo, ClientRole, SlotTable, next_version
from dscluster.errors import BadRequestError, ProtocolError

NODES = ["A", "B", "C"]
CLIENTS = ["X", "Y", "Z"]
CFG = GossipConfig(heartbeat_ticks=1, pfail_ticks=3, fail_window_ticks=6, retry_ticks=2)

entry_st = st.builds(ClientInfo, st.sampled_from(CLIENTS), st.sampled_from(list(ClientRole)),
                     st.integers(0, 4))


def _view(entries: list[ClientInfo]) -> SlotTable:
    table = SlotTable.initial(NODES)
    table.merge_clients(entries)
    return table


view_st = st.builds(_view, st.lists(entry_st, max_size=5))


def merged(*views: SlotTable) -> SlotTable:
    out = views[0].copy()
    for v in views[1:]:
        out.merge(v)
    return out


@settings(max_examples=80, deadline=None)
@given(view_st, view_st, view_st)
def test_role_merge_is_commutative_associative_idempotent(a: SlotTable, b: SlotTable,
                                                          c: SlotTable) -> None:
    assert merged(a, b) == merged(b, a)
    assert merged(a, b).roles_hash() == merged(b, a).roles_hash()
    assert merged(merged(a, b), c) == merged(a, merged(b, c))
    assert merged(a, a) == a
    assert merged(a, b, b) == merged(a, b)


@settings(max_examples=60, deadline=None)
@given(st.lists(entry_st, max_size=8), st.randoms(use_true_random=False))
def test_any_order_of_entries_gives_the_same_roles(entries: list[ClientInfo], rnd) -> None:
    expected = _view(entries)
    shuffled = entries * 2  # duplicates too
    rnd.shuffle(shuffled)
    got = SlotTable.initial(NODES)
    for e in shuffled:
        got.merge_clients([e])
    assert got == expected and got.clients == expected.clients


def test_higher_version_wins_and_tombstones_win_by_version() -> None:
    t = SlotTable.initial(NODES)
    assert t.merge_clients([ClientInfo("X", ClientRole.ADMIN, 3)])
    assert t.client_role("X") is ClientRole.ADMIN
    # a removal at a higher version wins; the older grant arriving later loses
    assert t.merge_clients([ClientInfo("X", ClientRole.NONE, 4)])
    assert t.client_role("X") is None and "X" not in t.client_roles()
    assert not t.merge_clients([ClientInfo("X", ClientRole.ADMIN, 3)])
    assert not t.merge_clients([ClientInfo("X", ClientRole.READ_WRITE, 2)])
    assert t.client_role("X") is None
    # a fresh grant above the tombstone brings it back
    assert t.merge_clients([ClientInfo("X", ClientRole.READ_ONLY, 5)])
    assert t.client_role("X") is ClientRole.READ_ONLY


def test_equal_versions_settle_on_the_weaker_role() -> None:
    order = [ClientRole.ADMIN, ClientRole.READ_WRITE, ClientRole.READ_ONLY, ClientRole.NONE]
    for weaker_i, weaker in enumerate(order):
        for stronger in order[:weaker_i]:
            for first, second in ((weaker, stronger), (stronger, weaker)):
                t = SlotTable.initial(NODES)
                t.merge_clients([ClientInfo("X", first, 7), ClientInfo("X", second, 7)])
                assert t.clients["X"].role is weaker


def test_next_version_is_above_the_old_entry_and_not_below_the_clock() -> None:
    assert next_version(None) == 1
    assert next_version(ClientInfo("X", ClientRole.ADMIN, 9)) == 10
    assert next_version(ClientInfo("X", ClientRole.ADMIN, 9), now_ms=5) == 10
    assert next_version(ClientInfo("X", ClientRole.ADMIN, 9), now_ms=1_000) == 1_000
    assert next_version(None, now_ms=1_000) == 1_000


def test_digest_covers_roles_and_is_empty_without_them() -> None:
    t = SlotTable.initial(NODES)
    assert t.roles_hash() == b"" and t.digest().roles == b""
    before = t.digest()
    t.merge_clients([ClientInfo("X", ClientRole.READ_ONLY, 1)])
    after = t.digest()
    assert after.roles != b"" and after.buckets == before.buckets
    assert after.members == before.members
    t.merge_clients([ClientInfo("X", ClientRole.NONE, 2)])
    assert t.digest().roles not in (b"", after.roles)  # a tombstone is a change too


def test_cbor_round_trip_with_roles_and_old_tables_decode_as_none() -> None:
    t = SlotTable.initial(NODES)
    t.merge_clients([ClientInfo("X", ClientRole.READ_WRITE, 1_700_000_000_000),
                     ClientInfo("Y", ClientRole.NONE, 3)])
    u = SlotTable.from_cbor(t.to_cbor())
    assert u == t and u.clients == t.clients and u.digest() == t.digest()
    old = cbor2.loads(t.to_cbor())
    del old["clients"]
    v = SlotTable.from_obj(old)
    assert v.clients == {} and v.runs() == t.runs()
    state = PersistentState(t, 0, 1)
    assert PersistentState.from_cbor(state.to_cbor()).table.clients == t.clients


@pytest.mark.parametrize("clients", [
    5, [5], [{"id": "X", "role": "root", "version": 1}],
    [{"id": "", "role": "admin", "version": 1}],
    [{"id": "X", "role": "admin", "version": -1}], [{"id": "X", "role": "admin", "version": "1"}],
    [{"id": "X" * 129, "role": "admin", "version": 1}], [{"role": "admin", "version": 1}],
])
def test_bad_client_entries_are_protocol_errors(clients: object) -> None:
    obj = cbor2.loads(SlotTable.initial(NODES).to_cbor())
    obj["clients"] = clients
    with pytest.raises(ProtocolError):
        SlotTable.from_obj(obj)


def test_messages_carry_roles_and_old_messages_decode_without_them() -> None:
    entry = ClientInfo("X", ClientRole.ADMIN, 12)
    for msg in (TableDelta((), (), (entry,)),
                Pong((b"h",) * 64, b"m", 3, (), (), (), (), (entry,), b"r"),
                Ping((b"h",) * 64, b"m", 3, (), (), b"r")):
        assert decode(encode(msg)) == msg
    # a node that predates roles sends no `roles` / `clients`; one that has them sends
    # fields the old one ignores
    old_ping = cbor2.dumps([Ping.TAG, [b"h"] * 64, b"m", 1])
    assert decode(old_ping) == Ping((b"h",) * 64, b"m", 1)
    assert decode(cbor2.dumps([TableDelta.TAG, [], []])) == TableDelta()
    with pytest.raises(ProtocolError):
        decode(cbor2.dumps([TableDelta.TAG, [], [], [["X", "god", 1]]]))


# -- cores gossiping: a node that was down converges -------------------------------------


class Net:
    """Cores with a disk each; a down node's messages are lost and it restarts from disk."""

    def __init__(self, ids: list[str]) -> None:
        table = SlotTable.initial(ids)
        self.cores = {i: ClusterCore.bootstrap(i, table, rng=random.Random(i), config=CFG)
                      for i in ids}
        self.disk: dict[str, bytes] = {}
        self.down: set[str] = set()
        self.flush()

    def flush(self, limit: int = 100) -> None:
        for _ in range(limit):
            busy = False
            for me, core in list(self.cores.items()):
                if me in self.down:
                    continue
                rd = core.ready()
                if rd.state is not None:
                    self.disk[me] = rd.state.to_cbor()
                for peer, msg in rd.messages:
                    busy = True
                    if peer not in self.down and peer in self.cores:
                        self.cores[peer].step(me, decode(encode(msg)))
                core.advance(rd)
            if not busy:
                return

    def tick(self, n: int = 1) -> None:
        for _ in range(n):
            for me, core in self.cores.items():
                if me not in self.down:
                    core.tick()
            self.flush()

    def stop(self, node: str) -> None:
        self.down.add(node)

    def restart(self, node: str) -> None:
        state = PersistentState.from_cbor(self.disk[node])
        self.cores[node] = ClusterCore(node, state, rng=random.Random(9), config=CFG)
        self.down.discard(node)


def test_a_node_down_during_a_grant_and_a_revoke_converges_after_restart() -> None:
    net = Net(NODES)
    a = net.cores["A"]
    a.set_client("Y", ClientRole.READ_WRITE, now_ms=100)
    net.flush()
    assert all(c.table.client_role("Y") is ClientRole.READ_WRITE for c in net.cores.values())

    net.stop("C")
    a.set_client("X", ClientRole.ADMIN, now_ms=200)
    assert net.cores["B"].revoke_client("Y", now_ms=300) is not None
    net.tick(2)
    assert net.cores["B"].table.client_role("X") is ClientRole.ADMIN
    assert net.cores["C"].table.client_role("X") is None  # it was down

    net.restart("C")  # from its disk: it still holds Y read-write
    c = net.cores["C"]
    assert c.table.client_role("Y") is ClientRole.READ_WRITE
    net.tick(2)
    for core in net.cores.values():
        assert core.table.client_role("X") is ClientRole.ADMIN
        assert core.table.client_role("Y") is None  # the tombstone won, no resurrection
        assert core.table == a.table
    assert PersistentState.from_cbor(net.disk["C"]).table.client_role("X") is ClientRole.ADMIN


def test_concurrent_edits_on_two_nodes_settle_everywhere() -> None:
    net = Net(NODES)
    net.stop("C")
    net.stop("B")  # A and B cannot talk: both edit X at the same clock
    net.cores["A"].set_client("X", ClientRole.ADMIN, now_ms=50)
    net.down.discard("B")
    net.down.add("A")
    net.cores["B"].set_client("X", ClientRole.READ_ONLY, now_ms=50)
    net.down.clear()
    net.tick(2)
    roles = {c.table.clients["X"] for c in net.cores.values()}
    assert roles == {ClientInfo("X", ClientRole.READ_ONLY, 50)}  # equal versions: the weaker


def test_set_client_rules() -> None:
    net = Net(NODES)
    a = net.cores["A"]
    with pytest.raises(BadRequestError, match="cluster member"):
        a.set_client("B", ClientRole.ADMIN)
    first = a.set_client("X", ClientRole.READ_ONLY, now_ms=10)
    again = a.set_client("X", ClientRole.READ_ONLY)  # a re-grant still moves the version on
    assert again.version == first.version + 1
    assert a.revoke_client("X", ClientRole.ADMIN) is None  # it holds another role
    assert a.revoke_client("Z") is None
    gone = a.revoke_client("X", ClientRole.READ_ONLY)
    assert gone is not None and gone.role is ClientRole.NONE and gone.version > again.version
    assert a.revoke_client("X") is None
    # seeds (version 0) fill in only what the table does not know
    assert a.merge_clients([ClientInfo("W", ClientRole.READ_WRITE, 0)])
    assert not a.merge_clients([ClientInfo("X", ClientRole.ADMIN, 0)])
    assert a.table.client_role("X") is None and a.table.client_role("W") is ClientRole.READ_WRITE
    net.tick(2)
    assert all(c.table == a.table for c in net.cores.values())


def test_a_joining_node_learns_the_roles() -> None:
    net = Net(NODES)
    net.cores["A"].set_client("X", ClientRole.READ_WRITE, now_ms=5)
    net.cores["A"].revoke_client("X")
    net.cores["A"].set_client("Y", ClientRole.READ_ONLY)
    net.flush()
    joiner = ClusterCore.joining("D", ["A"], rng=random.Random(4), config=CFG)
    net.cores["D"] = joiner
    net.tick(3)
    assert joiner.table.clients == net.cores["A"].table.clients

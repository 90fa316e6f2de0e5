"""The client's pure parts: routing table, packing, query merge."""

from __future__ import annotations

import pytest
import trio

from dsclient.merge import merge, node_query
from dsclient.pipeline import Op, OpKind, PackLimits, pack, settle
from dsclient.routing import RoutingTable, probe_key
from dscluster.core.slots import key_slot
from dscluster.datastore.query import Entry, OrderByKey, OrderByValue, Query
from dscluster.errors import MovedError, NotFoundError, ProtocolError
from dscluster.wire import messages as wm


def test_table_learns_from_node_info_and_moved():
    t = RoutingTable()
    t.add_node("A", ["/ip4/127.0.0.1/tcp/1/p2p/A"])
    assert t.addrs["A"] == ("/ip4/127.0.0.1/tcp/1",)
    assert t.route("/foo") == (3194, "A")  # unknown owner: any known node
    t.apply_node_info("A", [], [(0, 5460)])
    t.apply_node_info("B", ["/ip4/127.0.0.1/tcp/2"], [(5461, 16383)])
    assert t.is_complete() and t.owners() == ["A", "B"]
    assert t.addrs["A"] == ("/ip4/127.0.0.1/tcp/1",)  # no addresses given: kept
    t.apply_moved(3194, "B", ["/ip4/127.0.0.1/tcp/2"])
    assert t.owner_of("/foo") == "B"
    t.apply_node_info("A", [], [(0, 100)])  # A gave slots away: they are unknown now
    assert t.owner(101) is None and t.owner(5000) is None and t.owner(100) == "A"
    assert t.ranges_of("B") == ((3194, 3194), (5461, 16383))


def test_probe_key_finds_a_key_in_the_wanted_slots():
    key = probe_key(range(100, 200))
    assert key is not None and 100 <= key_slot(key) < 200
    assert probe_key([]) is None


def _ops(kind, n, value=b""):
    return [Op(kind, f"/k{i}", value if kind is OpKind.PUT else None) for i in range(n)]


def test_pack_groups_by_kind_and_respects_limits():
    limits = PackLimits(max_gets=4, max_keys=10, max_put_bytes=100)
    gets = _ops(OpKind.GET, 9)
    puts = _ops(OpKind.PUT, 5, b"x" * 40)
    dels = _ops(OpKind.DELETE, 2)
    msgs = pack(gets + puts + dels + _ops(OpKind.HAS, 3), limits)
    kinds = [type(m).__name__ for m, _ in msgs]
    assert kinds.count("GetMany") == 3 and kinds.count("HasMany") == 1
    batches = [(m, g) for m, g in msgs if isinstance(m, wm.Batch)]
    assert sum(len(m.puts) for m, _ in batches) == 5
    for m, g in batches:  # answers come puts first, then deletes
        assert sum(len(v) + len(k) for k, v in m.puts) <= 100
        assert [o.key for o in g] == [k for k, _ in m.puts] + list(m.deletes)
    carried = [o for _, g in msgs for o in g]
    assert len(carried) == len(set(map(id, carried))) == 19


def test_settle_hands_each_op_its_item():
    ops = _ops(OpKind.GET, 3)
    moved = wm.ErrorInfo(wm.ErrorCode.MOVED, "", 5, "B", ("/ip4/127.0.0.1/tcp/2",))
    missing = wm.ErrorInfo(wm.ErrorCode.NOT_FOUND, "no /k1")
    settle(ops, wm.OkMany(0, (b"v", missing, moved)))
    assert ops[0].result == b"v"
    assert isinstance(ops[1].error, NotFoundError)
    assert isinstance(ops[2].error, MovedError) and ops[2].error.peer_id == "B"
    short = _ops(OpKind.GET, 2)
    settle(short, wm.OkMany(0, (b"v",)))
    assert all(isinstance(o.error, ProtocolError) for o in short)


async def _stream(entries):
    for e in entries:
        await trio.lowlevel.checkpoint()
        yield e


@pytest.mark.parametrize("offset,limit", [(0, 0), (2, 3), (0, 1), (5, 100), (50, 1)])
async def test_merge_applies_order_offset_limit_once(offset, limit):
    a = [Entry(f"/a{i}", b"%02d" % (i * 3 % 10)) for i in range(6)]
    b = [Entry(f"/b{i}", b"%02d" % (i * 7 % 10)) for i in range(6)]
    q = Query(orders=(OrderByValue(),), offset=offset, limit=limit, keys_only=True)
    nq = node_query(q)
    assert nq.offset == 0 and nq.limit == (offset + limit if limit else 0)
    assert not nq.keys_only  # the merge compares values
    sort = lambda es: sorted(es, key=lambda e: (e.value, e.key))  # noqa: E731
    got = [e async for e in merge(q, [_stream(sort(a)), _stream(sort(b))])]
    want = sort(a + b)[offset: offset + limit if limit else None]
    assert got == [Entry(e.key, None) for e in want]


@pytest.mark.parametrize("orders", [(), (OrderByKey(),), (OrderByValue(),)])
async def test_merge_sends_a_key_two_nodes_hold_once_and_the_owners_copy(orders):
    # /k1 and /k2 are on both nodes (a move in flight); A owns them, its copy wins.
    a = [Entry("/k1", b"a1"), Entry("/k2", b"b2"), Entry("/k3", b"c3")]
    b = [Entry("/k1", b"a1"), Entry("/k2", b"b2"), Entry("/k4", b"d4")]
    owner = {"/k1": "A", "/k2": "A", "/k3": "A", "/k4": "B"}
    q = Query(orders=orders)
    got = [e async for e in merge(q, [_stream(b), _stream(a)], ["B", "A"], owner.get)]
    assert sorted(e.key for e in got) == ["/k1", "/k2", "/k3", "/k4"]
    if orders:
        assert [e.key for e in got] == ["/k1", "/k2", "/k3", "/k4"]
    # Offset and limit count distinct keys.
    q = Query(orders=(OrderByKey(),), offset=1, limit=2)
    got = [e async for e in merge(q, [_stream(b), _stream(a)], ["B", "A"], owner.get)]
    assert [e.key for e in got] == ["/k2", "/k3"]


async def test_merge_by_key_prefers_the_owners_copy():
    a = [Entry("/k1", b"source")]  # A owns /k1 (the move's source)
    b = [Entry("/k1", b"imported")]
    for streams, peers in (([b, a], ["B", "A"]), ([a, b], ["A", "B"])):
        got = [e async for e in merge(Query(orders=(OrderByKey(),)),
                                      [_stream(s) for s in streams], peers, {"/k1": "A"}.get)]
        assert got == [Entry("/k1", b"source")]

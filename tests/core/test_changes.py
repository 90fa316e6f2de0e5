"""Failover and shrink by majority, driven inside ClusterCore (core/changes.py)."""

import random

import cbor2
import pytest

from dscluster.core.election import Config, Kind, Propose, Vote, VoteRequest
from dscluster.core.gossip import Liveness
from dscluster.core.messages import decode, encode
from dscluster.core.node import ClusterCore, PersistentState
from dscluster.core.planner import with_copies
from dscluster.core.replication import Replicate, ReplicateAck, ReplicateRefused
from dscluster.core.slots import SLOT_COUNT, SlotSet
from dscluster.core.table import SlotTable
from dscluster.errors import BadRequestError, ProtocolError
from tests.core.test_node import CFG, Net


def copies_cluster(ids: list[str], copies: int = 2) -> Net:
    table = with_copies(SlotTable.initial(ids), copies)
    return Net([ClusterCore.bootstrap(i, table, rng=random.Random(i), config=CFG) for i in ids])


def ticks_until(net: Net, done, limit: int = 60) -> int:
    for n in range(1, limit + 1):
        net.tick()
        if done():
            return n
    raise AssertionError(f"not done within {limit} ticks")


def test_a_replica_takes_over_the_slots_of_a_dead_primary_and_everyone_agrees() -> None:
    net = copies_cluster(["A", "B", "C"])
    net.tick(2)
    before = net.cores["B"].table.copy()
    a_slots = list(before.slots_of("A"))
    net.cut.add("A")
    ticks_until(net, lambda: all(net.cores[n].table.owner(s) != "A"
                                 for n in "BC" for s in a_slots))
    b, c = net.cores["B"].table, net.cores["C"].table
    assert b.digest() == c.digest()
    for s in a_slots:
        old = before.copies(s)
        assert b.copies(s) == old[1:]  # the in-sync replica, alone: an agreed shrink
        assert b.claim(s)[0] > before.claim(s)[0]
    # Slots A was only a replica of lose that copy by a shrink, in an election after.
    ticks_until(net, lambda: all("A" not in net.cores[n].table.copies(s)
                                 for n in "BC" for s in range(SLOT_COUNT)))
    assert all(len(b.copies(s)) >= 1 for s in range(SLOT_COUNT))
    # The old primary comes back and learns it lost them: no two primaries.
    net.cut.clear()
    net.tick(4)
    a = net.cores["A"].table
    assert a.digest() == b.digest()
    assert not a.slots_of("A")


def test_a_primary_shrinks_a_dead_copy_out_and_a_minority_changes_nothing() -> None:
    net = copies_cluster(["A", "B", "C"])
    net.tick(2)
    before = net.cores["A"].table.copy()
    net.cut.add("C")  # C alone: the minority
    ticks_until(net, lambda: all("C" not in net.cores["A"].table.copies(s)
                                 for s in range(SLOT_COUNT)))
    # The minority's table is unchanged: it could win no election.
    c = net.cores["C"].table
    assert c.digest() == before.digest()
    assert net.cores["C"].liveness("A") is not Liveness.UP
    a = net.cores["A"].table
    for s in before.slots_of("A"):
        assert a.copies(s) == tuple(x for x in before.copies(s) if x != "C")


def test_a_partitioned_primary_is_fenced_by_the_copy_that_stood() -> None:
    net = copies_cluster(["A", "B", "C"])
    net.tick(2)
    slot = next(s for s in net.cores["B"].table.slots_of("A")
                if net.cores["B"].table.replicas(s) == ("B",))
    old_epoch = net.cores["B"].table.claim(slot)[0]
    net.cut.add("A")
    ticks_until(net, lambda: net.cores["B"].table.owner(slot) == "B")
    verdict = net.cores["B"].copy_guard.on_replicate(Replicate(1, slot, old_epoch, "A"))
    assert isinstance(verdict, ReplicateRefused)


def test_the_promise_survives_a_restart_and_old_state_reads_without_one() -> None:
    net = copies_cluster(["A", "B", "C"])
    net.tick(2)
    net.cut.add("A")
    ticks_until(net, lambda: net.cores["B"].table.owner(0) != "A"
                and net.cores["C"].table.owner(0) != "A")
    state = PersistentState.from_cbor(net.disk["C"])
    assert state.promised > 0
    reborn = ClusterCore("C", state, rng=random.Random(0), config=CFG)
    stale = VoteRequest(state.promised, "B", Kind.FAILOVER, "A", SlotSet.of([(0, 0)]))
    reborn.step("B", stale)
    votes = [m for _, m in reborn.ready().messages if isinstance(m, Vote)]
    assert votes and not votes[0].granted  # one vote per epoch, across restarts
    # A state written before copies has no acceptor field and decodes as a fresh one.
    raw = cbor2.loads(net.disk["C"])
    raw.pop("acceptor")
    old = PersistentState.from_cbor(cbor2.dumps(raw))
    assert (old.promised, old.accepted) == (0, ())
    raw["acceptor"] = {"promised": "x", "accepted": []}
    with pytest.raises(ProtocolError, match="acceptor"):
        PersistentState.from_cbor(cbor2.dumps(raw))


def test_election_messages_from_strangers_or_impostors_are_ignored_and_garbage_refused() -> None:
    net = copies_cluster(["A", "B", "C"])
    net.tick(2)
    b = net.cores["B"]
    b.ready(), b.advance(b.ready())
    b.step("Z", VoteRequest(50, "Z", Kind.SHRINK, "A", SlotSet.of([(0, 9)])))
    b.step("C", VoteRequest(51, "A", Kind.SHRINK, "C", SlotSet.of([(0, 9)])))  # C speaks for A
    assert not [m for _, m in b.ready().messages if isinstance(m, Vote)]
    b.step("C", Propose(52, "A", ((0, 9, Config(52, ("A",))),)))
    assert not b.ready().messages
    for bad in ([104, 5, "A", "failover", "B", [[[9, 3]]]],  # a range backwards
                [104, 5, "A", "sideways", "B", [[[0, 3]]]],  # no such kind
                [106, 5, "A", [[0, 3, [5, ["A", "A"]]]]],  # two copies on one node
                [105, 5, "C", True, [[0, 99999, [1, ["A"]]]], 5]):  # a slot out of range
        with pytest.raises(ProtocolError):
            decode(cbor2.dumps(bad))
    ok = Propose(5, "A", ((0, 3, Config(5, ("A", "B"))),))
    assert decode(encode(ok)) == ok


def test_a_withdrawn_node_is_failed_over_at_once_and_back_in_service_after() -> None:
    """A node that lost its data reports itself FAIL: its peers fail its slots over
    and shrink it out while they still hear it, and it stands for nothing; once no
    copy set names it beside another copy it serves again (an empty node)."""
    net = copies_cluster(["A", "B", "C"])
    net.tick(2)
    a = net.cores["A"]
    held = [s for s in range(SLOT_COUNT) if "A" in a.table.copies(s)]
    a.withdraw()
    assert a.withdrawn
    net.tick(1)
    assert net.cores["B"].liveness("A") is Liveness.FAIL  # heard from, yet FAIL
    ticks_until(net, lambda: not a.withdrawn)
    b = net.cores["B"].table
    assert all("A" not in b.copies(s) for s in held)
    assert not b.slots_of("A")  # it won nothing: it holds none of the data
    net.tick(2)
    assert net.cores["B"].liveness("A") is Liveness.UP
    # The flag is persisted (a second restart must not serve the empty disk) and
    # an old state without it reads as not withdrawn.
    state = PersistentState.from_cbor(net.disk["A"])
    assert not state.withdrawn
    raw = cbor2.loads(net.disk["A"])
    raw["withdrawn"] = True
    assert PersistentState.from_cbor(cbor2.dumps(raw)).withdrawn
    raw["withdrawn"] = "yes"
    with pytest.raises(ProtocolError, match="withdrawn"):
        PersistentState.from_cbor(cbor2.dumps(raw))


def test_a_requested_grow_adds_the_copy_by_majority_and_the_plan_spreads_copies() -> None:
    net = copies_cluster(["A", "B", "C"])
    net.tick(2)
    net.cut.add("C")
    ticks_until(net, lambda: all("C" not in net.cores[n].table.copies(s)
                                 for n in "AB" for s in range(SLOT_COUNT)))
    a = net.cores["A"]
    plan = a.refill_plan()
    assert plan is not None
    target, slots = plan
    assert target == "B" and all(len(a.table.copies(s)) == 1 for s in slots)
    a.request_grow(target, slots)
    assert a.refill_plan() is None  # one grow at a time
    ticks_until(net, lambda: a.growing is None)
    for s in slots:
        assert net.cores["B"].table.copies(s) == ("A", "B")
    assert a.refill_plan() is None  # nothing short any more that B could take


def test_a_suspected_member_keeps_its_share_of_new_copies_until_it_is_up_again() -> None:
    """set-copies 2 while A cannot hear C (PFAIL in A's view only, so not FAIL): A
    fills B's share alone; C's share waits for C instead of going to B for good."""
    ids = ["A", "B", "C"]
    net = Net([ClusterCore.bootstrap(i, SlotTable.initial(ids), rng=random.Random(i),
                                     config=CFG) for i in ids])
    net.tick(2)
    a = net.cores["A"]
    a.set_copies(2)
    net.cut_links.add(frozenset("AC"))
    ticks_until(net, lambda: a.liveness("C") is Liveness.PFAIL)
    net.tick(3)
    assert a.liveness("C") is Liveness.PFAIL  # a minority's suspicion only
    assert net.cores["B"].liveness("C") is Liveness.UP
    plan = a.refill_plan()
    assert plan is not None and plan[0] == "B"
    a.request_grow(*plan)
    ticks_until(net, lambda: a.growing is None)
    assert a.refill_plan() is None  # C's share waits
    short = [s for s in a.table.slots_of("A") if len(a.table.copies(s)) == 1]
    assert len(short) > 1000  # about half of A's slots
    net.cut_links.clear()
    ticks_until(net, lambda: a.liveness("C") is Liveness.UP)
    plan = a.refill_plan()
    assert plan is not None and plan[0] == "C" and set(plan[1]) == set(short)


def test_a_copy_fenced_by_an_election_that_came_to_nothing_is_lifted_by_a_renew() -> None:
    """B voted at epoch 50 for a change that never committed (its candidate timed
    out while the primary A lived): B refuses A's writes as older. A renews: the
    same copy set at an epoch above B's promise, and B takes A's writes again."""
    net = copies_cluster(["A", "B", "C"])
    net.tick(2)
    a, b = net.cores["A"], net.cores["B"]
    slot = next(s for s in range(SLOT_COUNT) if a.table.copies(s) == ("A", "B"))
    copies = a.table.copies(slot)
    b._changes.acceptor.promised = 50
    b.copy_guard.fence(slot, 50)
    refused = b.copy_guard.on_replicate(Replicate(1, slot, a.table.claim(slot)[0], "A"))
    assert isinstance(refused, ReplicateRefused)
    for _try in range(4):  # the first try may lose to B's promise, and learns it
        a.request_renew(SlotSet.of([(slot, slot)]))
        net.tick(8)
        epoch = a.table.claim(slot)[0]
        if isinstance(b.copy_guard.on_replicate(Replicate(2, slot, epoch, "A")), ReplicateAck):
            break
    else:
        raise AssertionError("the renew never lifted B's fence")
    assert epoch > 50 and a.table.copies(slot) == copies == b.table.copies(slot)


def test_a_grow_accepted_before_a_restart_is_found_again() -> None:
    table = with_copies(SlotTable.initial(["A", "B", "C"]), 2)
    mine = next(s for s in range(SLOT_COUNT) if table.copies(s) == ("A", "B"))
    other = next(s for s in range(SLOT_COUNT) if table.copies(s)[0] == "B")
    accepted = ((mine, Config(9, ("A", "B", "C"))),  # my grow, never seen committed
                (other, Config(9, ("B", "C", "A"))),  # someone else's
                (mine + 1, Config(0, ("A", "B"))))  # committed already
    state = PersistentState(table, 9, 1, (), 9, tuple(sorted(accepted)))
    core = ClusterCore("A", state, rng=random.Random(0), config=CFG)
    assert core.unfinished_grows() == [("C", SlotSet.of([(mine, mine)]))]


def test_set_copies_grows_every_slot_then_shrinks_it_back_by_majority() -> None:
    ids = ["A", "B", "C"]
    net = Net([ClusterCore.bootstrap(i, SlotTable.initial(ids), rng=random.Random(i),
                                     config=CFG) for i in ids])
    net.tick(2)
    with pytest.raises(BadRequestError, match="at most one copy per data node"):
        net.cores["A"].set_copies(4)
    net.cores["A"].set_copies(2)
    net.tick(2)
    assert all(c.table.settings.copies == 2 for c in net.cores.values())

    def grow_all() -> bool:  # what node/refill.py does once a new copy holds the keys
        for core in net.cores.values():
            plan = core.refill_plan()
            if plan is not None:
                core.request_grow(*plan)
        return all(len(net.cores[n].table.copies(s)) == 2 for n in ids
                   for s in range(SLOT_COUNT))

    ticks_until(net, grow_all)
    counts = net.cores["A"].table.replica_counts()  # spread: each holds about a third
    assert sorted(counts) == ids and all(abs(n - 5461) < 800 for n in counts.values()), counts
    net.cores["B"].set_copies(1)
    ticks_until(net, lambda: all(len(net.cores[n].table.copies(s)) == 1 for n in ids
                                 for s in range(SLOT_COUNT)))
    assert net.cores["C"].table.slot_counts() == SlotTable.initial(ids).slot_counts()

"""Replicated writes (core/replication.py): acks, fencing, and no acknowledged write lost."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dscluster.core.election import Config, Kind, derive
from dscluster.core.replication import (
    CopyGuard,
    Done,
    Failed,
    PrimaryWrites,
    Replicate,
    ReplicateAck,
    ReplicateRefused,
    Resend,
)
from dscluster.errors import BadRequestError, MovedError, UnavailableError

C1 = Config(1, ("P", "R1", "R2"))


def primary(config: Config = C1, min_copies: int = 1) -> PrimaryWrites:
    p = PrimaryWrites("P", min_copies)
    p.set_config(7, config)
    return p


def test_ack_only_when_every_in_sync_copy_holds_the_write() -> None:
    p = primary()
    sends = p.submit("w1", 7)
    assert sends == (("R1", Replicate("w1", 7, 1, "P")), ("R2", Replicate("w1", 7, 1, "P")))
    assert p.on_ack(ReplicateAck("w1", 7, 1, "R1")) is None
    assert p.on_ack(ReplicateAck("w1", 7, 1, "R1")) is None  # a duplicate counts once
    assert p.on_ack(ReplicateAck("w1", 7, 1, "X")) is None  # not in sync: does not count
    assert p.on_ack(ReplicateAck("w1", 7, 1, "R2")) == Done("w1", 1)
    assert p.on_ack(ReplicateAck("w1", 7, 1, "R2")) is None  # settled already
    solo = primary(Config(1, ("P",)))  # one copy: done at once
    assert solo.submit("w", 7) == Done("w", 1)


def test_who_may_take_a_write() -> None:
    with pytest.raises(MovedError):
        primary(Config(1, ("R1", "P"))).submit("w", 7)
    with pytest.raises(MovedError):
        primary().submit("w", 8)  # a slot it knows nothing of
    with pytest.raises(UnavailableError):  # min-replicas-to-write
        primary(Config(2, ("P", "R1")), min_copies=3).submit("w", 7)
    p = primary()
    p.submit("w", 7)
    with pytest.raises(BadRequestError):
        p.submit("w", 7)


def test_a_copy_set_changes_only_with_a_new_epoch() -> None:
    p = primary()
    with pytest.raises(BadRequestError):
        p.set_config(7, Config(1, ("P", "R1")))  # a shrink at the same epoch
    assert p.set_config(7, Config(0, ("P",))) == []  # older: ignored
    assert p.config(7) == C1


def test_a_recorded_shrink_lets_pending_writes_finish_and_a_grow_makes_them_wait() -> None:
    p = primary()
    p.submit("a", 7)
    p.submit("b", 7)
    p.on_ack(ReplicateAck("a", 7, 1, "R1"))
    # R2 stopped answering; the shrink was agreed with epoch 2 (election.py)
    assert p.set_config(7, Config(2, ("P", "R1"))) == [Done("a", 2)]
    # X caught up and joins at epoch 3: b now waits for R1 and X, and goes to X
    assert p.set_config(7, Config(3, ("P", "R1", "X"))) == [Resend("b", "X")]
    assert p.on_ack(ReplicateAck("b", 7, 1, "R1")) is None
    assert p.on_ack(ReplicateAck("b", 7, 3, "X")) == Done("b", 3)


def test_fencing_a_stale_primary() -> None:
    p = primary()
    p.submit("a", 7)
    r1 = CopyGuard("R1")
    r1.learn(7, C1)
    r1.fence(7, 2)  # R1 stands for election at epoch 2
    refusal = r1.on_replicate(Replicate("a", 7, 1, "P"))
    assert refusal == ReplicateRefused("a", 7, "R1", 2)
    assert p.on_refused(refusal) == [Failed("a", "fenced: R1 knows epoch 2")]
    with pytest.raises(UnavailableError):
        p.submit("b", 7)
    # the new configuration (R1 primary) reaches P: it is no longer primary
    assert p.set_config(7, Config(2, ("R1", "R2", "P"))) == []
    with pytest.raises(MovedError):
        p.submit("b", 7)
    # and pending writes of a primary that loses the slot fail
    q = primary()
    q.submit("c", 7)
    assert q.set_config(7, Config(2, ("R1", "P"))) == [Failed("c", "not primary since epoch 2")]


def test_copy_guard_rules() -> None:
    g = CopyGuard("R1")
    g.learn(7, Config(3, ("P", "R1")))
    assert isinstance(g.on_replicate(Replicate("w", 7, 2, "P")), ReplicateRefused)  # older
    assert isinstance(g.on_replicate(Replicate("w", 7, 3, "X")), ReplicateRefused)  # not P's
    assert g.on_replicate(Replicate("w", 7, 3, "P")) == ReplicateAck("w", 7, 3, "R1")
    # a newer primary than the table says: accepted, and from now on the fence
    assert g.on_replicate(Replicate("w", 7, 5, "R2")) == ReplicateAck("w", 7, 5, "R1")
    assert isinstance(g.on_replicate(Replicate("v", 7, 3, "P")), ReplicateRefused)
    assert g.floor(7) == 5


def test_a_refusal_no_newer_than_the_primary_changes_nothing() -> None:
    p = primary(Config(4, ("P", "R1")))
    p.submit("w", 7)
    assert p.on_refused(ReplicateRefused("w", 7, "R1", 3)) == [] and "w" in p.pending


# -- a model: copies, failovers and shrinks in any order --------------------------------

NODES = ("P", "R1", "R2")


class Node:
    def __init__(self, name: str) -> None:
        self.name = name
        self.writes = PrimaryWrites(name)
        self.guard = CopyGuard(name)
        self.store: set[str] = set()
        self.last_epoch = 0  # epochs of the writes a node takes never go back
        self.learn(C1)

    def take(self, write_id: str, epoch: int) -> None:
        assert epoch >= self.last_epoch, "a copy took a write from an older primary"
        self.last_epoch = epoch
        self.store.add(write_id)

    def learn(self, config: Config) -> list:
        self.guard.learn(0, config)
        return self.writes.set_config(0, config)


@settings(max_examples=300, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(20, 120))
def test_no_acknowledged_write_is_lost_across_failovers_and_shrinks(rnd: random.Random,
                                                                   steps: int) -> None:
    nodes = {n: Node(n) for n in NODES}
    chain = [C1]  # committed configurations (election.py makes this chain)
    pool: list[tuple[str, object]] = []  # (destination, message)
    learnt = {n: 0 for n in NODES}  # index in chain each node has learnt
    acked: dict[str, int] = {}  # write -> the epoch it was acknowledged at
    count = 0

    def settle(decisions, at: str) -> None:
        for d in decisions:
            if isinstance(d, Done):
                acked[d.write_id] = d.epoch
            elif isinstance(d, Resend):
                pool.append((d.peer, Replicate(d.write_id, 0, nodes[at].writes.config(0).epoch,
                                               at)))

    for _ in range(steps):
        action = rnd.random()
        if action < 0.3:  # a client writes at some node that thinks it is primary
            n = nodes[rnd.choice(NODES)]
            count += 1
            wid = f"w{count}"
            try:
                sends = n.writes.submit(wid, 0)
            except (MovedError, UnavailableError):
                continue
            n.take(wid, n.writes.config(0).epoch)
            if isinstance(sends, Done):
                acked[wid] = sends.epoch
            else:
                pool.extend(sends)
        elif action < 0.75 and pool:  # deliver (or drop, or duplicate) a message
            dest, msg = pool.pop(rnd.randrange(len(pool)))
            if rnd.random() < 0.1:
                continue
            if rnd.random() < 0.05:
                pool.append((dest, msg))
            n = nodes[dest]
            if isinstance(msg, Replicate):
                reply = n.guard.on_replicate(msg)
                if isinstance(reply, ReplicateAck):
                    n.take(msg.write_id, msg.epoch)  # durably, before the ack leaves
                pool.append((msg.primary, reply))
            elif isinstance(msg, ReplicateAck):
                settle([d for d in [n.writes.on_ack(msg)] if d], dest)
            elif isinstance(msg, ReplicateRefused):
                n.writes.on_refused(msg)
        elif action < 0.85:  # a configuration change: a failover or a shrink
            current = chain[-1]
            kind = rnd.choice([Kind.FAILOVER, Kind.SHRINK])
            if kind is Kind.FAILOVER and len(current.copies) > 1:
                candidate, subject = rnd.choice(current.copies[1:]), current.primary
                nodes[candidate].guard.fence(0, current.epoch + 1)  # stands for election
            elif kind is Kind.SHRINK and len(current.copies) > 1:
                candidate, subject = current.primary, rnd.choice(current.copies[1:])
            else:
                continue
            new = derive(kind, candidate, subject, current, current.epoch + 1)
            assert new is not None
            chain.append(new)
        else:  # gossip: a node learns the next committed configuration
            n = rnd.choice(NODES)
            if learnt[n] < len(chain) - 1:
                learnt[n] += 1
                settle(nodes[n].learn(chain[learnt[n]]), n)
        # the invariant, after every step: a write acknowledged at epoch e is on every copy
        # of every committed configuration from e on (so on whoever is primary next)
        for config in chain:
            due = {w for w, e in acked.items() if e <= config.epoch}
            for copy in config.copies:
                assert due <= nodes[copy].store, (config, copy, due - nodes[copy].store)
    assert not [w for w in acked if w not in nodes[chain[-1].primary].store]

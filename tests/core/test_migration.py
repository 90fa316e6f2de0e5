"""The migration machine on its own: two `Migrations` wired by hand, no ClusterCore around them."""

import pytest

from dscluster.core.gossip import GossipConfig
from dscluster.core.messages import Handoff, MigrateAbort, MigrateBegin, MigrateBeginAck
from dscluster.core.migration import ListKeys, Migrations, MoveKeys, Phase
from dscluster.core.slots import SlotSet, key_slot
from dscluster.core.table import SlotTable
from dscluster.errors import BadRequestError

CFG = GossipConfig(retry_ticks=2, batch_keys=2)


class Side:
    """One node's machine and what it asked for: messages, actions, a clock and an epoch."""

    def __init__(self, me: str, table: SlotTable) -> None:
        self.sent: list[tuple[str, object]] = []
        self.actions: list[object] = []
        self.now = 0
        self.epoch = 7
        self.table = table
        self.mig = Migrations(me, (), 1, config=CFG, send=lambda p, m: self.sent.append((p, m)),
                              act=self.actions.append, now=lambda: self.now,
                              epoch=lambda: self.epoch)

    def take(self) -> list[tuple[str, object]]:
        out, self.sent = self.sent, []
        return out


def test_a_migration_from_begin_to_handoff() -> None:
    table = SlotTable.initial(["A", "B"])
    a, b = Side("A", table), Side("B", table)
    slots = SlotSet.of([(0, 999)])
    mid = a.mig.start(slots, "B", table)
    assert a.mig.dirty and [m.phase for m in a.mig.records] == [Phase.PREPARING]
    assert a.take() == [("B", MigrateBegin(mid, ((0, 999),)))]
    assert a.mig.migrating_to(5) is None  # routing is unchanged until the target acks

    b.mig.on_migrate_begin("A", MigrateBegin(mid, ((0, 999),)), table)
    assert b.mig.importing_from(5) == "A" and b.take() == [("A", MigrateBeginAck(mid))]

    a.mig.on_migrate_begin_ack("B", MigrateBeginAck(mid))
    assert a.mig.migrating_to(5) == "B"
    assert a.actions == [ListKeys(mid, ((0, 999),), 2)]
    key = next(f"/k{i}" for i in range(10_000) if key_slot(f"/k{i}") in slots)
    a.mig.keys_listed(mid, [key])
    assert a.actions[-1] == MoveKeys(mid, "B", (key,))
    a.mig.keys_moved(mid, [key])
    assert isinstance(a.actions[-1], ListKeys)
    a.mig.keys_listed(mid, [])  # nothing left: hand off, carrying the source's epoch
    assert a.take() == [("B", Handoff(mid, 7))]
    assert a.mig.outgoing(mid).phase is Phase.HANDOFF

    done = b.mig.on_handoff("A", Handoff(mid, 7))
    assert done is not None and done.slots == slots and not b.mig.records
    assert b.mig.on_handoff("A", Handoff(mid, 7)) is None  # a duplicate is ignored

    claimed = table.copy()
    claimed.assign(slots, (8, "B"))
    a.mig.finish_handoffs(claimed)  # the target's claims arrived by gossip
    assert not a.mig.records


def test_retransmits_on_the_clock_and_refuses_what_is_not_allowed() -> None:
    table = SlotTable.initial(["A", "B"])
    a = Side("A", table)
    with pytest.raises(BadRequestError, match="not owned here"):
        a.mig.start(SlotSet.of([(16000, 16001)]), "B", table)
    with pytest.raises(BadRequestError, match="not a data node"):
        a.mig.start(SlotSet.of([(0, 1)]), "Z", table)
    mid = a.mig.start(SlotSet.of([(0, 1)]), "B", table)
    a.take()
    a.now = 1
    a.mig.tick()
    assert a.take() == []  # within retry_ticks
    a.now = 2
    a.mig.tick()
    assert a.take() == [("B", MigrateBegin(mid, ((0, 1),)))]
    with pytest.raises(BadRequestError, match="already migrating"):
        a.mig.start(SlotSet.of([(1, 2)]), "B", table)
    a.mig.on_migrate_begin_ack("C", MigrateBeginAck(99))  # a probe for an import we forgot
    assert a.take() == [("C", MigrateAbort(99))]
    a.mig.abort(mid)
    assert not a.mig.records and a.take() == [("B", MigrateAbort(mid))]

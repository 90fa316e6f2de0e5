"""The simulator's invariants, checked after every step and at the end of a run.

After every step (`check_routing`), and at every persist (`check_persisted`):

  * epochs persisted by a node never go back, slot by slot;
  * for every key, following the routing decisions (MOVED, ASK) from every
    live node ends at no more than one serving node, and that node holds a
    value the key may legally have (world.py says which values are legal).

Once the healed world is quiescent (`quiescent`), `final_check`: all tables
agree and every slot has one owner; each key's value at its owner is legal
and no key is left on a node that does not own its slot.

A violation raises InvariantViolation naming the seed (`World.fail`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dscluster.core.node import PersistentState
from dscluster.core.planner import plan
from dscluster.core.routing import Ask, Decision, Serve
from dscluster.core.slots import key_slot
from dscluster.errors import UnavailableError

if TYPE_CHECKING:
    from dscluster.testing.sim.world import SimNode, World

MAX_HOPS = 8  # MOVED/ASK redirections a client (and a check) follows


class InvariantViolation(AssertionError):
    pass


def check_persisted(world: World, node: SimNode, state: PersistentState) -> None:
    """What a node is about to persist never goes back from what it persisted before."""
    old = node.persisted
    if old is not None:
        if state.epoch < old.epoch:
            world.fail(f"{node.id} persisted epoch went back {old.epoch} -> {state.epoch}")
        if not state.table.dominates(old.table):
            world.fail(f"{node.id} persisted a slot claim lower than before")


def server_of(world: World, key: str, start: str,
              seen: dict[tuple[str, bool], Decision | None] | None = None) -> SimNode | None:
    """Follow MOVED and ASK from `start`; `seen` remembers each node's decision.

    Routing is a pure query, so within one check a (node, asking) pair always decides
    the same: remembering it makes checking every start node cost one route() per pair.
    """
    seen = {} if seen is None else seen
    node_id, asking = start, False
    for _ in range(MAX_HOPS):
        node = world.nodes[node_id]
        if node.core is None:
            return None
        if (node_id, asking) in seen:
            decision = seen[node_id, asking]
        else:
            try:
                decision = node.core.route(key, exists_locally=key in node.disk.data,
                                           asking=asking)
            except UnavailableError:
                decision = None
            seen[node_id, asking] = decision
        if decision is None:
            return None
        if isinstance(decision, Serve):
            return node
        node_id, asking = decision.peer, isinstance(decision, Ask)
    return None


def check_routing(world: World) -> None:
    """At most one node serves each key, and what it holds is legal."""
    up = world.up()
    for key in world.keys:
        seen: dict[tuple[str, bool], Decision | None] = {}
        servers = {s.id: s for n in up if (s := server_of(world, key, n.id, seen))}
        if len(servers) > 1:
            world.fail(f"{key} is served by {sorted(servers)} at once")
        for server in servers.values():
            if server.disk.data.get(key) not in world.legal[key]:
                world.fail(f"{key} at {server.id} is {server.disk.data.get(key)!r}, "
                           f"legal {world.legal[key]}")


def quiescent(world: World) -> bool:
    """Nothing left to do: no migration, message, action or move, one table, the plan done."""
    cores = [n.core for n in world.nodes.values()]
    if any(c is None or c.migrations or c.has_ready() for c in cores):
        return False
    if any(n.moves for n in world.nodes.values()):
        return False
    tables = [c.table for c in cores if c is not None]
    if not (tables[0].is_complete() and all(t == tables[0] for t in tables)):
        return False
    if world.scenario != "shuffle":
        return not plan(tables[0], [m for m in world.members if m != world.leaving])
    return True


def final_check(world: World) -> None:
    """One table everywhere, members own every slot, each key only and legally at its owner."""
    table = world.nodes["node0"].core.table  # type: ignore[union-attr]
    for n in world.nodes.values():
        assert n.core is not None
        if n.core.table != table:
            world.fail(f"{n.id}'s table differs from node0's")
    for owner in set(table.slot_counts()):
        if not owner or table.nodes.get(owner) is None:
            world.fail(f"slot owner {owner!r} is not a member")
    for key in world.keys:
        owner = table.owner(key_slot(key))
        for n in world.nodes.values():
            if key in n.disk.data and n.id != owner:
                world.fail(f"{key} left on {n.id}, but {owner} owns its slot")
        assert owner is not None
        if world.nodes[owner].disk.data.get(key) not in world.legal[key]:
            world.fail(f"{key} lost: {owner} has {world.nodes[owner].disk.data.get(key)!r}, "
                       f"legal {world.legal[key]}")

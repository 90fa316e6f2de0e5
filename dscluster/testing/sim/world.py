"""The simulated world: N cores, their disks, an emulated daemon, clients, a network.

Theory of operation
-------------------
A `World` runs N `ClusterCore`s, each with an in-memory "disk" (the persisted
core state as CBOR, plus a dict datastore that survives crashes), a small
emulated daemon that honours the Ready contract and the per-key locking rule
(core/migration.py), clients that read, write and delete while rebalances run
(following MOVED and ASK), and a network that delays, reorders, duplicates and
drops messages and can isolate nodes. Every random choice comes from one
random.Random(seed), so a seed is a complete, replayable trace.

Each step may deliver messages, tick nodes, run client operations, crash or
restart a node, cut or heal links, start migrations from the planner, and
complete in-flight key moves (some of whose acknowledgements are lost, leaving
stale copies at the target). After every step the invariants of checks.py are
checked.

A client operation is atomic at the instant it is served. Each key has a set
of values it may legally hold (`World.legal`): an acknowledged write (or
delete) makes it exactly {that value}; a write whose reply was lost adds its
value to the set (it may or may not have happened); a read must return a
member of the set and then pins it to that value. So "every read returned the
latest acknowledged value" is checked exactly, with operations whose outcome
the client never learned treated as possibly applied.

After the fault phase the network heals, every node restarts, and the world
runs to quiescence; then checks.final_check.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from dscluster.core.gossip import GossipConfig
from dscluster.core.messages import Message, decode, encode
from dscluster.core.node import ClusterCore, ListKeys, MoveKeys, PersistentState, Ready
from dscluster.core.planner import plan
from dscluster.core.routing import Ask, Moved, Serve
from dscluster.core.slots import SlotSet, key_slot
from dscluster.core.table import NodeRole, SlotTable
from dscluster.errors import BadRequestError, UnavailableError
from dscluster.testing.sim import checks
from dscluster.testing.sim.checks import MAX_HOPS, InvariantViolation

CONFIG = GossipConfig(heartbeat_ticks=2, pfail_ticks=6, fail_window_ticks=12, retry_ticks=3,
                      batch_keys=3)
TICK_EVERY = 2  # steps per node tick


@dataclass
class Disk:
    state: bytes | None = None
    data: dict[str, str] = field(default_factory=dict)


@dataclass
class Move:
    mid: int
    target: str
    values: dict[str, str]
    due: int


@dataclass
class SimNode:
    id: str
    disk: Disk
    core: ClusterCore | None = None
    locks: set[str] = field(default_factory=set)
    moves: list[Move] = field(default_factory=list)
    persisted: PersistentState | None = None
    joining: bool = False


@dataclass
class Client:
    cache: dict[int, str] = field(default_factory=dict)


class Network:
    """Messages in flight, as CBOR bytes, with per-message fate decided at send time."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.queue: list[tuple[int, int, str, str, bytes]] = []
        self.cut: set[frozenset[str]] = set()
        self.drop = self.dup = 0.0
        self.max_delay = 3
        self._seq = 0

    def connected(self, a: str, b: str) -> bool:
        return a == b or frozenset((a, b)) not in self.cut

    def isolate(self, node: str, everyone: Sequence[str]) -> None:
        self.cut |= {frozenset((node, o)) for o in everyone if o != node}

    def recover(self) -> None:
        self.cut.clear()

    def send(self, now: int, src: str, dst: str, msg: Message) -> None:
        if self.rng.random() < self.drop:
            return
        copies = 2 if self.rng.random() < self.dup else 1
        data = encode(msg)
        for _ in range(copies):
            self._seq += 1
            due = now + self.rng.randint(1, self.max_delay)
            self.queue.append((due, self._seq, src, dst, data))

    def due(self, now: int) -> list[tuple[str, str, bytes]]:
        ready = [m for m in self.queue if m[0] <= now]
        self.queue = [m for m in self.queue if m[0] > now]
        self.rng.shuffle(ready)
        return [(src, dst, data) for _, _, src, dst, data in ready]


class World:
    def __init__(self, seed: int, *, nodes: int = 3, keys: int = 8, clients: int = 2,
                 fault_steps: int = 240, settle_steps: int = 500, faults: bool = True) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.net = Network(self.rng)
        self.now = 0
        self.trace: list[str] = []
        self.fault_steps = fault_steps
        self.settle_steps = settle_steps
        self.faults = faults
        ids = [f"node{i}" for i in range(nodes)]
        self.joiner = f"node{nodes}"
        self.members = list(ids)
        table = SlotTable.initial(ids)
        self.nodes: dict[str, SimNode] = {}
        for node_id in ids:
            core = ClusterCore.bootstrap(node_id, table, rng=self._core_rng(), config=CONFIG)
            self.nodes[node_id] = SimNode(node_id, Disk())
            self.nodes[node_id].core = core
        self.nodes[self.joiner] = SimNode(self.joiner, Disk(), joining=True)
        self.nodes[self.joiner].core = ClusterCore.joining(
            self.joiner, [ids[0]], rng=self._core_rng(), config=CONFIG)
        self.keys = sorted({f"/key/{self.rng.randrange(10**6)}" for _ in range(keys)})
        self.legal: dict[str, set[str | None]] = {k: {None} for k in self.keys}
        self.clients = [Client() for _ in range(clients)]
        self.scenario = self.rng.choice(["grow", "shrink", "shuffle"])
        self.leaving = ids[-1] if self.scenario == "shrink" else None
        self.counter = 0
        self.stats = {"ops": 0, "acked": 0, "moves": 0, "migrations": 0, "crashes": 0}
        self.log(f"scenario {self.scenario}")

    def _core_rng(self) -> random.Random:
        return random.Random(self.rng.getrandbits(64))

    def log(self, text: str) -> None:
        self.trace.append(f"[{self.now}] {text}")

    def fail(self, text: str) -> None:
        raise InvariantViolation(f"seed {self.seed}: {text}")

    # -- the emulated daemon ------------------------------------------------------------

    def up(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.core is not None]

    def process_ready(self, node: SimNode) -> None:
        while node.core is not None and node.core.has_ready():
            ready: Ready = node.core.ready()
            if ready.state is not None:
                self.persist(node, ready.state)
            for peer, msg in ready.messages:
                self.net.send(self.now, node.id, peer, msg)
            for action in ready.actions:
                self.do_action(node, action)
            node.core.advance(ready)

    def persist(self, node: SimNode, state: PersistentState) -> None:
        checks.check_persisted(self, node, state)
        node.persisted = state
        node.disk.state = state.to_cbor()

    def do_action(self, node: SimNode, action: ListKeys | MoveKeys) -> None:
        assert node.core is not None
        if isinstance(action, ListKeys):
            slots = SlotSet(action.ranges)
            keys = sorted(k for k in node.disk.data if key_slot(k) in slots)[:action.limit]
            node.core.keys_listed(action.mid, keys)
        else:
            node.locks |= set(action.keys)
            values = {k: node.disk.data[k] for k in action.keys}
            node.moves.append(Move(action.mid, action.target, values,
                                   self.now + self.rng.randint(1, 4)))

    def finish_moves(self, node: SimNode) -> None:
        for move in [m for m in node.moves if m.due <= self.now]:
            node.moves.remove(move)
            node.locks -= set(move.values)
            assert node.core is not None
            if self.deliver_move(node, move) and not self.lossy(0.1):
                for k in move.values:
                    del node.disk.data[k]
                node.core.keys_moved(move.mid, list(move.values))
                self.stats["moves"] += 1
                self.log(f"{node.id} moved {sorted(move.values)} to {move.target}")
            else:
                node.core.move_failed(move.mid)
                self.log(f"{node.id} move of {sorted(move.values)} to {move.target} failed")

    def deliver_move(self, node: SimNode, move: Move) -> bool:
        """The target stores the batch durably if it accepts it; True when it did."""
        target = self.nodes[move.target]
        if target.core is None or not self.net.connected(node.id, target.id):
            return False
        if not all(target.core.accepts_import(k, node.id) for k in move.values):
            return False
        target.disk.data.update(move.values)
        return True

    def lossy(self, p: float) -> bool:
        return self.faults and self.now < self.fault_steps and self.rng.random() < p

    # -- faults ---------------------------------------------------------------------------

    def crash(self, node: SimNode) -> None:
        for move in node.moves:  # a batch may reach the target just before the crash
            if self.rng.random() < 0.5:
                self.deliver_move(node, move)
        node.core, node.locks, node.moves = None, set(), []
        self.stats["crashes"] += 1
        self.log(f"crash {node.id}")

    def restart(self, node: SimNode) -> None:
        if node.disk.state is None:
            node.core = ClusterCore.joining(node.id, ["node0"], rng=self._core_rng(), config=CONFIG)
        else:
            state = PersistentState.from_cbor(node.disk.state)
            node.core = ClusterCore(node.id, state, rng=self._core_rng(), config=CONFIG,
                                    seeds=["node0"])
        self.log(f"restart {node.id}")

    def random_faults(self) -> None:
        r = self.rng.random()
        up = self.up()
        if r < 0.012 and len(up) > 1:
            self.crash(self.rng.choice(up))
        elif r < 0.05:
            down = [n for n in self.nodes.values() if n.core is None]
            if down:
                self.restart(self.rng.choice(down))
        elif r < 0.06:
            victim = self.rng.choice(list(self.nodes))
            self.net.isolate(victim, list(self.nodes))
            self.log(f"isolate {victim}")
        elif r < 0.08 and self.net.cut:
            self.net.recover()
            self.log("heal")

    # -- admin ------------------------------------------------------------------------------

    def admin(self) -> None:
        node0 = self.nodes["node0"]
        if self.scenario == "grow" and self.joiner not in self.members and node0.core:
            node0.core.add_member(self.joiner)
            self.members.append(self.joiner)
            self.log(f"add member {self.joiner}")
            return
        if self.scenario == "shuffle":
            self.shuffle()
            return
        target = [m for m in self.members if m != self.leaving]
        for node in self.up():
            assert node.core is not None
            if not node.core.table.is_complete() or node.core.migrations:
                continue
            try:
                moves = plan(node.core.table, target)
            except BadRequestError:
                continue
            for move in moves:
                if move.source == node.id:
                    self.start(node, move.slots, move.target)
        if self.leaving and node0.core and self.leaving in self.members:
            table = node0.core.table
            info = table.nodes.get(self.leaving)
            if info and info.role is NodeRole.DATA and not len(table.slots_of(self.leaving)):
                node0.core.remove_member(self.leaving)
                self.log(f"remove member {self.leaving}")

    def shuffle(self) -> None:
        node = self.rng.choice(self.up())
        assert node.core is not None
        slot = key_slot(self.rng.choice(self.keys))
        width = self.rng.choice([0, 5, 300])
        slots = SlotSet.of([(max(0, slot - width), min(16383, slot + width))])
        targets = [m for m in self.members if m != node.id]
        self.start(node, slots, self.rng.choice(targets))

    def start(self, node: SimNode, slots: SlotSet, target: str) -> None:
        assert node.core is not None
        try:
            mid = node.core.start_migration(slots, target)
        except BadRequestError:
            return
        self.stats["migrations"] += 1
        self.log(f"{node.id} starts migration {mid} of {slots} to {target}")

    # -- clients ------------------------------------------------------------------------------

    def client_op(self, client: Client) -> None:
        key = self.rng.choice(self.keys)
        kind = self.rng.choice(["get", "put", "put", "delete"])
        self.counter += 1
        value = f"v{self.counter}"
        slot = key_slot(key)
        start = client.cache.get(slot) or self.rng.choice(list(self.nodes))
        self.stats["ops"] += 1
        node_id, asking = start, False
        for _ in range(MAX_HOPS):
            node = self.nodes[node_id]
            if node.core is None or key in node.locks:
                return  # unavailable or busy: the client would retry later
            try:
                decision = node.core.route(key, exists_locally=key in node.disk.data,
                                           asking=asking)
            except UnavailableError:
                return
            if isinstance(decision, Moved):
                client.cache[slot] = node_id = decision.peer
                asking = False
            elif isinstance(decision, Ask):
                node_id, asking = decision.peer, True
            else:
                self.serve(node, decision, kind, key, value)
                return

    def serve(self, node: SimNode, decision: Serve, kind: str, key: str, value: str) -> None:
        data = node.disk.data
        if kind == "get":
            got = data.get(key)
            if got not in self.legal[key]:
                self.fail(f"read of {key} at {node.id} gave {got!r}, legal {self.legal[key]}")
            self.legal[key] = {got}
            return
        if kind == "delete" and key in data and decision.forward_deletes_to:
            target = self.nodes[decision.forward_deletes_to]
            if (target.core is None or not self.net.connected(node.id, target.id)
                    or not target.core.accepts_import(key, node.id)):
                return  # cannot clear the target's copy now: the client retries
            target.disk.data.pop(key, None)
        new = value if kind == "put" else None
        if new is None:
            data.pop(key, None)
        else:
            data[key] = new
        if self.lossy(0.1):  # the reply is lost: the write may or may not count
            self.legal[key] = self.legal[key] | {new}
            self.log(f"{kind} {key}={new} at {node.id}, reply lost")
        else:
            self.legal[key] = {new}
            self.stats["acked"] += 1
            self.log(f"{kind} {key}={new} at {node.id}")

    # -- the loop -------------------------------------------------------------------------------

    def step(self) -> None:
        self.now += 1
        for src, dst, data in self.net.due(self.now):
            node = self.nodes[dst]
            if node.core is not None and self.net.connected(src, dst):
                node.core.step(src, decode(data))
        for i, node in enumerate(self.nodes.values()):
            if node.core is not None and (self.now + i) % TICK_EVERY == 0:
                node.core.tick()
        faulty = self.faults and self.now < self.fault_steps
        if faulty:
            self.random_faults()
        if self.now < self.fault_steps and self.now % 15 == 0:
            self.admin()
        for client in self.clients:
            if self.rng.random() < 0.4:
                self.client_op(client)
        for node in self.up():
            self.finish_moves(node)
            self.process_ready(node)
        checks.check_routing(self)

    def run(self) -> None:
        self.net.drop, self.net.dup = (0.05, 0.03) if self.faults else (0.0, 0.0)
        for node in self.up():
            self.process_ready(node)
        while self.now < self.fault_steps:
            self.step()
        self.net.drop = self.net.dup = 0.0
        self.net.recover()
        for node in self.nodes.values():
            if node.core is None:
                self.restart(node)
        self.log("heal all, restart all")
        deadline = self.now + self.settle_steps
        while not checks.quiescent(self):
            if self.now >= deadline:
                self.fail("no quiescence after healing: " + "; ".join(
                    f"{n.id}: {n.core.migrations if n.core else 'down'}"
                    for n in self.nodes.values()))
            if self.now % 15 == 0:
                self.admin_settle()
            self.step()
        checks.final_check(self)

    def admin_settle(self) -> None:
        """After the faults the operator finishes the rebalance it asked for."""
        saved, self.fault_steps = self.fault_steps, self.now + 1
        self.admin()
        self.fault_steps = saved


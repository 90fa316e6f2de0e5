"""ClusterCore: the one object the daemon drives (etcd-raft style, no I/O).

Theory of operation
-------------------
The daemon feeds the core three kinds of input and carries out its output:

  inputs   step(sender, msg)   a message from a peer (decoded by messages.decode)
           tick()              one unit of time passed (the core reads no clock)
           admin calls         start_migration, abort_migration, add_member,
                               remove_member, set_client, revoke_client,
                               merge_clients, and the outcomes of data
                               actions: keys_listed, keys_moved, move_failed
  queries  route(key, exists_locally=, asking=) -> Serve | Ask | Moved
           accepts_import(key, source), liveness(peer), table, migrations
  output   ready() -> Ready(state, messages, actions), then advance(ready)

The Ready contract, in this order:
  1. if ready.state is not None, persist it durably (it is the table, the
     current epoch and every migration record; PersistentState.to_cbor);
  2. send ready.messages, each (peer, msg), to its peer (messages.encode);
  3. carry out ready.actions (ListKeys, MoveKeys) and report each outcome
     back with keys_listed / keys_moved / move_failed;
  4. call advance(ready).
Persisting before sending is what makes acks meaningful: a target only says
"importing" or "I own it now" once that is on disk.

Data actions and the per-key lock the daemon must keep:
  ListKeys(mid, ranges, limit): list up to `limit` local keys whose slot is in
    `ranges`; report keys_listed(mid, keys) (empty: nothing left).
  MoveKeys(mid, target, keys): for each key take its lock (the same per-key
    lock every client request holds around route() and the datastore
    operation), read the value, send the batch to the target (ASKING), wait
    until the target has stored it durably, delete the local copies, release
    the locks, and report keys_moved; if the target did not acknowledge,
    delete nothing, release the locks and report move_failed. A client request
    for a locked key waits (or is told to retry) and routes afresh afterwards,
    so a write racing a move is neither lost (it lands before the read or
    after the delete, when the key is absent here and the request is ASKed
    to the target) nor resurrected.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2

from dscluster.core.gossip import FailureDetector, GossipConfig, Liveness
from dscluster.core.messages import (
    Handoff,
    HandoffAck,
    Message,
    MigrateAbort,
    MigrateBegin,
    MigrateBeginAck,
    Ping,
    Pong,
    TableDelta,
)
from dscluster.core.migration import Event, Migration, Phase
from dscluster.core.routing import Decision, decide
from dscluster.core.slots import SlotSet, key_slot
from dscluster.core.table import (
    BUCKET_SIZE,
    ClientInfo,
    ClientRole,
    NodeInfo,
    NodeRole,
    Run,
    SlotTable,
    TableDigest,
    next_version,
)
from dscluster.errors import BadRequestError, ProtocolError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ListKeys:
    mid: int
    ranges: tuple[tuple[int, int], ...]
    limit: int


@dataclass(frozen=True)
class MoveKeys:
    mid: int
    target: str
    keys: tuple[str, ...]


Action = ListKeys | MoveKeys


@dataclass(frozen=True)
class PersistentState:
    """Everything a node must keep across restarts."""

    table: SlotTable
    epoch: int  # the highest epoch this node has seen or made
    next_mid: int
    migrations: tuple[Migration, ...] = ()  # outgoing and incoming

    def to_cbor(self) -> bytes:
        return cbor2.dumps({"table": self.table.to_obj(), "epoch": self.epoch,
                            "next_mid": self.next_mid,
                            "migrations": [m.to_obj() for m in self.migrations]})

    @classmethod
    def from_cbor(cls, data: bytes) -> PersistentState:
        try:
            obj = cbor2.loads(data)
        except Exception as exc:  # cbor2 raises several unrelated types on garbage
            raise ProtocolError(f"persisted state is not valid CBOR: {exc}") from exc
        if not isinstance(obj, dict):
            raise ProtocolError("persisted state is not a map")
        epoch, next_mid, migs = obj.get("epoch"), obj.get("next_mid"), obj.get("migrations")
        if type(epoch) is not int or type(next_mid) is not int or not isinstance(migs, list):
            raise ProtocolError("persisted state has bad fields")
        return cls(SlotTable.from_obj(obj.get("table")), epoch, next_mid,
                   tuple(Migration.from_obj(m) for m in migs))


@dataclass(frozen=True)
class Ready:
    state: PersistentState | None = None
    messages: tuple[tuple[str, Message], ...] = ()
    actions: tuple[Action, ...] = ()

    def __bool__(self) -> bool:
        return self.state is not None or bool(self.messages) or bool(self.actions)


@dataclass
class _Outbox:
    messages: list[tuple[str, Message]] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)


class ClusterCore:
    def __init__(self, me: str, state: PersistentState, *, rng: random.Random,
                 config: GossipConfig | None = None, seeds: Sequence[str] = ()) -> None:
        self.me = me
        self._cfg = config or GossipConfig()
        self._rng = rng  # picks gossip targets; injected so simulations replay
        self._last_ping: dict[str, int] = {}
        self._seeds = tuple(s for s in seeds if s != me)
        self._table = state.table.copy()
        self._epoch = max(state.epoch, self._table.max_epoch())
        self._next_mid = state.next_mid
        self._out: dict[int, Migration] = {}
        self._in: dict[tuple[str, int], Migration] = {}
        for m in state.migrations:
            if m.source == me:
                self._out[m.mid] = m
            else:
                self._in[(m.source, m.mid)] = m
        self._fd = FailureDetector(me, self._cfg)
        self._now = 0
        self._busy: set[int] = set()  # migrations with a data action outstanding
        self._last_sent: dict[tuple[str, int], int] = {}
        self._dirty = False
        self._box = _Outbox()
        self._fd.watch(self._peers())
        self._finish_handoffs()  # claims learned before a restart
        for m in self._out.values():  # a restarted node resumes where it stopped
            self._resume(m)

    # -- construction ------------------------------------------------------------

    @classmethod
    def bootstrap(cls, me: str, table: SlotTable, **kw: Any) -> ClusterCore:
        """A member of a fresh cluster whose table came from config.json."""
        core = cls(me, PersistentState(table, table.max_epoch(), 1), **kw)
        core._dirty = True  # the first Ready persists the starting state
        return core

    @classmethod
    def joining(cls, me: str, seeds: Sequence[str], **kw: Any) -> ClusterCore:
        """A new node that learns the table from `seeds`; an admin adds it as a member."""
        return cls(me, PersistentState(SlotTable.empty(), 0, 1), seeds=seeds, **kw)

    # -- queries -----------------------------------------------------------------------

    @property
    def table(self) -> SlotTable:
        """The current view (do not mutate; copy it if you keep it)."""
        return self._table

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def migrations(self) -> tuple[Migration, ...]:
        return tuple(self._out.values()) + tuple(self._in.values())

    def liveness(self, peer: str) -> Liveness:
        return self._fd.liveness(peer)

    def _migrating_to(self, slot: int) -> str | None:
        for m in self._out.values():
            if m.moving_keys and slot in m.slots:
                return m.target
        return None

    def _importing_from(self, slot: int) -> str | None:
        for m in self._in.values():
            if slot in m.slots:
                return m.source
        return None

    def route(self, key: str | bytes, *, exists_locally: bool, asking: bool) -> Decision:
        slot = key_slot(key)
        return decide(self.me, slot, self._table.owner(slot), self._migrating_to(slot),
                      self._importing_from(slot), exists_locally=exists_locally, asking=asking)

    def accepts_import(self, key: str | bytes, source: str) -> bool:
        """May `source` write (or delete) this key here as part of a migration?"""
        return self._importing_from(key_slot(key)) == source

    # -- Ready / advance ---------------------------------------------------------------

    def _state(self) -> PersistentState:
        return PersistentState(self._table.copy(), self._epoch, self._next_mid, self.migrations)

    def has_ready(self) -> bool:
        return self._dirty or bool(self._box.messages) or bool(self._box.actions)

    def ready(self) -> Ready:
        return Ready(self._state() if self._dirty else None,
                     tuple(self._box.messages), tuple(self._box.actions))

    def advance(self, ready: Ready) -> None:
        if ready.state is not None:
            self._dirty = False
        del self._box.messages[:len(ready.messages)]
        del self._box.actions[:len(ready.actions)]

    def _send(self, peer: str, msg: Message) -> None:
        self._box.messages.append((peer, msg))

    # -- membership --------------------------------------------------------------------

    def _peers(self) -> list[str]:
        return [n for n in self._table.data_nodes() if n != self.me]

    def _broadcast_runs(self, runs: list[Run], nodes: Iterable[NodeInfo] = (),
                        clients: Iterable[ClientInfo] = ()) -> None:
        msg = TableDelta(tuple(runs), tuple(nodes), tuple(clients))
        for peer in self._peers():
            self._send(peer, msg)

    def add_member(self, peer: str, addrs: Sequence[str] = ()) -> None:
        old = self._table.nodes.get(peer)
        node = NodeInfo(peer, tuple(addrs), NodeRole.DATA, old.version + 1 if old else 1)
        self._table.merge_nodes([node])
        self._dirty = True
        self._fd.watch(self._peers())
        self._broadcast_runs([], [node])
        if peer != self.me:
            self._send(peer, TableDelta(tuple(self._table.runs()),
                                        tuple(self._table.nodes.values()),
                                        tuple(self._table.clients.values())))

    def remove_member(self, peer: str) -> None:
        old = self._table.nodes.get(peer)
        if old is None or old.role is NodeRole.RETIRED:
            raise BadRequestError(f"{peer} is not a member")
        if len(self._table.slots_of(peer)):
            raise BadRequestError(f"{peer} still owns slots: migrate them away first")
        node = NodeInfo(peer, old.addrs, NodeRole.RETIRED, old.version + 1)
        self._broadcast_runs([], [node])
        self._table.merge_nodes([node])
        self._dirty = True
        self._fd.watch(self._peers())

    # -- client roles ------------------------------------------------------------------

    def set_client(self, peer: str, role: ClientRole, *, now_ms: int = 0) -> ClientInfo:
        """Publish ``role`` (NONE: a tombstone) for a client peer; returns the new entry.

        Its version is above the entry it replaces and not below ``now_ms`` (the
        caller's clock, milliseconds; the core reads none), so it wins here at once
        and everywhere over entries made earlier. Members are refused: their role is
        the table's membership."""
        if peer in self._table.nodes:
            raise BadRequestError(f"{peer} is a cluster member: its role is the table's")
        entry = ClientInfo(peer, role, next_version(self._table.clients.get(peer), now_ms))
        self._table.merge_clients([entry])
        self._dirty = True
        self._broadcast_runs([], [], [entry])
        return entry

    def revoke_client(self, peer: str, only: ClientRole | None = None, *,
                      now_ms: int = 0) -> ClientInfo | None:
        """Tombstone ``peer``'s role (only if it is ``only``, when named); None if it had none."""
        held = self._table.client_role(peer)
        if held is None or (only is not None and held is not only):
            return None
        return self.set_client(peer, ClientRole.NONE, now_ms=now_ms)

    def merge_clients(self, entries: Iterable[ClientInfo]) -> bool:
        """Merge client entries made elsewhere (seeds); gossip spreads what changed."""
        if not self._table.merge_clients(entries):
            return False
        self._dirty = True
        return True

    # -- time --------------------------------------------------------------------------

    def tick(self) -> None:
        self._now += 1
        self._fd.tick()
        if self._now % self._cfg.heartbeat_ticks == 0:
            self._heartbeat()
        for m in list(self._out.values()):
            self._retransmit(m)
        for m in self._in.values():
            if self._due((m.source, m.mid)):  # probe: is the source still migrating?
                self._send(m.source, MigrateBeginAck(m.mid))

    def _heartbeat(self) -> None:
        digest = self._table.digest()
        peers = self._peers()
        newly = self._fd.evaluate(self._table.data_nodes())
        for peer in newly:
            log.warning("%s: peer %s is FAIL", self.me, peer)
        ping = Ping(digest.buckets, digest.members, self._epoch,
                    self._fd.suspects(), self._fd.failed(), digest.roles)
        targets = peers if self._table.is_complete() and peers else sorted(set(peers) | set(self._seeds))
        fanout = self._cfg.fanout
        if fanout and len(targets) > fanout:
            stale = self._now - self._cfg.pfail_ticks // 2
            due = [p for p in targets if self._last_ping.get(p, -1) <= stale]
            chosen = set(self._rng.sample(targets, fanout)) | set(due)
            targets = [p for p in targets if p in chosen]
        for peer in targets:
            self._last_ping[peer] = self._now
            self._send(peer, ping)

    def _due(self, key: tuple[str, int]) -> bool:
        last = self._last_sent.get(key)
        if last is None or self._now - last >= self._cfg.retry_ticks:
            self._last_sent[key] = self._now
            return True
        return False

    def _retransmit(self, m: Migration) -> None:
        if m.phase is Phase.PREPARING and self._due((m.target, m.mid)):
            self._send(m.target, MigrateBegin(m.mid, m.slots.ranges))
        elif m.phase is Phase.HANDOFF and self._due((m.target, m.mid)):
            self._send(m.target, Handoff(m.mid, self._epoch))
        elif m.phase is Phase.MIGRATING and m.mid not in self._busy:
            self._list_keys(m)

    def _resume(self, m: Migration) -> None:
        self._last_sent.pop((m.target, m.mid), None)
        self._retransmit(m)

    # -- admin: migrations ---------------------------------------------------------------

    def start_migration(self, slots: SlotSet, target: str) -> int:
        """Begin moving `slots` (all owned here) to `target`; returns the migration id."""
        if not len(slots):
            raise BadRequestError("no slots to migrate")
        node = self._table.nodes.get(target)
        if target == self.me or node is None or node.role is not NodeRole.DATA:
            raise BadRequestError(f"{target} is not a data node of this cluster")
        not_mine = [s for s in slots if self._table.owner(s) != self.me]
        if not_mine:
            raise BadRequestError(f"slots {SlotSet.from_slots(not_mine)} are not owned here")
        busy = set(slots) & {s for m in self.migrations for s in m.slots}
        if busy:
            raise BadRequestError(f"slots {SlotSet.from_slots(busy)} are already migrating")
        mid = self._next_mid
        self._next_mid += 1
        m = Migration(mid, slots, self.me, target, Phase.PREPARING)
        self._out[mid] = m
        self._dirty = True
        self._resume(m)
        return mid

    def abort_migration(self, mid: int) -> None:
        m = self._out.get(mid)
        if m is None:
            raise BadRequestError(f"no outgoing migration {mid}")
        m.on(Event.ABORT)  # raises once keys may have moved
        del self._out[mid]
        self._dirty = True
        self._send(m.target, MigrateAbort(mid))

    # -- data action outcomes -------------------------------------------------------------

    def _migrating(self, mid: int) -> Migration:
        m = self._out.get(mid)
        if m is None or m.phase is not Phase.MIGRATING:
            raise BadRequestError(f"migration {mid} is not moving keys")
        return m

    def _list_keys(self, m: Migration) -> None:
        self._busy.add(m.mid)
        self._box.actions.append(ListKeys(m.mid, m.slots.ranges, self._cfg.batch_keys))

    def keys_listed(self, mid: int, keys: Sequence[str]) -> None:
        m = self._migrating(mid)
        self._busy.discard(mid)
        stray = [k for k in keys if key_slot(k) not in m.slots]
        if stray:
            raise BadRequestError(f"listed keys outside migration {mid}: {stray[:3]}")
        if keys:
            self._busy.add(mid)
            self._box.actions.append(MoveKeys(mid, m.target, tuple(keys)))
            return
        m = self._out[mid] = m.on(Event.SOURCE_EMPTY)
        self._dirty = True
        self._resume(m)

    def keys_moved(self, mid: int, keys: Sequence[str]) -> None:
        m = self._migrating(mid)
        self._busy.discard(mid)
        self._list_keys(m)

    def move_failed(self, mid: int) -> None:
        self._migrating(mid)
        self._busy.discard(mid)  # the next tick lists and tries again

    # -- messages --------------------------------------------------------------------------

    def step(self, sender: str, msg: Message) -> None:
        """Feed one message from `sender`; stale or misplaced messages are ignored."""
        self._fd.heard_from(sender)
        match msg:
            case Ping():
                self._on_ping(sender, msg)
            case Pong():
                self._on_pong(sender, msg)
            case TableDelta():
                self._merge(msg.runs, msg.nodes, msg.clients)
            case MigrateBegin():
                self._on_migrate_begin(sender, msg)
            case MigrateBeginAck():
                self._on_migrate_begin_ack(sender, msg)
            case MigrateAbort():
                self._on_migrate_abort(sender, msg)
            case Handoff():
                self._on_handoff(sender, msg)
            case HandoffAck():
                self._on_handoff_ack(sender, msg)
            case _:
                raise ProtocolError(f"unexpected message {type(msg).__name__}")

    def _merge(self, runs: Sequence[Run], nodes: Sequence[NodeInfo],
               clients: Sequence[ClientInfo] = ()) -> None:
        result = self._table.merge_runs(runs, self.me)
        nodes_changed = self._table.merge_nodes(nodes)
        if self._table.merge_clients(clients):
            self._dirty = True
        if result.lost:
            # Redis's configEpoch collision rule: the loser moves to a fresh epoch.
            log.warning("%s: lost %d slots in an epoch collision", self.me, len(result.lost))
            self._epoch = max(self._epoch, self._table.max_epoch()) + 1
        if result.changed or nodes_changed or result.lost:
            self._epoch = max(self._epoch, self._table.max_epoch())
            self._dirty = True
        if nodes_changed:
            self._fd.watch(self._peers())
        if result.changed:
            self._finish_handoffs()

    def _finish_handoffs(self) -> None:
        # Done once no slot of the migration is ours any more. Only the target can
        # claim them over our claim (we refuse imports of slots we own and start no
        # other migration of them), but it may already have moved some of them on
        # before we hear its claims: waiting for `owner == target` would then wait
        # forever, since a target that finished ignores our late Handoff.
        for mid, m in list(self._out.items()):
            if m.phase is Phase.HANDOFF and all(self._table.owner(s) != self.me for s in m.slots):
                del self._out[mid]
                self._dirty = True

    def _gossip_reply(self, sender: str, msg: Ping | Pong
                      ) -> tuple[list[Run], list[NodeInfo], list[ClientInfo]]:
        self._fd.on_report(sender, msg.suspects, msg.failed)
        digest = TableDigest(msg.buckets, msg.members, msg.roles)
        if len(digest.buckets) != len(self._table.digest().buckets):
            raise ProtocolError("digest has the wrong number of buckets")
        runs = self._table.runs(self._table.differing_buckets(digest))
        nodes = (list(self._table.nodes.values())
                 if digest.members != self._table.members_hash() else [])
        # Tombstones travel too: a peer that missed a removal must learn it.
        clients = (list(self._table.clients.values())
                   if digest.roles != self._table.roles_hash() else [])
        return runs, nodes, clients

    def _on_ping(self, sender: str, msg: Ping) -> None:
        self._epoch = max(self._epoch, msg.epoch)
        runs, nodes, clients = self._gossip_reply(sender, msg)
        digest = self._table.digest()
        self._send(sender, Pong(digest.buckets, digest.members, self._epoch, self._fd.suspects(),
                                self._fd.failed(), tuple(runs), tuple(nodes), tuple(clients),
                                digest.roles))

    def _on_pong(self, sender: str, msg: Pong) -> None:
        self._epoch = max(self._epoch, msg.epoch)
        self._merge(msg.runs, msg.nodes, msg.clients)
        runs, nodes, clients = self._gossip_reply(sender, msg)
        if runs or nodes or clients:  # we hold something newer: push it back
            self._send(sender, TableDelta(tuple(runs), tuple(nodes), tuple(clients)))

    def _on_migrate_begin(self, sender: str, msg: MigrateBegin) -> None:
        key = (sender, msg.mid)
        if key not in self._in:
            try:
                slots = SlotSet.of(msg.ranges)
            except ValueError as exc:
                raise ProtocolError(f"bad ranges in MigrateBegin: {exc}") from exc
            clash = [s for s in slots if self._table.owner(s) == self.me
                     or self._importing_from(s) is not None]
            if clash or not len(slots):
                log.warning("%s: refusing import %s from %s", self.me, msg.mid, sender)
                return
            self._in[key] = Migration(msg.mid, slots, sender, self.me, Phase.IMPORTING)
            self._dirty = True
        self._last_sent[key] = self._now
        self._send(sender, MigrateBeginAck(msg.mid))

    def _on_migrate_begin_ack(self, sender: str, msg: MigrateBeginAck) -> None:
        m = self._out.get(msg.mid)
        if m is None or m.target != sender:
            self._send(sender, MigrateAbort(msg.mid))  # a probe for an import we forgot
            return
        nxt = m.on(Event.BEGIN_ACKED)
        if nxt != m:
            self._out[msg.mid] = nxt
            self._dirty = True
            self._resume(nxt)

    def _on_migrate_abort(self, sender: str, msg: MigrateAbort) -> None:
        m = self._in.pop((sender, msg.mid), None)
        if m is not None:
            m.on(Event.ABORT)
            self._dirty = True

    def _on_handoff(self, sender: str, msg: Handoff) -> None:
        m = self._in.get((sender, msg.mid))
        if m is None:
            return  # already done (the source also learns it by gossip) or unknown
        m.on(Event.HANDOFF)
        del self._in[(sender, msg.mid)]
        self._epoch = max(self._epoch, msg.epoch, self._table.max_epoch()) + 1
        self._table.assign(m.slots, (self._epoch, self.me))
        self._dirty = True
        self._send(sender, HandoffAck(msg.mid, m.slots.ranges, self._epoch))
        buckets = {b for start, end in m.slots.ranges
                    for b in range(start // BUCKET_SIZE, end // BUCKET_SIZE + 1)}
        self._broadcast_runs(self._table.runs(buckets))

    def _on_handoff_ack(self, sender: str, msg: HandoffAck) -> None:
        m = self._out.get(msg.mid)
        if m is None or m.target != sender or m.phase is not Phase.HANDOFF:
            return
        self._merge([(a, b, msg.epoch, sender) for a, b in msg.ranges], [])
        self._finish_handoffs()  # also when newer claims already superseded the ack's
        if msg.mid in self._out:  # the ack's claims did not cover our slots: keep waiting
            log.warning("%s: handoff ack %s does not cover the migration", self.me, msg.mid)

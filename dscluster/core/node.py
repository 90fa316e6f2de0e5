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
           accepts_import(key, source), liveness(peer), table, migrations,
           copy_guard (which primaries' replicated writes this node may take)
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

The migration state machine (the records, their retransmissions and the
data actions the daemon carries out, with the per-key lock it must keep) is
migration.py's `Migrations`; copy-set changes by majority (failover of a FAIL
primary, shrink of a FAIL copy) are changes.py's `CopyChanges`. This core
owns the slot table, the epoch and gossip, routes keys, claims or releases
slots when a migration hands off, and writes a won election into the table.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2

from dscluster.core.changes import CopyChanges, acceptor_from_obj, acceptor_to_obj
from dscluster.core.election import Acceptor, Config
from dscluster.core.gossip import FailureDetector, GossipConfig, Liveness
from dscluster.core.messages import (
    Accepted,
    Handoff,
    HandoffAck,
    Message,
    MigrateAbort,
    MigrateBegin,
    MigrateBeginAck,
    Ping,
    Pong,
    Propose,
    TableDelta,
    Vote,
    VoteRequest,
)
from dscluster.core.migration import Action, ListKeys, Migration, Migrations, MoveKeys
from dscluster.core.replication import CopyGuard
from dscluster.core.routing import Decision, decide
from dscluster.core.slots import SlotSet, key_slot
from dscluster.core.table import (
    BUCKET_SIZE,
    DEFAULT_SETTINGS,
    MAX_COPIES,
    ClientInfo,
    ClientRole,
    ClusterSettings,
    NodeInfo,
    NodeRole,
    SlotTable,
    TableDigest,
    next_version,
)
from dscluster.errors import BadRequestError, ProtocolError

log = logging.getLogger(__name__)

REFILL_CHUNK = 16  # slots that go to one new copy together (few ranges, even spread)


def _rendezvous(key: int, candidates: Sequence[str]) -> str:
    """The candidate with the highest hash of (key, candidate): stable, evenly spread."""
    return max(candidates, key=lambda c: hashlib.blake2b(f"{key}/{c}".encode(),
                                                         digest_size=8).digest())

__all__ = ["Action", "ClusterCore", "ListKeys", "MoveKeys", "PersistentState", "Ready"]


@dataclass(frozen=True)
class PersistentState:
    """Everything a node must keep across restarts."""

    table: SlotTable
    epoch: int  # the highest epoch this node has seen or made
    next_mid: int
    migrations: tuple[Migration, ...] = ()  # outgoing and incoming
    promised: int = 0  # the election acceptor's promise (core/election.py)
    accepted: tuple[tuple[int, Config], ...] = ()  # and the configurations it accepted
    withdrawn: bool = False  # its disk was wiped: it serves no copy until they are re-made

    def to_cbor(self) -> bytes:
        obj = {"table": self.table.to_obj(), "epoch": self.epoch, "next_mid": self.next_mid,
               "migrations": [m.to_obj() for m in self.migrations]}
        if self.promised or self.accepted:  # absent until copies: the form of before
            obj["acceptor"] = acceptor_to_obj(self.promised, dict(self.accepted))
        if self.withdrawn:
            obj["withdrawn"] = True
        return cbor2.dumps(obj)

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
        promised, accepted = acceptor_from_obj(obj.get("acceptor"))
        withdrawn = obj.get("withdrawn", False)
        if type(withdrawn) is not bool:
            raise ProtocolError("persisted state has a bad 'withdrawn' field")
        return cls(SlotTable.from_obj(obj.get("table")), epoch, next_mid,
                   tuple(Migration.from_obj(m) for m in migs), promised,
                   tuple(sorted(accepted.items())), withdrawn)


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
        self._fd = FailureDetector(me, self._cfg)
        self._now = 0
        self._dirty = False
        self._box = _Outbox()
        self._mig = Migrations(me, state.migrations, state.next_mid, config=self._cfg,
                               send=self._send, act=self._box.actions.append,
                               now=lambda: self._now, epoch=lambda: self._epoch)
        self._withdrawn = state.withdrawn
        self._changes = CopyChanges(me, Acceptor(me, state.promised, dict(state.accepted)),
                                    send=self._send, rng=rng,
                                    election_ticks=self._cfg.election_ticks)
        self._fd.watch(self._peers())
        self._mig.finish_handoffs(self._table)  # claims learned before a restart
        self._mig.resume_all()

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
        return self._mig.records

    def liveness(self, peer: str) -> Liveness:
        return self._fd.liveness(peer)

    @property
    def copy_guard(self) -> CopyGuard:
        """The fence the replicator checks every replicated write against."""
        return self._changes.guard

    # -- re-replication (node/refill.py fills the copy, then asks for the grow) ----------

    def refill_plan(self) -> tuple[str, SlotSet] | None:
        """Slots I am primary of with fewer copies than the setting, and the live data
        member to copy them to; None if none.

        Each run of `REFILL_CHUNK` slots picks its member by rendezvous hashing
        among the data members that hold no copy of it and are not FAIL, so every
        primary spreads its new copies evenly over the others, and all decide alike
        without talking (no herding onto the least loaded). A member that is only
        suspected (PFAIL) keeps its part, which waits until it is UP again or FAIL:
        a moment's missed ping must not send its share to the others for good.
        One call plans one UP member's part; the next call, once that grow is
        done, the next member's."""
        t = self._table
        want = t.settings.copies
        if want < 2 or self._changes.grow is not None or self._withdrawn:
            return None
        members = [p for p in t.data_nodes()
                   if p != self.me and self.liveness(p) is not Liveness.FAIL]
        parts: dict[str, list[int]] = {}
        for s in t.slots_of(self.me):
            copies = t.copies(s)
            if len(copies) >= want or self._mig.busy(s):
                continue
            candidates = [p for p in members if p not in copies]
            if candidates:
                parts.setdefault(_rendezvous(s // REFILL_CHUNK, candidates), []).append(s)
        ready = sorted(p for p in parts if self.liveness(p) is Liveness.UP)
        if not ready:
            return None
        return ready[0], SlotSet.from_slots(parts[ready[0]])

    # -- a wiped disk ---------------------------------------------------------------------

    @property
    def withdrawn(self) -> bool:
        """This node lost its data (a wiped or new disk under an old state): it serves
        and takes no copy, and reports itself FAIL, until no slot's copy set that
        names it has another copy to fail over to (core/gossip.py)."""
        return self._withdrawn

    def withdraw(self) -> None:
        self._withdrawn = True
        self._dirty = True
        log.warning("%s: withdrawn (its data is gone): reporting itself FAIL until its "
                    "copies are taken over", self.me)
        self._check_withdrawn()

    def _check_withdrawn(self) -> None:
        t = self._table
        if any(len(t.copies(s)) > 1 for s in (*t.slots_of(self.me), *t.replica_slots_of(self.me))):
            return
        self._withdrawn = False
        self._dirty = True
        log.warning("%s: no copy set that names it has another copy now: back in service "
                    "(an empty node, filled again by re-replication)", self.me)

    def _failed_view(self) -> tuple[str, ...]:
        """The FAIL list gossiped: this node's view, and itself while withdrawn."""
        failed = self._fd.failed()
        return tuple(sorted((*failed, self.me))) if self._withdrawn else failed

    def unfinished_grows(self) -> list[tuple[str, SlotSet]]:
        """Grows this node proposed and accepted itself but never saw committed (it
        restarted meanwhile): the new copy must be sent every write again, as the
        proposal may be accepted by a majority, and the grow finished."""
        found: dict[str, list[int]] = {}
        for slot, config in self._changes.acceptor.accepted.items():
            epoch, owner = self._table.claim(slot)
            if config.primary != self.me or owner != self.me or config.epoch <= epoch:
                continue
            for extra in config.copies:
                if extra not in self._table.copies(slot):
                    found.setdefault(extra, []).append(slot)
        return [(t, SlotSet.from_slots(s)) for t, s in sorted(found.items())]

    def request_renew(self, slots: SlotSet) -> None:
        """A copy refused writes of `slots` as older than an epoch it knows: stand for
        the same copy sets at a higher epoch (nothing changes if another won them)."""
        self._changes.renew.update(s for s in slots if self._table.owner(s) == self.me)

    def request_handover(self, target: str, slots: SlotSet) -> None:
        """`target` holds a copy of `slots`: stand for making it their primary."""
        self._changes.handover = (target, slots)

    def request_handover_cancel(self) -> None:
        self._changes.handover = None

    @property
    def handing_over(self) -> tuple[str, SlotSet] | None:
        return self._changes.handover

    def request_grow(self, target: str, slots: SlotSet) -> None:
        """`target` holds every key of `slots` (and is sent their writes): stand for
        adding it to their copy sets, retrying until the table holds it there."""
        self._changes.grow = (target, slots)

    @property
    def growing(self) -> tuple[str, SlotSet] | None:
        return self._changes.grow

    def route(self, key: str | bytes, *, exists_locally: bool, asking: bool) -> Decision:
        slot = key_slot(key)
        return decide(self.me, slot, self._table.owner(slot), self._mig.migrating_to(slot),
                      self._mig.importing_from(slot), exists_locally=exists_locally,
                      asking=asking)

    def accepts_import(self, key: str | bytes, source: str) -> bool:
        """May `source` write (or delete) this key here as part of a migration?"""
        return self._mig.importing_from(key_slot(key)) == source

    # -- Ready / advance ---------------------------------------------------------------

    def _state(self) -> PersistentState:
        acceptor = self._changes.acceptor
        return PersistentState(self._table.copy(), self._epoch, self._mig.next_mid,
                               self._mig.records, acceptor.promised,
                               tuple(sorted(acceptor.accepted.items())), self._withdrawn)

    def _needs_persist(self) -> bool:
        return self._dirty or self._mig.dirty or self._changes.dirty

    def has_ready(self) -> bool:
        return self._needs_persist() or bool(self._box.messages) or bool(self._box.actions)

    def ready(self) -> Ready:
        return Ready(self._state() if self._needs_persist() else None,
                     tuple(self._box.messages), tuple(self._box.actions))

    def advance(self, ready: Ready) -> None:
        if ready.state is not None:
            self._dirty = False
            self._mig.dirty = False
            self._changes.dirty = False
        del self._box.messages[:len(ready.messages)]
        del self._box.actions[:len(ready.actions)]

    def _send(self, peer: str, msg: Message) -> None:
        self._box.messages.append((peer, msg))

    # -- membership --------------------------------------------------------------------

    def _peers(self) -> list[str]:
        return [n for n in self._table.data_nodes() if n != self.me]

    def _delta(self, buckets: Iterable[int] | None = (), nodes: Iterable[NodeInfo] = (),
               clients: Iterable[ClientInfo] = ()) -> TableDelta:
        """Our entries of `buckets` (None: all), with their copy sets, and `nodes`
        (with the cluster settings) and `clients`: the one form table news travels in."""
        t = self._table
        wanted = None if buckets is None else sorted(set(buckets))
        runs = tuple(t.runs(wanted)) if wanted is None or wanted else ()
        replicas = (tuple(r for r in t.copy_runs(wanted) if r[4])
                    if runs and t.has_replicas() else ())
        nodes = tuple(nodes)
        settings = t.settings if nodes and t.settings != DEFAULT_SETTINGS else None
        return TableDelta(runs, nodes, tuple(clients), replicas, settings)

    def _broadcast(self, msg: TableDelta) -> None:
        for peer in self._peers():
            self._send(peer, msg)

    def add_member(self, peer: str, addrs: Sequence[str] = ()) -> None:
        old = self._table.nodes.get(peer)
        node = NodeInfo(peer, tuple(addrs), NodeRole.DATA, old.version + 1 if old else 1)
        self._table.merge_nodes([node])
        self._dirty = True
        self._fd.watch(self._peers())
        self._broadcast(self._delta(nodes=[node]))
        if peer != self.me:
            self._send(peer, self._delta(None, self._table.nodes.values(),
                                         self._table.clients.values()))

    def set_copies(self, copies: int) -> None:
        """Change the cluster's copies setting; primaries act on it (refill, shrink)."""
        members = len(self._table.data_nodes())
        if type(copies) is not int or not 1 <= copies <= min(MAX_COPIES, members):
            raise BadRequestError(f"copies must be from 1 to {min(MAX_COPIES, members)} "
                                  f"(at most one copy per data node), got {copies}")
        self._table.merge_settings(ClusterSettings(copies, self._table.settings.version + 1))
        self._dirty = True
        self._broadcast(self._delta(nodes=self._table.nodes.values()))

    def remove_member(self, peer: str) -> None:
        old = self._table.nodes.get(peer)
        if old is None or old.role is NodeRole.RETIRED:
            raise BadRequestError(f"{peer} is not a member")
        if len(self._table.slots_of(peer)):
            raise BadRequestError(f"{peer} still owns slots: migrate them away first")
        node = NodeInfo(peer, old.addrs, NodeRole.RETIRED, old.version + 1)
        self._broadcast(self._delta(nodes=[node]))
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
        self._broadcast(self._delta(clients=[entry]))
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
        self._mig.tick()

    def _heartbeat(self) -> None:
        digest = self._table.digest()
        peers = self._peers()
        newly = self._fd.evaluate(self._table.data_nodes())
        for peer in newly:
            log.warning("%s: peer %s is FAIL", self.me, peer)
        if self._withdrawn:
            self._check_withdrawn()
        else:  # a wiped node stands for nothing: it holds none of the data
            self._epoch = self._changes.tick(self._now, self._table, self._fd.failed(),
                                             self._epoch, self._mig.busy)
        self._apply_won()
        ping = Ping(digest.buckets, digest.members, self._epoch,
                    self._fd.suspects(), self._failed_view(), digest.roles)
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

    # -- admin: migrations ---------------------------------------------------------------

    def start_migration(self, slots: SlotSet, target: str) -> int:
        """Begin moving `slots` (all owned here) to `target`; returns the migration id."""
        return self._mig.start(slots, target, self._table)

    def abort_migration(self, mid: int) -> None:
        self._mig.abort(mid)

    # -- data action outcomes -------------------------------------------------------------

    def keys_listed(self, mid: int, keys: Sequence[str]) -> None:
        self._mig.keys_listed(mid, keys)

    def keys_moved(self, mid: int, keys: Sequence[str]) -> None:
        self._mig.keys_moved(mid, keys)

    def move_failed(self, mid: int) -> None:
        self._mig.move_failed(mid)

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
                self._merge(msg)
            case MigrateBegin():
                self._mig.on_migrate_begin(sender, msg, self._table)
            case MigrateBeginAck():
                self._mig.on_migrate_begin_ack(sender, msg)
            case MigrateAbort():
                self._mig.on_migrate_abort(sender, msg)
            case Handoff():
                self._on_handoff(sender, msg)
            case HandoffAck():
                self._on_handoff_ack(sender, msg)
            case VoteRequest():
                self._epoch = max(self._epoch, msg.epoch)
                self._changes.on_vote_request(sender, msg, self._table, self._fd.failed())
            case Vote():
                self._changes.on_vote(sender, msg)
                self._apply_won()
            case Propose():
                self._epoch = max(self._epoch, msg.epoch)
                self._changes.on_propose(sender, msg, self._table)
            case Accepted():
                self._changes.on_accepted(sender, msg)
                self._apply_won()
            case _:
                raise ProtocolError(f"unexpected message {type(msg).__name__}")

    def _merge(self, news: TableDelta | Pong) -> None:
        result = self._table.merge_runs(news.runs, self.me)
        if news.replicas:  # after the claims: a raised claim starts without replicas
            more = self._table.merge_copy_runs(news.replicas, self.me)
            result.changed.extend(more.changed)
            result.lost.extend(more.lost)
        nodes_changed = self._table.merge_nodes(news.nodes)
        if news.settings is not None and self._table.merge_settings(news.settings):
            self._dirty = True
        if self._table.merge_clients(news.clients):
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
            self._mig.finish_handoffs(self._table)
            self._changes.forget_committed(self._table)

    def _apply_won(self) -> None:
        """Write the configurations of won elections into the table, and tell everyone."""
        for kind, subject, runs in self._changes.won:
            buckets: set[int] = set()
            for start, end, config in runs:
                newer = [s for s in range(start, end + 1) if self._table.claim(s)[0] < config.epoch]
                if not newer:
                    continue
                self._table.assign(SlotSet.from_slots(newer), (config.epoch, config.primary),
                                   config.copies[1:])
                self._epoch = max(self._epoch, config.epoch)
                buckets.update(s // BUCKET_SIZE for s in newer)
            log.warning("%s: %s of %s committed on %d buckets", self.me, kind.value, subject,
                        len(buckets))
            if buckets:
                self._dirty = True
                self._broadcast(self._delta(buckets))
        self._changes.won.clear()
        self._changes.forget_committed(self._table)

    def _gossip_reply(self, sender: str, msg: Ping | Pong) -> TableDelta:
        """What we hold that the sender's digest says differs."""
        self._fd.on_report(sender, msg.suspects, msg.failed)
        digest = TableDigest(msg.buckets, msg.members, msg.roles)
        if len(digest.buckets) != len(self._table.digest().buckets):
            raise ProtocolError("digest has the wrong number of buckets")
        nodes = (self._table.nodes.values()
                 if digest.members != self._table.members_hash() else ())
        # Tombstones travel too: a peer that missed a removal must learn it.
        clients = (self._table.clients.values()
                   if digest.roles != self._table.roles_hash() else ())
        return self._delta(self._table.differing_buckets(digest), nodes, clients)

    def _on_ping(self, sender: str, msg: Ping) -> None:
        self._epoch = max(self._epoch, msg.epoch)
        d = self._gossip_reply(sender, msg)
        digest = self._table.digest()
        self._send(sender, Pong(digest.buckets, digest.members, self._epoch, self._fd.suspects(),
                                self._failed_view(), d.runs, d.nodes, d.clients, digest.roles,
                                d.replicas, d.settings))

    def _on_pong(self, sender: str, msg: Pong) -> None:
        self._epoch = max(self._epoch, msg.epoch)
        self._merge(msg)
        d = self._gossip_reply(sender, msg)
        if d.runs or d.nodes or d.clients:  # we hold something newer: push it back
            self._send(sender, d)

    def _on_handoff(self, sender: str, msg: Handoff) -> None:
        m = self._mig.on_handoff(sender, msg)
        if m is None:
            return
        self._epoch = max(self._epoch, msg.epoch, self._table.max_epoch()) + 1
        self._table.assign(m.slots, (self._epoch, self.me))
        self._dirty = True
        self._send(sender, HandoffAck(msg.mid, m.slots.ranges, self._epoch))
        buckets = {b for start, end in m.slots.ranges
                    for b in range(start // BUCKET_SIZE, end // BUCKET_SIZE + 1)}
        self._broadcast(self._delta(buckets))

    def _on_handoff_ack(self, sender: str, msg: HandoffAck) -> None:
        if not self._mig.awaits_handoff_ack(sender, msg):
            return
        self._merge(TableDelta(tuple((a, b, msg.epoch, sender) for a, b in msg.ranges)))
        self._mig.finish_handoffs(self._table)  # also when newer claims superseded the ack's
        if self._mig.outgoing(msg.mid) is not None:
            # the ack's claims did not cover our slots: keep waiting
            log.warning("%s: handoff ack %s does not cover the migration", self.me, msg.mid)

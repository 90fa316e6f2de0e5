"""Cluster administration: status, rebalance, drain, reshard, check and fix.

Theory of operation
-------------------
``AdminClient`` speaks the admin protocol (dscluster/wire/admin_messages.py)
to each node directly; the nodes do the work. A node learns the whole
membership from any one node's table, so the client needs one reachable
address to start.

Every long operation is a sequence of migrations, each started at its source
node (``AdminMigrate``) and followed by polling that node's status until the
migration's record is gone. Nothing is kept on the admin's side: the nodes
persist their migrations, and they resume them by themselves after a
restart. So re-running ``rebalance`` (or ``fix``) after the admin process
died first waits for what is still moving and then plans again from the
current table: the plan of an already balanced table is empty.

``check`` asks every member for its table, its migrations and a scan of its
keys, and lists what is wrong: tables that differ, slots left unowned, slots
still migrating, keys a node holds on a slot it neither owns nor moves.
``fix`` rolls back migrations that have not started moving keys (PREPARING)
and waits for the others, which only ever go forward.

Client roles are cluster state, gossiped in the slot table. ``grant`` and
``revoke`` send the change to ONE member (the first that answers, in peer-ID
order), which records it durably and answers; gossip then carries it to every
other member, including one that is down now, once it is back. ``wait_roles``
polls every member until they all show the change (or a timeout), and
``roles`` returns each node's view.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from dscluster.core.planner import Move, plan
from dscluster.core.slots import SLOT_COUNT, SlotSet
from dscluster.core.table import NodeRole, SlotTable
from dscluster.errors import BadRequestError, DSClusterError, UnavailableError
from dscluster.net.host import HostHandle, Identity, open_host, parse_peer_id
from dscluster.net.rpc import RpcClient, open_rpc_client
from dscluster.wire import admin_messages as am
from dscluster.wire import messages as wm

log = logging.getLogger(__name__)

CALL_TIMEOUT = 30.0
CHECK_TIMEOUT = 300.0  # a key scan of a large node
POLL_INTERVAL = 0.2
FORGET_TIMEOUT = 3600.0  # seconds forget-node waits for the failover and the refill


@dataclass(frozen=True)
class NodeStatus:
    peer: str
    epoch: int
    table: SlotTable
    migrations: tuple[am.MigrationInfo, ...]
    moved: dict[int, tuple[int, int]]  # mid -> (keys, bytes) this node sent as a source

    def outgoing(self) -> list[am.MigrationInfo]:
        return [m for m in self.migrations if m.source == self.peer]


@dataclass
class Progress:
    """What a rebalance has done so far (reported after every poll)."""

    slots_total: int
    slots_done: int = 0
    moves_total: int = 0
    moves_done: int = 0
    keys: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    _live: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)

    def seen(self, source: str, info: am.MigrationInfo) -> None:
        old_keys, old_bytes = self._live.get((source, info.mid), (0, 0))
        self.keys += info.keys_moved - old_keys
        self.bytes += info.bytes_moved - old_bytes
        self._live[(source, info.mid)] = (info.keys_moved, info.bytes_moved)

    def line(self) -> str:
        secs = max(time.monotonic() - self.started, 1e-9)
        return (f"slots {self.slots_done}/{self.slots_total}, moves {self.moves_done}/"
                f"{self.moves_total}, {self.keys} keys, {self.bytes / 2**20:.1f} MiB moved, "
                f"{self.keys / secs:.0f} keys/s, {self.bytes / 2**20 / secs:.2f} MiB/s")


ProgressFn = Callable[[Progress], None]


@dataclass(frozen=True)
class RoleChange:
    """What one member answered to a grant or revoke."""

    via: str  # the member that recorded the change
    changed: bool  # a grant: always; a revoke: the client held the role
    version: int = 0  # a grant: the new entry's version


@dataclass(frozen=True)
class CheckReport:
    problems: tuple[str, ...]
    nodes: int
    keys: int

    @property
    def ok(self) -> bool:
        return not self.problems


class AdminClient:
    """Admin calls to the nodes of one cluster; open it with ``open_admin``."""

    def __init__(self, host: HostHandle, rpc: RpcClient, seeds: dict[str, list[str]]) -> None:
        self.host = host
        self.rpc = rpc
        self._addrs = dict(seeds)  # peer -> addresses, refreshed from tables

    async def call(self, peer: str, request: wm.Request,
                   timeout: float = CALL_TIMEOUT) -> wm.Response:
        addrs = self._addrs.get(peer, [])
        if addrs:
            await self.host.connect(peer, addrs)
        return await self.rpc.call(parse_peer_id(peer), wm.ADMIN_PROTOCOL, request,
                                   timeout=timeout)

    async def status(self, peer: str) -> NodeStatus:
        resp = await self.call(peer, am.AdminStatus(0))
        if not isinstance(resp, am.AdminStatusReply):
            raise BadRequestError(f"{peer} answered status with {type(resp).__name__}")
        table = SlotTable.from_cbor(resp.table)
        for node in table.nodes.values():
            if node.addrs:
                self._addrs[node.id] = list(node.addrs)
        return NodeStatus(resp.peer_id, resp.epoch, table, resp.migrations,
                          {mid: (k, b) for mid, k, b in resp.moved})

    async def table(self) -> SlotTable:
        """The table of the first seed that answers."""
        errors: list[tuple[str, DSClusterError]] = []
        for peer in list(self._addrs):
            try:
                return (await self.status(peer)).table
            except DSClusterError as exc:
                errors.append((peer, exc))
        if errors and not any(isinstance(e, UnavailableError) for _, e in errors):
            raise errors[0][1]  # unauthorized, a protocol error: the node answered, say what
        raise UnavailableError("no node answered: " + "; ".join(
            [f"{peer}: {exc}" for peer, exc in errors] or ["no addresses"]))

    async def members(self) -> list[str]:
        table = await self.table()
        return sorted(n.id for n in table.nodes.values() if n.role is NodeRole.DATA)

    async def wait_member(self, peer: str, timeout: float = 30) -> NodeStatus:
        """Wait until ``peer`` is a member with addresses and answers; its status."""
        with trio.fail_after(timeout):
            while True:
                node = (await self.table()).nodes.get(peer)
                if node is not None and node.addrs:
                    try:
                        return await self.status(peer)
                    except UnavailableError as exc:
                        log.info("waiting for %s: %s", peer, exc)
                await trio.sleep(POLL_INTERVAL)

    async def statuses(self) -> dict[str, NodeStatus | DSClusterError]:
        out: dict[str, NodeStatus | DSClusterError] = {}
        for peer in await self.members():
            try:
                out[peer] = await self.status(peer)
            except DSClusterError as exc:
                out[peer] = exc
        return out

    async def migrate(self, source: str, slots: SlotSet, target: str) -> int:
        resp = await self.call(source, am.AdminMigrate(0, slots.ranges, target))
        assert isinstance(resp, wm.Ok) and isinstance(resp.value, int)
        return resp.value

    async def abort(self, source: str, mid: int) -> None:
        await self.call(source, am.AdminAbort(0, mid))

    async def add_member(self, peer: str, addrs: Sequence[str] = (), via: str | None = None) -> None:
        parse_peer_id(peer)
        via = via or (await self.members())[0]
        await self.call(via, am.AdminAddMember(0, peer, tuple(addrs)))

    async def set_copies(self, copies: int) -> None:
        """Change the cluster's copies setting (any member takes it; gossip spreads it)."""
        await self.on_one_member(am.AdminSetCopies(0, copies))  # a dead member is skipped

    async def wait_copies(self, copies: int, on_progress: Callable[[int, int], None]
                          | None = None, timeout: float = 3600) -> None:
        """Wait until every slot has ``copies`` copies in the first member's table."""
        with trio.fail_after(timeout):
            while True:
                table = await self.table()
                done = sum(1 for s in range(SLOT_COUNT) if len(table.copies(s)) == copies)
                if on_progress is not None:
                    on_progress(done, SLOT_COUNT)
                if done == SLOT_COUNT:
                    return
                await trio.sleep(POLL_INTERVAL)

    async def remove_member(self, peer: str) -> None:
        errors = []
        for via in await self.members():
            if via == peer:
                continue
            try:
                await self.call(via, am.AdminRemoveMember(0, peer))
                return
            except UnavailableError as exc:  # a dead member is skipped
                errors.append(f"{via}: {exc}")
        raise UnavailableError("no other member answered: " + "; ".join(errors or ["none"]))

    async def forget(self, peer: str, on_progress: Callable[[int, int], None] | None = None,
                     timeout: float = FORGET_TIMEOUT) -> None:
        """Retire ``peer``, a data member that is gone for good (doc/copies.md).

        Refused while it answers (drain it with remove-node instead) or while it
        holds the only copy of a slot. Waits until its slots have failed over to
        their copies, retires it, then waits until re-replication has given every
        slot its copies again."""
        table = await self.table()
        node = table.nodes.get(peer)
        if node is None or node.role is not NodeRole.DATA:
            raise BadRequestError(f"{peer} is not a data member of this cluster")
        alone = [s for s in table.slots_of(peer) if len(table.copies(s)) < 2]
        if alone:
            raise BadRequestError(
                f"{peer} holds the only copy of {len(alone)} slots (e.g. slots "
                f"{SlotSet.from_slots(alone[:64])}): forgetting it would lose their keys; "
                "start it again, or drain it with remove-node while it runs")
        try:
            await self.status(peer)
        except UnavailableError:
            pass  # gone, as it should be
        else:
            raise BadRequestError(f"{peer} is running: retire it with "
                                  f"`dsclient cluster remove-node {peer}` instead")
        with trio.fail_after(timeout):
            while len(owned := (await self.table()).slots_of(peer)):
                log.info("waiting for %d slots of %s to fail over", len(owned), peer)
                await trio.sleep(POLL_INTERVAL)
            await self.remove_member(peer)
            table = await self.table()
            left = sum(1 for n in table.nodes.values() if n.role is NodeRole.DATA)
            await self.wait_copies(min(table.settings.copies, left), on_progress)

    # -- client roles (entries of the gossiped table) -----------------------------------

    async def on_every_member(self, request: wm.Request
                              ) -> dict[str, wm.Response | DSClusterError]:
        """``request`` sent to every member concurrently: each node's answer or error."""
        out: dict[str, wm.Response | DSClusterError] = {}

        async def one(peer: str) -> None:
            try:
                out[peer] = await self.call(peer, request)
            except DSClusterError as exc:
                out[peer] = exc

        async with trio.open_nursery() as nursery:
            for peer in await self.members():
                nursery.start_soon(one, peer)
        return dict(sorted(out.items()))

    async def on_one_member(self, request: wm.Request) -> tuple[str, wm.Response]:
        """``request`` sent to the members in turn until one answers: (member, answer).

        Only an unreachable member is skipped; any other error (a refusal, a bad
        request) is the answer and is raised."""
        errors = []
        for peer in await self.members():
            try:
                return peer, await self.call(peer, request)
            except UnavailableError as exc:
                errors.append(f"{peer}: {exc}")
        raise UnavailableError("no member answered: " + "; ".join(errors or ["no members"]))

    async def grant(self, client: str, role: str) -> RoleChange:
        """Give ``client`` ``role`` in the cluster's table (replacing the role it had)."""
        parse_peer_id(client)
        via, reply = await self.on_one_member(am.AdminGrant(0, client, role))
        version = getattr(reply, "value", None)
        return RoleChange(via, True, version if isinstance(version, int) else 0)

    async def revoke(self, client: str, role: str = "") -> RoleChange:
        """Take ``client``'s role (only ``role``, if named); ``changed``: it had one."""
        parse_peer_id(client)
        via, reply = await self.on_one_member(am.AdminRevoke(0, client, role))
        return RoleChange(via, bool(getattr(reply, "value", False)))

    async def wait_roles(self, client: str, role: str | None, timeout: float = 10
                         ) -> dict[str, bool | DSClusterError]:
        """Poll every member until each shows ``client`` with ``role`` (None: no role).

        Per member: True (it shows it), False (not yet, at the timeout) or the error
        of an unreachable one (it learns the change by gossip once it is back)."""
        deadline = trio.current_time() + timeout
        while True:
            views: dict[str, bool | DSClusterError] = {
                peer: view if isinstance(view, DSClusterError) else view.get(client) == role
                for peer, view in (await self.roles()).items()}
            if (all(v is True or isinstance(v, DSClusterError) for v in views.values())
                    or trio.current_time() >= deadline):
                return views
            await trio.sleep(POLL_INTERVAL)

    async def roles(self) -> dict[str, dict[str, str] | DSClusterError]:
        """Each member's clients: peer -> role name, or the error it gave."""
        out: dict[str, dict[str, str] | DSClusterError] = {}
        for peer, reply in (await self.on_every_member(am.AdminRoles(0))).items():
            if isinstance(reply, am.AdminRolesReply):
                out[peer] = dict(reply.clients)
            elif isinstance(reply, DSClusterError):
                out[peer] = reply
            else:
                out[peer] = BadRequestError(f"answered roles with {type(reply).__name__}")
        return out

    async def check_keys(self, peer: str) -> am.AdminCheckReply:
        resp = await self.call(peer, am.AdminCheck(0), timeout=CHECK_TIMEOUT)
        assert isinstance(resp, am.AdminCheckReply)
        return resp

    # -- long operations ---------------------------------------------------------------

    async def wait_migration(self, source: str, mid: int, progress: Progress | None = None,
                             on_progress: ProgressFn | None = None) -> None:
        """Poll ``source`` until migration ``mid`` is finished (its record is gone)."""
        while True:
            try:
                status = await self.status(source)
            except UnavailableError as exc:  # restarting: it resumes on its own
                log.info("waiting for %s: %s", source, exc)
                await trio.sleep(1)
                continue
            info = next((m for m in status.outgoing() if m.mid == mid), None)
            if info is None:
                if progress is not None and mid in status.moved:  # the final totals
                    keys, nbytes = status.moved[mid]
                    progress.seen(source, am.MigrationInfo(mid, source, "", "done", (), keys,
                                                           nbytes))
                return
            if progress is not None:
                progress.seen(source, info)
                if on_progress is not None:
                    on_progress(progress)
            await trio.sleep(POLL_INTERVAL)

    async def wait_idle(self, on_progress: ProgressFn | None = None) -> None:
        """Wait until no member has an outgoing migration (they resume by themselves)."""
        for peer, st in (await self.statuses()).items():
            if isinstance(st, NodeStatus):
                for m in st.outgoing():
                    log.info("waiting for migration %d of %s", m.mid, peer)
                    await self.wait_migration(peer, m.mid, Progress(len(SlotSet(m.ranges))),
                                              on_progress)

    async def execute(self, moves: Sequence[Move], *, parallel: int = 1,
                      on_progress: ProgressFn | None = None) -> Progress:
        """Run ``moves``, at most ``parallel`` at a time (one per source)."""
        progress = Progress(sum(len(m.slots) for m in moves), moves_total=len(moves))
        sources_busy: set[str] = set()
        limiter = trio.CapacityLimiter(max(1, parallel))

        async def run(move: Move) -> None:
            async with limiter:
                while move.source in sources_busy:  # one migration per source at a time
                    await trio.sleep(POLL_INTERVAL)
                sources_busy.add(move.source)
                try:
                    mid = await self._migrate_when_up(move)
                    log.info("migration %d: %s slots %s -> %s", mid, move.source, move.slots,
                             move.target)
                    await self.wait_migration(move.source, mid, progress, on_progress)
                finally:
                    sources_busy.discard(move.source)
                progress.slots_done += len(move.slots)
                progress.moves_done += 1
                if on_progress is not None:
                    on_progress(progress)

        async with trio.open_nursery() as nursery:
            for move in moves:
                nursery.start_soon(run, move)
        await self.wait_converged()
        return progress

    async def _migrate_when_up(self, move: Move, timeout: float = 60) -> int:
        """Start ``move`` at its source, waiting out a source that is restarting."""
        with trio.move_on_after(timeout):
            while True:
                try:
                    return await self.migrate(move.source, move.slots, move.target)
                except UnavailableError as exc:
                    log.info("waiting for %s to start a move: %s", move.source, exc)
                    await trio.sleep(1)
        return await self.migrate(move.source, move.slots, move.target)  # its error, once more

    async def wait_converged(self, timeout: float = 30) -> None:
        """Wait until every member reports the same slot table (gossip spreads claims)."""
        with trio.move_on_after(timeout):
            while True:
                tables = [st.table.runs() for st in (await self.statuses()).values()
                          if isinstance(st, NodeStatus)]
                if tables and all(t == tables[0] for t in tables):
                    return
                await trio.sleep(POLL_INTERVAL)
        log.warning("tables have not converged after %.0fs", timeout)

    async def plan_rebalance(self, members: Sequence[str] | None = None) -> list[Move]:
        table = await self.table()
        chosen = list(members) if members is not None else sorted(
            n.id for n in table.nodes.values() if n.role is NodeRole.DATA)
        return plan(table, chosen)

    async def rebalance(self, *, parallel: int = 1,
                        on_progress: ProgressFn | None = None) -> Progress:
        await self.wait_idle(on_progress)
        return await self.execute(await self.plan_rebalance(), parallel=parallel,
                                  on_progress=on_progress)

    async def drain(self, peer: str, *, parallel: int = 1,
                    on_progress: ProgressFn | None = None) -> Progress:
        """Move every slot of ``peer`` to the other members, then retire it."""
        await self.wait_idle(on_progress)
        node = (await self.table()).nodes.get(peer)
        if node is not None and node.role is NodeRole.RETIRED:
            return Progress(0)  # done already (re-run after an interruption)
        members = await self.members()
        if peer not in members:
            raise BadRequestError(f"{peer} is not a data member of this cluster")
        rest = [m for m in members if m != peer]
        if not rest:
            raise BadRequestError("cannot remove the last member")
        progress = await self.execute(await self.plan_rebalance(rest), parallel=parallel,
                                      on_progress=on_progress)
        await self.remove_member(peer)
        return progress

    async def reshard(self, count: int, source: str, target: str,
                      on_progress: ProgressFn | None = None) -> Progress:
        table = await self.table()
        owned = table.slots_of(source)
        if count <= 0 or count > len(owned):
            raise BadRequestError(f"--slots {count}: {source} owns {len(owned)} slots")
        _, give = owned.tail(count)
        return await self.execute([Move(give, source, target)], on_progress=on_progress)

    async def check(self) -> CheckReport:
        problems: list[str] = []
        statuses = await self.statuses()
        tables: dict[str, SlotTable] = {}
        keys = 0
        for peer, st in sorted(statuses.items()):
            if not isinstance(st, NodeStatus):
                problems.append(f"{peer}: unreachable: {st}")
                continue
            tables[peer] = st.table
            for m in st.migrations:
                problems.append(f"{peer}: slots {SlotSet(m.ranges)} are {m.phase} "
                                f"(migration {m.mid} {m.source} -> {m.target})")
            try:
                reply = await self.check_keys(peer)
            except DSClusterError as exc:
                problems.append(f"{peer}: key check failed: {exc}")
                continue
            keys += reply.keys
            if reply.stray:
                problems.append(f"{peer}: holds {reply.stray} keys on slots it does not own "
                                f"(e.g. {', '.join(reply.sample[:3])})")
        if tables:
            first_peer, first = next(iter(tables.items()))
            if not first.is_complete():
                problems.append(f"{first_peer}: the slot table leaves slots unowned")
            for peer, table in tables.items():
                if table.copy_runs() != first.copy_runs():
                    problems.append(f"{peer}: its slot table differs from {first_peer}'s")
            want = first.settings.copies
            short = [s for s in range(SLOT_COUNT) if 0 < len(first.copies(s)) < want]
            if short:
                problems.append(f"{len(short)} slots have fewer than {want} copies "
                                f"(e.g. slots {SlotSet.from_slots(short[:64])}): "
                                "re-replication is filling them")
        return CheckReport(tuple(problems), len(statuses), keys)

    async def fix(self, on_progress: ProgressFn | None = None) -> list[str]:
        """Roll back migrations that moved nothing yet, wait for the rest; returns what it did."""
        done: list[str] = []
        for peer, st in (await self.statuses()).items():
            if not isinstance(st, NodeStatus):
                continue
            for m in st.outgoing():
                if m.phase == "preparing":
                    try:
                        await self.abort(peer, m.mid)
                        done.append(f"rolled back migration {m.mid} of {peer}")
                    except BadRequestError:
                        pass  # it moved on meanwhile: wait for it below
        await self.wait_idle(on_progress)
        await self.wait_converged()
        return done


def _seeds(addrs: Sequence[str]) -> dict[str, list[str]]:
    seeds: dict[str, list[str]] = {}
    for addr in addrs:
        if "/p2p/" not in addr:
            continue
        base, peer = addr.rsplit("/p2p/", 1)
        seeds.setdefault(peer, []).append(base)
    return seeds


@asynccontextmanager
async def open_admin(identity: Identity, seeds: Sequence[str] | dict[str, list[str]],
                     swarm_key: bytes | None = None) -> AsyncIterator[AdminClient]:
    """An AdminClient that starts from ``seeds`` (/p2p/ multiaddrs, or peer -> addrs).

    ``swarm_key``: the cluster's private network key, if it has one."""
    peers = dict(seeds) if isinstance(seeds, dict) else _seeds(seeds)
    if not peers:
        raise BadRequestError("no node address (with /p2p/) to start from")
    async with open_host(identity, swarm_key=swarm_key) as host, \
            open_rpc_client(host.host) as rpc:
        yield AdminClient(host, rpc, peers)

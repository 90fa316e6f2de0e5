"""AdminService: the admin protocol's handler on a data node.

Theory of operation
-------------------
An admin client (``dsclient cluster ...``) talks to every node directly over
ADMIN_PROTOCOL (dscluster/wire/admin_messages.py). Each request is a thin
call into the node's core through its driver, so the core's own rules apply
(only owned, idle slots migrate; abort only before keys move; only a member
without slots retires) and every change is persisted before it is acted on.
Interrupted migrations need no admin call to resume: the core resumes them
from the state file on restart; ``abort`` is the one way back.

Who may call: cluster members (they hold Role.ADMIN implicitly), the peers
listed in DIR/admins (one peer ID per line, ``#`` comments) and, when the
node carries an Authorizer (``node.auth``), whoever it grants Role.ADMIN
(an ``admin`` line in the clients file).

Client roles are cluster state (entries of the gossiped table): AdminGrant
publishes a role and AdminRevoke a tombstone through this node's core, each
answered once the change is persisted here (``Ok(version)`` for a grant,
``Ok(True/False)`` for a revoke); gossip carries it to every other member,
including one that is down now, when it is back. AdminRoles answers with the
roles this node's table holds. Each node writes its roles back to its own
DIR/clients (node/clients.py). Members are decided by the table, so
``member`` is not a role one can grant.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio
from libp2p.peer.id import ID

from dscluster.core.slots import SLOT_COUNT, SlotSet, key_slot, normalize_ranges
from dscluster.datastore import Query
from dscluster.errors import BadRequestError, ConfigError, UnauthorizedError
from dscluster.net.host import parse_peer_id
from dscluster.net.rpc_server import serve_rpc
from dscluster.node.auth import Role
from dscluster.wire import admin_messages as am
from dscluster.wire import messages as wm

if TYPE_CHECKING:
    from dscluster.node.daemon import DataNode

log = logging.getLogger(__name__)

ADMINS_FILE = "admins"
STRAY_SAMPLE = 16
MOVED_REPORTED = 256  # the latest migrations' totals in a status reply


def load_admins(conf_dir: str) -> frozenset[str]:
    """Peer IDs allowed to administer this node besides members; no file: none."""
    path = os.path.join(conf_dir, ADMINS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return frozenset()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    admins = set()
    for n, line in enumerate(lines, 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        try:
            parse_peer_id(words[0])
        except ConfigError as exc:
            raise ConfigError(f"{path}:{n}: {exc}") from None
        admins.add(words[0])
    return frozenset(admins)


class AdminService:
    def __init__(self, node: DataNode, admins: frozenset[str] = frozenset(),
                 conf_dir: str | None = None) -> None:
        self._node = node
        self._admins = admins
        self._conf_dir = conf_dir
        self.refused = 0

    def _authorize(self, peer: ID) -> None:
        name = peer.to_base58()
        if name in self._admins or self._node.driver.is_member(name):
            return
        auth: Any = getattr(self._node, "auth", None)
        if auth is not None:  # the node's Authorizer (dscluster/node/auth.py)
            auth.require(name, Role.ADMIN)
            return
        self.refused += 1
        log.warning("refused an admin request from %s", name)
        raise UnauthorizedError(f"peer {name} is not an admin of this cluster")

    async def handle(self, peer: ID, request: wm.Request) -> wm.Response:
        self._authorize(peer)
        driver = self._node.driver
        rid = request.id
        match request:
            case am.AdminStatus():
                return self._status(rid)
            case am.AdminMigrate(ranges=ranges, target=target):
                slots = SlotSet(_ranges(ranges))
                table = driver.core.table
                if any(len(table.copies(s)) > 1 for s in slots):  # keep the copies whole
                    return wm.Ok(rid, self._node.refiller.start_move(slots, target))
                mid = await driver.start_migration(slots, target)
                return wm.Ok(rid, mid)
            case am.AdminAbort(mid=mid):
                await driver.call(driver.core.abort_migration, mid)
                log.info("migration %d aborted by %s", mid, peer.to_base58())
                return wm.Ok(rid)
            case am.AdminAddMember(peer=member, addrs=addrs):
                parse_peer_id(member)
                await driver.call(driver.core.add_member, member, list(addrs))
                log.info("added member %s (%s)", member, ", ".join(addrs) or "no addresses")
                return wm.Ok(rid)
            case am.AdminRemoveMember(peer=member):
                await driver.call(driver.core.remove_member, member)
                log.info("retired member %s", member)
                return wm.Ok(rid)
            case am.AdminCheck():
                return await self._check(rid)
            case am.AdminGrant(peer=client, role=role):
                return wm.Ok(rid, await self._grant(peer, client, _client_role(role)))
            case am.AdminRevoke(peer=client, role=role):
                return wm.Ok(rid, await self._revoke(peer, client,
                                                     _client_role(role) if role else None))
            case am.AdminSetCopies(copies=copies):
                await driver.call(driver.core.set_copies, copies)
                log.info("copies set to %d by %s", copies, peer.to_base58())
                return wm.Ok(rid)
            case am.AdminRoles():
                return am.AdminRolesReply(rid, self._node.core.me, tuple(
                    (c, r.value) for c, r in sorted(self._node.client_roles().items())))
        raise BadRequestError(f"{type(request).__name__} is not an admin request")

    def stream(self, peer: ID, request: wm.Query) -> AsyncIterator[wm.QueryChunk]:
        self._authorize(peer)
        raise BadRequestError("the admin protocol has no queries")

    async def _grant(self, by: ID, client: str, role: Role) -> int:
        """Publish ``role`` for ``client`` in the table; its entry's version."""
        parse_peer_id(client)
        old = self._node.core.table.client_role(client)
        entry = await self._node.set_client_role(client, role)  # refuses a member
        log.info("client %s: %s -> %s at version %d (by %s)", client,
                 old.value if old else "none", role.value, entry.version, by.to_base58())
        return entry.version

    async def _revoke(self, by: ID, client: str, only: Role | None) -> bool:
        """Tombstone ``client``'s role (if it is ``only``, when named); True if it had one."""
        parse_peer_id(client)
        if self._node.driver.is_member(client):
            raise BadRequestError(f"{client} is a cluster member: its role is the table's")
        entry = await self._node.revoke_client_role(client, only)
        if entry is not None:
            log.info("client %s: role removed at version %d (by %s)", client, entry.version,
                     by.to_base58())
        return entry is not None

    def _status(self, rid: int) -> am.AdminStatusReply:
        core, migrator = self._node.core, self._node.migrator
        migrations = tuple(
            am.MigrationInfo(m.mid, m.source, m.target, m.phase.value, m.slots.ranges,
                             migrator.moved.get(m.mid, 0) if m.source == core.me else 0,
                             migrator.moved_bytes.get(m.mid, 0) if m.source == core.me else 0)
            for m in core.migrations) + tuple(
            am.MigrationInfo(m.mid, core.me, m.target, m.progress.phase, m.slots.ranges,
                             m.progress.keys, m.progress.bytes)
            for m in self._node.refiller.moves.values())
        moved = tuple((mid, keys, migrator.moved_bytes.get(mid, 0))
                      for mid, keys in sorted(migrator.moved.items())[-MOVED_REPORTED:])
        return am.AdminStatusReply(rid, core.me, core.epoch, core.table.to_cbor(), migrations,
                                   moved)

    async def _check(self, rid: int) -> am.AdminCheckReply:
        """Scan every key once: is each on a slot this node holds a copy of, imports or
        exports?"""
        core = self._node.core
        allowed = bytearray(SLOT_COUNT)
        for slot in (*core.table.slots_of(core.me), *core.table.replica_slots_of(core.me)):
            allowed[slot] = 1  # primary or copy
        for m in core.migrations:
            for slot in m.slots:
                allowed[slot] = 1
        scanned, stray = 0, 0
        sample: list[str] = []
        results = await self._node.datastore.query(Query(keys_only=True))
        try:
            async for entry in results:
                scanned += 1
                if not allowed[key_slot(entry.key)]:
                    stray += 1
                    if len(sample) < STRAY_SAMPLE:
                        sample.append(entry.key)
                if scanned % 4096 == 0:
                    await trio.lowlevel.checkpoint()
        finally:
            await results.aclose()
        return am.AdminCheckReply(rid, scanned, stray, tuple(sample))


def _client_role(name: str) -> Role:
    try:
        return Role.parse(name)
    except ValueError as exc:
        raise BadRequestError(str(exc)) from None


def _ranges(ranges: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    try:
        return normalize_ranges(ranges)
    except ValueError as exc:
        raise BadRequestError(f"bad slot ranges: {exc}") from None


@asynccontextmanager
async def serve_admin(node: DataNode, conf_dir: str) -> AsyncIterator[AdminService]:
    """Serve ADMIN_PROTOCOL for ``node`` for the body of the block."""
    service = AdminService(node, load_admins(conf_dir), conf_dir)
    # serve_rpc leaves reject_stream as the handler when the block ends.
    async with serve_rpc(node.host.host, wm.ADMIN_PROTOCOL, service):  # type: ignore[arg-type]
        yield service

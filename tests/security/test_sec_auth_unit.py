"""Authorizer and clients file: roles, old format, refusals, the file's seed/export rule."""

import logging
import os
import stat
from collections.abc import Mapping, Sequence

import pytest
import trio

from dscluster.core.table import ClientRole
from dscluster.errors import ConfigError, UnauthorizedError
from dscluster.net.host import Identity
from dscluster.node.auth import Authorizer, Role, from_table, to_table
from dscluster.node.clients import (
    CLIENTS_FILE,
    SYNCED_FILE,
    ClientsFileSync,
    Edit,
    diff_clients,
    format_clients,
    load_clients,
    save_clients,
)

MEMBER = Identity.generate().peer_id_str
RO, RW, ADMIN, STRANGER = (Identity.generate().peer_id_str for _ in range(4))
CLIENTS = {RO: Role.READ_ONLY, RW: Role.READ_WRITE, ADMIN: Role.ADMIN}


def make(**kw: object) -> Authorizer:
    return Authorizer(lambda p: p == MEMBER, CLIENTS.get, **kw)  # type: ignore[arg-type]


ALLOWED = {
    STRANGER: set(),
    RO: {Role.READ_ONLY},
    RW: {Role.READ_ONLY, Role.READ_WRITE},
    ADMIN: {Role.READ_ONLY, Role.READ_WRITE, Role.ADMIN},
    MEMBER: set(Role),
}


# ids by name: the peer IDs are random, and pytest-xdist needs equal ids in every worker
NAMES = {STRANGER: "stranger", RO: "ro", RW: "rw", ADMIN: "admin", MEMBER: "member"}


@pytest.mark.parametrize("peer", list(ALLOWED), ids=NAMES.get)
@pytest.mark.parametrize("needed", list(Role))
def test_require_matrix(peer: str, needed: Role) -> None:
    a = make()
    if needed in ALLOWED[peer]:
        assert a.require(peer, needed).allows(needed)
    else:
        with pytest.raises(UnauthorizedError):
            a.require(peer, needed)


def test_role_of() -> None:
    a = make()
    assert a.role_of(MEMBER) is Role.MEMBER
    assert a.role_of(RO) is Role.READ_ONLY
    assert a.role_of(STRANGER) is None


def test_read_only_client_and_disable_delete_narrow_clients_not_members() -> None:
    a = make(read_only_client=True, disable_delete=True)
    for peer in (RW, ADMIN):
        with pytest.raises(UnauthorizedError, match="read-only"):
            a.require_write(peer, deletes=False)
        assert a.require(peer, Role.READ_ONLY)
    assert a.require(ADMIN, Role.ADMIN) is Role.ADMIN
    assert a.require_write(MEMBER, deletes=True) is Role.MEMBER
    b = make(disable_delete=True)
    assert b.require_write(RW, deletes=False) is Role.READ_WRITE
    with pytest.raises(UnauthorizedError, match="deletes are disabled"):
        b.require_write(RW, deletes=True)


def test_refusals_logged_once_per_peer_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    a = make()
    with caplog.at_level(logging.WARNING, logger="dscluster.node.auth"):
        for _ in range(50):
            with pytest.raises(UnauthorizedError):
                a.require(STRANGER, Role.READ_ONLY)
    assert a.refused == 50
    assert sum("refused" in r.getMessage() for r in caplog.records) == 1


def test_clients_file_roles_and_old_format(tmp_path: os.PathLike[str]) -> None:
    d = str(tmp_path)
    with open(os.path.join(d, "clients"), "w") as f:
        f.write(f"# old and new lines\n{RO} read-only\n{RW}\n\n{ADMIN} admin  # boss\n")
    assert load_clients(d) == CLIENTS
    save_clients(d, format_clients(CLIENTS))
    assert load_clients(d) == CLIENTS
    assert stat.S_IMODE(os.stat(os.path.join(d, "clients")).st_mode) == 0o600


@pytest.mark.parametrize("line", [
    "notapeer", f"{RW} superuser", f"{RW} member", f"{RW} read-only extra", "\xff\xfe",
], ids=["not-a-peer", "superuser", "member", "extra-word", "not-utf8"])
def test_clients_file_bad_lines(tmp_path: os.PathLike[str], line: str) -> None:
    d = str(tmp_path)
    with open(os.path.join(d, "clients"), "w") as f:
        f.write(f"{RO} read-only\n{line}\n")
    with pytest.raises(ConfigError, match=":2:"):
        load_clients(d)


def test_roles_come_from_the_lookup_at_every_call() -> None:
    roles: dict[str, Role] = {}
    a = Authorizer(lambda p: p == MEMBER, roles.get)
    assert a.role_of(RW) is None
    roles[RW] = Role.READ_WRITE  # the table learned it (gossip, an admin call)
    assert a.require(RW, Role.READ_WRITE) is Role.READ_WRITE
    del roles[RW]
    with pytest.raises(UnauthorizedError):
        a.require(RW, Role.READ_ONLY)


def test_table_role_mapping() -> None:
    for role in (Role.READ_ONLY, Role.READ_WRITE, Role.ADMIN):
        assert from_table(to_table(role)) is role
    assert to_table(None) is ClientRole.NONE
    assert from_table(ClientRole.NONE) is None and from_table(None) is None
    with pytest.raises(ValueError):
        to_table(Role.MEMBER)


def test_diff_clients() -> None:
    old = {RO: Role.READ_ONLY, RW: Role.READ_WRITE}
    new = {RO: Role.ADMIN, ADMIN: Role.ADMIN}
    assert sorted(diff_clients(old, new), key=str) == sorted(
        [(RO, Role.ADMIN), (ADMIN, Role.ADMIN), (RW, None)], key=str)
    assert diff_clients(old, dict(old)) == []


class FakeTable:
    """What ClientsFileSync sees of a node: edits applied, roles persisted at once."""

    def __init__(self, roles: Mapping[str, Role] | None = None) -> None:
        self.roles: dict[str, Role] = dict(roles or {})
        self.applied: list[tuple[list[Edit], int]] = []

    async def apply(self, edits: Sequence[Edit], now_ms: int) -> None:
        self.applied.append((list(edits), now_ms))
        for peer, role in edits:
            if role is None:
                self.roles.pop(peer, None)
            else:
                self.roles[peer] = role

    def durable(self) -> dict[str, Role]:
        return dict(self.roles)

    def sync(self, conf: str) -> ClientsFileSync:
        return ClientsFileSync(conf, apply=self.apply, durable_roles=self.durable,
                               saved=trio.sleep_forever)


async def _first_pass(sync: ClientsFileSync) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(sync.run)
        nursery.cancel_scope.cancel()


async def test_file_seeds_the_table_at_first_start_and_gets_the_roles_back(tmp_path) -> None:
    d = str(tmp_path)
    save_clients(d, [f"{RO} read-only", f"{RW}"])
    os.utime(os.path.join(d, CLIENTS_FILE), ns=(1_700_000_000_123_000_000,) * 2)
    table = FakeTable({ADMIN: Role.ADMIN})  # learned elsewhere
    await _first_pass(table.sync(d))
    # no clients.synced yet: every line is an edit, none a removal, at the file's mtime
    assert table.applied == [(sorted([(RO, Role.READ_ONLY), (RW, Role.READ_WRITE)]),
                              1_700_000_000_123)]
    # then the node writes the roles back (the file is its mirror) and remembers the text
    assert load_clients(d) == {RO: Role.READ_ONLY, RW: Role.READ_WRITE, ADMIN: Role.ADMIN}
    for name in (CLIENTS_FILE, SYNCED_FILE):
        assert stat.S_IMODE(os.stat(os.path.join(d, name)).st_mode) == 0o600
    with open(os.path.join(d, SYNCED_FILE)) as f, open(os.path.join(d, CLIENTS_FILE)) as g:
        assert f.read() == g.read()


async def test_a_stale_file_never_takes_a_change_back(tmp_path) -> None:
    d = str(tmp_path)
    table = FakeTable({RO: Role.READ_ONLY, RW: Role.READ_WRITE})
    await _first_pass(table.sync(d))  # exported: the file and clients.synced hold both
    assert load_clients(d) == table.roles and table.applied == []
    # the node is stopped; meanwhile the cluster drops RW and adds ADMIN (its persisted
    # table learns that by gossip after the restart, here: at once)
    table.roles = {RO: Role.READ_ONLY, ADMIN: Role.ADMIN}
    await _first_pass(table.sync(d))
    assert table.applied == []  # the unedited (stale) file made no edit
    assert load_clients(d) == {RO: Role.READ_ONLY, ADMIN: Role.ADMIN}


async def test_edits_while_stopped_or_running_are_diffs_against_the_last_sync(tmp_path) -> None:
    d = str(tmp_path)
    table = FakeTable({RO: Role.READ_ONLY, RW: Role.READ_WRITE})
    await _first_pass(table.sync(d))
    # edited while the node was down: RO promoted, RW's line deleted, ADMIN added
    save_clients(d, [f"{RO} admin", f"{ADMIN} admin"])
    table.roles[STRANGER] = Role.READ_ONLY  # a change from elsewhere, not in the file
    sync = table.sync(d)
    await _first_pass(sync)
    edits, _ = table.applied[0]
    assert sorted(edits, key=str) == sorted(
        [(RO, Role.ADMIN), (ADMIN, Role.ADMIN), (RW, None)], key=str)
    # STRANGER is not revoked (the operator did not remove a line for it) and is exported
    assert load_clients(d) == {RO: Role.ADMIN, ADMIN: Role.ADMIN, STRANGER: Role.READ_ONLY}
    # a running node: the next look picks up an edit
    save_clients(d, [f"{RO} admin", f"{ADMIN} admin", f"{STRANGER} read-write"])
    await sync.sync_once()
    assert table.applied[-1][0] == [(STRANGER, Role.READ_WRITE)]
    await sync.sync_once()  # nothing new: no edit, no rewrite
    assert len(table.applied) == 2


async def test_garbage_is_left_alone_and_a_missing_file_is_not_a_revocation(
        tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    d = str(tmp_path)
    table = FakeTable({RO: Role.READ_ONLY})
    sync = table.sync(d)
    await _first_pass(sync)
    path = os.path.join(d, CLIENTS_FILE)
    with open(path, "a") as f:
        f.write("garbage garbage garbage\n")
    with caplog.at_level(logging.WARNING, logger="dscluster.node.clients"):
        for _ in range(3):
            await sync.sync_once()
    assert sum("does not parse" in r.getMessage() for r in caplog.records) == 1
    assert "garbage" in open(path).read()  # not exported over the operator's file
    assert table.applied == [] and table.roles == {RO: Role.READ_ONLY}
    os.unlink(path)
    await sync.sync_once()
    assert table.applied == [] and load_clients(d) == {RO: Role.READ_ONLY}


async def test_no_roles_and_no_file_writes_nothing(tmp_path) -> None:
    d = str(tmp_path)
    await _first_pass(FakeTable().sync(d))
    assert not os.path.exists(os.path.join(d, CLIENTS_FILE))


def test_role_parse() -> None:
    assert Role.parse("admin") is Role.ADMIN
    with pytest.raises(ValueError):
        Role.parse("member")

"""Authorizer and clients file: roles, old format, refusals, reload on change."""

import logging
import os
import stat
import time

import pytest

from dscluster.errors import ConfigError, UnauthorizedError
from dscluster.net.host import Identity
from dscluster.node import auth as auth_mod
from dscluster.node.auth import Authorizer, Role
from dscluster.node.clients import format_clients, load_clients, save_clients

MEMBER = Identity.generate().peer_id_str
RO, RW, ADMIN, STRANGER = (Identity.generate().peer_id_str for _ in range(4))
CLIENTS = {RO: Role.READ_ONLY, RW: Role.READ_WRITE, ADMIN: Role.ADMIN}


def make(**kw: object) -> Authorizer:
    return Authorizer(lambda p: p == MEMBER, CLIENTS, **kw)  # type: ignore[arg-type]


ALLOWED = {
    STRANGER: set(),
    RO: {Role.READ_ONLY},
    RW: {Role.READ_ONLY, Role.READ_WRITE},
    ADMIN: {Role.READ_ONLY, Role.READ_WRITE, Role.ADMIN},
    MEMBER: set(Role),
}


@pytest.mark.parametrize("peer", list(ALLOWED))
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
])
def test_clients_file_bad_lines(tmp_path: os.PathLike[str], line: str) -> None:
    d = str(tmp_path)
    with open(os.path.join(d, "clients"), "w") as f:
        f.write(f"{RO} read-only\n{line}\n")
    with pytest.raises(ConfigError, match=":2:"):
        load_clients(d)


def test_reload_on_change_keeps_old_roles_on_garbage(tmp_path: os.PathLike[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth_mod, "RELOAD_INTERVAL", 0.0)
    d = str(tmp_path)
    save_clients(d, [f"{RO} read-only"])
    a = Authorizer(lambda p: False, load_clients(d), conf_dir=d)
    assert a.role_of(RW) is None
    save_clients(d, [f"{RO} read-only", f"{RW} read-write"])
    os.utime(os.path.join(d, "clients"), ns=(time.time_ns() + 10**9,) * 2)
    assert a.role_of(RW) is Role.READ_WRITE
    with open(os.path.join(d, "clients"), "a") as f:
        f.write("garbage garbage garbage\n")
    assert a.role_of(RW) is Role.READ_WRITE  # the previous roles stay


def test_role_parse() -> None:
    assert Role.parse("admin") is Role.ADMIN
    with pytest.raises(ValueError):
        Role.parse("member")

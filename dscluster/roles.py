"""Client roles and the clients file: the one module the node, dscfg and dsclient share.

Roles are ordered by power, READ_ONLY < READ_WRITE < ADMIN < MEMBER. A peer in
the cluster's table is a MEMBER; any other peer has the role the table's client
entries give it (core/table.py's ClientRole, mapped by `from_table`/`to_table`)
or none. Authorization itself is the node's (node/auth.py).

The clients file: one client per line in DIR/clients, ``<peer id> <role>``
with role one of ``read-only``, ``read-write`` or ``admin``; blank lines and
``#`` comments are ignored. The older form ``<peer id> [read-only]`` still
reads: a bare peer ID is read-write. The file is written 0600, atomically. How
a running node keeps the file and the table's roles in step is
node/clients.py's ClientsFileSync.

This module imports no network stack at import time (peer IDs are checked and
files written by functions imported when first called), so a CLI can name
roles before it loads libp2p.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping

from dscluster.core.table import ClientRole
from dscluster.errors import ConfigError

CLIENTS_FILE = "clients"


class Role(enum.Enum):
    """A caller's role; compare power with `allows`."""

    READ_ONLY = "read-only"
    READ_WRITE = "read-write"
    ADMIN = "admin"
    MEMBER = "member"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank

    @classmethod
    def parse(cls, text: str) -> Role:
        """A client role by name (``member`` is not grantable: the table decides it)."""
        try:
            role = cls(text)
        except ValueError:
            role = None
        if role is None or role is Role.MEMBER:
            names = ", ".join(r.value for r in CLIENT_ROLES)
            raise ValueError(f"unknown role {text!r}: use one of {names}")
        return role


_RANK = {Role.READ_ONLY: 0, Role.READ_WRITE: 1, Role.ADMIN: 2, Role.MEMBER: 3}
CLIENT_ROLES = (Role.READ_ONLY, Role.READ_WRITE, Role.ADMIN)
_FROM_TABLE = {ClientRole.READ_ONLY: Role.READ_ONLY, ClientRole.READ_WRITE: Role.READ_WRITE,
               ClientRole.ADMIN: Role.ADMIN}
_TO_TABLE = {role: entry for entry, role in _FROM_TABLE.items()}


def from_table(role: ClientRole | None) -> Role | None:
    """A table entry's role as an authorization role (None and NONE: no role)."""
    return _FROM_TABLE.get(role) if role is not None else None


def to_table(role: Role | None) -> ClientRole:
    """The table's form of a client role (None: the tombstone NONE)."""
    if role is None:
        return ClientRole.NONE
    if role is Role.MEMBER:
        raise ValueError("member is not a client role: the table's membership decides it")
    return _TO_TABLE[role]


# -- the clients file -------------------------------------------------------------------

Edit = tuple[str, Role | None]  # (peer, its new role; None: revoke)


def parse_client_line(line: str) -> tuple[str, Role] | None:
    """(peer, role) of one line, None for a blank or comment line; ValueError if bad."""
    words = line.split("#", 1)[0].split()
    if not words:
        return None
    if len(words) > 2:
        raise ValueError("expected '<peer id> <role>'")
    role = Role.parse(words[1]) if len(words) == 2 else Role.READ_WRITE
    from dscluster.net.host import parse_peer_id  # libp2p: only once a file is read

    try:
        parse_peer_id(words[0])
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return words[0], role


def load_clients(conf_dir: str) -> dict[str, Role]:
    """peer ID -> role; an absent file means no clients."""
    path = os.path.join(conf_dir, CLIENTS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return parse_clients(lines, path)


def parse_clients(lines: list[str], where: str = CLIENTS_FILE) -> dict[str, Role]:
    clients: dict[str, Role] = {}
    for n, line in enumerate(lines, 1):
        try:
            entry = parse_client_line(line)
        except ValueError as exc:
            raise ConfigError(f"{where}:{n}: {exc}") from None
        if entry is not None:
            clients[entry[0]] = entry[1]
    return clients


def format_clients(clients: Mapping[str, Role]) -> list[str]:
    return [f"{peer} {role.value}" for peer, role in sorted(clients.items())]


def save_clients(conf_dir: str, lines: list[str]) -> None:
    from dscluster.config import write_private_file  # the config layer imports libp2p

    write_private_file(os.path.join(conf_dir, CLIENTS_FILE), "".join(f"{x}\n" for x in lines))


def diff_clients(old: Mapping[str, Role], new: Mapping[str, Role]) -> list[Edit]:
    """The edits that turn ``old`` into ``new``: changed or added lines, removed ones as None."""
    edits: list[Edit] = [(peer, role) for peer, role in sorted(new.items())
                         if old.get(peer) is not role]
    edits.extend((peer, None) for peer in sorted(old) if peer not in new)
    return edits

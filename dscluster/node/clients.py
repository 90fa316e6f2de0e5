"""The clients file: which non-member peers may use a node, and in what role.

One client per line in DIR/clients: ``<peer id> <role>`` with role one of
``read-only``, ``read-write`` or ``admin``; blank lines and ``#`` comments are
ignored. The older form ``<peer id> [read-only]`` still reads: a bare peer ID
is read-write. A joining node receives the bootstrap node's lines and writes
them next to its config.json. The file is written 0600, atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from dscluster.config import write_private_file
from dscluster.errors import ConfigError
from dscluster.net.host import parse_peer_id
from dscluster.node.auth import Role

CLIENTS_FILE = "clients"


def parse_client_line(line: str) -> tuple[str, Role] | None:
    """(peer, role) of one line, None for a blank or comment line; ValueError if bad."""
    words = line.split("#", 1)[0].split()
    if not words:
        return None
    if len(words) > 2:
        raise ValueError("expected '<peer id> <role>'")
    role = Role.parse(words[1]) if len(words) == 2 else Role.READ_WRITE
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
    write_private_file(os.path.join(conf_dir, CLIENTS_FILE), "".join(f"{x}\n" for x in lines))

"""The clients file: which non-member peers may use a node's store protocol.

One client per line in DIR/clients: a peer ID, optionally followed by
``read-only``; blank lines and ``#`` comments are ignored. A joining node
receives the bootstrap node's list and writes it next to its config.json.
"""

from __future__ import annotations

import os

from dscluster.config import write_private_file
from dscluster.errors import ConfigError
from dscluster.net.host import parse_peer_id

CLIENTS_FILE = "clients"


def load_clients(conf_dir: str) -> dict[str, bool]:
    """peer ID -> read-only; an absent file means no clients."""
    path = os.path.join(conf_dir, CLIENTS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    clients: dict[str, bool] = {}
    for n, line in enumerate(lines, 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) > 2 or (len(words) == 2 and words[1] != "read-only"):
            raise ConfigError(f"{path}:{n}: expected '<peer id> [read-only]'")
        try:
            parse_peer_id(words[0])
        except ConfigError as exc:
            raise ConfigError(f"{path}:{n}: {exc}") from None
        clients[words[0]] = len(words) == 2
    return clients


def format_clients(clients: dict[str, bool]) -> list[str]:
    return [f"{peer} read-only" if ro else peer for peer, ro in sorted(clients.items())]


def save_clients(conf_dir: str, lines: list[str]) -> None:
    write_private_file(os.path.join(conf_dir, CLIENTS_FILE), "".join(f"{x}\n" for x in lines))

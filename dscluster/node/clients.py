"""The clients file: a node's seed and mirror of the cluster's client roles.

The file's format, and reading and writing it, are dscluster/roles.py's (dscfg
shares them); a joining node receives the bootstrap node's lines and writes
them next to its config.json.

Theory of operation (`ClientsFileSync`)
---------------------------------------
The roles themselves are cluster state: entries of the gossiped slot table
(dscluster/core/table.py). The file is how an operator seeds and edits them on
one node, and where that node shows them:

* Export: whenever the roles in the node's *persisted* table differ from the
  file's lines, the node rewrites the file with them (checked after every save
  of the state and at least once a second). Exporting only what is on disk
  means the file never shows a role a crash could take back.
* Edit: the node remembers the file's text as it last wrote or read it, in
  DIR/clients.synced. When the file's text differs from that (an operator ran
  ``dscfg auth add``, or edited it, with the node running or stopped), the node
  diffs the new lines against the remembered ones and publishes each difference
  as a table entry: a changed or new line as that role, a removed line as a
  tombstone. Its version is above the entry the node holds for that peer and
  not below the file's modification time in milliseconds (table.next_version),
  so the edit wins over every entry the node knew and over any made elsewhere
  before the file was edited, and loses to a change made after it. Lines the
  operator did not touch are not edits, so a stale file (the node was down
  while roles changed) never takes a change back. Only after the edits are in
  the persisted state is DIR/clients.synced updated, so a crash in between
  reads the edit again.
* With no DIR/clients.synced (the first start, or a node from before roles were
  cluster state) every line is an edit and none is a removal: the cluster gets
  the union of its nodes' files, the latest file winning a peer both list.
* A file that does not parse is left alone (not exported over) and logged once
  until it is fixed. A missing file is not a removal of everyone (empty it for
  that); the node writes it again. A member listed in the file is ignored: its
  role is the table's membership.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence

import trio
from trio import TaskStatus  # type: ignore[attr-defined]  # trio-typing's stubs lack it

from dscluster.config import write_private_file
from dscluster.errors import ConfigError
from dscluster.roles import (
    CLIENTS_FILE,
    Edit,
    Role,
    diff_clients,
    format_clients,
    load_clients,
    parse_client_line,
    parse_clients,
    save_clients,
)

__all__ = ["CLIENTS_FILE", "SYNCED_FILE", "ClientsFileSync", "Edit", "diff_clients",
           "format_clients", "load_clients", "parse_client_line", "parse_clients",
           "save_clients"]

log = logging.getLogger(__name__)

SYNCED_FILE = "clients.synced"  # DIR/clients as the node last wrote or read it
SYNC_INTERVAL = 1.0  # seconds between two looks at the file, at most
HEADER = ("# The cluster's client roles as this node knows them (rewritten by the node).\n"
          "# Edit with `dscfg auth` or by hand: the change applies to the whole cluster.\n")


def _read_text(path: str) -> tuple[str, int] | None:
    """(text, mtime in ms) of a file, None if it does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
            mtime_ms = os.fstat(f.fileno()).st_mtime_ns // 1_000_000
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return text, mtime_ms


class ClientsFileSync:
    """Keeps DIR/clients and the table's roles in step (see the module docstring).

    ``apply(edits, now_ms)`` publishes edits in the table and returns once they
    are persisted; ``durable_roles()`` is the roles of the persisted table (None
    before the first save); ``saved()`` returns after the next save."""

    def __init__(self, conf_dir: str, *,
                 apply: Callable[[Sequence[Edit], int], Awaitable[None]],
                 durable_roles: Callable[[], Mapping[str, Role] | None],
                 saved: Callable[[], Awaitable[None]],
                 interval: float = SYNC_INTERVAL) -> None:
        self._path = os.path.join(conf_dir, CLIENTS_FILE)
        self._synced_path = os.path.join(conf_dir, SYNCED_FILE)
        self._apply = apply
        self._durable_roles = durable_roles
        self._saved = saved
        self._interval = interval
        self._synced: str | None = None  # the text last written or read (None: unknown)
        self._bad_text: str | None = None  # a text that failed to parse, logged once
        self.edits_applied = 0
        self.exports = 0

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Read the file once (edits made while the node was down), then follow it."""
        synced = _read_text(self._synced_path)
        self._synced = synced[0] if synced is not None else None
        await self.sync_once()
        task_status.started()
        while True:
            with trio.move_on_after(self._interval):
                await self._saved()
            try:
                await self.sync_once()
            except ConfigError as exc:  # a disk error: try again next time
                log.warning("clients file: %s", exc)

    async def sync_once(self) -> None:
        current = _read_text(self._path)
        if current is not None and current[0] != self._synced:
            text, mtime_ms = current
            if not await self._ingest(text, mtime_ms):
                return  # unparsable: leave the operator's file alone
        roles = self._durable_roles()
        if roles is None or (current is None and not roles):
            return
        if current is not None and parse_clients(current[0].splitlines(True)) == dict(roles):
            return
        again = _read_text(self._path)  # narrow the window for an edit landing meanwhile
        if again != current:
            return  # read it next time
        text = HEADER + "".join(f"{line}\n" for line in format_clients(roles))
        await trio.to_thread.run_sync(write_private_file, self._path, text)
        await self._remember(text)
        self.exports += 1
        log.info("clients file rewritten: %d clients", len(roles))

    async def _ingest(self, text: str, mtime_ms: int) -> bool:
        try:
            new = parse_clients(text.splitlines(True), self._path)
        except ConfigError as exc:
            if text != self._bad_text:
                self._bad_text = text
                log.warning("clients file does not parse, ignored until fixed: %s", exc)
            return False
        self._bad_text = None
        old: dict[str, Role] = {}
        if self._synced is not None:
            try:
                old = parse_clients(self._synced.splitlines(True), self._synced_path)
            except ConfigError as exc:  # only if someone edited the .synced file
                log.warning("ignoring %s: %s", self._synced_path, exc)
        edits = (diff_clients(old, new) if self._synced is not None
                 else [(peer, role) for peer, role in sorted(new.items())])
        if edits:
            await self._apply(edits, mtime_ms)
            self.edits_applied += len(edits)
            log.info("clients file edited: %d changes published to the cluster: %s",
                     len(edits), ", ".join(f"{p} {r.value if r else 'none'}" for p, r in edits))
        await self._remember(text)
        return True

    async def _remember(self, text: str) -> None:
        await trio.to_thread.run_sync(write_private_file, self._synced_path, text)
        self._synced = text

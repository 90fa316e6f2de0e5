"""Who may do what on a data node.

Theory of operation
-------------------
libp2p Noise proves every caller's peer ID, so authorization is a lookup of
that ID. A peer in the cluster's table is a MEMBER (a data node: it gossips,
migrates keys and administers). Any other peer has the role the operator gave
it in the node's clients file (clients.py) or none at all. Roles are ordered
by power, READ_ONLY < READ_WRITE < ADMIN < MEMBER, and an operation names the
least role it needs: reads READ_ONLY, writes READ_WRITE, admin operations
ADMIN. A refusal raises UnauthorizedError and is logged once per peer per
minute, so a stranger hammering a node cannot flood its log.

Two cluster-wide switches from go-ds-cluster's config narrow clients further:
``read_only_client`` refuses every client's data writes (whatever its role)
and ``disable_delete`` refuses every client's deletes. Members are never
narrowed: a migrating node must be able to write and delete on its target.

The clients file is re-read when its modification time changes (checked at
most once a second), so ``dscfg auth add`` takes effect on a running node
without a restart; a file that no longer parses keeps the previous roles.
"""

from __future__ import annotations

import enum
import logging
import os
import time
from collections.abc import Callable, Mapping

from dscluster.errors import DSClusterError, UnauthorizedError

log = logging.getLogger(__name__)

REFUSAL_LOG_INTERVAL = 60.0  # seconds between two refusal log lines for one peer
RELOAD_INTERVAL = 1.0  # seconds between two checks of the clients file


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


class Authorizer:
    """The node's one authority on roles (``node.auth``)."""

    def __init__(self, is_member: Callable[[str], bool], clients: Mapping[str, Role], *,
                 read_only_client: bool = False, disable_delete: bool = False,
                 conf_dir: str | None = None) -> None:
        self._is_member = is_member
        self._clients = dict(clients)
        self.read_only_client = read_only_client
        self.disable_delete = disable_delete
        self._conf_dir = conf_dir
        self._file_stamp = self._stamp()
        self._next_check = time.monotonic() + RELOAD_INTERVAL
        self._last_logged: dict[str, float] = {}
        self.refused = 0

    # -- roles -----------------------------------------------------------------

    def role_of(self, peer_id: str) -> Role | None:
        if self._is_member(peer_id):
            return Role.MEMBER
        self._maybe_reload()
        return self._clients.get(peer_id)

    def require(self, peer_id: str, needed: Role) -> Role:
        """The caller's role, or UnauthorizedError if it is weaker than ``needed``."""
        role = self.role_of(peer_id)
        if role is None:
            self._refuse(peer_id, f"peer {peer_id} is not authorized on this cluster")
        assert role is not None
        if not role.allows(needed):
            self._refuse(peer_id, f"peer {peer_id} is {role.value}: {needed.value} needed")
        if needed is Role.READ_WRITE and self.read_only_client and role is not Role.MEMBER:
            self._refuse(peer_id, "clients are read-only on this cluster")
        return role

    def require_write(self, peer_id: str, *, deletes: bool) -> Role:
        """A data write; with ``deletes`` also checks disable_delete."""
        role = self.require(peer_id, Role.READ_WRITE)
        if deletes and self.disable_delete and role is not Role.MEMBER:
            self._refuse(peer_id, "deletes are disabled on this cluster")
        return role

    def set_clients(self, clients: Mapping[str, Role]) -> None:
        self._clients = dict(clients)

    @property
    def clients(self) -> dict[str, Role]:
        self._maybe_reload()
        return dict(self._clients)

    # -- internals -------------------------------------------------------------

    def _refuse(self, peer_id: str, why: str) -> None:
        self.refused += 1
        now = time.monotonic()
        last = self._last_logged.get(peer_id)
        if last is None or now - last >= REFUSAL_LOG_INTERVAL:
            if len(self._last_logged) > 10_000:  # many strangers: forget the old ones
                self._last_logged.clear()
            self._last_logged[peer_id] = now
            log.warning("refused: %s", why)
        raise UnauthorizedError(why)

    def _stamp(self) -> tuple[int, int] | None:
        if self._conf_dir is None:
            return None
        from dscluster.node.clients import CLIENTS_FILE

        try:
            st = os.stat(os.path.join(self._conf_dir, CLIENTS_FILE))
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _maybe_reload(self) -> None:
        if self._conf_dir is None:
            return
        now = time.monotonic()
        if now < self._next_check:
            return
        self._next_check = now + RELOAD_INTERVAL
        stamp = self._stamp()
        if stamp == self._file_stamp:
            return
        self._file_stamp = stamp
        from dscluster.node.clients import load_clients

        try:
            self._clients = load_clients(self._conf_dir)
        except DSClusterError as exc:
            log.warning("clients file changed but does not parse (keeping the old roles): %s",
                        exc)
            return
        log.info("clients file reloaded: %d clients", len(self._clients))

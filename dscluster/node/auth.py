"""Who may do what on a data node.

Theory of operation
-------------------
libp2p Noise proves every caller's peer ID, so authorization is a lookup of
that ID. A peer in the cluster's table is a MEMBER (a data node: it gossips,
migrates keys and administers). Any other peer has the role the cluster's
table gives it (its client entries, gossiped and merged like the membership:
dscluster/core/table.py) or none at all. Roles are ordered by power,
READ_ONLY < READ_WRITE < ADMIN < MEMBER, and an operation names the least
role it needs: reads READ_ONLY, writes READ_WRITE, admin operations ADMIN. A
refusal raises UnauthorizedError and is logged once per peer per minute, so a
stranger hammering a node cannot flood its log.

Two cluster-wide switches from go-ds-cluster's config narrow clients further:
``read_only_client`` refuses every client's data writes (whatever its role)
and ``disable_delete`` refuses every client's deletes. Members are never
narrowed: a migrating node must be able to write and delete on its target.

The Authorizer reads the roles on every call (a dict lookup in the node's
table), so a role the node learns by gossip or an admin call applies at once.
The node's clients file seeds and mirrors those roles (node/clients.py).
`Role` and its mapping to the table's ClientRole live in dscluster/roles.py,
which dscfg and dsclient import too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from dscluster.errors import UnauthorizedError
from dscluster.roles import CLIENT_ROLES, Role, from_table, to_table

__all__ = ["CLIENT_ROLES", "REFUSAL_LOG_INTERVAL", "Authorizer", "Role", "from_table", "to_table"]

log = logging.getLogger(__name__)

REFUSAL_LOG_INTERVAL = 60.0  # seconds between two refusal log lines for one peer


class Authorizer:
    """The node's one authority on roles (``node.auth``).

    ``client_role`` looks a non-member peer up (the daemon passes the table's
    entries, ``table.client_role``, mapped by `from_table`)."""

    def __init__(self, is_member: Callable[[str], bool],
                 client_role: Callable[[str], Role | None], *,
                 read_only_client: bool = False, disable_delete: bool = False) -> None:
        self._is_member = is_member
        self._client_role = client_role
        self.read_only_client = read_only_client
        self.disable_delete = disable_delete
        self._last_logged: dict[str, float] = {}
        self.refused = 0

    # -- roles -----------------------------------------------------------------

    def role_of(self, peer_id: str) -> Role | None:
        if self._is_member(peer_id):
            return Role.MEMBER
        return self._client_role(peer_id)

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

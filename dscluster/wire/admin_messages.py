"""The admin protocol's messages (ADMIN_PROTOCOL, tags 64-79).

Theory of operation: the same request/response framing as the store protocol
(doc/protocol.md); an admin client (dsclient cluster ...) calls each node
directly. Simple acknowledgements reuse the store protocol's ``Ok`` (its value
carries a migration id where there is one) and errors travel as ``Fail``.

  AdminStatus        -> AdminStatusReply  the node's table (CBOR, as persisted),
                                          epoch and migrations with progress
  AdminMigrate       -> Ok(mid)           start moving owned slot ranges to target
  AdminAbort         -> Ok                abort an outgoing migration (PREPARING only)
  AdminAddMember     -> Ok                add a peer as a data node with no slots
  AdminRemoveMember  -> Ok                retire a member that owns no slots
  AdminCheck         -> AdminCheckReply   keys held here whose slot this node
                                          neither owns nor is migrating away
  AdminGrant         -> Ok                give a client peer a role in this node's
                                          clients file (replacing its old role)
  AdminRevoke        -> Ok(bool)          take a client's role away (only that
                                          role, when one is named); True if removed
  AdminRoles         -> AdminRolesReply   this node's clients file: (peer, role)

Roles are per node (each node's DIR/clients); ``dsclient cluster auth`` sends
the same change to every member and reports each node's answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from dscluster.wire.messages import Request, Response
from dscluster.wire.schema import MaxLen, message, struct

PeerId = Annotated[str, MaxLen(128)]
Ranges = Annotated[tuple[tuple[int, int], ...], MaxLen(16384)]
MAX_TABLE = 4 * 1024 * 1024


@struct
@dataclass(frozen=True, slots=True)
class MigrationInfo:
    mid: int
    source: PeerId
    target: PeerId
    phase: Annotated[str, MaxLen(32)]  # core.migration.Phase value
    ranges: Ranges
    keys_moved: int = 0  # by this node (the source) since it started
    bytes_moved: int = 0


@message(64)
@dataclass(frozen=True, slots=True)
class AdminStatus(Request):
    id: int


@message(65)
@dataclass(frozen=True, slots=True)
class AdminStatusReply(Response):
    id: int
    peer_id: PeerId
    epoch: int
    table: Annotated[bytes, MaxLen(MAX_TABLE)]  # SlotTable.to_cbor()
    migrations: tuple[MigrationInfo, ...]
    # (mid, keys, bytes) moved by this process as a source, finished ones included
    moved: Annotated[tuple[tuple[int, int, int], ...], MaxLen(1024)] = ()


@message(66)
@dataclass(frozen=True, slots=True)
class AdminMigrate(Request):
    id: int
    ranges: Ranges
    target: PeerId


@message(67)
@dataclass(frozen=True, slots=True)
class AdminAbort(Request):
    id: int
    mid: int


@message(68)
@dataclass(frozen=True, slots=True)
class AdminAddMember(Request):
    id: int
    peer: PeerId
    addrs: Annotated[tuple[Annotated[str, MaxLen(512)], ...], MaxLen(64)] = ()


@message(69)
@dataclass(frozen=True, slots=True)
class AdminRemoveMember(Request):
    id: int
    peer: PeerId


@message(70)
@dataclass(frozen=True, slots=True)
class AdminCheck(Request):
    id: int


@message(71)
@dataclass(frozen=True, slots=True)
class AdminCheckReply(Response):
    id: int
    keys: int  # keys scanned
    stray: int  # keys on a slot this node neither owns nor is moving away
    sample: Annotated[tuple[Annotated[str, MaxLen(4096)], ...], MaxLen(16)]


RoleName = Annotated[str, MaxLen(32)]  # dscluster.node.auth.Role value


@message(72)
@dataclass(frozen=True, slots=True)
class AdminGrant(Request):
    id: int
    peer: PeerId
    role: RoleName


@message(73)
@dataclass(frozen=True, slots=True)
class AdminRevoke(Request):
    id: int
    peer: PeerId
    role: RoleName = ""  # "": whatever role it has


@message(74)
@dataclass(frozen=True, slots=True)
class AdminRoles(Request):
    id: int


@message(75)
@dataclass(frozen=True, slots=True)
class AdminRolesReply(Response):
    id: int
    peer_id: PeerId  # the answering node
    clients: Annotated[tuple[tuple[PeerId, RoleName], ...], MaxLen(65536)]


@message(76)
@dataclass(frozen=True, slots=True)
class AdminSetCopies(Request):
    """Change the cluster's `copies` setting (gossiped; primaries then fill new copies
    or shrink extra ones by majority, doc/copies.md). Answered Ok."""

    id: int
    copies: int

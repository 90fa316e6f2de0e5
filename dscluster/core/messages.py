"""Messages between cluster cores, as frozen dataclasses on the one wire codec.

Theory of operation
-------------------
Every message is a frozen dataclass registered with dscluster/wire/schema.py
(the codec the store and admin protocols use): ``encode`` writes the CBOR
array ``[tag, field1, field2, ...]``, ``decode`` checks the tag and every
field's type and raises ProtocolError (never anything else) on garbage, so
the daemon can hand received bytes straight to ``decode`` and drop a peer
that sends rubbish. The table's entries travel as nested arrays (NodeInfo
``[id, addrs, role, version]``, ClientInfo ``[id, role, version]``, a run
``[start, end, epoch, owner]``), checked by the same rules as the table's own
decoder. Absent trailing fields take their defaults and fields past the
known ones are ignored, so nodes of neighbouring versions talk during a
rolling upgrade. Tags 96-111 are gossip and migration (doc/protocol.md).
This module is pure (the codec is too): no I/O.

The persisted state (state.cbor) does not use these encodings: it is the
table's and the migrations' own maps (core/table.py, core/migration.py).

Gossip: Ping carries a digest (one hash per slot bucket, one for the
membership and one for the client roles), the sender's suspicions (PFAIL) and
the nodes it believes FAIL; Pong answers with the same plus the runs of the
buckets that differed, and the nodes or the client entries when their hash
differed; TableDelta pushes runs, nodes and client entries. Copy sets travel beside the
runs: ``replicas`` holds the 5-element runs ``[start, end, epoch, owner,
[replica, ...]]`` of the entries with replicas in the same buckets (a node
from before copies ignores the trailing field and still reads the claims),
``settings`` the cluster settings with the membership. Migration:
MigrateBegin / MigrateBeginAck / MigrateAbort / Handoff / HandoffAck, all
carrying the migration id chosen by the source so stale retransmissions are
recognised. Copy-set changes (core/election.py, driven by core/changes.py):
VoteRequest / Vote / Propose / Accepted, tags 104-107.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dscluster.core.election import Accepted, Config, Propose, Vote, VoteRequest
from dscluster.core.slots import SLOT_COUNT, SlotSet
from dscluster.core.table import (
    MAX_PEER_ID,
    ClientInfo,
    ClusterSettings,
    CopyRun,
    NodeInfo,
    Run,
    decode_copy_runs,
    decode_runs,
)
from dscluster.errors import ProtocolError
from dscluster.wire import schema
from dscluster.wire.schema import Tagged, message, register_struct


def _check_node(node: NodeInfo) -> None:
    if not node.id:
        raise ProtocolError("bad node entry: node id must be a non-empty string")
    if node.version < 0:
        raise ProtocolError("bad node entry: version must be a non-negative integer")


def _check_client(client: ClientInfo) -> None:
    if not 0 < len(client.id) <= MAX_PEER_ID:
        raise ProtocolError("bad client entry: client id must be a non-empty string of at "
                            f"most {MAX_PEER_ID} characters")
    if client.version < 0:
        raise ProtocolError("bad client entry: version must be a non-negative integer")


register_struct(NodeInfo, _check_node)
register_struct(ClientInfo, _check_client)
register_struct(ClusterSettings)  # its __post_init__ checks the values


def _check_slot_set(slots: SlotSet) -> None:
    last = -2
    for start, end in slots.ranges:
        if not 0 <= start <= end < SLOT_COUNT or start <= last + 1:
            raise ProtocolError("bad slot set: ranges must be in order, disjoint and in range")
        last = end


def _check_config(config: Config) -> None:
    if config.epoch < -1 or any(not 0 < len(c) <= MAX_PEER_ID for c in config.copies):
        raise ProtocolError("bad slot configuration: epoch or copy id out of range")
    if len(set(config.copies)) != len(config.copies):
        raise ProtocolError("bad slot configuration: a node holds two copies of a slot")


register_struct(SlotSet, _check_slot_set)
register_struct(Config, _check_config)


def _check_runs(msg: Any) -> None:
    decode_runs(list(msg.runs))  # slots in range, epochs and owners consistent
    decode_copy_runs([list(r) for r in msg.replicas])  # and no node twice in a copy set


@message(96)
@dataclass(frozen=True)
class Ping(Tagged):
    buckets: tuple[bytes, ...]
    members: bytes
    epoch: int  # the sender's current epoch
    suspects: tuple[str, ...] = ()  # peers the sender holds PFAIL
    failed: tuple[str, ...] = ()  # peers the sender holds FAIL
    roles: bytes = b""  # the hash of the sender's client entries (b"": none)


@message(97, _check_runs)
@dataclass(frozen=True)
class Pong(Tagged):
    buckets: tuple[bytes, ...]
    members: bytes
    epoch: int
    suspects: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    runs: tuple[Run, ...] = ()  # our claims in the buckets that differed from the Ping
    nodes: tuple[NodeInfo, ...] = ()  # our membership, when it differed
    clients: tuple[ClientInfo, ...] = ()  # our client entries, when their hash differed
    roles: bytes = b""
    replicas: tuple[CopyRun, ...] = ()  # the entries with replicas among `runs`' buckets
    settings: ClusterSettings | None = None  # with `nodes`, when not the default


@message(98, _check_runs)
@dataclass(frozen=True)
class TableDelta(Tagged):
    runs: tuple[Run, ...] = ()
    nodes: tuple[NodeInfo, ...] = ()
    clients: tuple[ClientInfo, ...] = ()
    replicas: tuple[CopyRun, ...] = ()
    settings: ClusterSettings | None = None


@message(99)
@dataclass(frozen=True)
class MigrateBegin(Tagged):
    """Source -> target: become IMPORTING these slots from me."""

    mid: int
    ranges: tuple[tuple[int, int], ...]


@message(100)
@dataclass(frozen=True)
class MigrateBeginAck(Tagged):
    """Target -> source: IMPORTING is persisted (re-sent as a probe while importing)."""

    mid: int


@message(101)
@dataclass(frozen=True)
class MigrateAbort(Tagged):
    """Source -> target: forget this import (only sent before any key could move)."""

    mid: int


@message(102)
@dataclass(frozen=True)
class Handoff(Tagged):
    """Source -> target: I hold no key of these slots any more; take ownership."""

    mid: int
    epoch: int  # the source's current epoch, so the target's new epoch exceeds it


@message(103)
@dataclass(frozen=True)
class HandoffAck(Tagged):
    """Target -> source: I own the slots now, with this epoch."""

    mid: int
    ranges: tuple[tuple[int, int], ...]
    epoch: int


def _check_config_runs(msg: Vote | Propose) -> None:
    runs = msg.known if isinstance(msg, Vote) else msg.configs
    last = -1
    for start, end, _config in runs:
        if not last < start <= end < SLOT_COUNT:
            raise ProtocolError("bad slot configurations: runs must be in order and in range")
        last = end


# The election's own dataclasses (core/election.py) are the messages.
message(104)(VoteRequest)
message(105, _check_config_runs)(Vote)
message(106, _check_config_runs)(Propose)
message(107)(Accepted)

Message = (Ping | Pong | TableDelta | MigrateBegin | MigrateBeginAck | MigrateAbort | Handoff
           | HandoffAck | VoteRequest | Vote | Propose | Accepted)
MESSAGE_TYPES: dict[int, type] = {
    cls.TAG: cls
    for cls in (Ping, Pong, TableDelta, MigrateBegin, MigrateBeginAck, MigrateAbort, Handoff,
                HandoffAck, VoteRequest, Vote, Propose, Accepted)
}


def encode(msg: Message) -> bytes:
    return msg.encode()


def decode(data: bytes) -> Message:
    """Decode one core message; ProtocolError on anything malformed, also on bytes
    after the message's CBOR item and on a message of another protocol."""
    return core_message(schema.decode(data))


def core_message(msg: Tagged) -> Message:
    """``msg`` if it is a gossip or migration message, else ProtocolError."""
    if type(msg) not in _CORE_TYPES:
        raise ProtocolError(f"{type(msg).__name__} is not a gossip or migration message")
    return msg  # type: ignore[return-value]


_CORE_TYPES = frozenset(MESSAGE_TYPES.values())

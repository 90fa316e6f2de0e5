"""Messages between cluster cores, as frozen dataclasses with a CBOR codec.

Theory of operation
-------------------
Every message is a frozen dataclass whose fields are ints, strings, bytes,
tuples of those, slot-table runs or NodeInfo entries. `encode` writes a CBOR
map ``{"t": <type tag>, <field>: <value>, ...}``; `decode` checks the tag and
every field against the dataclass's type hints and raises ProtocolError (never
anything else) on garbage, so the daemon can hand received bytes straight to
`decode` and drop a peer that sends rubbish. Unknown fields are ignored and
absent optional fields take their defaults, so a node that predates a field
(the client roles' `roles` and `clients`) still talks to one that has it.

Gossip: Ping carries a digest (one hash per slot bucket, one for the
membership and one for the client roles), the sender's suspicions (PFAIL) and
the nodes it believes FAIL; Pong answers with the same plus the runs of the
buckets that differed, and the nodes or the client entries when their hash
differed; TableDelta pushes runs, nodes and client entries. Migration:
MigrateBegin / MigrateBeginAck / MigrateAbort / Handoff / HandoffAck, all
carrying the migration id chosen by the source so stale retransmissions are
recognised.
"""

from __future__ import annotations

import functools
import io
import typing
from dataclasses import dataclass, fields
from itertools import repeat
from typing import Any, ClassVar

import cbor2

from dscluster.core.table import ClientInfo, NodeInfo, Run, decode_runs
from dscluster.errors import ProtocolError


@dataclass(frozen=True)
class Ping:
    TAG: ClassVar[str] = "ping"
    buckets: tuple[bytes, ...]
    members: bytes
    epoch: int  # the sender's current epoch
    suspects: tuple[str, ...] = ()  # peers the sender holds PFAIL
    failed: tuple[str, ...] = ()  # peers the sender holds FAIL
    roles: bytes = b""  # the hash of the sender's client entries (b"": none)


@dataclass(frozen=True)
class Pong:
    TAG: ClassVar[str] = "pong"
    buckets: tuple[bytes, ...]
    members: bytes
    epoch: int
    suspects: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    runs: tuple[Run, ...] = ()  # our claims in the buckets that differed from the Ping
    nodes: tuple[NodeInfo, ...] = ()  # our membership, when it differed
    clients: tuple[ClientInfo, ...] = ()  # our client entries, when their hash differed
    roles: bytes = b""


@dataclass(frozen=True)
class TableDelta:
    TAG: ClassVar[str] = "delta"
    runs: tuple[Run, ...] = ()
    nodes: tuple[NodeInfo, ...] = ()
    clients: tuple[ClientInfo, ...] = ()


@dataclass(frozen=True)
class MigrateBegin:
    """Source -> target: become IMPORTING these slots from me."""

    TAG: ClassVar[str] = "mig-begin"
    mid: int
    ranges: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class MigrateBeginAck:
    """Target -> source: IMPORTING is persisted (re-sent as a probe while importing)."""

    TAG: ClassVar[str] = "mig-begin-ack"
    mid: int


@dataclass(frozen=True)
class MigrateAbort:
    """Source -> target: forget this import (only sent before any key could move)."""

    TAG: ClassVar[str] = "mig-abort"
    mid: int


@dataclass(frozen=True)
class Handoff:
    """Source -> target: I hold no key of these slots any more; take ownership."""

    TAG: ClassVar[str] = "handoff"
    mid: int
    epoch: int  # the source's current epoch, so the target's new epoch exceeds it


@dataclass(frozen=True)
class HandoffAck:
    """Target -> source: I own the slots now, with this epoch."""

    TAG: ClassVar[str] = "handoff-ack"
    mid: int
    ranges: tuple[tuple[int, int], ...]
    epoch: int


Message = Ping | Pong | TableDelta | MigrateBegin | MigrateBeginAck | MigrateAbort | Handoff | HandoffAck
MESSAGE_TYPES: dict[str, type] = {
    cls.TAG: cls
    for cls in (Ping, Pong, TableDelta, MigrateBegin, MigrateBeginAck, MigrateAbort, Handoff,
                HandoffAck)
}


def encode(msg: Message) -> bytes:
    # cbor2 writes tuples as arrays, exactly as lists, so only NodeInfo and ClientInfo
    # entries (the `nodes` and `clients` fields) need converting.
    obj: dict[str, Any] = {"t": msg.TAG}
    cls: type = type(msg)
    entry_fields = _entry_fields(cls)
    for name in _field_names(cls):
        value = getattr(msg, name)
        obj[name] = [n.to_obj() for n in value] if name in entry_fields else value
    return cbor2.dumps(obj)


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@functools.cache
def _entry_fields(cls: type) -> frozenset[str]:
    """Fields holding a tuple of NodeInfo or ClientInfo (they appear nowhere else)."""
    return frozenset(name for name, hint in _hints(cls).items()
                     if hint in (tuple[NodeInfo, ...], tuple[ClientInfo, ...]))


def _from_wire(value: Any, hint: Any, name: str) -> Any:
    if hint is int:
        if type(value) is not int:
            raise ProtocolError(f"field {name!r} must be an integer")
        return value
    if hint in (str, bytes):
        if not isinstance(value, hint):
            raise ProtocolError(f"field {name!r} must be {hint.__name__}")
        return value
    if hint is NodeInfo:
        return NodeInfo.from_obj(value)
    if hint is ClientInfo:
        return ClientInfo.from_obj(value)
    args = _tuple_args(hint)
    if args == _RUNS:
        return tuple(decode_runs(value))
    if args:
        if not isinstance(value, list):
            raise ProtocolError(f"field {name!r} must be a list")
        if len(args) == 2 and args[1] is Ellipsis:
            if args[0] in (str, bytes) and all(map(isinstance, value, repeat(args[0]))):
                return tuple(value)  # the common flat case, without a call per item
            return tuple(_from_wire(v, args[0], name) for v in value)
        if len(value) != len(args):
            raise ProtocolError(f"field {name!r} must have {len(args)} items")
        return tuple(_from_wire(v, a, name) for v, a in zip(value, args, strict=True))
    raise ProtocolError(f"field {name!r} has an unsupported type")  # pragma: no cover


_RUNS = (Run, Ellipsis)


@functools.cache
def _tuple_args(hint: Any) -> tuple[Any, ...]:
    """The item types of a tuple type hint, () for anything else (looked up once per hint)."""
    return typing.get_args(hint) if typing.get_origin(hint) is tuple else ()


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def _wire_fields(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, type hint, required) of each field of a message class."""
    hints = _hints(cls)
    return tuple((f.name, hints[f.name], f.default is f.default_factory)  # both MISSING
                 for f in fields(cls))


def decode(data: bytes) -> Message:
    """Decode one message; raises ProtocolError on anything malformed, also on
    bytes after the message's CBOR item (a frame holds exactly one message;
    unknown map keys inside the message are ignored, for rolling upgrades)."""
    fp = io.BytesIO(data)  # loads ignores trailing bytes; the reader's tell does not
    try:
        obj = cbor2.CBORDecoder(fp, read_size=max(len(data), 1)).decode()
    except Exception as exc:  # cbor2 raises several unrelated types on garbage
        raise ProtocolError(f"message is not valid CBOR: {exc}") from exc
    if fp.tell() != len(data):
        raise ProtocolError(f"{len(data) - fp.tell()} bytes after the message in its frame")
    if not isinstance(obj, dict) or not isinstance(obj.get("t"), str):
        raise ProtocolError("message must be a map with a type tag")
    cls = MESSAGE_TYPES.get(obj["t"])
    if cls is None:
        raise ProtocolError(f"unknown message type {obj['t']!r}")
    kwargs = {}
    for name, hint, required in _wire_fields(cls):
        if name in obj:
            kwargs[name] = _from_wire(obj[name], hint, name)
        elif required:
            raise ProtocolError(f"{obj['t']}: missing field {name!r}")
    msg: Message = cls(**kwargs)
    return msg

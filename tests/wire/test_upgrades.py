"""Rolling upgrades: every message type decodes with fields a newer version appended.

A node of the next version may add trailing fields to any message (store,
admin, gossip, migration, join) or to a struct inside one; this version must
decode what it knows and ignore the rest, while still refusing garbage, wrong
types and over-long values.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any

import cbor2
import pytest

import dscluster.core.messages  # noqa: F401  (registers the gossip and migration tags)
import dscluster.wire.admin_messages  # noqa: F401  (registers the admin tags)
import dscluster.wire.join_messages  # noqa: F401  (registers the join tags)
from dscluster.core import messages as cm
from dscluster.core.table import ClientInfo, ClientRole, CopyRun, NodeInfo
from dscluster.errors import ProtocolError
from dscluster.wire import messages as wm
from dscluster.wire.schema import MessageError, Tagged, decode, registered_tags

EXTRA_FIELDS = [7, "added later", b"\x00\x01", [1, [2, "three"]], {"k": "v"}, None, True, 1.5]

# Values the annotations alone cannot make valid (a __post_init__ or a check refuses them).
SPECIAL: dict[type, Any] = {
    wm.WireFilter: wm.WireFilter("key", wm.FilterOp.EQ, "/k"),
    CopyRun: (1, 1, 1, "x", ("y",)),  # no node holds two copies
}


def _sample(hint: Any) -> Any:
    """A valid value of an annotation (the schema's subset of them)."""
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    if hint in SPECIAL:
        return SPECIAL[hint]
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _sample(next(a for a in typing.get_args(hint) if a is not type(None)))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return (_sample(args[0]),)
        return tuple(_sample(a) for a in args)
    if hint is bool:
        return True
    if hint is int:
        return 1
    if hint is str:
        return "x"
    if hint is bytes:
        return b"x"
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return next(iter(hint))
    if dataclasses.is_dataclass(hint):
        return _instance(hint)  # type: ignore[arg-type]
    raise AssertionError(f"no sample for {hint!r}")


def _instance(cls: type) -> Any:
    hints = typing.get_type_hints(cls, include_extras=True)
    return cls(*[_sample(hints[f.name]) for f in dataclasses.fields(cls) if f.init])


def test_every_protocol_registers_its_messages() -> None:
    tags = registered_tags()
    for cls in (wm.Get, wm.Ok, dscluster.wire.admin_messages.AdminStatus, cm.Ping,
                cm.HandoffAck, dscluster.wire.join_messages.JoinHello):
        assert tags[cls.TAG] is cls


@pytest.mark.parametrize("tag", sorted(registered_tags()))
def test_every_message_type_ignores_fields_appended_by_a_newer_version(tag: int) -> None:
    cls = registered_tags()[tag]
    msg = _instance(cls)
    raw = cbor2.loads(msg.encode())
    assert raw[0] == tag and len(raw) == 1 + len(dataclasses.fields(cls))
    assert decode(msg.encode()) == msg
    assert decode(cbor2.dumps([*raw, *EXTRA_FIELDS])) == msg
    # ...and an older sender's message, without the trailing fields that have defaults
    required = [f for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    short = decode(cbor2.dumps(raw[: 1 + len(required)]))
    assert type(short) is cls


def test_structs_inside_messages_ignore_appended_fields_too() -> None:
    node = NodeInfo("QmNode", ("/ip4/127.0.0.1/tcp/1",), version=3)
    client = ClientInfo("QmClient", ClientRole.ADMIN, 5)
    delta = cm.TableDelta((), (node,), (client,))
    raw = cbor2.loads(delta.encode())
    raw[2][0].append("a newer node field")
    raw[3][0].extend([1, 2])
    assert cm.decode(cbor2.dumps(raw)) == delta
    fail = wm.Fail(3, wm.ErrorInfo(wm.ErrorCode.NOT_FOUND, "gone"))
    raw = cbor2.loads(fail.encode())
    raw[2].append({"hint": "newer"})
    assert decode(cbor2.dumps(raw)) == fail


@pytest.mark.parametrize(("raw", "reason"), [
    ([wm.Get.TAG, 1, 7], "expected str"),  # a wrong type is still refused...
    ([wm.Get.TAG, 1, "/" + "k" * 5000, False, "extra"], "longer than 4096"),  # ...as is length
    ([wm.Get.TAG, 1], "at least 2 fields"),  # and a missing required field
    ([cm.Ping.TAG, [b"h"], b"m", "not an epoch", "x"], "64-bit int"),
    ([cm.TableDelta.TAG, [[0, 99999, 1, "A"]], [], [], [], None, "extra"], "bad run"),
    ([cm.TableDelta.TAG, [], [[""]], [], "extra"], "node id"),
    ([cm.TableDelta.TAG, [], [], [["X", "god", 1, "extra"]]], "expected one of"),
])
def test_extra_fields_do_not_hide_bad_known_ones(raw: list[Any], reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode(cbor2.dumps(raw))


def test_a_refused_request_names_its_type_id_and_the_too_long_kind() -> None:
    with pytest.raises(MessageError) as err:
        decode(cbor2.dumps([wm.Put.TAG, 41, "/" + "k" * 5000, b"v"]))
    assert err.value.message_type is wm.Put and err.value.request_id == 41
    assert err.value.kind == "key"
    with pytest.raises(MessageError) as err:
        decode(cbor2.dumps([wm.Put.TAG, "41", "/k", b"v"]))
    assert err.value.request_id is None  # an unreadable id: only the stream can be reset
    with pytest.raises(MessageError) as err:
        decode(cbor2.dumps([cm.Handoff.TAG, 1, "two"]))
    assert err.value.request_id is None  # gossip has no request ids


def test_trailing_bytes_after_the_message_are_still_refused() -> None:
    """Extra array fields are allowed; bytes after the message's CBOR item are not."""
    payload = wm.Get(1, "/k").encode()
    with pytest.raises(ProtocolError, match="bytes after the message"):
        decode(payload + b"\x00")
    assert isinstance(decode(payload), Tagged)

"""Typed CBOR messages: frozen dataclasses in, plain CBOR arrays out, validated back.

Theory of operation: a message class is a frozen dataclass registered with
``@message(tag)``; a nested value is a dataclass registered with ``@struct``.
At registration the field annotations are compiled once into encoder and
decoder functions, so encoding is a walk over prepared closures and decoding
checks every field's exact type and size:

    message  = [tag, field1, field2, ...]     (a CBOR array, fields in order)
    struct   = [field1, field2, ...]

Supported annotations: ``int`` (64-bit signed, never a bool), ``bool``,
``str`` and ``bytes`` (optionally ``Annotated[..., MaxLen(n)]``), an
``enum.Enum`` with str values, ``X | None``, unions of these, ``tuple[X, ...]``
(at most MAX_ITEMS), fixed ``tuple[A, B]`` and registered structs.

Upgrades, one node at a time: trailing fields that have defaults may be
omitted on the wire (an older sender), and fields past the last one we know
are ignored (a newer sender), in messages and structs alike. Anything else
that does not fit (unknown tag, wrong type, a missing required field, an
oversized string, undecodable CBOR, bytes after the message's CBOR item)
raises ``ProtocolError`` from ``decode`` and nothing else. When the frame held
a well-formed array with a known tag, the error is a ``MessageError`` naming
the message type and, when it could be read, the request id: a server answers
that one request instead of resetting a stream other requests share.

Two kinds of message: ``Message`` (a request or response, first field ``id``)
and ``Tagged`` (a one-way message with no id: gossip, migration, join).
Tags are unique across the whole tree (doc/protocol.md lists them).
"""

from __future__ import annotations

import dataclasses
import enum
import io
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import cbor2

from dscluster.errors import ProtocolError

MAX_ITEMS = 65536  # elements in one array field
MAX_TEXT = 65536  # characters in a str field without its own MaxLen
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class MaxLen:
    """Annotated[str | bytes, MaxLen(n)]: at most n characters or bytes.

    ``kind`` names what a value over the limit is (``"key"``: a datastore key),
    carried by the ``TooLong`` error so a server can answer with the right code.
    """

    n: int
    kind: str = ""


class TooLong(ProtocolError):
    """A string, bytes or array field over its limit."""

    def __init__(self, text: str, kind: str) -> None:
        super().__init__(text)
        self.kind = kind


class MessageError(ProtocolError):
    """A whole, well-formed frame whose message does not fit its type.

    ``message_type`` is the class its tag names; ``request_id`` its id when the
    id itself was valid (else None); ``kind`` the ``MaxLen.kind`` of the field
    that was too long, if that was the failure.
    """

    def __init__(self, text: str, message_type: type, request_id: int | None,
                 kind: str = "") -> None:
        super().__init__(text)
        self.message_type = message_type
        self.request_id = request_id
        self.kind = kind


Encoder = Callable[[Any], Any]
Decoder = Callable[[Any], Any]
T = TypeVar("T")

_BY_TAG: dict[int, type] = {}


class Tagged:
    """Base of every top-level message: a tag, then the fields."""

    TAG: typing.ClassVar[int]

    def encode(self) -> bytes:
        return cbor2.dumps(self._to_wire())  # type: ignore[attr-defined]


class Message(Tagged):
    """A request or a response: its first field is the request id."""

    id: int


def _identity(v: Any) -> Any:
    return v


def _fail(what: str, v: Any) -> typing.NoReturn:
    text = repr(v)
    if len(text) > 60:
        text = text[:57] + "..."
    raise ProtocolError(f"{what}: got {text}")


def _scalar(tp: type, limit: int | None, kind: str = "") -> tuple[Encoder, Decoder]:
    if tp is int:

        def dec_int(v: Any) -> int:
            if type(v) is not int or not INT_MIN <= v <= INT_MAX:
                _fail("expected a 64-bit int", v)
            return v

        return _identity, dec_int
    if tp is bool:

        def dec_bool(v: Any) -> bool:
            if type(v) is not bool:
                _fail("expected a bool", v)
            return v

        return _identity, dec_bool
    if tp in (str, bytes):
        cap = MAX_TEXT if (tp is str and limit is None) else limit

        def dec_text(v: Any) -> Any:
            if type(v) is not tp:
                _fail(f"expected {tp.__name__}", v)
            if cap is not None and len(v) > cap:
                raise TooLong(f"{tp.__name__} of {len(v)} longer than {cap}", kind)
            return v

        return _identity, dec_text
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        members = {m.value: m for m in tp}

        def dec_enum(v: Any) -> Any:
            try:
                return members[v]
            except (KeyError, TypeError):
                _fail(f"expected one of {sorted(members)}", v)

        return (lambda m: m.value), dec_enum
    if isinstance(tp, type) and hasattr(tp, "_struct_codec"):
        return tp._struct_codec  # type: ignore[attr-defined, no-any-return]
    raise TypeError(f"unsupported message field type {tp!r}")


def _compile(hint: Any) -> tuple[Encoder, Decoder]:
    limit = None
    kind = ""
    if typing.get_origin(hint) is typing.Annotated:
        hint, *extras = typing.get_args(hint)
        max_len = next((e for e in extras if isinstance(e, MaxLen)), None)
        if max_len is not None:
            limit, kind = max_len.n, max_len.kind
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _compile_union(typing.get_args(hint))
    if origin is tuple:
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return _compile_array(args[0], limit)
        return _compile_fixed(args)
    return _scalar(hint, limit, kind)


def _compile_union(alts: tuple[Any, ...]) -> tuple[Encoder, Decoder]:
    optional = type(None) in alts
    parts = [(_runtime_type(alt), *_compile(alt)) for alt in alts if alt is not type(None)]

    # Fast paths by exact type (OkMany answers are unions): a value whose type
    # needs no conversion is sent as it is, and a wire value whose CBOR type
    # only one alternative can hold goes straight to that decoder, without
    # trial decoding (which costs a ProtocolError per failed alternative).
    plain_types = {alt for alt, e, _ in parts if e is _identity and alt in _WIRE_TYPES}
    claims: dict[type, list[Decoder]] = {}
    for alt, _, d in parts:
        claims.setdefault(_wire_type(alt), []).append(d)
    only = {t: ds[0] for t, ds in claims.items() if len(ds) == 1}

    def enc(v: Any) -> Any:
        if v is None or type(v) in plain_types:
            return v
        for alt, e, _ in parts:
            if isinstance(v, alt):
                return e(v)
        raise TypeError(f"{v!r} is none of {alts}")

    def dec(v: Any) -> Any:
        if v is None:
            if optional:
                return None
            _fail("unexpected null", v)
        d1 = only.get(type(v))
        if d1 is not None:
            return d1(v)
        for _, _, d in parts:
            try:
                return d(v)
            except ProtocolError:
                continue
        _fail("value fits none of " + "|".join(getattr(a, "__name__", str(a)) for a in alts), v)

    if len(parts) == 1:  # the common X | None: no trial decoding
        (_, e1, d1) = parts[0]

        def dec_optional(v: Any) -> Any:
            return None if v is None else d1(v)

        return (lambda v: None if v is None else e1(v)), dec_optional
    return enc, dec


_WIRE_TYPES = (int, bool, str, bytes)  # CBOR decodes these to exactly these types


def _wire_type(runtime: type) -> type:
    """The Python type cbor2 decodes a value of this (runtime) type to."""
    if runtime in _WIRE_TYPES:
        return runtime
    if isinstance(runtime, type) and issubclass(runtime, enum.Enum):
        return str  # our enums have str values
    return list  # structs, arrays, fixed tuples


def _runtime_type(hint: Any) -> type:
    """The class isinstance() can check for an annotation."""
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    return typing.get_origin(hint) or hint  # type: ignore[no-any-return]


def _compile_array(item: Any, limit: int | None) -> tuple[Encoder, Decoder]:
    e, d = _compile(item)
    cap = limit or MAX_ITEMS

    def enc(v: Any) -> Any:
        return [e(x) for x in v]

    def dec(v: Any) -> Any:
        if type(v) is not list:
            _fail("expected an array", v)
        if len(v) > cap:
            raise TooLong(f"array of {len(v)} longer than {cap}", "")
        return tuple([d(x) for x in v])

    # Items that need no conversion: cbor2 writes the tuple itself as an array,
    # so a 4 KiB-value Batch costs no Python work per item on the way out.
    return (_identity if e is _identity else enc), dec


def _compile_fixed(items: tuple[Any, ...]) -> tuple[Encoder, Decoder]:
    codecs = [_compile(i) for i in items]

    def enc(v: Any) -> Any:
        return [e(x) for (e, _), x in zip(codecs, v, strict=True)]

    def dec(v: Any) -> Any:
        if type(v) is not list or len(v) != len(codecs):
            _fail(f"expected an array of {len(codecs)}", v)
        return tuple([d(x) for (_, d), x in zip(codecs, v, strict=True)])

    plain = all(c[0] is _identity for c in codecs)
    return (_identity if plain else enc), dec


def _field_codecs(cls: type) -> tuple[list[str], list[Encoder], list[Decoder], int]:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = [f.name for f in fields]
    codecs = [_compile(hints[n]) for n in names]
    required = sum(
        1
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    return names, [c[0] for c in codecs], [c[1] for c in codecs], required


Check = Callable[[Any], None]  # raises ProtocolError (or ValueError) for a bad decoded value


def _decode_fields(cls: type, what: str, required: int, decs: list[Decoder], v: Any,
                   check: Check | None = None) -> Any:
    if type(v) is not list:
        _fail(f"{what}: expected an array", v)
    if len(v) < required:
        _fail(f"{what}: expected at least {required} fields", len(v))
    # zip stops at the fields we know: a newer sender's extra ones are ignored.
    obj = cls(*[d(x) for d, x in zip(decs, v, strict=False)])
    if check is not None:
        check(obj)
    return obj


def struct(cls: type[T]) -> type[T]:
    """Register a frozen dataclass as a nested value (a CBOR array of its fields)."""
    return register_struct(cls)


def register_struct(cls: type[T], check: Check | None = None) -> type[T]:
    """``struct``, and ``check`` run on every decoded value (not on values we build):
    for a class defined elsewhere (the core's table entries) whose rules the
    annotations cannot say."""
    names, encs, decs, required = _field_codecs(cls)

    def enc(obj: Any) -> list[Any]:
        return [e(getattr(obj, n)) for n, e in zip(names, encs, strict=True)]

    def dec(v: Any) -> Any:
        return _decode_fields(cls, cls.__name__, required, decs, v, check)

    cls._struct_codec = (enc, dec)  # type: ignore[attr-defined]
    return cls


def message(tag: int, check: Check | None = None) -> Callable[[type[T]], type[T]]:
    """Register a frozen dataclass under ``tag``: a ``Message`` (first field ``id``) or
    another ``Tagged``; ``check`` runs on every decoded one."""

    def register(cls: type[T]) -> type[T]:
        if tag in _BY_TAG:
            raise ValueError(f"message tag {tag} already used by {_BY_TAG[tag].__name__}")
        if not issubclass(cls, Tagged):
            raise TypeError(f"{cls.__name__}: a message subclasses Tagged or Message")
        names, encs, decs, required = _field_codecs(cls)
        if issubclass(cls, Message) and names[:1] != ["id"]:
            raise TypeError(f"{cls.__name__}: the first field must be the request id")
        plain = [(n, e) for n, e in zip(names, encs, strict=True)]
        all_plain = all(e is _identity for e in encs)

        if all_plain:

            def to_wire(self: Any) -> list[Any]:
                return [tag, *[getattr(self, n) for n in names]]
        else:

            def to_wire(self: Any) -> list[Any]:
                return [tag, *[e(getattr(self, n)) for n, e in plain]]

        def from_fields(v: list[Any]) -> Any:
            return _decode_fields(cls, cls.__name__, required, decs, v, check)

        cls.TAG = tag  # type: ignore[attr-defined]
        cls._to_wire = to_wire  # type: ignore[attr-defined]
        cls._from_fields = staticmethod(from_fields)  # type: ignore[attr-defined]
        _BY_TAG[tag] = cls
        return cls

    return register


def encode(msg: Tagged) -> bytes:
    return msg.encode()


def loads_one(payload: bytes) -> Any:
    """The one CBOR item that is the whole of ``payload``.

    ``cbor2.loads`` ignores bytes after the first item; a frame holds exactly
    one message, so bytes past it are a ProtocolError. A seekable reader with
    ``read_size`` the whole payload reads it at once (as ``loads`` does) and is
    left just past the item, which ``tell`` reports.
    """
    fp = io.BytesIO(payload)
    try:
        raw = cbor2.CBORDecoder(fp, read_size=max(len(payload), 1)).decode()
    except Exception as exc:  # cbor2 raises CBORDecodeError, ValueError, RecursionError...
        raise ProtocolError(f"undecodable CBOR: {exc}") from None
    end = fp.tell()
    if end != len(payload):
        raise ProtocolError(f"{len(payload) - end} bytes after the message in its frame")
    return raw


def decode(payload: bytes) -> Tagged:
    """The message in one frame's payload; ProtocolError on anything malformed
    (also on bytes after the message: a frame holds exactly one), MessageError
    when only the message's fields are wrong."""
    raw = loads_one(payload)
    if type(raw) is not list or not raw:
        _fail("a message is a non-empty array", raw)
    tag = raw[0]
    cls = _BY_TAG.get(tag) if type(tag) is int else None
    if cls is None:
        _fail("unknown message tag", tag)
    try:
        return cls._from_fields(raw[1:])  # type: ignore[attr-defined, no-any-return]
    except (ProtocolError, TypeError, ValueError) as exc:
        # TypeError/ValueError: a dataclass __post_init__ refusing a value
        raise MessageError(f"{cls.__name__}: {exc}", cls, _request_id(cls, raw),
                           exc.kind if isinstance(exc, TooLong) else "") from None


def _request_id(cls: type, raw: list[Any]) -> int | None:
    """The request id of a refused message, if it has one and it is valid."""
    if not issubclass(cls, Message) or len(raw) < 2:
        return None
    rid = raw[1]
    return rid if type(rid) is int and INT_MIN <= rid <= INT_MAX else None


def registered_tags() -> dict[int, type]:
    return dict(_BY_TAG)

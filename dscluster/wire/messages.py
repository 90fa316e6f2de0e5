"""The store protocol's messages and the error codes every protocol shares.

Theory of operation: a client sends requests, each with an id unique among
its in-flight requests on that stream; the server answers each id with
exactly one response (``Ok``, ``OkMany``, ``Fail``, ``NodeInfo``), except a
``Query``, answered by ``QueryChunk``s: the server sends one chunk, and the
next only after the client asks with ``QueryNext`` (pull-based, so a slow
reader never blocks other responses on the stream); ``more=False`` ends it and
``Cancel`` stops it early. ``Cancel`` stops any in-flight request.

Keyed requests carry ``asking`` (Redis ASKING): the client was redirected by
an ``ask`` error and the target must serve the key although it does not own
the slot yet. Batched forms carry many keys in one request and are answered
per key, in request order, each item a value or an ``ErrorInfo``.

Errors travel as ``ErrorInfo`` (a code from ``ErrorCode`` and a message, plus
slot/peer/addrs for ``moved`` and ``ask``) and map both ways to the
exceptions of ``dscluster.errors``. All wire shapes are documented in
doc/protocol.md. Tags 1-63 are the store protocol's; other protocols
(gossip, join, admin) register their messages from 64 up.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Annotated, Any

from dscluster.errors import (
    AskError,
    BadKeyError,
    BadRequestError,
    DatastoreClosedError,
    DSClusterError,
    FencedError,
    MovedError,
    NotFoundError,
    ProtocolError,
    UnauthorizedError,
    UnavailableError,
)
from dscluster.wire.schema import MaxLen, Message, decode, encode, message, struct

__all__ = [
    "ADMIN_PROTOCOL", "GOSSIP_PROTOCOL", "JOIN_PROTOCOL", "STORE_PROTOCOL",
    "Batch", "Cancel", "Delete", "ErrorCode", "ErrorInfo", "Fail", "Get", "GetMany",
    "GetSize", "GetSizeMany", "Has", "HasMany", "Info", "NodeInfo", "Ok", "OkMany",
    "Put", "Query", "QueryChunk", "QueryEntry", "QueryNext", "RemoteError",
    "Request", "Response", "decode", "encode",
]

STORE_PROTOCOL = "/dscluster/store/1.0.0"
GOSSIP_PROTOCOL = "/dscluster/gossip/1.0.0"
JOIN_PROTOCOL = "/dscluster/join/1.0.0"
ADMIN_PROTOCOL = "/dscluster/admin/1.0.0"

MAX_KEY_LEN = 4096  # characters; go-datastore keys are paths, block keys are ~60
MAX_BATCH = 65536  # keys per batched request (the frame size limit binds first for values)

Key = Annotated[str, MaxLen(MAX_KEY_LEN, "key")]  # too long: answered bad_key
Keys = Annotated[tuple[Key, ...], MaxLen(MAX_BATCH)]
Value = bytes | bool | int | None  # get -> bytes, has -> bool, get_size -> int, put -> None


class Request(Message):
    """Marker: sent by clients."""


class Response(Message):
    """Marker: sent by servers, answers the request with the same id."""


class RemoteError(DSClusterError):
    """A peer failed in a way it did not explain (error code ``internal``)."""


class ErrorCode(enum.Enum):
    NOT_FOUND = "not_found"
    MOVED = "moved"
    ASK = "ask"
    UNAUTHORIZED = "unauthorized"
    BAD_REQUEST = "bad_request"
    BAD_KEY = "bad_key"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"
    FENCED = "fenced"


@struct
@dataclass(frozen=True, slots=True)
class ErrorInfo:
    code: ErrorCode
    message: str
    slot: int | None = None
    peer: str | None = None
    addrs: tuple[str, ...] = ()

    def to_exception(self) -> DSClusterError:
        code = self.code
        if code in (ErrorCode.MOVED, ErrorCode.ASK):
            cls = MovedError if code is ErrorCode.MOVED else AskError
            return cls(self.slot if self.slot is not None else -1, self.peer or "",
                       list(self.addrs))
        return _EXCEPTION_OF[code](self.message)

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        if isinstance(exc, MovedError | AskError):
            code = ErrorCode.MOVED if isinstance(exc, MovedError) else ErrorCode.ASK
            return cls(code, str(exc), exc.slot, exc.peer_id, tuple(exc.addrs))
        for exc_type, code in _CODE_OF:
            if isinstance(exc, exc_type):
                return cls(code, str(exc))
        # Never leak internals (paths, tracebacks) to a peer: the type is enough.
        return cls(ErrorCode.INTERNAL, f"internal error ({type(exc).__name__})")


_EXCEPTION_OF: dict[ErrorCode, type[DSClusterError]] = {
    ErrorCode.NOT_FOUND: NotFoundError,
    ErrorCode.UNAUTHORIZED: UnauthorizedError,
    ErrorCode.BAD_REQUEST: BadRequestError,
    ErrorCode.BAD_KEY: BadKeyError,
    ErrorCode.UNAVAILABLE: UnavailableError,
    ErrorCode.INTERNAL: RemoteError,
    ErrorCode.FENCED: FencedError,
}
# Order matters: the first matching class wins.
_CODE_OF: tuple[tuple[type[BaseException], ErrorCode], ...] = (
    (NotFoundError, ErrorCode.NOT_FOUND),
    (UnauthorizedError, ErrorCode.UNAUTHORIZED),
    (BadKeyError, ErrorCode.BAD_KEY),
    (BadRequestError, ErrorCode.BAD_REQUEST),
    (ProtocolError, ErrorCode.BAD_REQUEST),
    (FencedError, ErrorCode.FENCED),
    (UnavailableError, ErrorCode.UNAVAILABLE),
    (DatastoreClosedError, ErrorCode.UNAVAILABLE),
)


# -- single-key requests ------------------------------------------------------


@message(1)
@dataclass(frozen=True, slots=True)
class Get(Request):
    id: int
    key: Key
    asking: bool = False
    # Served by any node holding a copy of the slot, not only its primary: for
    # content-addressed keys, which the reader verifies (doc/copies.md).
    any_copy: bool = False


@message(2)
@dataclass(frozen=True, slots=True)
class Has(Request):
    id: int
    key: Key
    asking: bool = False


@message(3)
@dataclass(frozen=True, slots=True)
class GetSize(Request):
    id: int
    key: Key
    asking: bool = False


@message(4)
@dataclass(frozen=True, slots=True)
class Put(Request):
    id: int
    key: Key
    value: bytes
    asking: bool = False


@message(5)
@dataclass(frozen=True, slots=True)
class Delete(Request):
    id: int
    key: Key
    asking: bool = False


# -- batched requests: answered by OkMany, one item per key ------------------


@message(6)
@dataclass(frozen=True, slots=True)
class GetMany(Request):
    id: int
    keys: Keys
    asking: bool = False
    any_copy: bool = False


@message(7)
@dataclass(frozen=True, slots=True)
class HasMany(Request):
    id: int
    keys: Keys
    asking: bool = False


@message(8)
@dataclass(frozen=True, slots=True)
class GetSizeMany(Request):
    id: int
    keys: Keys
    asking: bool = False


@message(9)
@dataclass(frozen=True, slots=True)
class Batch(Request):
    """go-datastore Batching: puts, then deletes; OkMany answers puts first, then deletes."""

    id: int
    puts: Annotated[tuple[tuple[Key, bytes], ...], MaxLen(MAX_BATCH)] = ()
    deletes: Keys = ()
    asking: bool = False


@message(14)
@dataclass(frozen=True, slots=True)
class Replicate(Request):
    """Primary -> copy, members only: hold these writes of slots whose copy set names
    you. ``slots`` gives each slot the primary's epoch for it (the copy's fence,
    core/replication.py); every key's slot is listed. Ok once stored as durably as
    the copy's sync setting promises; Fail (unavailable) from a copy that knows a
    newer epoch for one of the slots. With ``clear``, the copy first drops every key
    it holds of the listed slots (a new copy being filled, node/refill.py)."""

    id: int
    slots: Annotated[tuple[tuple[int, int], ...], MaxLen(MAX_BATCH * 2)]
    puts: Annotated[tuple[tuple[Key, bytes], ...], MaxLen(MAX_BATCH)] = ()
    deletes: Keys = ()
    clear: bool = False


# -- query ---------------------------------------------------------------------


class FilterOp(enum.Enum):
    EQ = "="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="


class OrderBy(enum.Enum):
    KEY = "key"
    KEY_DESC = "-key"
    VALUE = "value"
    VALUE_DESC = "-value"


@struct
@dataclass(frozen=True, slots=True)
class WireFilter:
    """One filter: kind "key" (operand str), "value" (operand bytes) or "prefix" (op unused)."""

    kind: Annotated[str, MaxLen(8)]
    op: FilterOp
    operand: bytes | Key

    def __post_init__(self) -> None:
        want = {"key": str, "prefix": str, "value": bytes}.get(self.kind)
        if want is None:
            raise ValueError(f"unknown filter kind {self.kind!r}")
        if not isinstance(self.operand, want):
            raise ValueError(f"{self.kind} filter needs a {want.__name__} operand")


@message(10)
@dataclass(frozen=True, slots=True)
class Query(Request):
    id: int
    prefix: Key = ""
    filters: Annotated[tuple[WireFilter, ...], MaxLen(64)] = ()
    orders: Annotated[tuple[OrderBy, ...], MaxLen(8)] = ()
    limit: int = 0
    offset: int = 0
    keys_only: bool = False
    returns_sizes: bool = False
    chunk_size: int = 1024  # entries per QueryChunk (the server may send fewer)

    def __post_init__(self) -> None:
        if self.limit < 0 or self.offset < 0 or self.chunk_size < 1:
            raise ValueError("limit and offset must be >= 0, chunk_size >= 1")

    def to_query(self) -> Any:
        """This request as a dscluster.datastore.query.Query."""
        from dscluster.datastore import query as q

        filters: list[Any] = []
        for f in self.filters:
            if f.kind == "prefix":
                filters.append(q.FilterKeyPrefix(f.operand))  # type: ignore[arg-type]
            elif f.kind == "key":
                filters.append(q.FilterKeyCompare(f.op.value, f.operand))  # type: ignore[arg-type]
            else:
                filters.append(q.FilterValueCompare(f.op.value, f.operand))  # type: ignore[arg-type]
        order_types: dict[OrderBy, Any] = {
            OrderBy.KEY: q.OrderByKey, OrderBy.KEY_DESC: q.OrderByKeyDescending,
            OrderBy.VALUE: q.OrderByValue, OrderBy.VALUE_DESC: q.OrderByValueDescending,
        }
        return q.Query(
            prefix=self.prefix, filters=tuple(filters),
            orders=tuple(order_types[o]() for o in self.orders), limit=self.limit,
            offset=self.offset, keys_only=self.keys_only, returns_sizes=self.returns_sizes,
        )

    @classmethod
    def from_query(cls, request_id: int, query: Any, chunk_size: int = 1024) -> Query:
        """The request for a dscluster.datastore.query.Query; BadRequestError if it has
        filters or orders the wire cannot carry."""
        from dscluster.datastore import query as q

        filters = []
        for f in query.filters:
            if isinstance(f, q.FilterKeyPrefix):
                filters.append(WireFilter("prefix", FilterOp.EQ, f.prefix))
            elif isinstance(f, q.FilterKeyCompare):
                filters.append(WireFilter("key", FilterOp(f.op), f.key))
            elif isinstance(f, q.FilterValueCompare):
                filters.append(WireFilter("value", FilterOp(f.op), f.value))
            else:
                raise BadRequestError(f"filter {f!r} cannot be sent over the wire")
        names = {
            q.OrderByKey: OrderBy.KEY, q.OrderByKeyDescending: OrderBy.KEY_DESC,
            q.OrderByValue: OrderBy.VALUE, q.OrderByValueDescending: OrderBy.VALUE_DESC,
        }
        orders = []
        for o in query.orders:
            if type(o) not in names:
                raise BadRequestError(f"order {o!r} cannot be sent over the wire")
            orders.append(names[type(o)])
        return cls(request_id, query.prefix, tuple(filters), tuple(orders), query.limit,
                   query.offset, query.keys_only, query.returns_sizes, chunk_size)


@message(11)
@dataclass(frozen=True, slots=True)
class QueryNext(Request):
    """Send the next chunk of the query with this id."""

    id: int


@message(12)
@dataclass(frozen=True, slots=True)
class Cancel(Request):
    """Stop the in-flight request (or query) with this id; it gets no further answer."""

    id: int


@message(13)
@dataclass(frozen=True, slots=True)
class Info(Request):
    """Ask a node who it is and which slots it serves."""

    id: int


# -- responses -----------------------------------------------------------------


@message(32)
@dataclass(frozen=True, slots=True)
class Ok(Response):
    id: int
    value: Value = None


@message(33)
@dataclass(frozen=True, slots=True)
class Fail(Response):
    id: int
    error: ErrorInfo


@message(34)
@dataclass(frozen=True, slots=True)
class OkMany(Response):
    id: int
    results: Annotated[tuple[bytes | bool | int | ErrorInfo | None, ...], MaxLen(MAX_BATCH * 2)]


@struct
@dataclass(frozen=True, slots=True)
class QueryEntry:
    key: Key
    value: bytes | None = None
    size: int = -1


@message(35)
@dataclass(frozen=True, slots=True)
class QueryChunk(Response):
    id: int
    entries: tuple[QueryEntry, ...]
    more: bool


@message(36)
@dataclass(frozen=True, slots=True)
class NodeInfo(Response):
    id: int
    peer_id: Annotated[str, MaxLen(128)]
    addrs: Annotated[tuple[str, ...], MaxLen(64)]
    slots: tuple[tuple[int, int], ...]  # inclusive ranges
    epoch: int
    version: Annotated[str, MaxLen(64)]
    # From the node's periodic keys-only scan (StoreService.count_keys); -1 not
    # counted yet. Optional on the wire: older nodes omit them.
    key_count: int = -1
    byte_count: int = -1
    # Migrations this node takes part in, one line each ("out 6153-6753 -> PEER migrating").
    migrations: Annotated[tuple[str, ...], MaxLen(256)] = ()
    # Slot ranges this node holds a replica of (its copies beside the primary's).
    replicas: tuple[tuple[int, int], ...] = ()
    # The other data members and their addresses, so a client also learns of
    # members that serve no slot (down, failed over, or new): `dsclient status`.
    members: Annotated[tuple[tuple[str, tuple[str, ...]], ...], MaxLen(1024)] = ()

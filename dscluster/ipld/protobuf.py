"""Just enough of the protobuf wire format for bitswap, dag-pb and UnixFS.

These formats are small and fixed, so we read and write fields by hand: a
message is a run of (tag, value) pairs where the tag is ``field << 3 | type``
and the value is a varint (type 0) or a length-prefixed byte string (type 2).
Malformed input raises ProtocolError; unknown fields are skipped, as protobuf
readers must.
"""

from __future__ import annotations

from collections.abc import Iterator

from dscluster.errors import ProtocolError

# The one varint (wire/varint.py); re-exported for dag-pb, UnixFS and bitswap.
from dscluster.wire.varint import decode_varint as decode_varint
from dscluster.wire.varint import encode_varint as encode_varint

VARINT = 0
FIXED64 = 1
LENGTH_DELIMITED = 2
FIXED32 = 5


def tag(field: int, wire_type: int) -> bytes:
    return encode_varint(field << 3 | wire_type)


def varint_field(field: int, value: int) -> bytes:
    return encode_varint(field << 3 | VARINT) + encode_varint(value)


def bytes_field(field: int, value: bytes) -> bytes:
    return encode_varint(field << 3 | LENGTH_DELIMITED) + encode_varint(len(value)) + value


def iter_fields(data: bytes | memoryview) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) for every field of a message."""
    buf = bytes(data)  # slicing bytes copies once, as the values must be bytes anyway
    end = len(buf)
    pos = 0
    while pos < end:
        tag, pos = decode_varint(buf, pos)
        field, wire_type = tag >> 3, tag & 7
        if field == 0:
            raise ProtocolError("protobuf field number 0")
        if wire_type == VARINT:
            value, pos = decode_varint(buf, pos)
            yield field, wire_type, value
        elif wire_type == LENGTH_DELIMITED:
            length, pos = decode_varint(buf, pos)
            if pos + length > end:
                raise ProtocolError("truncated protobuf field")
            yield field, wire_type, buf[pos : pos + length]
            pos += length
        elif wire_type in (FIXED64, FIXED32):  # unused by our schemas: skip
            pos += 8 if wire_type == FIXED64 else 4
            if pos > end:
                raise ProtocolError("truncated protobuf field")
        else:
            raise ProtocolError(f"unsupported protobuf wire type {wire_type}")


def expect_bytes(value: int | bytes, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise ProtocolError(f"{what}: expected bytes")
    return value


def expect_int(value: int | bytes, what: str) -> int:
    if not isinstance(value, int):
        raise ProtocolError(f"{what}: expected a varint")
    return value

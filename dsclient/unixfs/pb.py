"""The two protobuf messages of a UnixFS DAG: dag-pb's PBNode and UnixFS's Data.

Theory of operation: both are tiny proto2 messages, so they are encoded by
hand here rather than through a protobuf runtime. Encoding must be byte-exact
with Go (go-codec-dagpb and go-unixfs), because the CID is the hash of these
bytes:

- PBNode writes its Links (field 2) before its Data (field 1), the canonical
  dag-pb order. Each PBLink writes Hash (1), Name (2) and Tsize (3); Kubo
  always sets Name and Tsize, so an unnamed file chunk still carries an empty
  Name (``12 00``).
- UnixFS Data writes Type (1), Data (2) only when there is data, filesize (3)
  for files (even 0), and each blocksize (4) as its own unpacked varint field.

Decoding accepts fields in any order and skips unknown fields, as protobuf
readers do; malformed bytes raise ValueError, which callers turn into an error
naming the block.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

from multiformats import CID

from dsclient.unixfs.cids import cid_from_bytes, cid_to_bytes

_VARINT = 0
_I64 = 1
_LEN = 2
_I32 = 5


class DataType(enum.IntEnum):
    """UnixFS node types (unixfs.proto)."""

    RAW = 0
    DIRECTORY = 1
    FILE = 2
    METADATA = 3
    SYMLINK = 4
    HAMT_SHARD = 5


@dataclass(frozen=True)
class PBLink:
    cid: CID
    name: str = ""
    tsize: int = 0


@dataclass(frozen=True)
class PBNode:
    links: tuple[PBLink, ...] = ()
    data: bytes | None = None


@dataclass(frozen=True)
class UnixFSData:
    type: DataType
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = ()
    hash_type: int | None = None
    fanout: int | None = None


def varint(n: int) -> bytes:
    """Unsigned LEB128, as protobuf writes it."""
    if n < 0:
        raise ValueError(f"varint of negative number {n}")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def _bytes_field(number: int, value: bytes) -> bytes:
    return _field(number, _LEN) + varint(len(value)) + value


def encode_node(node: PBNode) -> bytes:
    parts = []
    for link in node.links:
        body = (
            _bytes_field(1, cid_to_bytes(link.cid))
            + _bytes_field(2, link.name.encode("utf-8"))
            + _field(3, _VARINT)
            + varint(link.tsize)
        )
        parts.append(_bytes_field(2, body))
    if node.data is not None:
        parts.append(_bytes_field(1, node.data))
    return b"".join(parts)


def encode_data(msg: UnixFSData) -> bytes:
    parts = [_field(1, _VARINT) + varint(msg.type)]
    if msg.data is not None:
        parts.append(_bytes_field(2, msg.data))
    if msg.filesize is not None:
        parts.append(_field(3, _VARINT) + varint(msg.filesize))
    parts.extend(_field(4, _VARINT) + varint(size) for size in msg.blocksizes)
    if msg.hash_type is not None:
        parts.append(_field(5, _VARINT) + varint(msg.hash_type))
    if msg.fanout is not None:
        parts.append(_field(6, _VARINT) + varint(msg.fanout))
    return b"".join(parts)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) for each field; length-delimited values as bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        value: int | bytes
        if wire_type == _VARINT:
            value, pos = _read_varint(buf, pos)
        elif wire_type == _LEN:
            length, pos = _read_varint(buf, pos)
            if pos + length > len(buf):
                raise ValueError("truncated length-delimited field")
            value, pos = buf[pos : pos + length], pos + length
        elif wire_type in (_I64, _I32):
            width = 8 if wire_type == _I64 else 4
            if pos + width > len(buf):
                raise ValueError("truncated fixed-width field")
            value, pos = int.from_bytes(buf[pos : pos + width], "little"), pos + width
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
        yield number, wire_type, value


def _expect(wire_type: int, want: int, what: str) -> None:
    if wire_type != want:
        raise ValueError(f"{what} has wire type {wire_type}, expected {want}")


def decode_node(buf: bytes) -> PBNode:
    links: list[PBLink] = []
    data: bytes | None = None
    for number, wire_type, value in _fields(buf):
        if number == 1:
            _expect(wire_type, _LEN, "PBNode.Data")
            assert isinstance(value, bytes)
            data = value
        elif number == 2:
            _expect(wire_type, _LEN, "PBNode.Links")
            assert isinstance(value, bytes)
            links.append(_decode_link(value))
    return PBNode(tuple(links), data)


def _decode_link(buf: bytes) -> PBLink:
    cid: CID | None = None
    name, tsize = "", 0
    for number, wire_type, value in _fields(buf):
        if number == 1:
            _expect(wire_type, _LEN, "PBLink.Hash")
            assert isinstance(value, bytes)
            try:
                cid = cid_from_bytes(value)
            except Exception as exc:  # multiformats raises several unrelated types
                raise ValueError(f"link with invalid CID: {exc}") from exc
        elif number == 2:
            _expect(wire_type, _LEN, "PBLink.Name")
            assert isinstance(value, bytes)
            try:
                name = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError("link name is not UTF-8") from exc
        elif number == 3:
            _expect(wire_type, _VARINT, "PBLink.Tsize")
            assert isinstance(value, int)
            tsize = value
    if cid is None:
        raise ValueError("link without a Hash")
    return PBLink(cid, name, tsize)


def decode_data(buf: bytes) -> UnixFSData:
    kind: int | None = None
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: list[int] = []
    hash_type: int | None = None
    fanout: int | None = None
    for number, wire_type, value in _fields(buf):
        if number == 4 and wire_type == _LEN:  # a packed writer's blocksizes
            assert isinstance(value, bytes)
            pos = 0
            while pos < len(value):
                size, pos = _read_varint(value, pos)
                blocksizes.append(size)
            continue
        if number == 2:
            _expect(wire_type, _LEN, "Data.Data")
            assert isinstance(value, bytes)
            data = value
            continue
        if number in (1, 3, 4, 5, 6):
            _expect(wire_type, _VARINT, f"Data field {number}")
            assert isinstance(value, int)
            if number == 1:
                kind = value
            elif number == 3:
                filesize = value
            elif number == 4:
                blocksizes.append(value)
            elif number == 5:
                hash_type = value
            else:
                fanout = value
    if kind is None:
        raise ValueError("UnixFS Data without a Type")
    try:
        data_type = DataType(kind)
    except ValueError as exc:
        raise ValueError(f"unknown UnixFS type {kind}") from exc
    return UnixFSData(data_type, data, filesize, tuple(blocksizes), hash_type, fanout)

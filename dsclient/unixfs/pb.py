"""UnixFS's Data message, the payload of a dag-pb node (dag-pb itself: dscluster.ipld.dagpb).

Theory of operation: a tiny proto2 message, encoded by hand on the shared
protobuf helpers. Encoding must be byte-exact with go-unixfs, because the CID
is the hash of the node that carries it: Type (1), Data (2) only when there is
data, filesize (3) for files (even 0), and each blocksize (4) as its own
unpacked varint field.

Decoding accepts fields in any order, packed or unpacked blocksizes, and skips
unknown fields, as protobuf readers do; malformed bytes raise ProtocolError,
which the exporter turns into an error naming the block.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dscluster.errors import ProtocolError
from dscluster.ipld import protobuf as pb
from dscluster.ipld.dagpb import PBLink, PBNode, decode_node, encode_node

__all__ = [
    "DataType",
    "PBLink",
    "PBNode",
    "UnixFSData",
    "decode_data",
    "decode_node",
    "encode_data",
    "encode_node",
]


class DataType(enum.IntEnum):
    """UnixFS node types (unixfs.proto)."""

    RAW = 0
    DIRECTORY = 1
    FILE = 2
    METADATA = 3
    SYMLINK = 4
    HAMT_SHARD = 5


@dataclass(frozen=True)
class UnixFSData:
    type: DataType
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = ()
    hash_type: int | None = None
    fanout: int | None = None


def encode_data(msg: UnixFSData) -> bytes:
    parts = [pb.varint_field(1, msg.type)]
    if msg.data is not None:
        parts.append(pb.bytes_field(2, msg.data))
    if msg.filesize is not None:
        parts.append(pb.varint_field(3, msg.filesize))
    parts.extend(pb.varint_field(4, size) for size in msg.blocksizes)
    if msg.hash_type is not None:
        parts.append(pb.varint_field(5, msg.hash_type))
    if msg.fanout is not None:
        parts.append(pb.varint_field(6, msg.fanout))
    return b"".join(parts)


_VARINT_FIELDS = {1: "Type", 3: "filesize", 4: "blocksizes", 5: "hashType", 6: "fanout"}


def decode_data(buf: bytes) -> UnixFSData:
    ints: dict[int, int] = {}
    data: bytes | None = None
    blocksizes: list[int] = []
    for number, wire_type, value in pb.iter_fields(buf):
        if number == 4 and wire_type == pb.LENGTH_DELIMITED:  # a packed writer's blocksizes
            packed, pos = pb.expect_bytes(value, "Data.blocksizes"), 0
            while pos < len(packed):
                size, pos = pb.decode_varint(packed, pos)
                blocksizes.append(size)
        elif number == 2:
            data = pb.expect_bytes(value, "Data.Data")
        elif number in _VARINT_FIELDS:
            number_value = pb.expect_int(value, f"Data.{_VARINT_FIELDS[number]}")
            if number == 4:
                blocksizes.append(number_value)
            else:
                ints[number] = number_value
    if 1 not in ints:
        raise ProtocolError("UnixFS Data without a Type")
    try:
        data_type = DataType(ints[1])
    except ValueError as exc:
        raise ProtocolError(f"unknown UnixFS type {ints[1]}") from exc
    return UnixFSData(
        data_type, data, ints.get(3), tuple(blocksizes), ints.get(5), ints.get(6)
    )

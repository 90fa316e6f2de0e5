"""Unsigned varints (LEB128): the one implementation in the tree.

Seven bits a byte, least significant group first, the high bit set on every
byte but the last. Frame lengths (ours and bitswap's, both the multiformats
unsigned-varint) and protobuf fields (dag-pb, UnixFS, bitswap messages) use
the same encoding; they differ only in what a reader accepts:

- multiformats (``MULTIFORMATS``): at most 9 bytes (63 bits), minimally
  encoded (no trailing 0x00 group);
- protobuf (``PROTOBUF``): at most 10 bytes (64 bits); protobuf readers accept
  a non-minimal encoding, so we do too.

``read_varint`` is for incremental readers (it returns None while the varint
is incomplete), ``decode_varint`` for whole buffers (a truncation is a
ProtocolError). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from dscluster.errors import ProtocolError

__all__ = [
    "MULTIFORMATS", "PROTOBUF", "VarintOverLimit", "VarintRules", "decode_varint",
    "encode_varint", "read_varint",
]


@dataclass(frozen=True)
class VarintRules:
    max_bytes: int
    minimal: bool


MULTIFORMATS = VarintRules(max_bytes=9, minimal=True)
PROTOBUF = VarintRules(max_bytes=10, minimal=False)


class VarintOverLimit(ProtocolError):
    """The value exceeds the caller's limit; ``complete`` is False when the varint
    was still being read (its value is then a lower bound)."""

    def __init__(self, value: int, limit: int, complete: bool) -> None:
        super().__init__(f"varint value {value} exceeds the limit of {limit}")
        self.value = value
        self.limit = limit
        self.complete = complete


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints here are unsigned")
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(data: bytes | bytearray | memoryview, pos: int = 0,
                rules: VarintRules = PROTOBUF, limit: int | None = None) -> tuple[int, int] | None:
    """(value, position after it), or None if ``data`` ends inside the varint.

    ProtocolError if it is longer than ``rules.max_bytes`` or (with
    ``rules.minimal``) not minimally encoded; VarintOverLimit as soon as the
    value, even a partial one, exceeds ``limit``.
    """
    value = 0
    shift = 0
    end = len(data)
    for i in range(pos, end):
        byte = data[i]
        count = i - pos + 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if rules.minimal and byte == 0 and count > 1:
                raise ProtocolError("varint is not minimally encoded")
            if limit is not None and value > limit:
                raise VarintOverLimit(value, limit, complete=True)
            return value, i + 1
        if count >= rules.max_bytes:
            raise ProtocolError(f"varint longer than {rules.max_bytes} bytes")
        if limit is not None and value > limit:
            raise VarintOverLimit(value, limit, complete=False)  # whatever follows
        shift += 7
    return None


def decode_varint(data: bytes | bytearray | memoryview, pos: int = 0,
                  rules: VarintRules = PROTOBUF) -> tuple[int, int]:
    """The varint at ``data[pos:]`` and the position just after it; ProtocolError if truncated."""
    if pos < len(data) and data[pos] < 0x80:  # tags, lengths and most values fit one byte
        return data[pos], pos + 1
    got = read_varint(data, pos, rules)
    if got is None:
        raise ProtocolError("truncated varint")
    return got

"""CARv1 framing, written from the CARv1 specification (ipld.io/specs/transport/car/carv1).

A CARv1 stream is a header and then sections, each prefixed by its length as
an unsigned LEB128 varint (the multiformats varint):

    varint(len(H)) H   varint(len(C) + len(B)) C B   varint(...) C B ...

H is the DAG-CBOR map ``{"roots": [CID, ...], "version": 1}``; each section
is a block's binary CID C (a CIDv0 is its bare multihash) followed by the
block's bytes B. DAG-CBOR sorts map keys by encoded length, then bytewise,
so "roots" (5 bytes) comes before "version" (7); a CID is CBOR tag 42 over a
byte string holding a 0x00 (the identity multibase) and the binary CID.

Nothing here buffers more than one section: ``header`` and ``section`` return
the bytes to send, so a writer streams a DAG of any size in constant memory.
"""

from __future__ import annotations

from collections.abc import Sequence

from multiformats import CID

from dscluster.ipld.cids import cid_to_bytes
from dscluster.wire.varint import encode_varint as varint  # the one varint

CAR_VERSION = 1


def _cbor_head(major: int, n: int) -> bytes:
    """A CBOR initial byte and argument in the shortest form (DAG-CBOR requires it)."""
    if n < 24:
        return bytes((major << 5 | n,))
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes((major << 5 | info,)) + n.to_bytes(width, "big")
    raise ValueError("CBOR argument too large")


def _cbor_text(s: str) -> bytes:
    raw = s.encode("utf-8")
    return _cbor_head(3, len(raw)) + raw


def _cbor_cid(cid: CID) -> bytes:
    raw = b"\x00" + cid_to_bytes(cid)
    return b"\xd8\x2a" + _cbor_head(2, len(raw)) + raw  # tag 42, byte string


def header(roots: Sequence[CID]) -> bytes:
    """The length-prefixed CARv1 header naming ``roots``."""
    body = (_cbor_head(5, 2)
            + _cbor_text("roots") + _cbor_head(4, len(roots)) + b"".join(map(_cbor_cid, roots))
            + _cbor_text("version") + _cbor_head(0, CAR_VERSION))
    return varint(len(body)) + body


def section(cid: CID, block: bytes) -> bytes:
    """One length-prefixed section: the CID's bytes, then the block's."""
    raw = cid_to_bytes(cid)
    return varint(len(raw) + len(block)) + raw + block

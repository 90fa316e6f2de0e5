"""A CARv1 reader for the tests: header roots and (CID, block) sections, every block verified.

The independent reader is @ipld/car (test_helia.py); this one lets the Python
tests check block order and scope without Node.
"""

from __future__ import annotations

import cbor2
from multiformats import CID

from dsclient.unixfs import verify_block
from dscluster.ipld.cids import cid_from_bytes
from dscluster.wire.varint import decode_varint as _varint  # the one varint


def _cid_len(buf: bytes) -> int:
    if buf[:2] == b"\x12\x20":
        return 34
    pos = 0
    for _ in range(3):  # version, codec, hash code
        _, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return pos + size


def read_car(data: bytes) -> tuple[list[CID], list[tuple[CID, bytes]]]:
    size, pos = _varint(data, 0)
    header = cbor2.loads(data[pos:pos + size])
    assert header["version"] == 1 and set(header) == {"roots", "version"}
    roots = [cid_from_bytes(t.value[1:]) for t in header["roots"]]
    pos += size
    blocks = []
    while pos < len(data):
        size, pos = _varint(data, pos)
        section = data[pos:pos + size]
        n = _cid_len(section)
        cid = cid_from_bytes(section[:n])
        verify_block(cid, section[n:])
        blocks.append((cid, section[n:]))
        pos += size
    return roots, blocks

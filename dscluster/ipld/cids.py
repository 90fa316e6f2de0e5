"""Fast paths for the few CID shapes a UnixFS DAG uses.

multiformats checks every argument at run time (typing_validation): building
a CID costs about 0.9 ms, decoding one from bytes about 3 ms, ``bytes(cid)``
17 us and ``str(cid)`` 1 ms. A DAG of small chunks has tens of thousands of
CIDs, so the importer and the link decoder go through here instead: the
multibase, codec and hash objects are looked up once and instances are made
with ``CID._new_instance`` (the constructor's own unvalidated path, about 40
us), which yields ordinary, equal, interned ``CID`` objects. Anything not
sha2-256 with a one-byte codec falls back to the validating ``CID.decode``.
"""

from __future__ import annotations

import hashlib

from multiformats import CID, multibase, multicodec, multihash

_BASE58 = multibase.get("base58btc")
_BASE32 = multibase.get("base32")
_DAG_PB = multicodec.get("dag-pb")
_RAW = multicodec.get("raw")
_SHA256 = multihash.get("sha2-256")
_CODECS = {_DAG_PB.code: _DAG_PB, _RAW.code: _RAW}
_SHA256_PREFIX = b"\x12\x20"


def sha256_cid(block: bytes, version: int, codec: str) -> CID:
    """The CID of ``block`` hashed with sha2-256: v0 dag-pb, or v1 (base32) dag-pb or raw."""
    digest = _SHA256_PREFIX + hashlib.sha256(block).digest()
    if version == 0:
        return CID._new_instance(CID, _BASE58, 0, _DAG_PB, _SHA256, digest)
    mc = _RAW if codec == "raw" else _DAG_PB
    return CID._new_instance(CID, _BASE32, 1, mc, _SHA256, digest)


def cid_to_bytes(cid: CID) -> bytes:
    """``bytes(cid)`` for the common shapes, without multiformats' checks."""
    if cid.version == 0:
        return cid.digest
    code = cid.codec.code
    if code < 0x80:
        return bytes((1, code)) + cid.digest
    return bytes(cid)


def cid_from_bytes(buf: bytes) -> CID:
    """Decode a binary CID; v1 CIDs come out in base32, as Kubo prints them."""
    if len(buf) == 34 and buf.startswith(_SHA256_PREFIX):
        return CID._new_instance(CID, _BASE58, 0, _DAG_PB, _SHA256, bytes(buf))
    if len(buf) == 36 and buf[0] == 1 and buf[1] in _CODECS and buf[2:4] == _SHA256_PREFIX:
        return CID._new_instance(CID, _BASE32, 1, _CODECS[buf[1]], _SHA256, bytes(buf[2:]))
    cid = CID.decode(bytes(buf))
    return cid.set(base="base32") if cid.version == 1 else cid


def block_matches(cid: CID, block: bytes) -> bool:
    """Whether ``block`` hashes to ``cid``'s multihash (any function multiformats knows)."""
    if cid.hashfun.code == _SHA256.code:
        return cid.digest == _SHA256_PREFIX + hashlib.sha256(block).digest()
    return bytes(cid.hashfun.digest(block)) == bytes(cid.digest)

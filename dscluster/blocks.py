"""Datastore keys of IPFS blocks, as go-ipfs-ds-help writes them.

A block is stored under "/" + base32 (RFC 4648, upper case, no padding) of its
CID's multihash bytes. The key depends only on the multihash, so a CIDv0 and a
CIDv1 of the same bytes share one block, as in Kubo. IPFS mounts its blockstore
under "/blocks"; the cluster itself stores the bare "/CIQ..." keys, exactly what
the mount hands down, so blocks added by dsclient and by an IPFS node through
ipfs_plugin are the same keys.
"""

from __future__ import annotations

import base64
import binascii

from multiformats import CID, multihash

from dscluster.errors import BadKeyError

BLOCKS_PREFIX = "/blocks"


def parse_cid(text: str | bytes | CID) -> CID:
    """Decode a CID given as text, bytes or CID; BadKeyError names bad input."""
    if isinstance(text, CID):
        return text
    try:
        return CID.decode(text)
    except Exception as exc:  # multiformats raises several unrelated types
        shown = text if isinstance(text, str) else repr(text)
        raise BadKeyError(f"invalid CID {shown!r}: {exc}") from exc


def block_key(cid: str | bytes | CID) -> str:
    """The datastore key of the block with this CID: "/" + BASE32(multihash)."""
    digest = bytes(parse_cid(cid).digest)  # the full multihash (code, length, digest)
    return "/" + base64.b32encode(digest).decode("ascii").rstrip("=")


def key_multihash(key: str) -> bytes:
    """Inverse of block_key: the multihash bytes a block key names."""
    name = key.rsplit("/", 1)[-1]
    padded = name + "=" * (-len(name) % 8)
    try:
        digest = base64.b32decode(padded)
        multihash.unwrap(digest)
    except (binascii.Error, ValueError, KeyError) as exc:
        raise BadKeyError(f"{key!r} is not a block key: {exc}") from exc
    return digest


def is_block_key(key: str) -> bool:
    """Whether ``key`` names a block ("/CIQ..." or "/blocks/CIQ..."): content-addressed,
    so bytes read from any copy can be checked against the key (doc/copies.md)."""
    parts = key.split("/")
    if not (len(parts) == 2 or (len(parts) == 3 and "/" + parts[1] == BLOCKS_PREFIX)):
        return False
    try:
        key_multihash(key)
    except BadKeyError:
        return False
    return True


def key_to_cid(key: str, codec: str = "raw") -> CID:
    """A CIDv1 for the block under this key (the codec is not in the key)."""
    return CID("base32", 1, codec, key_multihash(key))

"""Bitswap messages: frozen values and their protobuf encoding (sans-IO).

Theory of operation. A bitswap message is one protobuf (schema below) sent in
a frame prefixed by its unsigned-varint length. Streams are one-way: a peer
writes messages on streams it opens and only reads on streams the other side
opens, so "replies" are simply messages sent the other way.

    Message { Wantlist wantlist = 1; repeated bytes blocks = 2;   // 1.0.0
              repeated Block payload = 3;                         // 1.1.0+
              repeated BlockPresence blockPresences = 4;          // 1.2.0
              int32 pendingBytes = 5; }
    Wantlist { repeated Entry entries = 1; bool full = 2; }
    Entry { bytes block = 1 (CID); int32 priority = 2; bool cancel = 3;
            WantType wantType = 4 (Block=0, Have=1); bool sendDontHave = 5; }
    Block { bytes prefix = 1; bytes data = 2; }
    BlockPresence { bytes cid = 1; BlockPresenceType type = 2 (Have=0, DontHave=1); }

A payload block carries only a CID *prefix* (version, codec, hash function,
digest length as varints; 00 70 12 20 for CIDv0); the receiver hashes the data
to rebuild the CID, so a received block is verified by construction. Version
1.0.0 sends bare block data, which is always CIDv0 (dag-pb, sha2-256).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from multiformats import CID, multihash

from dscluster.errors import ProtocolError
from dscluster.ipld import protobuf as pb

PROTOCOL_1_2_0 = "/ipfs/bitswap/1.2.0"
PROTOCOL_1_1_0 = "/ipfs/bitswap/1.1.0"
PROTOCOL_1_0_0 = "/ipfs/bitswap/1.0.0"
PROTOCOL_LEGACY = "/ipfs/bitswap"
PROTOCOLS = (PROTOCOL_1_2_0, PROTOCOL_1_1_0, PROTOCOL_1_0_0, PROTOCOL_LEGACY)

MAX_BLOCK_SIZE = 2 * 1024 * 1024  # the bitswap limit (Kubo refuses to add larger blocks)
MAX_MESSAGE_SIZE = 4 * 1024 * 1024  # go-bitswap's network limit on one message


class WantType(enum.IntEnum):
    BLOCK = 0
    HAVE = 1


class PresenceType(enum.IntEnum):
    HAVE = 0
    DONT_HAVE = 1


@dataclass(frozen=True)
class WantEntry:
    cid: CID
    want_type: WantType = WantType.BLOCK
    priority: int = 1
    cancel: bool = False
    send_dont_have: bool = False


@dataclass(frozen=True)
class Block:
    cid: CID
    data: bytes


@dataclass(frozen=True)
class Presence:
    cid: CID
    type: PresenceType


@dataclass(frozen=True)
class Message:
    wants: tuple[WantEntry, ...] = ()
    full_wantlist: bool = False
    blocks: tuple[Block, ...] = ()
    presences: tuple[Presence, ...] = ()
    pending_bytes: int = 0

    def is_empty(self) -> bool:
        return not (self.wants or self.full_wantlist or self.blocks or self.presences)


def cid_prefix(cid: CID) -> bytes:
    """The prefix bitswap 1.1.0+ sends with a block (never empty, even for CIDv0)."""
    code, digest = multihash.unwrap_raw(bytes(cid.digest))
    return b"".join(
        pb.encode_varint(n) for n in (cid.version, cid.codec.code, code, len(digest))
    )


def cid_from_prefix(prefix: bytes, data: bytes) -> CID:
    """Rebuild a block's CID by hashing its data as the prefix says."""
    try:
        version, pos = pb.decode_varint(prefix, 0)
        codec, pos = pb.decode_varint(prefix, pos)
        hash_code, pos = pb.decode_varint(prefix, pos)
        length, pos = pb.decode_varint(prefix, pos)
    except ProtocolError as exc:
        raise ProtocolError(f"bad CID prefix {prefix.hex()}: {exc}") from exc
    if pos != len(prefix) or version not in (0, 1):
        raise ProtocolError(f"bad CID prefix {prefix.hex()}")
    if version == 0 and (codec, hash_code, length) != (0x70, 0x12, 32):
        raise ProtocolError(f"CIDv0 prefix must be dag-pb sha2-256/32, got {prefix.hex()}")
    try:
        digest = multihash.get(code=hash_code).digest(data, size=length)
        return CID("base58btc" if version == 0 else "base32", version, codec, digest)
    except (KeyError, ValueError) as exc:  # unknown codec or hash function
        raise ProtocolError(f"unsupported CID prefix {prefix.hex()}: {exc}") from exc


def _decode_cid(raw: bytes) -> CID:
    try:
        return CID.decode(raw)
    except Exception as exc:  # multiformats raises several unrelated types
        raise ProtocolError(f"bad CID in bitswap message: {raw.hex()}") from exc


def encode(message: Message, protocol: str = PROTOCOL_1_2_0) -> bytes:
    """The protobuf bytes of a message as the given protocol version carries it."""
    parts = []
    if message.wants or message.full_wantlist:
        entries = b"".join(pb.bytes_field(1, _encode_entry(e, protocol)) for e in message.wants)
        wantlist = entries + (pb.varint_field(2, 1) if message.full_wantlist else b"")
        parts.append(pb.bytes_field(1, wantlist))
    for block in message.blocks:
        if protocol in (PROTOCOL_1_0_0, PROTOCOL_LEGACY):
            parts.append(pb.bytes_field(2, block.data))
        else:
            payload = pb.bytes_field(1, cid_prefix(block.cid)) + pb.bytes_field(2, block.data)
            parts.append(pb.bytes_field(3, payload))
    if protocol == PROTOCOL_1_2_0:
        for presence in message.presences:
            body = pb.bytes_field(1, bytes(presence.cid)) + pb.varint_field(2, presence.type)
            parts.append(pb.bytes_field(4, body))
        if message.pending_bytes:
            parts.append(pb.varint_field(5, message.pending_bytes))
    return b"".join(parts)


def _encode_entry(entry: WantEntry, protocol: str) -> bytes:
    out = pb.bytes_field(1, bytes(entry.cid)) + pb.varint_field(2, entry.priority)
    if entry.cancel:
        out += pb.varint_field(3, 1)
    if protocol == PROTOCOL_1_2_0:  # older versions know only want-block
        if entry.want_type is not WantType.BLOCK:
            out += pb.varint_field(4, entry.want_type)
        if entry.send_dont_have:
            out += pb.varint_field(5, 1)
    return out


def decode(data: bytes) -> Message:
    """Parse one message; ProtocolError names what was wrong."""
    wants: list[WantEntry] = []
    full = False
    blocks: list[Block] = []
    presences: list[Presence] = []
    pending = 0
    for number, _, value in pb.iter_fields(data):
        if number == 1:
            for n, _, v in pb.iter_fields(pb.expect_bytes(value, "wantlist")):
                if n == 1:
                    wants.append(_decode_entry(pb.expect_bytes(v, "wantlist entry")))
                elif n == 2:
                    full = bool(pb.expect_int(v, "wantlist.full"))
        elif number == 2:
            raw = pb.expect_bytes(value, "block")
            digest = multihash.get("sha2-256").digest(raw)
            blocks.append(Block(CID("base58btc", 0, "dag-pb", digest), raw))
        elif number == 3:
            blocks.append(_decode_payload(pb.expect_bytes(value, "payload")))
        elif number == 4:
            presences.append(_decode_presence(pb.expect_bytes(value, "blockPresence")))
        elif number == 5:
            pending = pb.expect_int(value, "pendingBytes")
    return Message(tuple(wants), full, tuple(blocks), tuple(presences), pending)


def _decode_entry(data: bytes) -> WantEntry:
    cid: CID | None = None
    priority, cancel, want_type, send_dont_have = 1, False, WantType.BLOCK, False
    for number, _, value in pb.iter_fields(data):
        if number == 1:
            cid = _decode_cid(pb.expect_bytes(value, "entry.block"))
        elif number == 2:
            priority = pb.expect_int(value, "entry.priority")
        elif number == 3:
            cancel = bool(pb.expect_int(value, "entry.cancel"))
        elif number == 4:
            try:
                want_type = WantType(pb.expect_int(value, "entry.wantType"))
            except ValueError as exc:
                raise ProtocolError(f"unknown wantType {value!r}") from exc
        elif number == 5:
            send_dont_have = bool(pb.expect_int(value, "entry.sendDontHave"))
    if cid is None:
        raise ProtocolError("wantlist entry without a CID")
    return WantEntry(cid, want_type, priority, cancel, send_dont_have)


def _decode_payload(data: bytes) -> Block:
    prefix, block = None, b""
    for number, _, value in pb.iter_fields(data):
        if number == 1:
            prefix = pb.expect_bytes(value, "block.prefix")
        elif number == 2:
            block = pb.expect_bytes(value, "block.data")
    if not prefix:
        raise ProtocolError("payload block without a CID prefix")
    return Block(cid_from_prefix(prefix, block), block)


def _decode_presence(data: bytes) -> Presence:
    cid, kind = None, PresenceType.HAVE
    for number, _, value in pb.iter_fields(data):
        if number == 1:
            cid = _decode_cid(pb.expect_bytes(value, "blockPresence.cid"))
        elif number == 2:
            try:
                kind = PresenceType(pb.expect_int(value, "blockPresence.type"))
            except ValueError as exc:
                raise ProtocolError(f"unknown block presence type {value!r}") from exc
    if cid is None:
        raise ProtocolError("block presence without a CID")
    return Presence(cid, kind)

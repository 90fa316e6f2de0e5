"""Bitswap message encoding, CID prefixes, and malformed input."""

from __future__ import annotations

import pytest
from multiformats import CID, multihash

from dscluster.errors import ProtocolError
from dscluster.ipld import protobuf as pb
from dscluster.ipld.dagpb import PBLink, PBNode, child_cids, decode_node, encode_node
from ipfs_plugin import bitswap_message as bm

HELLO_V0 = CID.decode("QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN")


def raw_cid(data: bytes) -> CID:
    return CID("base32", 1, "raw", multihash.digest(data, "sha2-256"))


def test_cidv0_prefix_is_never_empty():
    assert bm.cid_prefix(HELLO_V0) == bytes.fromhex("00701220")


def test_cidv1_raw_prefix():
    assert bm.cid_prefix(raw_cid(b"x")) == bytes.fromhex("01551220")


def test_prefix_and_data_rebuild_the_cid():
    data = b"some block"
    cid = raw_cid(data)
    assert bm.cid_from_prefix(bm.cid_prefix(cid), data) == cid
    assert bm.cid_from_prefix(bm.cid_prefix(cid), data + b"!") != cid


def test_full_message_round_trips():
    block = b"\x00" * 1000
    message = bm.Message(
        wants=(
            bm.WantEntry(HELLO_V0, bm.WantType.HAVE, priority=5, send_dont_have=True),
            bm.WantEntry(raw_cid(b"a"), bm.WantType.BLOCK, cancel=True),
        ),
        full_wantlist=True,
        blocks=(bm.Block(raw_cid(block), block),),
        presences=(
            bm.Presence(HELLO_V0, bm.PresenceType.HAVE),
            bm.Presence(raw_cid(b"b"), bm.PresenceType.DONT_HAVE),
        ),
        pending_bytes=4096,
    )
    assert bm.decode(bm.encode(message)) == message


def test_older_versions_drop_what_they_cannot_say():
    data = b"hello block"
    v0 = CID("base58btc", 0, "dag-pb", multihash.digest(data, "sha2-256"))
    message = bm.Message(
        wants=(bm.WantEntry(HELLO_V0, bm.WantType.HAVE, send_dont_have=True),),
        blocks=(bm.Block(v0, data),),
        presences=(bm.Presence(HELLO_V0, bm.PresenceType.HAVE),),
    )
    for protocol in (bm.PROTOCOL_1_0_0, bm.PROTOCOL_1_1_0):
        decoded = bm.decode(bm.encode(message, protocol))
        assert decoded.presences == ()
        assert decoded.wants == (bm.WantEntry(HELLO_V0),)  # want-block, no sendDontHave
        assert decoded.blocks == (bm.Block(v0, data),)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\x0a", "truncated"),  # field 1 with no length
        (b"\x0a\x05\x0a", "truncated"),  # wantlist longer than the message
        (b"\x08\x01", "expected bytes"),  # wantlist as a varint
        (pb.bytes_field(1, pb.bytes_field(1, pb.varint_field(2, 1))), "without a CID"),
        (pb.bytes_field(1, pb.bytes_field(1, pb.bytes_field(1, b"\x99junk"))), "bad CID"),
        (pb.bytes_field(3, pb.bytes_field(2, b"data")), "without a CID prefix"),  # py-libp2p's v0
        (pb.bytes_field(3, pb.bytes_field(1, b"\x00\x55\x12\x20")), "CIDv0 prefix"),
        (pb.bytes_field(3, pb.bytes_field(1, b"\x01\x55\x12\x20\x00")), "bad CID prefix"),
        (pb.bytes_field(3, pb.bytes_field(1, b"\x01\x55\xf1\x01\x20")), "unsupported"),
        (pb.bytes_field(4, pb.varint_field(2, 1)), "without a CID"),
        (b"\xff" * 11, "varint"),
        (b"\x0b", "wire type"),
    ],
)
def test_malformed_messages_raise_protocol_error(payload, reason):
    with pytest.raises(ProtocolError, match=reason):
        bm.decode(payload)


def test_unknown_fields_are_skipped():
    message = bm.Message(presences=(bm.Presence(HELLO_V0, bm.PresenceType.HAVE),))
    extra = pb.varint_field(15, 7) + pb.bytes_field(14, b"future")
    assert bm.decode(extra + bm.encode(message)) == message


def test_dagpb_links_round_trip():
    links = (PBLink(HELLO_V0, "a", 14), PBLink(raw_cid(b"leaf"), "", 4))
    node = PBNode(links, b"\x08\x02")
    block = encode_node(node)
    assert decode_node(block) == node
    parent = CID("base58btc", 0, "dag-pb", multihash.digest(block, "sha2-256"))
    assert child_cids(parent, block) == [HELLO_V0, raw_cid(b"leaf")]
    assert child_cids(raw_cid(block), block) == []  # raw blocks are leaves


def test_dagpb_rejects_garbage():
    with pytest.raises(ProtocolError):
        decode_node(pb.bytes_field(2, pb.bytes_field(2, b"name only")))
    with pytest.raises(ProtocolError):
        decode_node(pb.varint_field(3, 1))
    with pytest.raises(ProtocolError, match="without a Hash"):
        child_cids(HELLO_V0, pb.bytes_field(2, pb.bytes_field(2, b"name only")))


def test_odd_link_names_are_walked_but_not_decoded():
    link = pb.bytes_field(1, bytes(HELLO_V0)) + pb.bytes_field(2, b"\xff\xfe") + pb.varint_field(3, 1)
    block = pb.bytes_field(2, link)
    assert child_cids(HELLO_V0, block) == [HELLO_V0]  # a server can still walk and serve it
    with pytest.raises(ProtocolError, match="UTF-8"):
        decode_node(block)

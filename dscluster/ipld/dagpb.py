"""The dag-pb node codec: enough to walk a DAG and to build one byte-exact.

    PBNode { repeated PBLink Links = 2; optional bytes Data = 1; }
    PBLink { optional bytes Hash = 1; optional string Name = 2; optional uint64 Tsize = 3; }

Theory of operation: CIDs are hashes of these bytes, so encoding must match
go-codec-dagpb exactly. The canonical order writes the Links (field 2) before
the Data (field 1), and each link Hash, Name, Tsize; Kubo always sets Name and
Tsize, so an unnamed file chunk still carries an empty Name (``12 00``).

Decoding is as strict as go-codec-dagpb where it matters: a PBNode field other
than 1 or 2 is an error, a link needs a Hash that is a valid CID, a Name must
be UTF-8. Unknown PBLink fields are skipped. Every failure is a ProtocolError
(the bytes came from a peer or a store we do not trust); callers that know
which block it was wrap it in an error naming the block.
"""

from __future__ import annotations

from dataclasses import dataclass

from multiformats import CID

from dscluster.errors import ProtocolError
from dscluster.ipld import protobuf as pb
from dscluster.ipld.cids import cid_from_bytes, cid_to_bytes

DAG_PB = 0x70
RAW = 0x55

_LINK_NAME_TAG = pb.tag(2, pb.LENGTH_DELIMITED)
_LINK_TSIZE_TAG = pb.tag(3, pb.VARINT)


@dataclass(frozen=True)
class PBLink:
    cid: CID
    name: str = ""
    tsize: int = 0


@dataclass(frozen=True)
class PBNode:
    links: tuple[PBLink, ...] = ()
    data: bytes | None = None


def encode_node(node: PBNode) -> bytes:
    parts = []
    for link in node.links:
        body = (
            pb.bytes_field(1, cid_to_bytes(link.cid))
            + pb.bytes_field(2, link.name.encode("utf-8"))
            + _LINK_TSIZE_TAG
            + pb.encode_varint(link.tsize)
        )
        parts.append(pb.bytes_field(2, body))
    if node.data is not None:
        parts.append(pb.bytes_field(1, node.data))
    return b"".join(parts)


def decode_node(block: bytes) -> PBNode:
    links: list[PBLink] = []
    data: bytes | None = None
    for number, _, value in pb.iter_fields(block):
        if number == 2:
            links.append(_decode_link(pb.expect_bytes(value, "PBNode.Links")))
        elif number == 1:
            data = pb.expect_bytes(value, "PBNode.Data")
        else:
            raise ProtocolError(f"dag-pb node has unknown field {number}")
    return PBNode(tuple(links), data)


def _decode_link(body: bytes) -> PBLink:
    cid: CID | None = None
    name, tsize = "", 0
    for number, _, value in pb.iter_fields(body):
        if number == 1:
            cid = _link_cid(pb.expect_bytes(value, "PBLink.Hash"))
        elif number == 2:
            try:
                name = pb.expect_bytes(value, "PBLink.Name").decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProtocolError("dag-pb link name is not UTF-8") from exc
        elif number == 3:
            tsize = pb.expect_int(value, "PBLink.Tsize")
    if cid is None:
        raise ProtocolError("dag-pb link without a Hash")
    return PBLink(cid, name, tsize)


def _link_cid(raw: bytes) -> CID:
    try:
        return cid_from_bytes(raw)
    except Exception as exc:  # multiformats raises several unrelated types
        raise ProtocolError(f"dag-pb link with a bad CID: {exc}") from exc


def child_cids(cid: CID, block: bytes) -> list[CID]:
    """The CIDs a block links to (dag-pb links; raw blocks are leaves).

    Reads only the Hash of each link, so a DAG with odd link names can still
    be walked and served.
    """
    if cid.codec.code != DAG_PB:
        return []
    out = []
    for number, _, value in pb.iter_fields(block):
        if number == 2:
            hashes = [
                inner
                for field, _, inner in pb.iter_fields(pb.expect_bytes(value, "PBNode.Links"))
                if field == 1
            ]
            if not hashes:
                raise ProtocolError("dag-pb link without a Hash")
            out.append(_link_cid(pb.expect_bytes(hashes[-1], "PBLink.Hash")))
        elif number != 1:
            raise ProtocolError(f"dag-pb node has unknown field {number}")
    return out

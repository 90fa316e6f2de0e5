"""The IPFS gateway's logic: content paths, DAG walks, CAR and byte streams; no HTTP here.

Theory of operation
-------------------
Everything reads blocks through a ``BlockSource`` (one method, ``get``), so the
same code serves from a node (``NodeBlocks``: the node's own datastore, or the
slot's owner over the node's RPC client) and from a client process in front of
the cluster (any dsclient ``BlockStore``, e.g. ``DatastoreBlockStore`` over a
``ClusterClient``). Sources are untrusted: ``Blocks`` checks every block against
its CID before it is decoded (dsclient.unixfs.exporter.decode), answers
identity CIDs (the data is in the CID) without asking anyone, and bounds each
fetch with a deadline (``GatewayTimeout``).

``resolve`` walks a content path ``/ipfs/CID/a/b`` from the root through
UnixFS directories and returns every node on the way (the CAR's path blocks,
``X-Ipfs-Roots``) and the terminus.

``walk`` is the one DAG traversal, depth first, pre-order: a deque of pending
(CID, file offset) items; the next ``window`` items are fetched concurrently,
then consumed in order; the first node with children puts them (and the
already fetched rest of the window) back at the front. So at most ``window``
blocks are held, whatever the DAG's size, and nodes come out in DFS order.
Inside a file, each child's byte offset comes from its parent's UnixFS
``blocksizes``; with a byte range, children wholly outside it are never
fetched (entity-bytes and HTTP Range). ``car_stream`` and ``file_bytes`` are
built on it; the CAR's ``dups=n`` keeps the set of multihashes sent (about 50
bytes per block, the only state that grows with the DAG).
"""

from __future__ import annotations

import base64
import html
import mimetypes
import urllib.parse
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import trio
from multiformats import CID

from dsclient.unixfs.errors import plain_errors
from dsclient.unixfs.exporter import Node, NodeType, decode
from dsclient.unixfs.pb import DataType
from dscluster.blocks import block_key, parse_cid
from dscluster.core.slots import key_slot
from dscluster.errors import (
    AskError,
    BadKeyError,
    BadRequestError,
    CorruptBlockError,
    DSClusterError,
    MovedError,
    NotFoundError,
)
from dscluster.http import car
from dscluster.ipld.cids import cid_to_bytes

if TYPE_CHECKING:
    from dscluster.node.daemon import DataNode

WINDOW = 16  # blocks fetched at once by a walk
MAX_HOPS = 5  # MOVED/ASK redirects followed by NodeBlocks for one block


class GatewayTimeout(DSClusterError):
    """The cluster did not answer within the request's time budget (HTTP 504)."""


class NotImplementedHere(DSClusterError):
    """Valid IPFS content this gateway cannot render (HTTP 501)."""


class BlockSource(Protocol):
    async def get(self, cid: CID) -> bytes:
        """The block's bytes; NotFoundError when it is absent."""
        ...


class Blocks:
    """Verified, decoded blocks from an untrusted source, each fetch under a deadline."""

    def __init__(self, source: BlockSource, fetch_timeout: float) -> None:
        self._source = source
        self._timeout = fetch_timeout
        self.fetched_bytes = 0

    async def raw(self, cid: CID) -> bytes:
        if cid.hashfun.name == "identity":
            return bytes(cid.raw_digest)
        with trio.move_on_after(self._timeout) as scope:
            block = await self._source.get(cid)
        if scope.cancelled_caught:
            raise GatewayTimeout(f"block {cid} not read within {self._timeout:g} s")
        self.fetched_bytes += len(block)
        return block

    async def node(self, cid: CID) -> Node:
        block = await self.raw(cid)
        if cid.hashfun.name == "identity":
            return _decode_unverified(cid, block)
        if len(block) >= 1024 * 1024:
            return await trio.to_thread.run_sync(decode, cid, block)
        return decode(cid, block)


def _decode_unverified(cid: CID, block: bytes) -> Node:
    if cid.codec.name == "raw":
        return Node(cid, block, None, None)
    # decode() checks the hash first; an identity CID's hash is its data.
    from dsclient.unixfs.pb import decode_data, decode_node
    try:
        pb = decode_node(block)
        return Node(cid, block, pb, decode_data(pb.data or b""))
    except DSClusterError as exc:
        raise CorruptBlockError(cid, f"not a UnixFS node: {exc}") from exc


def node_kind(node: Node) -> NodeType:
    """The node's UnixFS type; NotImplementedHere for codecs and types we do not render."""
    codec = node.cid.codec.name
    if codec not in ("raw", "dag-pb"):
        raise NotImplementedHere(f"{node.cid} is {codec}: only UnixFS (dag-pb, raw) is rendered")
    if node.unixfs is not None and node.unixfs.type is DataType.HAMT_SHARD:
        raise NotImplementedHere(f"{node.cid} is a HAMT-sharded directory: not supported")
    return node.type


# -- CIDs as text ------------------------------------------------------------------

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def cid_text(cid: CID) -> str:
    """``str(cid)`` without multiformats' validating encoder (about 0.5 ms a call there;
    a response names its CIDs in several headers): base58btc for v0, base32 for v1."""
    raw = cid_to_bytes(cid)
    if cid.version == 0:
        n = int.from_bytes(raw, "big")
        out = []
        while n:
            n, r = divmod(n, 58)
            out.append(_B58[r])
        zeros = len(raw) - len(raw.lstrip(b"\0"))
        return "1" * zeros + "".join(reversed(out))
    if cid.base.name == "base32":
        return "b" + base64.b32encode(raw).decode("ascii").lower().rstrip("=")
    return str(cid)


# -- content paths ----------------------------------------------------------------


@dataclass(frozen=True)
class ContentPath:
    root: CID
    segments: tuple[str, ...]  # decoded names, none empty
    trailing_slash: bool

    @property
    def text(self) -> str:
        names = "".join("/" + urllib.parse.quote(s) for s in self.segments)
        return f"/ipfs/{cid_text(self.root)}{names}" + ("/" if self.trailing_slash else "")


def parse_content_path(raw_path: bytes, max_segments: int = 256) -> ContentPath:
    """``/ipfs/CID[/name...]`` from the raw (still %-encoded) URL path; BadKeyError if invalid."""
    try:
        text = raw_path.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequestError("the path is not ASCII (%-encode it)") from None
    parts = text.split("/")
    if len(parts) < 3 or parts[0] != "" or parts[1] != "ipfs" or not parts[2]:
        raise BadRequestError("expected /ipfs/{cid}[/path]")
    root = parse_cid(urllib.parse.unquote(parts[2]))
    rest = parts[3:]
    trailing = bool(rest) and rest[-1] == ""
    try:
        names = [urllib.parse.unquote(p, errors="strict") for p in rest if p != ""]
    except UnicodeDecodeError:
        raise BadRequestError("a path segment is not %-encoded UTF-8") from None
    if len(names) > max_segments:
        raise BadRequestError(f"a path of {len(names)} segments: at most {max_segments}")
    for name in names:
        if name in (".", "..") or "\0" in name or "/" in name:
            raise BadRequestError(f"invalid path segment {name!r}")
    return ContentPath(root, tuple(names), trailing)


@dataclass(frozen=True)
class Resolved:
    path: tuple[Node, ...]  # nodes before the terminus, root first
    terminus: Node
    name: str  # the last segment, or "" for a bare CID

    @property
    def roots(self) -> list[CID]:
        return [n.cid for n in self.path] + [self.terminus.cid]


async def resolve(blocks: Blocks, path: ContentPath) -> Resolved:
    """Walk ``path`` through UnixFS directories; NotFoundError for an absent name."""
    node = await blocks.node(path.root)
    seen: list[Node] = []
    for name in path.segments:
        if node_kind(node) is not NodeType.DIRECTORY:
            raise NotFoundError(f"no link named {name!r} under {node.cid}: it is not a directory")
        link = next((ln for ln in node.links if ln.name == name), None)
        if link is None:
            raise NotFoundError(f"no link named {name!r} under {node.cid}")
        seen.append(node)
        node = await blocks.node(link.cid)
    return Resolved(tuple(seen), node, path.segments[-1] if path.segments else "")


# -- the walk -----------------------------------------------------------------------


def file_size(node: Node) -> int:
    if node.unixfs is None:
        return len(node.block)
    if node.unixfs.filesize is not None:
        return node.unixfs.filesize
    return len(node.data) + sum(node.unixfs.blocksizes)


Item = tuple[CID | Node, int]  # a node or its CID, and its byte offset in the file (-1: none)


def _children(node: Node, start: int, lo: int, hi: int, recurse_dirs: bool) -> list[Item]:
    kind = node_kind(node)
    if kind is NodeType.DIRECTORY:
        return [(ln.cid, -1) for ln in node.links] if recurse_dirs else []
    if kind is not NodeType.FILE or not node.links:
        return []
    assert node.unixfs is not None
    sizes = node.unixfs.blocksizes
    if len(sizes) != len(node.links):
        raise CorruptBlockError(node.cid, f"{len(node.links)} links but {len(sizes)} blocksizes")
    out: list[Item] = []
    offset = max(start, 0) + len(node.data)
    for link, size in zip(node.links, sizes, strict=True):
        if offset + size > lo and offset < hi:
            out.append((link.cid, offset))
        offset += size
    return out


async def walk(blocks: Blocks, root: Node, *, recurse_dirs: bool, lo: int = 0,
               hi: int = 1 << 62, skip: Callable[[CID], bool] | None = None,
               window: int = WINDOW) -> AsyncGenerator[tuple[Node, int], None]:
    """(node, file offset) in DFS pre-order from ``root``; see the module's docstring.

    Inside a file only nodes overlapping bytes [lo, hi) are visited. ``skip(cid)``
    true leaves out that node and everything under it (a CAR's dups=n)."""
    queue: deque[Item] = deque([(root, 0 if root.type in (NodeType.FILE, NodeType.RAW)
                                 else -1)])
    while queue:
        batch = [queue.popleft() for _ in range(min(window, len(queue)))]
        wanted = [it for it in batch if not isinstance(it[0], Node)]
        got: dict[int, Node] = {}

        async def one(i: int, cid: CID, got: dict[int, Node] = got) -> None:
            got[i] = await blocks.node(cid)

        if wanted:
            with plain_errors():
                async with trio.open_nursery() as nursery:
                    for i, (ref, _) in enumerate(batch):
                        if not isinstance(ref, Node):
                            nursery.start_soon(one, i, ref)
        nodes = [(ref if isinstance(ref, Node) else got[i], start)
                 for i, (ref, start) in enumerate(batch)]
        for i, (node, start) in enumerate(nodes):
            if skip is not None and skip(node.cid):
                continue
            yield node, start
            kids = _children(node, start, lo, hi, recurse_dirs)
            if kids:
                queue.extendleft(reversed(list(nodes[i + 1:])))
                queue.extendleft(reversed(kids))
                break


# -- CAR ----------------------------------------------------------------------------

SCOPES = ("all", "entity", "block")


@dataclass(frozen=True)
class ByteRange:
    """entity-bytes=from:to (inclusive; ``to`` None is ``*``; negatives count from the end)."""

    first: int
    last: int | None

    @classmethod
    def parse(cls, text: str) -> ByteRange:
        a, sep, b = text.partition(":")
        try:
            if not sep:
                raise ValueError
            return cls(int(a), None if b == "*" else int(b))
        except ValueError:
            raise BadRequestError(f"entity-bytes={text!r}: expected from:to") from None

    def bounds(self, size: int) -> tuple[int, int]:
        """[lo, hi) within a file of ``size`` bytes (possibly empty)."""
        lo = self.first if self.first >= 0 else max(size + self.first, 0)
        last = size - 1 if self.last is None else (
            self.last if self.last >= 0 else size + self.last)
        return min(lo, size), min(max(last + 1, lo), size)


async def car_stream(blocks: Blocks, res: Resolved, scope: str,
                     entity_bytes: ByteRange | None) -> AsyncGenerator[bytes, None]:
    """A CARv1 (order=dfs, dups=n): the path's blocks, then the terminus' per ``scope``."""
    sent: set[bytes] = set()

    def skip(cid: CID) -> bool:
        return bytes(cid.digest) in sent

    yield car.header([res.path[0].cid if res.path else res.terminus.cid])
    for node in res.path:
        if not skip(node.cid):
            sent.add(bytes(node.cid.digest))
            yield car.section(node.cid, node.block)
    term = res.terminus
    kind = node_kind(term) if term.cid.codec.name in ("raw", "dag-pb") else None
    lo, hi = 0, 1 << 62
    if entity_bytes is not None and kind in (NodeType.FILE, NodeType.RAW):
        lo, hi = entity_bytes.bounds(file_size(term))
        if lo >= hi:
            scope = "block"
    elif entity_bytes is not None:
        scope = "entity"
    if scope == "block" or kind is None or (
            scope == "entity" and kind not in (NodeType.FILE, NodeType.RAW)):
        if not skip(term.cid):
            yield car.section(term.cid, term.block)
        return
    async for node, _ in walk(blocks, term, recurse_dirs=scope == "all", lo=lo, hi=hi,
                              skip=skip):
        sent.add(bytes(node.cid.digest))
        yield car.section(node.cid, node.block)


# -- files ----------------------------------------------------------------------------


async def file_bytes(blocks: Blocks, root: Node, lo: int, hi: int
                     ) -> AsyncGenerator[bytes, None]:
    """Bytes [lo, hi) of the file at ``root``, in order."""
    async for node, start in walk(blocks, root, recurse_dirs=False, lo=lo, hi=hi):
        data = node.data
        if not data:
            continue
        a, b = max(lo - start, 0), min(hi - start, len(data))
        if a < b:
            yield data[a:b] if (a, b) != (0, len(data)) else data


_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"%PDF-", "application/pdf"),
    (0, b"PK\x03\x04", "application/zip"),
    (0, b"\x1f\x8b", "application/gzip"),
    (0, b"\x00asm", "application/wasm"),
    (0, b"OggS", "audio/ogg"),
    (0, b"ID3", "audio/mpeg"),
    (4, b"ftyp", "video/mp4"),
)


def sniff(name: str, head: bytes) -> str:
    """A Content-Type: from the name's extension, else from the first bytes."""
    if name:
        guessed, _ = mimetypes.guess_type(name, strict=False)
        if guessed:
            return guessed + ("; charset=utf-8" if guessed.startswith("text/") else "")
    for offset, magic, kind in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    start = head[:512].lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html", b"<head", b"<body")):
        return "text/html; charset=utf-8"
    if start.startswith(b"<svg") or (start.startswith(b"<?xml") and b"<svg" in start):
        return "image/svg+xml"
    if _looks_like_text(head[:512]):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut at the end
            return False
        text = head[:exc.start].decode("utf-8")
    return all(c >= " " or c in "\t\n\r\f" for c in text)


# -- directories ----------------------------------------------------------------------


def directory_listing(res: Resolved, content_path: str) -> bytes:
    """An HTML page listing a UnixFS directory (names escaped, links relative)."""
    term = res.terminus
    rows = []
    if res.path:
        rows.append('<tr><td><a href="../">..</a></td><td></td><td></td></tr>')
    for link in term.links:
        href = urllib.parse.quote(link.name, safe="")
        rows.append(
            f'<tr><td><a href="./{html.escape(href)}">{html.escape(link.name)}</a></td>'
            f'<td><a href="/ipfs/{cid_text(link.cid)}?filename={html.escape(href)}">'
            f'<code>{cid_text(link.cid)}</code></a></td><td>{link.tsize}</td></tr>')
    title = html.escape(content_path)
    page = (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "td{padding:.2em 1em}code{font-size:.85em}</style></head><body>"
        f"<h1>Index of {title}</h1><p><code>{cid_text(term.cid)}</code></p>"
        "<table><tr><th>name</th><th>CID</th><th>size</th></tr>"
        + "".join(rows) + "</table></body></html>\n")
    return page.encode("utf-8")


def index_link(node: Node) -> CID | None:
    for link in node.links:
        if link.name == "index.html":
            return link.cid
    return None


# -- the node's own block source --------------------------------------------------


class NodeBlocks:
    """Blocks as a data node reads them for its gateway: only ``get`` of block keys.

    The node answers from its own datastore when it serves the key's slot (the
    store service routes the request, so a migrating slot answers ASK/MOVED as
    for any client) and otherwise asks the slot's owner with the node's RPC
    client. It never writes, and it can name only block keys (derived from a
    CID), so it reads nothing a read-only client could not."""

    def __init__(self, node: DataNode) -> None:
        self._node = node
        self._ids: dict[str, Any] = {}  # peer ID text -> libp2p ID, parsed once

    async def _call(self, peer: str, request: Any) -> Any:
        """The request on the open connection to ``peer``; dial (call_peer) only if that fails:
        dialing parses the peer's multiaddrs, a cost per block otherwise."""
        from dscluster.errors import UnavailableError
        from dscluster.net.host import parse_peer_id
        from dscluster.wire import messages as wm

        pid = self._ids.get(peer)
        if pid is None:
            pid = self._ids[peer] = parse_peer_id(peer)
        try:
            return await self._node.rpc.call(pid, wm.STORE_PROTOCOL, request,
                                             timeout=self.PEER_TIMEOUT)
        except UnavailableError:
            return await self._node.call_peer(peer, request)

    PEER_TIMEOUT = 20.0

    async def get(self, cid: CID) -> bytes:
        from dscluster.wire import messages as wm

        key = block_key(cid)
        me = self._node.peer_id
        peer = self._node.core.table.owner(key_slot(key)) or me
        asking = False
        for _ in range(MAX_HOPS):
            try:
                request = wm.Get(0, key, asking=asking)
                if peer == me:
                    resp = await self._node.service.handle(self._node.host.peer_id, request)
                else:
                    resp = await self._call(peer, request)
            except MovedError as exc:
                peer, asking = exc.peer_id, False
                continue
            except AskError as exc:
                peer, asking = exc.peer_id, True
                continue
            except NotFoundError:
                raise NotFoundError(f"block {cid} not found") from None
            if isinstance(resp, wm.Ok) and isinstance(resp.value, bytes):
                return resp.value
            raise CorruptBlockError(cid, f"unexpected answer {type(resp).__name__}")
        raise GatewayTimeout(f"block {cid}: more than {MAX_HOPS} redirects")


def cid_of(text: str) -> CID:
    try:
        return parse_cid(text)
    except BadKeyError as exc:
        raise BadRequestError(str(exc)) from None


__all__ = ["SCOPES", "BlockSource", "Blocks", "ByteRange", "ContentPath", "GatewayTimeout",
           "NodeBlocks", "NotImplementedHere", "Resolved", "car_stream", "directory_listing",
           "file_bytes", "file_size", "index_link", "node_kind", "parse_content_path",
           "resolve", "sniff"]

"""The HTTP port as one small ASGI app: the IPFS gateway, /metrics and /healthz.

Theory of operation
-------------------
hypercorn (server.py) parses HTTP and calls ``HttpApp`` once per request with
the ASGI scope. The app routes on the raw path:

  /healthz          200 "ok" once ``ready()`` says the node serves, else 503;
                    the one route that needs no token
  /metrics          Prometheus text from the node's own registry
  /ipfs/{cid}[/p]   the gateway (gateway.py): raw blocks, CARs, files, dirs
  /ipns/...         501: there is no IPNS here
  /                 the status page (status.py; no token: it holds no data),
                    or a one-screen text index where there is no status
  /status.json      the cluster at a glance, what the page polls

Every request is bounded before any work is done: the URL's length
(``max_path``, else 414), the bearer token when one is set (401), and the
number of gateway requests in flight (``max_concurrent``; up to
``max_waiting`` more wait at most ``max_wait`` seconds for a slot, then 503
with Retry-After, as does any request past that queue at once). A gateway request has a time budget
up to its response headers (504 past it: the cluster did not answer in
time); after the headers each block read has its own deadline and each
chunk written to the client another, so a stalled cluster or a client that
stops reading ends that one response (the connection is closed mid-body, as
HTTP allows) and holds nothing else. A client that goes away cancels its
request's work at once (``http.disconnect``).

Errors are one line of text/plain with the status; a bug is a 500 with no
detail (logged here, one line, with the request path), never a traceback.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import trio

from dscluster.errors import (
    BadKeyError,
    BadRequestError,
    CorruptBlockError,
    DSClusterError,
    NotFoundError,
    UnauthorizedError,
    UnavailableError,
)
from dscluster.http import gateway as gw
from dscluster.http.metrics import CONTENT_TYPE as METRICS_TYPE
from dscluster.http.metrics import Metrics

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

IMMUTABLE = "public, max-age=29030400, immutable"
RAW_TYPE = "application/vnd.ipld.raw"
CAR_TYPE = "application/vnd.ipld.car"
CAR_RESPONSE_TYPE = "application/vnd.ipld.car; version=1; order=dfs; dups=n"
CHUNK = 256 * 1024  # largest body piece handed to hypercorn at once


@dataclass(frozen=True)
class HttpLimits:
    max_path: int = 4096  # bytes of path and query string
    max_concurrent: int = 256  # gateway requests in flight
    max_waiting: int = 1024  # more wait (up to max_wait) for a slot; past that 503 at once
    max_wait: float = 10.0  # seconds a request waits for a slot before its 503
    time_budget: float = 30.0  # seconds to the response headers (then 504)
    fetch_timeout: float = 20.0  # seconds for one block once streaming
    send_timeout: float = 60.0  # seconds for the client to take one chunk


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def status_of(exc: BaseException) -> int:
    """The HTTP status for an error met while answering a gateway request."""
    if isinstance(exc, HttpError):
        return exc.status
    if isinstance(exc, BadRequestError | BadKeyError):
        return 400
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, gw.NotImplementedHere):
        return 501
    if isinstance(exc, gw.GatewayTimeout | UnavailableError | trio.TooSlowError):
        return 504
    if isinstance(exc, CorruptBlockError | UnauthorizedError | DSClusterError):
        return 502  # the cluster answered, but not with what we can serve
    return 500


REASONS = {200: "OK", 206: "Partial Content", 301: "Moved Permanently", 304: "Not Modified",
           400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 406: "Not Acceptable", 414: "URI Too Long",
           416: "Range Not Satisfiable", 500: "Internal Server Error", 501: "Not Implemented",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class _Exchange:
    """One request and its response: what was sent, for the access metrics."""

    def __init__(self, scope: Scope, send: Send, send_timeout: float) -> None:
        self.scope = scope
        self._send = send
        self._send_timeout = send_timeout
        self.method: str = scope["method"]
        self.raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        self.raw_path = self.raw_path.split(b"?", 1)[0]
        self.query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"),
                                           keep_blank_values=True)
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                        for k, v in scope.get("headers", [])}
        self.status = 0
        self.sent = 0
        self.budget: trio.CancelScope | None = None

    @property
    def started(self) -> bool:
        return self.status != 0

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    async def start(self, status: int, headers: dict[str, str]) -> None:
        self.status = status
        await self._send({"type": "http.response.start", "status": status,
                          "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                                      for k, v in headers.items()]})

    async def body(self, data: bytes, more: bool = True) -> None:
        if self.method == "HEAD":
            if not more:
                await self._send({"type": "http.response.body", "body": b"",
                                  "more_body": False})
            return
        if not data and more:
            return
        view = memoryview(data)
        for i in range(0, max(len(view), 1), CHUNK):
            piece = bytes(view[i:i + CHUNK]) if len(view) > CHUNK else data
            last = not more and i + CHUNK >= len(view)
            with trio.move_on_after(self._send_timeout) as scope:
                await self._send({"type": "http.response.body", "body": piece,
                                  "more_body": not last})
            if scope.cancelled_caught:
                raise _ClientStalled(f"client took no data for {self._send_timeout:g} s")
            self.sent += len(piece)

    async def simple(self, status: int, text: str, headers: dict[str, str] | None = None,
                     content_type: str = "text/plain; charset=utf-8") -> None:
        payload = text.encode("utf-8")
        await self.start(status, {"Content-Type": content_type,
                                  "Content-Length": str(len(payload)),
                                  "X-Content-Type-Options": "nosniff", **(headers or {})})
        await self.body(payload, more=False)

    async def error(self, status: int, message: str, headers: dict[str, str] | None = None
                    ) -> None:
        line = " ".join(message.split())[:500]
        await self.simple(status, f"{status} {REASONS.get(status, '')}: {line}\n",
                          {"Cache-Control": "no-store", **(headers or {})})


class _ClientStalled(Exception):
    pass


class HttpApp:
    """The ASGI application; see the module's docstring."""

    def __init__(self, *, source: gw.BlockSource | None, metrics: Metrics | None,
                 ready: Callable[[], bool], token: str | None = None,
                 limits: HttpLimits = HttpLimits(),
                 status: Callable[[], Awaitable[dict[str, Any]]] | None = None) -> None:
        self.source = source
        self.status = status
        self.metrics = metrics or Metrics()
        self.ready = ready
        self.token = token
        self.limits = limits
        self.in_flight = 0
        self.waiting = 0
        self._slots = trio.Semaphore(limits.max_concurrent)

    async def _admit(self) -> bool:
        """Take a gateway slot: at once, or after waiting in a bounded queue for a short while."""
        try:
            self._slots.acquire_nowait()
            return True
        except trio.WouldBlock:
            pass
        if self.waiting >= self.limits.max_waiting:
            return False
        self.waiting += 1
        try:
            with trio.move_on_after(self.limits.max_wait):
                await self._slots.acquire()
                return True
            return False
        finally:
            self.waiting -= 1

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- one request ---------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        ex = _Exchange(scope, send, self.limits.send_timeout)
        route = _route(ex.raw_path)
        begun = time.perf_counter()
        gated = False
        try:
            if len(ex.raw_path) + len(scope.get("query_string", b"")) > self.limits.max_path:
                self.metrics.http_rejected.labels("too_long").inc()
                await ex.error(414, f"the URL is over {self.limits.max_path} bytes")
                return
            if ex.method not in ("GET", "HEAD"):
                await ex.error(405, "only GET and HEAD", {"Allow": "GET, HEAD"})
                return
            open_route = route == "healthz" or (route == "index" and self.status is not None)
            if not open_route and self.token is not None and not self._authorized(ex):
                self.metrics.http_rejected.labels("unauthorized").inc()
                await ex.error(401, "a bearer token is required",
                               {"WWW-Authenticate": 'Bearer realm="dscluster"'})
                return
            if route == "gateway":
                if not await self._admit():
                    self.metrics.http_rejected.labels("busy").inc()
                    await ex.error(503, f"{self.in_flight} requests in flight and "
                                   f"{self.waiting} waiting: try again", {"Retry-After": "1"})
                    return
                gated = True
                self.in_flight += 1
                self.metrics.http_in_flight.inc()
            await self._until_disconnect(receive, self._dispatch(route, ex))
        finally:
            if gated:
                self.in_flight -= 1
                self.metrics.http_in_flight.dec()
                self._slots.release()
            self.metrics.http_request(route, ex.method, ex.status or 499,
                                      time.perf_counter() - begun, ex.sent)

    async def _until_disconnect(self, receive: Receive, work: Awaitable[None]) -> None:
        """Run ``work``; a client that disconnects cancels it."""
        async def watch(cancel: trio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            cancel.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch, nursery.cancel_scope)
            await work
            nursery.cancel_scope.cancel()

    def _authorized(self, ex: _Exchange) -> bool:
        given = ex.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        assert self.token is not None
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self.token.encode())

    async def _dispatch(self, route: str, ex: _Exchange) -> None:
        try:
            if route == "healthz":
                ok = self.ready()
                await ex.simple(200 if ok else 503, "ok\n" if ok else "starting\n",
                                {"Cache-Control": "no-store"})
            elif route == "metrics":
                await ex.simple(200, self.metrics.render().decode("utf-8"),
                                {"Cache-Control": "no-store"}, content_type=METRICS_TYPE)
            elif route == "gateway":
                await self._gateway(ex)
            elif route == "ipns":
                await ex.error(501, "IPNS is not served here: use /ipfs/{cid}")
            elif route == "index" and self.status is not None:
                from dscluster.http.status import PAGE
                await ex.simple(200, PAGE, {"Cache-Control": "no-store"},
                                content_type="text/html; charset=utf-8")
            elif route == "index":
                await ex.simple(200, INDEX, {"Cache-Control": "no-store"})
            elif route == "status" and self.status is not None:
                with trio.fail_after(self.limits.time_budget):
                    snapshot = await self.status()
                await ex.simple(200, json.dumps(snapshot), {"Cache-Control": "no-store"},
                                content_type="application/json")
            else:
                await ex.error(404, "no such endpoint")
        except _ClientStalled as exc:
            log.info("%s %s: %s; closing", ex.method, _shown(ex.raw_path), exc)
        except Exception as exc:  # every error ends here as one status line
            status = status_of(exc)
            if status == 500:
                log.error("%s %s failed: %r", ex.method, _shown(ex.raw_path), exc)
                log.debug("traceback", exc_info=True)
            if not ex.started:
                await ex.error(status, str(exc) if status != 500 else "internal error",
                               exc.headers if isinstance(exc, HttpError) else None)
            else:  # mid-body: all we can do is cut the response short
                log.info("%s %s cut short after %d bytes: %s", ex.method,
                         _shown(ex.raw_path), ex.sent, exc)

    # -- the gateway ---------------------------------------------------------------------

    async def _gateway(self, ex: _Exchange) -> None:
        if self.source is None:
            raise HttpError(404, "this port serves no gateway")
        path = gw.parse_content_path(ex.raw_path)
        fmt, from_accept = _format(ex)
        blocks = gw.Blocks(self.source, self.limits.fetch_timeout)
        # The budget runs to the response headers; _stream lifts it once they are sent.
        ex.budget = trio.CancelScope(deadline=trio.current_time() + self.limits.time_budget)
        try:
            with ex.budget:
                res = await gw.resolve(blocks, path)
                if fmt == "raw":
                    await self._raw(ex, path, res, from_accept)
                elif fmt == "car":
                    await self._car(ex, path, res, from_accept, blocks)
                else:
                    await self._deserialized(ex, path, res, blocks)
        finally:
            self.metrics.gateway_blocks.inc(blocks.fetched_bytes)
        if ex.budget.cancelled_caught:
            raise gw.GatewayTimeout(
                f"the cluster did not answer within {self.limits.time_budget:g} s")

    def _common(self, path: gw.ContentPath, res: gw.Resolved) -> dict[str, str]:
        return {"X-Ipfs-Path": path.text,
                "X-Ipfs-Roots": ",".join(gw.cid_text(c) for c in res.roots),
                "X-Content-Type-Options": "nosniff",
                "Cache-Control": IMMUTABLE, "Vary": "Accept"}

    async def _not_modified(self, ex: _Exchange, etag: str, headers: dict[str, str]) -> bool:
        wanted = ex.headers.get("if-none-match")
        if wanted is None:
            return False
        tags = [t.strip() for t in wanted.split(",")]
        if "*" in tags or etag in tags or etag.removeprefix("W/") in tags:
            await ex.start(304, {**headers, "ETag": etag})
            await ex.body(b"", more=False)
            return True
        return False

    async def _raw(self, ex: _Exchange, path: gw.ContentPath, res: gw.Resolved,
                   from_accept: bool) -> None:
        cid = gw.cid_text(res.terminus.cid)
        headers = {**self._common(path, res), "Content-Type": RAW_TYPE,
                   "Content-Disposition": f'attachment; filename="{cid}.bin"'}
        if from_accept:
            headers["Content-Location"] = path.text + "?format=raw"
        etag = f'"{cid}.raw"'
        if await self._not_modified(ex, etag, headers):
            return
        block = res.terminus.block
        await ex.start(200, {**headers, "ETag": etag, "Content-Length": str(len(block))})
        await ex.body(block, more=False)

    async def _car(self, ex: _Exchange, path: gw.ContentPath, res: gw.Resolved,
                   from_accept: bool, blocks: gw.Blocks) -> None:
        scope = ex.param("dag-scope") or "all"
        if scope not in gw.SCOPES:
            raise HttpError(400, f"dag-scope={scope!r}: use all, entity or block")
        if (ex.param("car-version") or "1") != "1":
            raise HttpError(400, "only CAR car-version=1 is served")
        if (ex.param("car-order") or "dfs") not in ("dfs", "unk"):
            raise HttpError(400, f"car-order={ex.param('car-order')}: only dfs is served")
        text = ex.param("entity-bytes")
        entity = gw.ByteRange.parse(text) if text is not None else None
        if entity is not None and entity.first >= 0 and entity.last is not None \
                and 0 <= entity.last < entity.first:
            raise HttpError(400, f"entity-bytes={text}: to is before from")
        cid = gw.cid_text(res.terminus.cid)
        digest = hashlib.sha256(f"{path.text}|{scope}|{text}".encode()).hexdigest()[:16]
        etag = f'W/"{cid}.car.{digest}"'
        headers = {**self._common(path, res), "Content-Type": CAR_RESPONSE_TYPE,
                   "Content-Disposition": f'attachment; filename="{cid}.car"',
                   "Accept-Ranges": "none"}
        if from_accept:
            headers["Content-Location"] = path.text + "?format=car"
        if await self._not_modified(ex, etag, headers):
            return
        stream = gw.car_stream(blocks, res, scope, entity)
        await self._stream(ex, 200, {**headers, "ETag": etag}, stream)

    async def _stream(self, ex: _Exchange, status: int, headers: dict[str, str],
                      stream: AsyncGenerator[bytes, None]) -> None:
        """Send the headers with the stream's first piece, then the rest (budget lifted)."""
        async with aclosing(stream):
            first = await anext(stream, b"")
            await ex.start(status, headers)
            if ex.budget is not None:
                ex.budget.deadline = float("inf")  # from here, per-block and per-write deadlines
            await ex.body(first)
            async for piece in stream:
                await ex.body(piece)
            await ex.body(b"", more=False)

    async def _deserialized(self, ex: _Exchange, path: gw.ContentPath, res: gw.Resolved,
                            blocks: gw.Blocks) -> None:
        term = res.terminus
        kind = gw.node_kind(term)
        headers = self._common(path, res)
        if kind is gw.NodeType.DIRECTORY:
            if not path.trailing_slash:
                query = ex.scope.get("query_string", b"").decode("latin-1")
                location = path.text + "/" + (f"?{query}" if query else "")
                await ex.start(301, {**headers, "Location": location, "Content-Length": "0"})
                await ex.body(b"", more=False)
                return
            index = gw.index_link(term)
            if index is not None:
                node = await blocks.node(index)
                res = gw.Resolved((*res.path, term), node, "index.html")
                await self._file(ex, res, blocks, headers, "index.html")
                return
            etag = f'W/"DirIndex-dscluster1_CID-{gw.cid_text(term.cid)}"'
            if await self._not_modified(ex, etag, headers):
                return
            page = gw.directory_listing(res, path.text)
            await ex.start(200, {**headers, "ETag": etag,
                                 "Content-Type": "text/html; charset=utf-8",
                                 "Content-Length": str(len(page))})
            await ex.body(page, more=False)
            return
        if kind is gw.NodeType.SYMLINK:
            target = term.data
            await ex.start(200, {**headers, "ETag": f'"{gw.cid_text(term.cid)}"',
                                 "Content-Type": "inode/symlink",
                                 "Content-Length": str(len(target))})
            await ex.body(target, more=False)
            return
        await self._file(ex, res, blocks, headers, ex.param("filename") or res.name)

    async def _file(self, ex: _Exchange, res: gw.Resolved, blocks: gw.Blocks,
                    headers: dict[str, str], name: str) -> None:
        root = res.terminus
        etag = f'"{gw.cid_text(root.cid)}"'
        if await self._not_modified(ex, etag, headers):
            return
        size = gw.file_size(root)
        async with aclosing(gw.file_bytes(blocks, root, 0, min(size, 512))) as head_stream:
            head = b"".join([piece async for piece in head_stream])
        headers = {**headers, "ETag": etag, "Accept-Ranges": "bytes",
                   "Content-Type": gw.sniff(name, head)}
        filename = ex.param("filename")
        if filename is not None:
            disposition = "attachment" if ex.param("download") == "true" else "inline"
            quoted = urllib.parse.quote(filename)
            headers["Content-Disposition"] = f"{disposition}; filename*=UTF-8''{quoted}"
        lo, hi, status = 0, size, 200
        wanted = ex.headers.get("range")
        if wanted is not None:
            parsed = _parse_range(wanted, size)
            if parsed is None:
                raise HttpError(416, f"range {wanted!r} is outside the file's {size} bytes",
                                {"Content-Range": f"bytes */{size}"})
            lo, hi = parsed
            status = 206
            headers["Content-Range"] = f"bytes {lo}-{hi - 1}/{size}"
        headers["Content-Length"] = str(hi - lo)
        if ex.method == "HEAD" or hi == lo:
            await ex.start(status, headers)
            await ex.body(b"", more=False)
            return
        await self._stream(ex, status, headers, gw.file_bytes(blocks, root, lo, hi))


def _parse_range(text: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` / ``a-`` / ``-n`` range as [lo, hi); None if unsatisfiable.

    Several ranges (multipart/byteranges) are answered with the first one only;
    a malformed header is a 400 (HttpError)."""
    unit, _, spec = text.partition("=")
    if unit.strip().lower() != "bytes" or not spec:
        raise HttpError(400, f"unsupported Range {text!r}")
    first = spec.split(",")[0].strip()
    a, dash, b = first.partition("-")
    try:
        if not dash:
            raise ValueError
        if a == "":
            n = int(b)
            if n <= 0 or size == 0:
                return None
            return max(size - n, 0), size
        lo = int(a)
        hi = int(b) + 1 if b else size
    except ValueError:
        raise HttpError(400, f"malformed Range {text!r}") from None
    if lo < 0 or (b and hi <= lo):
        raise HttpError(400, f"malformed Range {text!r}")
    if lo >= size:
        return None
    return lo, min(hi, size)


def _format(ex: _Exchange) -> tuple[str | None, bool]:
    """The response format asked for (raw, car or None for deserialized); from Accept?"""
    fmt = ex.param("format")
    if fmt is not None:
        if fmt not in ("raw", "car"):
            raise HttpError(400, f"format={fmt!r} is not served here: use raw or car")
        return fmt, False
    for part in ex.headers.get("accept", "").split(","):
        media, *params = [p.strip() for p in part.split(";")]
        if media == RAW_TYPE:
            return "raw", True
        if media == CAR_TYPE:
            options = dict(p.partition("=")[::2] for p in params)
            if options.get("version", "1") != "1":
                raise HttpError(400, "only CAR version=1 is served")
            if options.get("order", "dfs") not in ("dfs", "unk"):
                raise HttpError(400, f"CAR order={options['order']} is not served: dfs")
            return "car", True
    return None, False


def _route(raw_path: bytes) -> str:
    if raw_path == b"/healthz":
        return "healthz"
    if raw_path == b"/metrics":
        return "metrics"
    if raw_path == b"/ipfs" or raw_path.startswith(b"/ipfs/"):
        return "gateway"
    if raw_path.startswith(b"/ipns/"):
        return "ipns"
    if raw_path == b"/":
        return "index"
    if raw_path == b"/status.json":
        return "status"
    return "other"


def _shown(raw_path: bytes) -> str:
    text = raw_path.decode("latin-1")
    return text if len(text) <= 200 else text[:200] + "..."


INDEX = """ds-cluster HTTP port

GET /ipfs/{cid}[/path]                 files (Range), directories (HTML listing, index.html)
GET /ipfs/{cid}?format=raw             the block (application/vnd.ipld.raw)
GET /ipfs/{cid}[/path]?format=car      a CARv1 (dag-scope=all|entity|block, entity-bytes=from:to)
GET /metrics                           Prometheus text
GET /healthz                           200 once the node serves
"""

"""The RPC server: requests in over shared, pipelined streams, answers out.

Theory of operation
-------------------
``RpcServer`` reads requests (``dscluster.net.framed``), runs each in its own
task (bounded per stream; beyond the bound it answers ``unavailable`` without
blocking the reader), caps the streams one peer may hold open, writes
answers, and maps handler exceptions to error codes. Handlers receive the
Noise-authenticated remote peer ID, so the service decides authorization.

Bad input is answered as narrowly as it can be: a request whose frame is whole
and whose id is readable but whose fields break a bound (a 5,000-character
key) gets a ``Fail`` (``bad_key`` or ``bad_request``) for that id alone, and
the stream carries on (while fewer than ``max_in_flight`` such answers wait to
be written: a flood beyond that is a violation). A frame that cannot be decoded (an oversized or
truncated frame, garbage CBOR, an unknown tag, an unreadable id) or a message
that breaks the protocol (a response sent to a server, a duplicate id) logs a
warning and resets THAT stream only; a peer that does so
``max_protocol_errors`` times within ``protocol_error_window`` loses its
whole connection.

Queries stream: the server sends one ``QueryChunk``, then waits for the
client's ``QueryNext`` before the next (pull-based flow control: a slow
consumer never blocks other answers on the shared stream).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID

from dscluster.errors import BadRequestError, DSClusterError, ProtocolError, UnavailableError
from dscluster.net.admission import admission_of
from dscluster.net.framed import FramedStream
from dscluster.net.rpc_limits import RpcLimits
from dscluster.net.streams import reset_stream
from dscluster.wire.messages import (
    Cancel,
    ErrorCode,
    ErrorInfo,
    Fail,
    Query,
    QueryChunk,
    QueryNext,
    Request,
    Response,
)
from dscluster.wire.schema import MessageError, Tagged

log = logging.getLogger(__name__)

__all__ = ["RpcServer", "Service", "reject_stream", "serve_rpc"]

STRANGER_IN_FLIGHT = 4  # requests a stranger may have in flight on one stream


class Service(Protocol):
    """What a server runs. ``peer`` is the Noise-authenticated caller."""

    async def handle(self, peer: ID, request: Request) -> Response: ...

    def stream(self, peer: ID, request: Query) -> AsyncIterator[QueryChunk]: ...


@dataclass
class _ServerStream:
    fs: FramedStream
    nursery: trio.Nursery
    max_in_flight: int
    in_flight: dict[int, trio.CancelScope] = field(default_factory=dict)
    query_next: dict[int, trio.MemorySendChannel[None]] = field(default_factory=dict)
    violated: bool = False  # the peer broke the protocol on this stream
    refusing: int = 0  # error answers to bad requests not yet written


class RpcServer:
    """Serves one protocol with a ``Service``; see ``serve_rpc``."""

    def __init__(self, host: IHost, protocol: str, service: Service, limits: RpcLimits) -> None:
        self.host = host
        self.protocol = protocol
        self.service = service
        self.limits = limits
        self._frames = limits.frames()
        self._stranger_frames = limits.for_stranger()
        self._scopes: set[trio.CancelScope] = set()
        self._streams_of: dict[ID, int] = {}
        self.streams_accepted = 0
        self.protocol_errors = 0  # streams reset for breaking the protocol
        self.bad_requests = 0  # requests answered with an error for their fields
        self.peers_dropped = 0  # connections closed for repeated protocol errors
        self._strikes: dict[ID, list[float]] = {}

    async def handle_stream(self, stream: INetStream) -> None:
        """py-libp2p's stream handler: runs in the host's task for this stream."""
        peer = stream.muxed_conn.peer_id
        stranger = admission_of(self.host).is_stranger(peer.to_base58())
        fs = FramedStream(stream, self._stranger_frames if stranger else self._frames)
        if self._streams_of.get(peer, 0) >= self.limits.max_streams_per_peer:
            log.warning("%s: %s already has %d streams open; refusing another",
                        self.protocol, peer, self.limits.max_streams_per_peer)
            await fs.reset()
            return
        self._streams_of[peer] = self._streams_of.get(peer, 0) + 1
        self.streams_accepted += 1
        ok = False
        max_in_flight = STRANGER_IN_FLIGHT if stranger else self.limits.max_in_flight
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                async with trio.open_nursery() as nursery:
                    state = _ServerStream(fs, nursery, max_in_flight)
                    ok = await self._read_requests(state)
                    if not ok:
                        nursery.cancel_scope.cancel()
            finally:
                self._scopes.discard(scope)
                self._streams_of[peer] -= 1
                if not self._streams_of[peer]:
                    del self._streams_of[peer]
        if ok:
            await fs.close()
        else:
            await fs.reset()
        log.debug("%s stream from %s ended (clean=%s)", self.protocol, peer, ok)
        if state.violated and self._strike(peer):
            await self._drop(peer)

    def _strike(self, peer: ID) -> bool:
        """Count a protocol violation; True when the peer has used up its allowance."""
        now = trio.current_time()
        window = self.limits.protocol_error_window
        recent = [t for t in self._strikes.get(peer, ()) if now - t < window]
        recent.append(now)
        if len(self._strikes) > 10_000:  # many abusive peers: forget the old ones
            self._strikes.clear()
        self._strikes[peer] = recent
        return len(recent) >= self.limits.max_protocol_errors

    async def _drop(self, peer: ID) -> None:
        self._strikes.pop(peer, None)
        self.peers_dropped += 1
        log.warning("%s: closing the connection of %s after %d protocol errors in %.0f s",
                    self.protocol, peer, self.limits.max_protocol_errors,
                    self.limits.protocol_error_window)
        with trio.move_on_after(5):
            try:
                await self.host.disconnect(peer)
            except Exception as exc:  # py-libp2p raises assorted types
                log.debug("disconnect of %s failed: %r", peer, exc)

    async def _read_requests(self, state: _ServerStream) -> bool:
        """Dispatch requests until EOF (True) or a broken/violated stream (False)."""
        fs = state.fs
        try:
            while True:
                try:
                    msg = await fs.receive()
                except MessageError as exc:
                    if not self._refuse(state, exc):
                        raise
                    continue
                if msg is None:
                    return True
                self._dispatch(state, msg)
        except ProtocolError as exc:
            self.protocol_errors += 1
            state.violated = True
            log.warning("resetting %s stream from %s: %s", self.protocol, fs.peer, exc)
        except UnavailableError as exc:
            log.info("%s stream from %s: %s", self.protocol, fs.peer, exc)
        return False

    def _refuse(self, state: _ServerStream, exc: MessageError) -> bool:
        """Answer one request whose fields were bad; False if it cannot be answered alone."""
        rid = exc.request_id
        if (rid is None or not issubclass(exc.message_type, Request)
                or exc.message_type in (Cancel, QueryNext) or rid in state.in_flight):
            return False
        if state.refusing >= state.max_in_flight:
            return False  # a flood of bad requests faster than we answer: a violation
        code = ErrorCode.BAD_KEY if exc.kind == "key" else ErrorCode.BAD_REQUEST
        self.bad_requests += 1
        log.debug("%s: refused a request from %s: %s", self.protocol, state.fs.peer, exc)
        state.refusing += 1
        state.nursery.start_soon(self._send_refusal, state, Fail(rid, ErrorInfo(code, str(exc))))
        return True

    async def _send_refusal(self, state: _ServerStream, fail: Fail) -> None:
        try:
            await self._send_or_stop(state, fail)
        finally:
            state.refusing -= 1

    def _dispatch(self, state: _ServerStream, msg: Tagged) -> None:
        if not isinstance(msg, Request):
            raise ProtocolError(f"a server does not accept {type(msg).__name__}")
        if isinstance(msg, Cancel):
            scope = state.in_flight.get(msg.id)
            if scope is not None:
                scope.cancel()
            return
        if isinstance(msg, QueryNext):
            channel = state.query_next.get(msg.id)
            if channel is None:
                return  # the query already ended; the client will see its last chunk
            try:
                channel.send_nowait(None)
            except trio.WouldBlock:
                raise ProtocolError(f"QueryNext for {msg.id} before its chunk") from None
            return
        if msg.id in state.in_flight:
            raise ProtocolError(f"request id {msg.id} is already in flight")
        if len(state.in_flight) >= state.max_in_flight:
            busy = Fail(msg.id, ErrorInfo(ErrorCode.UNAVAILABLE, "too many requests in flight"))
            state.nursery.start_soon(self._send_or_stop, state, busy)
            return
        scope = trio.CancelScope()
        state.in_flight[msg.id] = scope
        if isinstance(msg, Query):
            state.nursery.start_soon(self._run_query, state, msg, scope)
        else:
            state.nursery.start_soon(self._run_request, state, msg, scope)


    async def _send_or_stop(self, state: _ServerStream, msg: Response) -> None:
        try:
            try:
                await state.fs.send(msg)
            except BadRequestError as exc:  # the answer is larger than a frame may be
                log.warning("%s answer to %s: %s", type(msg).__name__, state.fs.peer, exc)
                await state.fs.send(Fail(msg.id, ErrorInfo(ErrorCode.BAD_REQUEST, str(exc))))
        except UnavailableError:
            state.nursery.cancel_scope.cancel()  # the stream is gone: stop everything on it

    async def _run_request(self, state: _ServerStream, req: Request, scope: trio.CancelScope) -> None:
        try:
            with scope:
                resp = await self._answer(state.fs.peer, req, self.service.handle)
                # Free the id before the answer goes out: once the client has it, it
                # may reuse its in-flight slot, and our count must not exceed its.
                state.in_flight.pop(req.id, None)
                await self._send_or_stop(state, resp)
        finally:
            state.in_flight.pop(req.id, None)

    async def _answer(
        self, peer: ID, req: Request, handler: Callable[[ID, Request], Awaitable[Response]]
    ) -> Response:
        try:
            with trio.fail_after(self.limits.handler_timeout):
                resp = await handler(peer, req)
        except trio.TooSlowError:
            return Fail(req.id, ErrorInfo(ErrorCode.UNAVAILABLE, "request timed out on the server"))
        except Exception as exc:
            self._log_failure(peer, req, exc)
            return Fail(req.id, ErrorInfo.from_exception(exc))
        return resp if resp.id == req.id else dataclasses.replace(resp, id=req.id)  # type: ignore[type-var]

    def _log_failure(self, peer: ID, req: Request, exc: Exception) -> None:
        if isinstance(exc, DSClusterError):
            log.debug("%s from %s failed: %s", type(req).__name__, peer, exc)
        else:
            log.exception("%s from %s failed unexpectedly", type(req).__name__, peer)

    async def _run_query(self, state: _ServerStream, req: Query, scope: trio.CancelScope) -> None:
        send_next, receive_next = trio.open_memory_channel[None](1)
        state.query_next[req.id] = send_next
        try:
            with scope:
                await self._stream_chunks(state, req, receive_next)
        finally:
            state.query_next.pop(req.id, None)
            state.in_flight.pop(req.id, None)

    async def _stream_chunks(
        self, state: _ServerStream, req: Query, receive_next: trio.MemoryReceiveChannel[None]
    ) -> None:
        peer = state.fs.peer
        try:
            chunks = self.service.stream(peer, req)
        except Exception as exc:
            self._log_failure(peer, req, exc)
            await self._send_or_stop(state, Fail(req.id, ErrorInfo.from_exception(exc)))
            return
        try:
            while True:
                async def next_chunk(_peer: ID, _req: Request) -> Response:
                    try:
                        return await chunks.__anext__()
                    except StopAsyncIteration:
                        return QueryChunk(req.id, (), False)

                chunk = await self._answer(peer, req, next_chunk)
                last = not isinstance(chunk, QueryChunk) or not chunk.more
                if last:
                    state.in_flight.pop(req.id, None)  # as in _run_request
                await self._send_or_stop(state, chunk)
                if last:
                    return
                with trio.move_on_after(self.limits.query_idle_timeout) as idle:
                    await receive_next.receive()
                if idle.cancelled_caught:
                    log.info("query %d from %s idle too long; closed", req.id, peer)
                    return
        finally:
            aclose = getattr(chunks, "aclose", None)  # async generators hold resources
            if aclose is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await aclose()

    def close(self) -> None:
        """Stop serving: new streams are reset, and every open one is cancelled.

        The handler is replaced, never removed: py-libp2p's multiselect checks
        ``protocol in handlers``, awaits a write, then indexes ``handlers``, so a
        handler removed in between raises KeyError inside the host.
        """
        self.host.set_stream_handler(self.protocol, reject_stream)  # type: ignore[arg-type]
        for scope in list(self._scopes):
            scope.cancel()


async def reject_stream(stream: INetStream) -> None:
    """A stream handler for a protocol no longer served: reset the stream."""
    await reset_stream(stream, timeout=1)


@asynccontextmanager
async def serve_rpc(
    host: IHost, protocol: str, service: Service, limits: RpcLimits | None = None
) -> AsyncIterator[RpcServer]:
    """Serve ``protocol`` on ``host`` for the body of the ``async with``."""
    server = RpcServer(host, protocol, service, limits or RpcLimits())
    host.set_stream_handler(protocol, server.handle_stream)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.close()

"""Request/response over long-lived libp2p streams, with pipelining.

Theory of operation
-------------------
Opening a stream costs about as much as five round trips on py-libp2p, so a
client keeps ONE stream per (peer, protocol) open and pipelines requests on
it: each request carries an id, the server answers each id once, in whatever
order its handlers finish, and the client matches answers to callers by id.

This module is the one place where the wire meets trio and py-libp2p:

- ``FramedStream`` turns a libp2p stream into messages: varint frames
  (``dscluster.wire.framing``), CBOR messages (``dscluster.wire.messages``).
  Every py-libp2p stream exception becomes ``UnavailableError`` here and
  nowhere else. Writes are coalesced: whoever holds the write lock sends every
  frame queued so far in one ``write`` (at 64 requests in flight this saves a
  third of the stream writes; throughput on a loaded 2-core machine did not
  change measurably, and it costs nothing). A frame that has started must finish
  within ``frame_timeout`` (slow senders cannot pin a stream).
- ``RpcClient`` bounds in-flight requests per stream (a semaphore), applies a
  deadline to every call, sends ``Cancel`` for calls it gives up on, fails all
  waiting calls with ``UnavailableError`` naming the peer when the stream
  breaks, and opens a fresh stream on the next call. A request whose write
  failed never reached the peer and is retried once on a fresh stream.
- ``RpcServer`` reads requests, runs each in its own task (bounded per
  stream; beyond the bound it answers ``unavailable`` without blocking the
  reader), caps the streams one peer may hold open, writes answers, and
  maps handler exceptions to error codes. A
  malformed, oversized or unexpected frame logs a warning and resets THAT
  stream only; a peer that does so ``max_protocol_errors`` times within
  ``protocol_error_window`` loses its whole connection. Handlers receive the Noise-authenticated remote peer ID, so the
  service decides authorization.
- Queries stream: the server sends one ``QueryChunk``, then waits for the
  client's ``QueryNext`` before the next (pull-based flow control: a slow
  consumer never blocks other answers on the shared stream).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID

from dscluster.errors import BadRequestError, DSClusterError, ProtocolError, UnavailableError
from dscluster.net.admission import STRANGER_FRAME, admission_of
from dscluster.net.host import prepare_dial
from dscluster.net.streams import reset_stream
from dscluster.wire.framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame
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
from dscluster.wire.schema import Message, decode

log = logging.getLogger(__name__)

STRANGER_FRAME_TIMEOUT = 2.0  # a stranger's started frame must complete within this


@dataclass(frozen=True)
class RpcLimits:
    """Limits shared by client and server (doc/protocol.md, "Limits")."""

    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    max_in_flight: int = 64  # requests per stream
    max_streams_per_peer: int = 16  # server: streams of one protocol from one peer
    request_timeout: float = 30.0  # client: a whole call
    handler_timeout: float = 30.0  # server: one request, or one query chunk
    frame_timeout: float = 10.0  # a frame that has started must complete within this
    write_timeout: float = 30.0  # one stream write (the peer must keep reading)
    query_idle_timeout: float = 60.0  # server: wait for QueryNext at most this long
    open_timeout: float = 10.0  # client: dial and negotiate a stream
    read_size: int = 256 * 1024
    max_protocol_errors: int = 5  # server: streams one peer may break within the window...
    protocol_error_window: float = 60.0  # ...before its whole connection is closed


class Service(Protocol):
    """What a server runs. ``peer`` is the Noise-authenticated caller."""

    async def handle(self, peer: ID, request: Request) -> Response: ...

    def stream(self, peer: ID, request: Query) -> AsyncIterator[QueryChunk]: ...


def _peer_name(peer: ID) -> str:
    return peer.to_base58()


class FramedStream:
    """Messages over one libp2p stream; all py-libp2p stream errors become UnavailableError."""

    def __init__(self, stream: INetStream, limits: RpcLimits) -> None:
        self.stream = stream
        self.peer: ID = stream.muxed_conn.peer_id
        self.limits = limits
        self._decoder = FrameDecoder(limits.max_frame_size)
        self._frame_deadline = float("inf")
        self._write_lock = trio.Lock()
        self._outbox: list[bytes] = []
        self._broken: str | None = None

    async def receive(self) -> Message | None:
        """The next message, or None at a clean end of stream.

        ProtocolError for a malformed frame or message, UnavailableError when
        the stream fails or a started frame stalls past ``frame_timeout``.
        """
        dec = self._decoder
        while True:
            frame = dec.next_frame()
            if frame is not None:
                self._frame_deadline = float("inf")
                return decode(frame)
            if dec.buffered and self._frame_deadline == float("inf"):
                self._frame_deadline = trio.current_time() + self.limits.frame_timeout
            with trio.move_on_at(self._frame_deadline):
                data = await self._read()
                if data is None:
                    dec.feed_eof()  # ProtocolError if the stream ended inside a frame
                    return None
                dec.feed(data)
                continue
            raise UnavailableError(
                f"{_peer_name(self.peer)} stalled inside a frame for {self.limits.frame_timeout}s"
            )

    async def _read(self) -> bytes | None:
        try:
            data = await self.stream.read(self.limits.read_size)
        except EOFError:  # py-libp2p's StreamEOF is an EOFError
            return None
        except Exception as exc:  # StreamReset, StreamError, muxer and socket errors
            raise UnavailableError(f"stream from {_peer_name(self.peer)} failed: {exc!r}") from exc
        return data or None

    async def send(self, msg: Message) -> None:
        """Queue ``msg`` and return once it is written (maybe by another task, with others)."""
        self._outbox.append(encode_frame(msg.encode(), self.limits.max_frame_size))
        async with self._write_lock:
            if self._broken is not None:
                raise UnavailableError(self._broken)
            if not self._outbox:
                return  # a previous holder of the lock wrote our frame
            batch = self._outbox[0] if len(self._outbox) == 1 else b"".join(self._outbox)
            self._outbox.clear()
            # A write cancelled halfway would leave half a frame on the wire and
            # corrupt the stream for every other request on it: writes are shielded
            # from cancellation and bounded by their own deadline instead.
            with trio.CancelScope(shield=True):
                with trio.move_on_after(self.limits.write_timeout) as timer:
                    try:
                        await self.stream.write(batch)
                    except Exception as exc:
                        self._broken = f"stream to {_peer_name(self.peer)} failed: {exc!r}"
                        raise UnavailableError(self._broken) from exc
                if timer.cancelled_caught:
                    self._broken = f"writing to {_peer_name(self.peer)} stalled"
                    raise UnavailableError(self._broken)

    async def close(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            try:
                await self.stream.close()
            except Exception as exc:
                log.debug("closing stream to %s: %r", self.peer, exc)

    async def reset(self) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            try:
                await self.stream.reset()
            except Exception as exc:
                log.debug("resetting stream to %s: %r", self.peer, exc)


# -- server ----------------------------------------------------------------------


@dataclass
class _ServerStream:
    fs: FramedStream
    nursery: trio.Nursery
    in_flight: dict[int, trio.CancelScope] = field(default_factory=dict)
    query_next: dict[int, trio.MemorySendChannel[None]] = field(default_factory=dict)
    violated: bool = False  # the peer broke the protocol on this stream


class RpcServer:
    """Serves one protocol with a ``Service``; see ``serve_rpc``."""

    def __init__(self, host: IHost, protocol: str, service: Service, limits: RpcLimits) -> None:
        self.host = host
        self.protocol = protocol
        self.service = service
        self.limits = limits
        self._stranger_limits = dataclasses.replace(
            limits, max_frame_size=STRANGER_FRAME, read_size=STRANGER_FRAME,
            frame_timeout=STRANGER_FRAME_TIMEOUT, max_in_flight=4)
        self._scopes: set[trio.CancelScope] = set()
        self._streams_of: dict[ID, int] = {}
        self.streams_accepted = 0
        self.protocol_errors = 0  # streams reset for breaking the protocol
        self.peers_dropped = 0  # connections closed for repeated protocol errors
        self._strikes: dict[ID, list[float]] = {}

    async def handle_stream(self, stream: INetStream) -> None:
        """py-libp2p's stream handler: runs in the host's task for this stream."""
        peer = stream.muxed_conn.peer_id
        stranger = admission_of(self.host).is_stranger(peer.to_base58())
        # A stranger can only be refused: it never needs large frames or slow ones.
        fs = FramedStream(stream, self._stranger_limits if stranger else self.limits)
        if self._streams_of.get(peer, 0) >= self.limits.max_streams_per_peer:
            log.warning("%s: %s already has %d streams open; refusing another",
                        self.protocol, peer, self.limits.max_streams_per_peer)
            await fs.reset()
            return
        self._streams_of[peer] = self._streams_of.get(peer, 0) + 1
        self.streams_accepted += 1
        ok = False
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                async with trio.open_nursery() as nursery:
                    state = _ServerStream(fs, nursery)
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
            while (msg := await fs.receive()) is not None:
                self._dispatch(state, msg)
            return True
        except ProtocolError as exc:
            self.protocol_errors += 1
            state.violated = True
            log.warning("resetting %s stream from %s: %s", self.protocol, fs.peer, exc)
        except UnavailableError as exc:
            log.info("%s stream from %s: %s", self.protocol, fs.peer, exc)
        return False

    def _dispatch(self, state: _ServerStream, msg: Message) -> None:
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
        if len(state.in_flight) >= self.limits.max_in_flight:
            busy = Fail(msg.id, ErrorInfo(ErrorCode.UNAVAILABLE, "too many requests in flight"))
            state.nursery.start_soon(self._send_or_stop, state, busy)
            return
        scope = trio.CancelScope()
        state.in_flight[msg.id] = scope
        if isinstance(msg, Query):
            state.nursery.start_soon(self._run_query, state, msg, scope)
        else:
            state.nursery.start_soon(self._run_request, state, msg, scope)

    async def _send_or_stop(self, state: _ServerStream, msg: Message) -> None:
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


# -- client ----------------------------------------------------------------------


@dataclass
class _Waiter:
    event: trio.Event = field(default_factory=trio.Event)
    value: Response | UnavailableError | ProtocolError | None = None


class _Channel:
    """One open stream to (peer, protocol) and the calls waiting on it."""

    def __init__(self, fs: FramedStream, protocol: str, limits: RpcLimits) -> None:
        self.fs = fs
        self.protocol = protocol
        self.slots = trio.Semaphore(limits.max_in_flight)
        self.pending: dict[int, _Waiter] = {}
        self.ids = itertools.count(1)
        self.error: str | None = None

    async def read_responses(self) -> None:
        peer = _peer_name(self.fs.peer)
        reason: str
        broken_protocol = False
        try:
            while (msg := await self.fs.receive()) is not None:
                if not isinstance(msg, Response):
                    raise ProtocolError(f"a client does not accept {type(msg).__name__}")
                waiter = self.pending.get(msg.id)
                if waiter is None:
                    continue  # answer to a call that gave up (timeout or cancel)
                waiter.value = msg
                waiter.event.set()
            reason = f"{peer} closed the {self.protocol} stream"
        except ProtocolError as exc:
            broken_protocol = True
            reason = f"{peer} broke the {self.protocol} protocol: {exc}"
            log.warning("%s", reason)
        except UnavailableError as exc:
            reason = str(exc)
        self.fail(reason, protocol_error=broken_protocol)

    def fail(self, reason: str, protocol_error: bool = False) -> None:
        if self.error is None:
            self.error = reason
        for waiter in self.pending.values():
            if not waiter.event.is_set():
                waiter.value = ProtocolError(reason) if protocol_error else UnavailableError(reason)
                waiter.event.set()

    async def send_quietly(self, msg: Message) -> None:
        try:
            await self.fs.send(msg)
        except UnavailableError:
            pass


class RpcClient:
    """Calls to any number of peers and protocols over shared, pipelined streams.

    Create it with ``open_rpc_client``. ``call`` returns the response or raises
    the exception its ``Fail`` maps to (NotFoundError, MovedError, ...).
    """

    def __init__(self, host: IHost, nursery: trio.Nursery, limits: RpcLimits) -> None:
        self.host = host
        self.limits = limits
        self._nursery = nursery
        self._channels: dict[tuple[ID, str], _Channel] = {}
        self._opening: dict[tuple[ID, str], trio.Lock] = {}

    async def call(
        self, peer: ID, protocol: str, request: Request, timeout: float | None = None
    ) -> Response:
        """Send ``request`` (its id is replaced) and wait for its answer."""
        timeout = self.limits.request_timeout if timeout is None else timeout
        try:
            with trio.fail_after(timeout):
                return await self._call(peer, protocol, request)
        except trio.TooSlowError:
            raise UnavailableError(
                f"{type(request).__name__} to {_peer_name(peer)} timed out after {timeout}s"
            ) from None

    async def _call(self, peer: ID, protocol: str, request: Request) -> Response:
        for attempt in (1, 2):
            channel = await self._channel(peer, protocol)
            async with channel.slots:
                rid = next(channel.ids)
                waiter = _Waiter()
                channel.pending[rid] = waiter
                sent = False
                try:
                    try:
                        await channel.fs.send(dataclasses.replace(request, id=rid))  # type: ignore[type-var]
                        sent = True
                    except UnavailableError:
                        self._drop(peer, protocol, channel)
                        if attempt == 1:
                            continue  # never reached the peer: one retry on a fresh stream
                        raise
                    await waiter.event.wait()
                finally:
                    del channel.pending[rid]
                    if sent and not waiter.event.is_set() and channel.error is None:
                        self._nursery.start_soon(channel.send_quietly, Cancel(rid))
                return self._result(waiter)
        raise AssertionError("unreachable")

    @staticmethod
    def _result(waiter: _Waiter) -> Response:
        value = waiter.value
        if isinstance(value, Fail):
            raise value.error.to_exception()
        if isinstance(value, DSClusterError):
            raise value
        assert value is not None
        return value

    @asynccontextmanager
    async def query(
        self, peer: ID, protocol: str, request: Query, timeout: float | None = None
    ) -> AsyncIterator[AsyncIterator[QueryChunk]]:
        """Stream a query's chunks; leaving the block early cancels it on the server."""
        timeout = self.limits.request_timeout if timeout is None else timeout
        channel = await self._channel(peer, protocol)
        async with channel.slots:
            rid = next(channel.ids)
            waiter = _Waiter()
            channel.pending[rid] = waiter
            finished = False

            async def chunks() -> AsyncIterator[QueryChunk]:
                nonlocal waiter, finished
                try:
                    await channel.fs.send(dataclasses.replace(request, id=rid))
                    while True:
                        with trio.move_on_after(timeout) as waited:
                            await waiter.event.wait()
                        if waited.cancelled_caught:
                            raise UnavailableError(
                                f"query to {_peer_name(peer)} timed out after {timeout}s"
                            )
                        chunk = self._result(waiter)
                        if not isinstance(chunk, QueryChunk):
                            raise ProtocolError(f"expected QueryChunk, got {type(chunk).__name__}")
                        finished = not chunk.more
                        if not finished:
                            waiter = channel.pending[rid] = _Waiter()
                            await channel.fs.send(QueryNext(rid))
                        yield chunk
                        if finished:
                            return
                except UnavailableError:
                    finished = True
                    self._drop(peer, protocol, channel)
                    raise

            gen = chunks()
            try:
                yield gen
            finally:
                await gen.aclose()  # type: ignore[attr-defined]
                channel.pending.pop(rid, None)
                if not finished and channel.error is None:
                    self._nursery.start_soon(channel.send_quietly, Cancel(rid))

    async def _channel(self, peer: ID, protocol: str) -> _Channel:
        key = (peer, protocol)
        channel = self._channels.get(key)
        if channel is not None and channel.error is None:
            return channel
        lock = self._opening.setdefault(key, trio.Lock())
        async with lock:
            channel = self._channels.get(key)
            if channel is not None and channel.error is None:
                return channel
            stream = await self._open_stream(peer, protocol)
            channel = _Channel(FramedStream(stream, self.limits), protocol, self.limits)
            self._channels[key] = channel
            self._nursery.start_soon(self._run_channel, key, channel)
            return channel

    async def _open_stream(self, peer: ID, protocol: str) -> INetStream:
        try:
            with trio.fail_after(self.limits.open_timeout):
                await prepare_dial(self.host, peer)
                if self.host.get_network().get_connections(peer):
                    stream = await self._open_on_existing(peer, protocol)
                    if stream is not None:
                        return stream
                return await self.host.new_stream(peer, [protocol])  # type: ignore[list-item]
        except trio.TooSlowError:
            raise UnavailableError(f"opening {protocol} to {_peer_name(peer)} timed out") from None
        except Exception as exc:  # dial, security, muxer and negotiation errors
            raise UnavailableError(
                f"cannot open {protocol} to {_peer_name(peer)}: {exc!r}"
            ) from exc

    async def _open_on_existing(self, peer: ID, protocol: str) -> INetStream | None:
        """A stream on the connection py-libp2p holds, or None once that connection is dropped.

        The connection may belong to a dead incarnation of the peer (killed and
        restarted) that py-libp2p has not noticed: opening a stream on it then
        fails or just stalls, and py-libp2p would reuse it for every later open
        (py-libp2p note 6). Half the open budget goes to it; if it fails or
        stalls, drop the peer's connections so that the caller dials afresh.
        """
        with trio.move_on_after(self.limits.open_timeout / 2):
            try:
                return await self.host.new_stream(peer, [protocol])  # type: ignore[list-item]
            except Exception as exc:
                log.debug("new stream to %s failed on an existing connection: %r", peer, exc)
        log.info(
            "dropping the connection to %s: opening %s on it failed or stalled",
            _peer_name(peer), protocol,
        )
        await self.host.disconnect(peer)
        return None

    async def _run_channel(self, key: tuple[ID, str], channel: _Channel) -> None:
        try:
            await channel.read_responses()
        finally:
            self._drop(*key, channel)

    def _drop(self, peer: ID, protocol: str, channel: _Channel) -> None:
        if channel.error is None:
            channel.fail(f"stream to {_peer_name(peer)} was dropped")
        if self._channels.get((peer, protocol)) is channel:
            del self._channels[(peer, protocol)]
            self._nursery.start_soon(channel.fs.reset)

    async def aclose(self) -> None:
        for (peer, protocol), channel in list(self._channels.items()):
            channel.fail(f"client closed its stream to {_peer_name(peer)}")
            del self._channels[(peer, protocol)]
            await channel.fs.close()


@asynccontextmanager
async def open_rpc_client(host: IHost, limits: RpcLimits | None = None) -> AsyncIterator[RpcClient]:
    """An RpcClient whose stream readers live for the body of the ``async with``."""
    async with trio.open_nursery() as nursery:
        client = RpcClient(host, nursery, limits or RpcLimits())
        try:
            yield client
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()

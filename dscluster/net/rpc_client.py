"""The RPC client: calls to any number of peers over shared, pipelined streams.

Theory of operation
-------------------
Opening a stream costs about as much as five round trips on py-libp2p, so a
client keeps ONE stream per (peer, protocol) open and pipelines requests on
it: each request carries an id, the server answers each id once, in whatever
order its handlers finish, and the client matches answers to callers by id.

``RpcClient`` bounds in-flight requests per stream (a semaphore), applies a
deadline to every call, sends ``Cancel`` for calls it gives up on, fails all
waiting calls with ``UnavailableError`` naming the peer when the stream
breaks, and opens a fresh stream on the next call; an answer that does not
decode but names its request id fails that call alone (ProtocolError). A request whose write
failed never reached the peer and is retried once on a fresh stream. Queries
pull their chunks one ``QueryNext`` at a time.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID

from dscluster.errors import DSClusterError, ProtocolError, UnavailableError
from dscluster.net.framed import FramedStream
from dscluster.net.host import prepare_dial
from dscluster.net.rpc_limits import RpcLimits
from dscluster.wire.messages import Cancel, Fail, Query, QueryChunk, QueryNext, Request, Response
from dscluster.wire.schema import MessageError, Tagged

log = logging.getLogger(__name__)

__all__ = ["RpcClient", "open_rpc_client"]


def _peer_name(peer: ID) -> str:
    return peer.to_base58()


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
            while True:
                try:
                    msg = await self.fs.receive()
                except MessageError as exc:
                    if not self._refused(exc):
                        raise
                    continue
                if msg is None:
                    break
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

    def register(self) -> tuple[int, _Waiter]:
        """A fresh request id and the waiter its answer will wake."""
        rid = next(self.ids)
        waiter = self.pending[rid] = _Waiter()
        return rid, waiter

    def _refused(self, exc: MessageError) -> bool:
        """Fail the one call whose answer did not decode (a field a newer server sends in
        a form we do not know); False if the answer cannot be matched to a call."""
        rid = exc.request_id
        if rid is None or not issubclass(exc.message_type, Response):
            return False
        waiter = self.pending.get(rid)
        if waiter is not None and not waiter.event.is_set():
            waiter.value = ProtocolError(f"{_peer_name(self.fs.peer)} sent an answer we "
                                         f"cannot read: {exc}")
            waiter.event.set()
        return True

    def fail(self, reason: str, protocol_error: bool = False) -> None:
        if self.error is None:
            self.error = reason
        for waiter in self.pending.values():
            if not waiter.event.is_set():
                waiter.value = ProtocolError(reason) if protocol_error else UnavailableError(reason)
                waiter.event.set()

    async def send_quietly(self, msg: Tagged) -> None:
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
                rid, waiter = channel.register()
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
            rid, waiter = channel.register()
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
            channel = _Channel(FramedStream(stream, self.limits.frames()), protocol, self.limits)
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
            # while we await a close below, a reader may already have dropped its channel
            if self._channels.get((peer, protocol)) is channel:
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

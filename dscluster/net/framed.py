"""Frames and messages over one libp2p stream: the one reader every protocol uses.

Theory of operation
-------------------
Every protocol we speak on a stream (store, admin, gossip, join, and
bitswap) sends unsigned-varint length-prefixed frames. ``FrameReader`` is the
one place that reads them: it feeds what the stream gives into the sans-IO
``FrameDecoder`` (dscluster/wire/framing.py), which enforces the limit of
the use at hand (a stranger's 64 KiB, a member's 16 MiB, bitswap's 4 MiB), and
applies two deadlines: a frame that has started must complete within
``frame_timeout`` (slow senders cannot pin a stream), and an idle stream may
be given up after ``idle_timeout`` (None: wait for ever, as long-lived
streams do). Every py-libp2p stream exception becomes ``UnavailableError``
here and nowhere else; a clean end of stream is ``None``; a framing
violation is ``ProtocolError``.

``FramedStream`` adds the message codec (dscluster/wire/schema.py) and the
writer: whoever holds the write lock sends every frame queued so far in one
``write`` (at 64 requests in flight this saves a third of the stream
writes). A write is shielded from cancellation (half a frame would corrupt
the stream for every other request on it) and bounded by ``write_timeout``.
Bitswap's frames hold protobuf, not our messages: it uses ``FrameReader``
alone.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import trio

from dscluster.errors import UnavailableError
from dscluster.net.streams import reset_stream
from dscluster.wire.framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame
from dscluster.wire.schema import Tagged, decode

log = logging.getLogger(__name__)

__all__ = ["FrameLimits", "FrameReader", "FramedStream"]


@dataclass(frozen=True)
class FrameLimits:
    """The limits of one use of a stream (doc/protocol.md, "Limits")."""

    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    read_size: int = 256 * 1024  # bytes asked of the stream per read
    frame_timeout: float = 10.0  # a frame that has started must complete within this
    idle_timeout: float | None = None  # no frame started for this long: give up (None: never)
    write_timeout: float = 30.0  # one stream write (the peer must keep reading)


def _peer_of(stream: Any) -> str:
    try:
        return str(stream.muxed_conn.peer_id.to_base58())
    except AttributeError:  # a test double without a connection
        return "peer"


class FrameReader:
    """Whole frames from a stream, within ``limits``."""

    def __init__(self, stream: Any, limits: FrameLimits) -> None:
        self.stream = stream
        self.limits = limits
        self.peer_name = _peer_of(stream)
        self._decoder = FrameDecoder(limits.max_frame_size)

    async def read_frame(self) -> bytes | None:
        """The next frame's payload, or None at a clean end of stream.

        ProtocolError for a frame over the limit or a stream ending inside a
        frame; UnavailableError when the stream fails, a started frame stalls
        past ``frame_timeout`` or nothing starts within ``idle_timeout``.
        """
        dec = self._decoder
        frame = dec.next_frame()
        if frame is not None:
            return frame
        idle = self.limits.idle_timeout
        deadline = math.inf if idle is None else trio.current_time() + idle
        started = False  # a frame has begun: its own deadline replaces the idle one
        while True:
            if dec.in_frame and not started:  # also a bare length prefix
                started = True
                deadline = trio.current_time() + self.limits.frame_timeout
            with trio.move_on_at(deadline):
                data = await self._read()
                if data is None:
                    dec.feed_eof()  # ProtocolError if the stream ended inside a frame
                    return None
                dec.feed(data)
                frame = dec.next_frame()
                if frame is not None:
                    return frame
                continue
            if started:
                raise UnavailableError(f"{self.peer_name} stalled inside a frame for "
                                       f"{self.limits.frame_timeout}s")
            raise UnavailableError(f"{self.peer_name} sent nothing for {idle}s")

    async def _read(self) -> bytes | None:
        try:
            data = await self.stream.read(self.limits.read_size)
        except EOFError:  # py-libp2p's StreamEOF is an EOFError
            return None
        except Exception as exc:  # StreamReset, StreamError, muxer and socket errors
            raise UnavailableError(f"stream from {self.peer_name} failed: {exc!r}") from exc
        return data or None


class FramedStream(FrameReader):
    """Typed messages (wire/schema.py) over one stream."""

    def __init__(self, stream: Any, limits: FrameLimits) -> None:
        super().__init__(stream, limits)
        self._write_lock = trio.Lock()
        self._outbox: list[bytes] = []
        self._broken: str | None = None

    @property
    def peer(self) -> Any:
        """The Noise-authenticated peer ID (a libp2p ID)."""
        return self.stream.muxed_conn.peer_id

    async def receive(self) -> Tagged | None:
        """The next message, or None at a clean end of stream.

        ProtocolError for a malformed frame or message (``MessageError`` when
        the frame was whole and only its message is bad), UnavailableError as
        ``read_frame``.
        """
        frame = await self.read_frame()
        return None if frame is None else decode(frame)

    async def send(self, msg: Tagged) -> None:
        """Queue ``msg`` and return once it is written (maybe by another task, with others).

        BadRequestError if it exceeds the frame limit (nothing is sent),
        UnavailableError if the stream failed or the write stalled.
        """
        await self.send_frame(encode_frame(msg.encode(), self.limits.max_frame_size))

    async def send_frame(self, frame: bytes) -> None:
        self._outbox.append(frame)
        async with self._write_lock:
            if self._broken is not None:
                raise UnavailableError(self._broken)
            if not self._outbox:
                return  # a previous holder of the lock wrote our frame
            batch = self._outbox[0] if len(self._outbox) == 1 else b"".join(self._outbox)
            self._outbox.clear()
            with trio.CancelScope(shield=True):
                with trio.move_on_after(self.limits.write_timeout) as timer:
                    try:
                        await self.stream.write(batch)
                    except Exception as exc:
                        self._broken = f"stream to {self.peer_name} failed: {exc!r}"
                        raise UnavailableError(self._broken) from exc
                if timer.cancelled_caught:
                    self._broken = f"writing to {self.peer_name} stalled"
                    raise UnavailableError(self._broken)

    async def close(self) -> None:
        """End our side cleanly (shielded, bounded; failures are only logged)."""
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            try:
                await self.stream.close()
            except Exception as exc:
                log.debug("closing stream to %s: %r", self.peer_name, exc)

    async def reset(self) -> None:
        await reset_stream(self.stream)

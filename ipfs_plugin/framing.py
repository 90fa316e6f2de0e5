"""Unsigned-varint length-prefixed frames on a py-libp2p stream.

Bitswap (like most libp2p protocols) sends each message as varint(length) +
bytes. FrameReader buffers reads so a frame costs one or two stream reads
rather than py-libp2p's usual one read per prefix byte; a frame over the limit
is a ProtocolError before any of it is buffered.
"""

from __future__ import annotations

from typing import Any

from libp2p.network.stream.exceptions import StreamEOF

from dscluster.errors import ProtocolError
from dscluster.ipld.protobuf import decode_varint, encode_varint

READ_CHUNK = 256 * 1024


def frame(payload: bytes) -> bytes:
    return encode_varint(len(payload)) + payload


class FrameReader:
    def __init__(self, stream: Any, max_frame: int) -> None:
        self._stream = stream
        self._max = max_frame
        self._buf = bytearray()

    async def _fill(self) -> bool:
        """Read more bytes; False at end of stream."""
        try:
            chunk = await self._stream.read(READ_CHUNK)
        except StreamEOF:
            return False
        if not chunk:
            return False
        self._buf += chunk
        return True

    async def read_frame(self) -> bytes | None:
        """The next frame's payload, or None at a clean end of stream."""
        while True:
            try:
                length, start = decode_varint(self._buf)
                break
            except ProtocolError:
                if len(self._buf) >= 10:
                    raise
            if not await self._fill():
                if self._buf:
                    raise ProtocolError("stream ended inside a frame header") from None
                return None
        if length > self._max:
            raise ProtocolError(f"frame of {length} bytes is over the {self._max} limit")
        while len(self._buf) < start + length:
            if not await self._fill():
                raise ProtocolError("stream ended inside a frame")
        payload = bytes(self._buf[start : start + length])
        del self._buf[: start + length]
        return payload

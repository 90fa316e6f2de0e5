"""Length-prefixed frames: unsigned varint (LEB128) length, then the payload.

Theory of operation: a stream carries frames back to back. The decoder is a
pure object (no I/O, h11-style): the caller ``feed()``s whatever bytes the
stream gave, takes whole frames with ``next_frame()`` until it returns None,
and calls ``feed_eof()`` when the stream ends. Every way a peer can break the
framing raises ``ProtocolError`` at the moment it becomes certain:

- a length above ``max_frame_size`` fails as soon as the prefix is read, so a
  hostile peer never makes us buffer the body it announces;
- a varint longer than 9 bytes (the multiformats unsigned-varint limit) or not
  minimally encoded (a trailing 0x00 group) is rejected;
- EOF with a partial prefix or body is a truncation.
"""

from __future__ import annotations

from collections.abc import Iterator

from dscluster.errors import BadRequestError, ProtocolError
from dscluster.wire.varint import MULTIFORMATS, VarintOverLimit, encode_varint, read_varint

__all__ = ["DEFAULT_MAX_FRAME_SIZE", "FRAME_LIMIT_TEXT", "FrameDecoder", "encode_frame",
           "encode_varint"]

DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024  # a 4 MiB value plus overhead fits easily
MAX_VARINT_BYTES = MULTIFORMATS.max_bytes  # multiformats unsigned-varint: at most 63 bits
FRAME_LIMIT_TEXT = "exceeds the frame limit"  # in the error a too-large answer comes back as


def encode_frame(payload: bytes, max_frame_size: int | None = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """One frame; BadRequestError if the payload exceeds the limit (our mistake, not the
    peer's). ``None``: no limit (the caller bounds its messages itself, as bitswap does)."""
    if max_frame_size is not None and len(payload) > max_frame_size:
        raise BadRequestError(
            f"message of {len(payload)} bytes {FRAME_LIMIT_TEXT} of {max_frame_size}"
        )
    return encode_varint(len(payload)) + payload


class FrameDecoder:
    """Feed bytes in, take whole frames out."""

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if max_frame_size <= 0:
            raise ValueError("max_frame_size must be positive")
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._pos = 0  # start of unread data in _buf
        self._need: int | None = None  # body length once the prefix is parsed
        self._eof = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    @property
    def in_frame(self) -> bool:
        """A frame has begun (some of its prefix or body is here) and is not complete."""
        return self._need is not None or self.buffered > 0

    def feed(self, data: bytes) -> None:
        if self._eof:
            raise ProtocolError("data after end of stream")
        if self._pos and self._pos > len(self._buf) // 2:
            del self._buf[: self._pos]  # compact: keep the buffer from growing forever
            self._pos = 0
        self._buf += data

    def feed_eof(self) -> None:
        """The stream ended; ProtocolError if it ended inside a frame."""
        self._eof = True
        if self._need is None:
            self._parse_prefix()  # may still raise on a bad complete prefix
        if self.buffered or self._need is not None:
            raise ProtocolError(f"stream truncated inside a frame ({self.buffered} bytes pending)")

    def next_frame(self) -> bytes | None:
        """The next whole frame's payload, or None if more bytes are needed."""
        if self._need is None and not self._parse_prefix():
            return None
        assert self._need is not None
        end = self._pos + self._need
        if end > len(self._buf):
            return None
        frame = bytes(self._buf[self._pos : end])
        self._pos = end
        self._need = None
        return frame

    def frames(self) -> Iterator[bytes]:
        while (frame := self.next_frame()) is not None:
            yield frame

    def _parse_prefix(self) -> bool:
        try:
            got = read_varint(self._buf, self._pos, MULTIFORMATS, self.max_frame_size)
        except VarintOverLimit as exc:
            if exc.complete:
                raise ProtocolError(
                    f"frame of {exc.value} bytes exceeds the limit of {self.max_frame_size}"
                ) from None
            # Already too large whatever the remaining groups say.
            raise ProtocolError(
                f"frame length exceeds the limit of {self.max_frame_size}") from None
        except ProtocolError as exc:
            raise ProtocolError(f"frame length {exc}") from None
        if got is None:
            return False
        self._need, self._pos = got
        return True

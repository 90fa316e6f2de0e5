"""The limits an RPC client and server share (doc/protocol.md, "Limits")."""

from __future__ import annotations

from dataclasses import dataclass

from dscluster.net.admission import STRANGER_FRAME
from dscluster.net.framed import FrameLimits
from dscluster.wire.framing import DEFAULT_MAX_FRAME_SIZE

STRANGER_FRAME_TIMEOUT = 2.0  # a stranger's started frame must complete within this


@dataclass(frozen=True)
class RpcLimits:
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

    def frames(self) -> FrameLimits:
        """The framed stream's share of these limits."""
        return FrameLimits(max_frame_size=self.max_frame_size, read_size=self.read_size,
                           frame_timeout=self.frame_timeout, write_timeout=self.write_timeout)

    def for_stranger(self) -> FrameLimits:
        """A stranger can only be refused: it never needs large frames or slow ones."""
        return FrameLimits(max_frame_size=STRANGER_FRAME, read_size=STRANGER_FRAME,
                           frame_timeout=STRANGER_FRAME_TIMEOUT, write_timeout=self.write_timeout)

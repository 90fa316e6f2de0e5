"""Bitswap's frames: unsigned-varint length-prefixed protobuf messages on a stream.

Bitswap (like most libp2p protocols) sends each message as varint(length) +
bytes: the same framing as ours, so the one reader (dscluster/net/framed.py
on dscluster/wire/framing.py's FrameDecoder) serves it with bitswap's own
limits; the bytes on the wire are unchanged (Kubo and Helia read and write
them). A frame over the limit is a ProtocolError before any of it is
buffered; a stream failure is an UnavailableError.
"""

from __future__ import annotations

from typing import Any

from dscluster.net.framed import FrameLimits
from dscluster.net.framed import FrameReader as _FrameReader
from dscluster.wire.framing import encode_frame

READ_CHUNK = 256 * 1024
FRAME_TIMEOUT = 60.0  # a started message must complete within this (4 MiB on a slow link)


def frame(payload: bytes) -> bytes:
    return encode_frame(payload, None)


class FrameReader(_FrameReader):
    """The framed-stream reader with bitswap's limits: frames up to ``max_frame``."""

    def __init__(self, stream: Any, max_frame: int) -> None:
        super().__init__(stream, FrameLimits(max_frame_size=max_frame, read_size=READ_CHUNK,
                                             frame_timeout=FRAME_TIMEOUT))

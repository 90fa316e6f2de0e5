"""The one way to reset a libp2p stream we are done with."""

from __future__ import annotations

import logging

import trio
from libp2p.abc import INetStream

log = logging.getLogger(__name__)


async def reset_stream(stream: INetStream, timeout: float = 2.0) -> None:
    """Reset ``stream``, shielded from cancellation and bounded; failures are only logged
    (the peer may be gone already; py-libp2p raises assorted types)."""
    with trio.CancelScope(shield=True), trio.move_on_after(timeout):
        try:
            await stream.reset()
        except Exception as exc:
            log.debug("reset of a stream failed: %r", exc)

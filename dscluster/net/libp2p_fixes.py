"""Two fixes to how py-libp2p 0.8.1 moves bytes, applied once, here.

Theory of operation
-------------------
Profiles of the client under 4 KiB load (bench/README.md) put most of its CPU
in py-libp2p's per-frame work. Two of its costs are not inherent to Noise or
yamux, and each is fixed by replacing one method (doc/protocol.md, py-libp2p
notes 14 and 15):

- **Read-ahead** (``TrioTCPStream.read``). py-libp2p reads a connection in
  the sizes its layers ask for: a Noise message is a ``read(2)`` for its
  length and a ``read(len)`` for its body, each one ``receive_some``: one
  system call and one trip through trio's scheduler, per frame, even when a
  single socket read could return dozens of frames. With the fix a read the
  buffer can answer returns at once; otherwise one ``receive_some`` of up to
  `READ_AHEAD` bytes refills it. Errors and end of stream come from
  py-libp2p's own ``read``, unchanged, and a read still returns at most the
  bytes asked for. One task reads a connection at a time (yamux's frame
  loop, or the handshake before it; ``TrioTCPStream`` also holds a read
  lock), so the buffer needs no lock of its own.

- **Window updates** (``YamuxStream._auto_tune_and_send_window_update``).
  Besides go-yamux's rule (credit the sender back once half the receive
  window has been consumed), py-libp2p's version also sends a WINDOW_UPDATE
  whenever any credit is owed at all, which is after nearly every read: one
  more encrypted frame and socket write for each message received, about a
  third of all writes under load. The fix keeps go-yamux's rule alone,
  with py-libp2p's window auto-tuning (growth towards 16 MiB) as it was.
  A sender never waits on a reader that has consumed its data: once a full
  window is consumed, at least half of it is owed, and that is sent.

``DSCLUSTER_LIBP2P_FIXES=0`` in the environment leaves py-libp2p as shipped
(for measuring the fixes side by side; bench.p2p_baseline's raw figures use
it). The fixes replace private methods of one py-libp2p release, so they
apply only to the version they were written against and log a warning
otherwise.
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import version

from libp2p.io.trio import TrioTCPStream
from libp2p.stream_muxer.yamux.yamux import YamuxStream

log = logging.getLogger(__name__)

FOR_VERSION = "0.8.1"
ENV_SWITCH = "DSCLUSTER_LIBP2P_FIXES"

# One socket read: a full Noise message, or many small ones. Not more: CPython allocates
# the whole size for each recv(), and above glibc's 128 KiB mmap threshold that costs
# an mmap/munmap per read (measured: +30 us per 4 KiB recv(262144), none at 64 KiB).
READ_AHEAD = 64 * 1024

_installed = False


def enabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1") != "0"


def install() -> None:
    """Apply both fixes (idempotent; a no-op when disabled or on another py-libp2p)."""
    global _installed
    if _installed or not enabled():
        return
    _installed = True
    found = version("libp2p")
    if found != FOR_VERSION:
        log.warning("py-libp2p %s is not %s: running it without ds-cluster's fixes "
                    "(read-ahead, window updates)", found, FOR_VERSION)
        return
    _install_read_ahead()
    _install_window_updates()
    log.debug("py-libp2p fixes installed: read-ahead %d bytes, go-yamux window updates",
              READ_AHEAD)


def _install_read_ahead() -> None:
    unbuffered_read = TrioTCPStream.read

    async def read(self: TrioTCPStream, n: int | None = None) -> bytes:
        if n == 0:
            return b""
        pending: memoryview | None = self.__dict__.get("_read_ahead")
        if not pending:
            chunk = await unbuffered_read(self, max(n or 0, READ_AHEAD))
            if n is None or len(chunk) <= n:
                return chunk
            pending = memoryview(chunk)
        take = len(pending) if n is None else n
        data = bytes(pending[:take])
        self.__dict__["_read_ahead"] = pending[take:] or None
        return data

    TrioTCPStream.read = read  # type: ignore[method-assign]


def _install_window_updates() -> None:
    async def update_window(self: YamuxStream, *, bytes_read: int = 0) -> None:
        async with self.window_lock:
            buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
            owed = self.target_recv_window - (self.recv_window + buffered)
            if owed < self.target_recv_window // 2:
                return
            self.recv_window += owed
            owed += self._apply_autotune_epoch(buffered)
            self._pending_recv_release = 0
        # Never hold window_lock while writing: the frame reader needs it.
        await self.send_window_update(owed, skip_lock=True)

    YamuxStream._auto_tune_and_send_window_update = update_window  # type: ignore[method-assign]

"""Fixes to py-libp2p 0.8.1, applied once, here: how it holds connections, how it moves bytes.

Theory of operation
-------------------
Two fixes keep a node reachable (always applied on 0.8.1; they are about
correctness, not speed):

- **Inbound connections are released when they close**
  (``Swarm._handle_inbound_connection``). py-libp2p takes one of 300 slots of
  ``_inbound_limiter`` per inbound connection and gives it back in a
  ``finally``, but the handler in between ends in
  ``await self.manager.wait_finished()``: it waits for the whole swarm, not
  the connection, so a slot (and a task) comes back only at shutdown. After
  about 300 client sessions a node refused every new connection. The
  replacement upgrades the connection as py-libp2p does (Noise, yamux,
  ``add_conn``) and then waits for *that* connection to close. It also
  applies our own caps (`ConnectionCaps`: connections in all, from one IP
  address, from one peer ID), each refusal logged at most once a minute per
  address or peer (dscluster/logutil.py) and counted.
- **No SO_REUSEPORT on listeners** (``tcp._set_reuse_flags``). py-libp2p sets
  it for hole punching, which we do not use; with it a second process could
  bind a port a node already listens on, and the kernel then split new
  connections between the two. SO_REUSEADDR stays (a restarted node can bind
  its port again at once), so a busy port now fails the start.

Two more make the byte path cheaper. Profiles of the client under 4 KiB load (bench/README.md) put most of its CPU
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

``DSCLUSTER_LIBP2P_FIXES=0`` in the environment leaves py-libp2p's byte path
as shipped (for measuring those two fixes side by side; bench.p2p_baseline's
raw figures use it); the connection fixes stay. All of them replace private
methods of one py-libp2p release, so they apply only to the version they were
written against and log a warning otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

import libp2p.transport.tcp.tcp as libp2p_tcp
import trio
from libp2p.abc import IMuxedConn
from libp2p.io.trio import TrioTCPStream
from libp2p.network.connection.exceptions import RawConnError
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.network.swarm import Swarm
from libp2p.stream_muxer.yamux.yamux import DEFAULT_WINDOW_SIZE, Yamux, YamuxStream

from dscluster.logutil import RateLimitedLog
from dscluster.net.admission import admission_of_network

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
    """Apply the fixes (idempotent; the byte-path ones only when enabled; none on another
    py-libp2p)."""
    global _installed
    if _installed:
        return
    _installed = True
    found = version("libp2p")
    if found != FOR_VERSION:
        log.warning("py-libp2p %s is not %s: running it without ds-cluster's fixes "
                    "(connection release, no SO_REUSEPORT, read-ahead, window updates)",
                    found, FOR_VERSION)
        return
    _install_inbound_release()
    _install_no_reuseport()
    _install_window_bound()
    if enabled():
        _install_read_ahead()
        _install_window_updates()
        log.debug("py-libp2p fixes installed: read-ahead %d bytes, go-yamux window updates",
                  READ_AHEAD)


# -- connections -------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionCaps:
    """How many inbound connections a host holds at once (doc/security.md, "Bounds")."""

    max_inbound: int = 1024  # from everyone
    max_per_ip: int = 256  # from one IP address (all of loopback's clients share 127.0.0.1)
    max_per_peer: int = 4  # from one peer ID (one is the norm: connect() reuses it)
    max_strangers: int = 64  # from peers with no role here (dscluster/net/admission.py)


@dataclass
class InboundStats:
    """A host's inbound connections now, and how many were accepted or refused."""

    caps: ConnectionCaps = field(default_factory=ConnectionCaps)
    by_ip: Counter[str] = field(default_factory=Counter)
    by_peer: Counter[str] = field(default_factory=Counter)
    open: int = 0  # connections held now (handshaking or up)
    strangers: int = 0  # of them, from peers with no role here
    accepted: int = 0  # connections that completed the upgrade
    refused: int = 0  # refused by a cap
    failed: int = 0  # handshakes that failed (garbage, timeouts, wrong swarm key)
    refusals: RateLimitedLog = field(default_factory=lambda: RateLimitedLog(log))


def inbound_stats(swarm: Any) -> InboundStats:
    """The swarm's inbound bookkeeping (created on first use)."""
    stats: InboundStats | None = swarm.__dict__.get("_dscluster_inbound")
    if stats is None:
        stats = swarm.__dict__["_dscluster_inbound"] = InboundStats()
    return stats


def set_connection_caps(swarm: Any, caps: ConnectionCaps) -> None:
    inbound_stats(swarm).caps = caps


def _remote_ip(stream: Any) -> str:
    try:
        address = stream.get_remote_address()
    except Exception:  # transports without addresses
        return "?"
    return str(address[0]) if address else "?"


async def _close_quietly(conn: Any) -> None:
    with trio.CancelScope(shield=True), trio.move_on_after(2):
        with contextlib.suppress(Exception):
            await conn.close()


def _install_inbound_release() -> None:
    shipped = Swarm._handle_inbound_connection

    async def handle_inbound(self: Swarm, read_write_closer: Any, maddr: Any) -> None:
        if isinstance(read_write_closer, IMuxedConn):  # QUIC and the like: not ours
            await shipped(self, read_write_closer, maddr)  # type: ignore[arg-type]
            return
        stats = inbound_stats(self)
        caps = stats.caps
        ip = _remote_ip(read_write_closer)
        if stats.open >= caps.max_inbound or stats.by_ip[ip] >= caps.max_per_ip:
            stats.refused += 1
            stats.refusals.warning(
                "inbound-cap", ip, "refused a connection from %s: %d connections held "
                "(at most %d in all, %d from one address)",
                ip, stats.by_ip[ip], caps.max_inbound, caps.max_per_ip)
            await _close_quietly(read_write_closer)
            return
        stats.open += 1
        stats.by_ip[ip] += 1
        try:
            await _serve_inbound(self, stats, read_write_closer, maddr)
        finally:
            stats.open -= 1
            stats.by_ip[ip] -= 1
            if not stats.by_ip[ip]:
                del stats.by_ip[ip]

    Swarm._handle_inbound_connection = handle_inbound  # type: ignore[method-assign]


async def _serve_inbound(swarm: Swarm, stats: InboundStats, stream: Any, maddr: Any) -> None:
    """Upgrade one inbound connection and hold it until it closes (not until the swarm does)."""
    remote = swarm._build_remote_multiaddr(stream)
    if remote is not None and not await swarm.connection_gate.is_allowed(remote):
        await _close_quietly(stream)
        return
    raw = RawConnection(stream, False)
    try:
        muxed = await swarm.upgrade_inbound_raw_conn(raw, maddr)
    except Exception as exc:  # handshake failures: garbage, time-outs, another swarm key
        stats.failed += 1
        log.debug("inbound connection on %s failed: %r", maddr, exc)
        await _close_quietly(raw)
        return
    stats.accepted += 1
    peer = muxed.peer_id.to_base58()
    caps = stats.caps
    if stats.by_peer[peer] >= caps.max_per_peer:
        stats.refused += 1
        stats.refusals.warning(
            "peer-cap", peer, "refused a connection from %s: it holds %d already (at most %d)",
            peer, stats.by_peer[peer], caps.max_per_peer)
        await _close_quietly(muxed)
        return
    stranger = admission_of_network(swarm).is_stranger(peer)
    if stranger and stats.strangers >= caps.max_strangers:
        stats.refused += 1
        stats.refusals.warning(
            "stranger-cap", peer, "refused a connection from %s: it is not authorized here "
            "and %d such connections are open (at most %d)",
            peer, stats.strangers, caps.max_strangers)
        await _close_quietly(muxed)
        return
    stats.by_peer[peer] += 1
    stats.strangers += stranger
    try:
        await muxed.event_closed.wait()  # type: ignore[attr-defined]
    finally:
        stats.strangers -= stranger
        stats.by_peer[peer] -= 1
        if not stats.by_peer[peer]:
            del stats.by_peer[peer]


def _install_no_reuseport() -> None:
    def set_reuse_flags(sock: Any) -> None:
        # SO_REUSEADDR only: a restarted node rebinds its port, a second process cannot.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

    libp2p_tcp._set_reuse_flags = set_reuse_flags


class WindowExceeded(RawConnError):
    """A peer sent a stream more than the receive window it was given."""


class _BoundedBuffer(bytearray):
    """A yamux stream's receive buffer that refuses bytes beyond the stream's window."""

    __slots__ = ("conn", "stream_id")
    conn: Any  # the Yamux connection
    stream_id: int

    def extend(self, data: Any) -> None:
        stream = self.conn.streams.get(self.stream_id)
        window = stream.target_recv_window if stream is not None else DEFAULT_WINDOW_SIZE
        if len(self) + len(data) > window:
            _window_violations.warning(
                "yamux-window", self.conn.peer_id, "closing the connection of %s: it sent "
                "%d bytes on a stream with a receive window of %d", self.conn.peer_id,
                len(self) + len(data), window)
            self.conn.event_shutting_down.set()  # yamux's read loop then closes the connection
            raise WindowExceeded("")  # empty: py-libp2p logs it as a normal shutdown
        super().extend(data)


class _BoundedBuffers(dict[int, bytearray]):
    def __init__(self, conn: Any) -> None:
        super().__init__()
        self.conn = conn

    def __setitem__(self, stream_id: int, buffer: bytearray) -> None:
        if not isinstance(buffer, _BoundedBuffer):
            bounded = _BoundedBuffer(buffer)
            bounded.conn = self.conn
            bounded.stream_id = stream_id
            buffer = bounded
        super().__setitem__(stream_id, buffer)


_window_violations = RateLimitedLog(log)


def _install_window_bound() -> None:
    """py-libp2p's yamux only logs a peer that exceeds a stream's receive window and keeps
    buffering: a stranger could make a node hold any amount. go-yamux closes such a
    session (ErrRecvWindowExceeded), and so do we."""
    shipped_init = Yamux.__init__

    def init(self: Yamux, *args: Any, **kwargs: Any) -> None:
        shipped_init(self, *args, **kwargs)
        self.stream_buffers = _BoundedBuffers(self)

    Yamux.__init__ = init  # type: ignore[method-assign]


# -- the byte path -----------------------------------------------------------------


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

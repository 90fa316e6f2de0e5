"""The node's durable state file: the core's PersistentState, replaced atomically.

Theory of operation: the core's Ready contract says "persist the state before
sending anything". A write goes to a temp file in the same directory, is
fsynced, renamed over the old file, and the directory is fsynced, so after a
crash (even kill -9 mid-write) the file holds either the old or the new state,
never a torn mix. The fsyncs run in a worker thread (they take milliseconds).

`last` is the state as it is on disk (loaded or last saved): what a node
exports must be durable first (the clients file, node/clients.py, is written
from it), and `wait_for` lets a caller wait until a change it made is on disk
before it acknowledges it (an admin role change).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import trio

from dscluster.core.node import PersistentState
from dscluster.errors import ConfigError, ProtocolError

log = logging.getLogger(__name__)

STATE_FILE = "state.cbor"


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class StateFile:
    """``state.cbor`` under a node's conf dir."""

    def __init__(self, conf_dir: str) -> None:
        self.path = os.path.join(conf_dir, STATE_FILE)
        self.last: PersistentState | None = None  # what the file holds now
        self._saved = trio.Event()  # set (and replaced) after every save

    def load(self) -> PersistentState | None:
        """The saved state, None if there is none; ConfigError if it is unreadable."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ConfigError(f"cannot read {self.path}: {exc}") from exc
        try:
            self.last = PersistentState.from_cbor(data)
        except ProtocolError as exc:
            raise ConfigError(f"{self.path} is corrupt: {exc}") from exc
        return self.last

    async def save(self, state: PersistentState) -> None:
        data = state.to_cbor()
        await trio.to_thread.run_sync(_write_atomic, self.path, data)
        self.last = state
        self._saved.set()
        self._saved = trio.Event()

    async def wait_saved(self) -> None:
        """Return after the next save."""
        await self._saved.wait()

    async def wait_for(self, done: Callable[[PersistentState], bool]) -> PersistentState:
        """Wait until the state on disk satisfies ``done``; returns that state."""
        while self.last is None or not done(self.last):
            await self._saved.wait()
        return self.last

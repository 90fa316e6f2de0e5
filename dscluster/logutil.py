"""Warnings a peer can trigger, logged at most once per interval per (kind, peer).

A hostile or broken peer can cause the same event thousands of times a second
(a refused stream, a bad frame, a refused connection). Each such warning goes
through one `RateLimitedLog`: the first event of a (kind, peer) pair is logged
at once, later ones within ``interval`` seconds are counted, and the next line
logged for that pair says how many were suppressed. Memory is bounded: past
``max_keys`` pairs the table is forgotten (a flood of fresh peer IDs then logs
at most one line per new ID until the table fills again, and the ``flood``
counter records that it happened).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Entry:
    last: float
    suppressed: int = 0


class RateLimitedLog:
    """``warning(kind, peer, fmt, *args)``: one line per (kind, peer) per interval."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0, *,
                 max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        self.clock = clock
        self._entries: dict[tuple[str, str], _Entry] = {}
        self.logged = 0
        self.suppressed = 0
        self.floods = 0

    def warning(self, kind: str, peer: object, fmt: str, *args: object) -> bool:
        return self.log(logging.WARNING, kind, peer, fmt, *args)

    def info(self, kind: str, peer: object, fmt: str, *args: object) -> bool:
        return self.log(logging.INFO, kind, peer, fmt, *args)

    def log(self, level: int, kind: str, peer: object, fmt: str, *args: object) -> bool:
        """Log now (True) or count the event as suppressed (False)."""
        key = (kind, str(peer))
        now = self.clock()
        entry = self._entries.get(key)
        if entry is not None and now - entry.last < self.interval:
            entry.suppressed += 1
            self.suppressed += 1
            return False
        if entry is None and len(self._entries) >= self.max_keys:
            self._entries.clear()
            self.floods += 1
        suppressed = entry.suppressed if entry is not None else 0
        self._entries[key] = _Entry(now)
        if suppressed:
            fmt += " (%d more like it suppressed since the last such line)"
            args = (*args, suppressed)
        self.logged += 1
        self.logger.log(level, fmt, *args)
        return True

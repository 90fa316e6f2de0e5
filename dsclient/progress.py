"""A one-line progress bar on stderr (bytes, rate, ETA), only on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


class Progress:
    """Call with bytes done so far; ``close()`` ends the line. Silent when not a TTY."""

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.label = label
        self.total = total
        self.start = time.monotonic()
        self._shown = 0.0
        self.done = 0

    def __call__(self, done: int) -> None:
        self.done = done
        now = time.monotonic()
        if not self.enabled or now - self._shown < 0.2:
            return
        self._shown = now
        self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-6)
        rate = self.done / elapsed
        text = f"\r{self.label} {_size(self.done)}"
        if self.total:
            pct = min(100.0, 100.0 * self.done / self.total)
            width = 24
            filled = int(width * pct / 100)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            text += f" / {_size(self.total)} [{'#' * filled}{'.' * (width - filled)}] {pct:3.0f}%"
            text += f"  {rate / 1e6:.1f} MB/s  ETA {eta:.0f}s"
        else:
            text += f"  {rate / 1e6:.1f} MB/s"
        self.stream.write(text + "\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write("\n")
            self.stream.flush()

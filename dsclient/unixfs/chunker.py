"""Fixed-size chunking, as Kubo's ``--chunker size-N``.

Kubo's size splitter fills every chunk completely (io.ReadFull) and only the
last one is short, so chunk boundaries depend on the byte offsets alone, never
on how the input arrived. ``Rechunker`` restores that property for a stream
that delivers pieces of any size.
"""

from __future__ import annotations

from dscluster.errors import BadRequestError

DEFAULT_CHUNKER = "size-262144"
# go-ipfs-chunker refuses chunks above 1 MiB: a block that large would not travel over bitswap.
MAX_CHUNK_SIZE = 1024 * 1024


def parse_chunker(spec: str) -> int:
    """The chunk size of a ``size-N`` spec; BadRequestError for anything else."""
    kind, _, arg = spec.partition("-")
    if kind != "size":
        raise BadRequestError(f"unsupported chunker {spec!r}: only size-N is implemented")
    if not arg.isdigit():
        raise BadRequestError(f"chunker {spec!r}: size must be a positive integer")
    size = int(arg)
    if not 0 < size <= MAX_CHUNK_SIZE:
        raise BadRequestError(f"chunker {spec!r}: size must be between 1 and {MAX_CHUNK_SIZE}")
    return size


class Rechunker:
    """Cuts pieces of any size into chunks of exactly ``size`` bytes (the last may be short)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._buffer = bytearray()

    def feed(self, piece: bytes) -> list[bytes]:
        self._buffer += piece
        full = len(self._buffer) // self._size * self._size
        if not full:
            return []
        view = memoryview(self._buffer)
        chunks = [bytes(view[i : i + self._size]) for i in range(0, full, self._size)]
        view.release()
        del self._buffer[:full]
        return chunks

    def flush(self) -> list[bytes]:
        rest, self._buffer = bytes(self._buffer), bytearray()
        return [rest] if rest else []

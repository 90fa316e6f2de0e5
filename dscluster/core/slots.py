"""Hash slots: which slot a key lives in, and sets of slots kept as ranges.

Theory of operation
-------------------
The key space is cut into SLOT_COUNT = 16384 hash slots. A key's slot is the
CRC-16/USB of its bytes (reflected polynomial 0xA001, init 0xFFFF, xor-out
0xFFFF; the checksum go-ds-cluster computes with howeyc/crc16's IBM table)
masked to 14 bits. Slots, not keys, are owned by nodes and moved between them.

A fresh cluster of N nodes splits the slots into N contiguous ranges exactly
as go-ds-cluster's InitSlotManager does, so configs written by either project
agree. A node may later own any set of slots; `SlotSet` keeps such a set as
sorted, disjoint, non-adjacent inclusive ranges, which is also how it is
serialized.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

SLOT_COUNT = 16384
SLOT_MASK = SLOT_COUNT - 1

Range = tuple[int, int]  # inclusive (start, end)


def _crc16_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc16_table()


def crc16(data: bytes) -> int:
    """CRC-16/USB of `data`."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


@functools.lru_cache(maxsize=4096)  # hot keys are routed again and again
def key_slot(key: str | bytes) -> int:
    """The hash slot of a datastore key (str keys are hashed as UTF-8)."""
    data = key.encode("utf-8") if isinstance(key, str) else key
    return crc16(data) & SLOT_MASK


def initial_ranges(n: int) -> list[Range]:
    """go-ds-cluster's InitSlotManager split of all slots over `n` nodes.

    Each node gets SLOT_COUNT // n slots; the remainder is handed out one slot
    at a time to the nodes where a float accumulator crosses 0.5 (the same float
    arithmetic as the Go code, so the ranges are bit-for-bit the same); the last
    range always ends at the last slot.
    """
    if not 1 <= n <= SLOT_COUNT:
        raise ValueError(f"node count must be in 1..{SLOT_COUNT}, got {n}")
    length = SLOT_COUNT // n
    remainder = SLOT_COUNT % n
    factor = n / remainder if remainder else 0.0
    handed_out = 0.0
    ranges: list[Range] = []
    start = 0
    for i in range(n):
        end = start + length - 1
        if remainder and (i + 1) - (handed_out + 0.5) * factor > 0:
            handed_out += 1
            end += 1
        if i == n - 1:
            end = SLOT_COUNT - 1
        ranges.append((start, end))
        start = end + 1
    return ranges


def normalize_ranges(ranges: Iterable[Range]) -> tuple[Range, ...]:
    """Sort, validate and coalesce overlapping or adjacent inclusive ranges."""
    checked = []
    for start, end in ranges:
        if not (isinstance(start, int) and isinstance(end, int)):
            raise ValueError(f"slot range bounds must be integers: {(start, end)!r}")
        if not 0 <= start <= end < SLOT_COUNT:
            raise ValueError(f"bad slot range {start}-{end}")
        checked.append((start, end))
    checked.sort()
    merged: list[Range] = []
    for start, end in checked:
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


def ranges_of(slots: Iterable[int]) -> tuple[Range, ...]:
    """Inclusive ranges covering exactly the given slots."""
    ranges: list[Range] = []
    for slot in sorted(set(slots)):
        if ranges and slot == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], slot)
        else:
            ranges.append((slot, slot))
    return normalize_ranges(ranges)


@dataclass(frozen=True)
class SlotSet:
    """An immutable set of slots, stored as normalized inclusive ranges."""

    ranges: tuple[Range, ...] = ()

    @classmethod
    def of(cls, ranges: Iterable[Range]) -> SlotSet:
        return cls(normalize_ranges(ranges))

    @classmethod
    def from_slots(cls, slots: Iterable[int]) -> SlotSet:
        return cls(ranges_of(slots))

    def __iter__(self) -> Iterator[int]:
        for start, end in self.ranges:
            yield from range(start, end + 1)

    def __len__(self) -> int:
        return sum(end - start + 1 for start, end in self.ranges)

    def __contains__(self, slot: object) -> bool:
        for start, end in self.ranges:  # a plain loop: routing asks this for every request
            if start <= slot <= end:  # type: ignore[operator]
                return True
        return False

    def __or__(self, other: SlotSet) -> SlotSet:
        return SlotSet(normalize_ranges(self.ranges + other.ranges))

    def __sub__(self, other: SlotSet) -> SlotSet:
        remove = set(other)
        return SlotSet.from_slots(s for s in self if s not in remove)

    def tail(self, count: int) -> tuple[SlotSet, SlotSet]:
        """(the rest, the highest `count` slots)."""
        keep: list[Range] = []
        take: list[Range] = []
        for start, end in reversed(self.ranges):
            size = end - start + 1
            if count >= size:
                take.append((start, end))
                count -= size
            elif count > 0:
                take.append((end - count + 1, end))
                keep.append((start, end - count))
                count = 0
            else:
                keep.append((start, end))
        return SlotSet.of(keep), SlotSet.of(take)

    def head(self, count: int) -> tuple[SlotSet, SlotSet]:
        """(the lowest `count` slots, the rest)."""
        rest, top = self.tail(max(0, len(self) - count))
        return rest, top

    def __str__(self) -> str:
        return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in self.ranges)

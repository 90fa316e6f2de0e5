"""The client's view of the slot table: which node serves each slot, and where it is.

Theory of operation: a client starts knowing a few nodes (from its config)
and learns the rest from the nodes themselves. A node's ``NodeInfo`` names
the slot ranges it serves; a ``MovedError`` names the node that serves one
slot now (and its addresses). Both are folded in here. Slots nobody has
claimed yet in our view are routed to any known node, whose MOVED answer
then teaches us the owner (Redis clients do the same with a stale table).
A node's ``NodeInfo`` also names the slots it holds a replica of:
``replicas_of`` gives the nodes a content-addressed block may be read from
when its primary cannot answer (doc/copies.md).

``probe_key`` finds a key whose slot is still unknown, so the client can
discover owners by asking a node about that key. Everything here is pure:
no I/O, no clock.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dscluster.core.slots import SLOT_COUNT, key_slot, ranges_of

PROBE_PREFIX = "/.dsclient-probe/"


@dataclass(frozen=True)
class NodeAddr:
    """A cluster node the client can dial."""

    peer_id: str
    addrs: tuple[str, ...]


class RoutingTable:
    def __init__(self) -> None:
        self._owner: list[str | None] = [None] * SLOT_COUNT
        self._replicas: list[tuple[str, ...]] = [()] * SLOT_COUNT  # besides the owner
        self._epoch: dict[str, int] = {}  # the epoch each node reported with its slots
        self.addrs: dict[str, tuple[str, ...]] = {}

    # -- learning --------------------------------------------------------------

    def add_node(self, peer_id: str, addrs: Iterable[str]) -> None:
        """Remember how to reach a node (addresses may carry /p2p/; kept bare)."""
        bare = tuple(dict.fromkeys(a.split("/p2p/")[0] for a in addrs))
        if bare or peer_id not in self.addrs:
            self.addrs[peer_id] = bare or self.addrs.get(peer_id, ())

    def apply_node_info(self, peer_id: str, addrs: Iterable[str],
                        ranges: Iterable[tuple[int, int]], epoch: int = 0,
                        replicas: Iterable[tuple[int, int]] = ()) -> None:
        """A node said it serves ``ranges`` and holds replicas of ``replicas``: those
        slots are its; slots it no longer lists stop pointing at it (we do not know
        their owner yet)."""
        self.add_node(peer_id, addrs)
        self._epoch[peer_id] = epoch
        served = _slots_in(ranges)
        for slot in served:
            self._owner[slot] = peer_id
        for slot, owner in enumerate(self._owner):
            if owner == peer_id and slot not in served:
                self._owner[slot] = None
        held = _slots_in(replicas)
        for slot, reps in enumerate(self._replicas):
            if (slot in held) != (peer_id in reps):
                self._replicas[slot] = (tuple(p for p in reps if p != peer_id)
                                        + ((peer_id,) if slot in held else ()))

    def apply_moved(self, slot: int, peer_id: str, addrs: Sequence[str]) -> None:
        if 0 <= slot < SLOT_COUNT and peer_id:
            self._owner[slot] = peer_id
            self.add_node(peer_id, addrs)

    def load(self, nodes: Iterable[tuple[str, Iterable[tuple[int, int]], Iterable[str]]]) -> None:
        """Start from a saved table (a client config's ``nodes``)."""
        for peer_id, ranges, addrs in nodes:
            self.apply_node_info(peer_id, addrs, ranges)

    # -- asking ------------------------------------------------------------------

    def owner(self, slot: int) -> str | None:
        return self._owner[slot]

    def owner_of(self, key: str) -> str | None:
        return self._owner[key_slot(key)]

    def replicas_of(self, key: str) -> tuple[str, ...]:
        """The nodes said to hold a replica of the key's slot (besides its owner)."""
        slot = key_slot(key)
        return tuple(p for p in self._replicas[slot] if p != self._owner[slot])

    def route(self, key: str) -> tuple[int, str | None]:
        """(slot, the node to ask): the owner, or any known node when the owner is unknown."""
        slot = key_slot(key)
        owner = self._owner[slot]
        if owner is None:
            owner = self.any_node(slot)
        return slot, owner

    def any_node(self, salt: int = 0) -> str | None:
        known = sorted(self.addrs)
        return known[salt % len(known)] if known else None

    def unknown_slots(self) -> list[int]:
        return [s for s, owner in enumerate(self._owner) if owner is None]

    def is_complete(self) -> bool:
        return None not in self._owner

    def owners(self) -> list[str]:
        """Every node that serves at least one slot, in a stable order."""
        return sorted({o for o in self._owner if o is not None})

    def ranges_of(self, peer_id: str) -> tuple[tuple[int, int], ...]:
        return ranges_of(s for s, o in enumerate(self._owner) if o == peer_id)

    def nodes(self) -> list[NodeAddr]:
        return [NodeAddr(p, self.addrs[p]) for p in sorted(self.addrs)]


def _slots_in(ranges: Iterable[tuple[int, int]]) -> set[int]:
    """The slots of inclusive ranges; a garbled range teaches nothing and is skipped."""
    return {slot for start, end in ranges if 0 <= start <= end < SLOT_COUNT
            for slot in range(start, end + 1)}


def probe_key(slots: Iterable[int], limit: int = 1 << 20) -> str | None:
    """A key whose slot is one of ``slots`` (None if none is found within ``limit`` tries).

    Expected tries are 16384 / len(slots), so asking for a whole unknown range is cheap.
    """
    wanted = set(slots)
    if not wanted:
        return None
    for i in itertools.islice(itertools.count(), limit):
        key = f"{PROBE_PREFIX}{i}"
        if key_slot(key) in wanted:
            return key
    return None

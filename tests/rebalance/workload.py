"""A client load that runs while slots move, with a log of acknowledged operations.

Each task owns its keys (no two tasks touch one key), so the log decides what
every key must hold at the end: its last acknowledged value, or absent after
an acknowledged delete. An operation that failed (not acknowledged) may or may
not have taken effect, so its value is also accepted for that key.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import trio

from dscluster.errors import DSClusterError, NotFoundError
from dscluster.testing.cluster import StoreClient

MAX_OPS = 400  # per task: bounded however long the move takes


@dataclass
class Ledger:
    acked: dict[str, bytes | None] = field(default_factory=dict)  # None: deleted
    maybe: dict[str, set[bytes | None]] = field(default_factory=dict)  # unacknowledged outcomes
    ops: int = 0
    failures: int = 0
    bad_reads: list[str] = field(default_factory=list)

    def allowed(self, key: str) -> set[bytes | None]:
        return {self.acked.get(key)} | self.maybe.get(key, set())


class Workload:
    def __init__(self, client: StoreClient, stable: dict[str, bytes], seed: int) -> None:
        self.client = client
        self.stable = stable  # preloaded keys nobody writes: readers check them
        self.ledger = Ledger()
        self.stop = trio.Event()
        self._rng = random.Random(seed)

    async def _op(self, key: str, value: bytes | None) -> None:
        led = self.ledger
        led.ops += 1
        try:
            if value is None:
                await self.client.delete(key)
            else:
                await self.client.put(key, value)
        except DSClusterError:
            led.failures += 1
            led.maybe.setdefault(key, set()).add(value)
            return
        led.acked[key] = value
        led.maybe.pop(key, None)  # a later acknowledged write settles the key

    async def writer(self, name: str) -> None:
        for i in range(MAX_OPS):
            if self.stop.is_set():
                return
            await self._op(f"/load/{name}/{i}", f"{name}-{i}".encode())
            await trio.sleep(0.005)

    async def overwriter(self, name: str, nkeys: int = 20) -> None:
        for i in range(MAX_OPS):
            if self.stop.is_set():
                return
            await self._op(f"/load/{name}/{i % nkeys}", f"{name}-{i}".encode())
            await trio.sleep(0.005)

    async def deleter(self, name: str) -> None:
        for i in range(MAX_OPS // 2):
            if self.stop.is_set():
                return
            key = f"/load/{name}/{i}"
            await self._op(key, f"{name}-{i}".encode())
            await self._op(key, None)
            await trio.sleep(0.005)

    async def reader(self) -> None:
        keys = sorted(self.stable)
        for _ in range(MAX_OPS):
            if self.stop.is_set():
                return
            key = self._rng.choice(keys)
            try:
                got = await self.client.get(key)
            except NotFoundError:
                self.ledger.bad_reads.append(f"{key}: not found")
                continue
            except DSClusterError:
                self.ledger.failures += 1
                continue
            if got != self.stable[key]:
                self.ledger.bad_reads.append(f"{key}: wrong value")
            await trio.sleep(0.005)

    def start(self, nursery: trio.Nursery) -> None:
        for i in range(2):
            nursery.start_soon(self.writer, f"w{i}")
        nursery.start_soon(self.overwriter, "o0")
        nursery.start_soon(self.deleter, "d0")
        for _ in range(2):
            nursery.start_soon(self.reader)

    def wrong_keys(self, final: dict[str, bytes | None]) -> list[str]:
        """Keys whose final value the log does not allow."""
        led = self.ledger
        return [f"{k}: {final.get(k)!r} not in {led.allowed(k)!r}"
                for k in sorted(set(led.acked) | set(led.maybe))
                if final.get(k) not in led.allowed(k)]

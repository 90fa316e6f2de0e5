"""CoreDriver: the one place where the sans-IO ClusterCore meets trio.

Theory of operation
-------------------
Every mutation of the core (an inbound message, a tick, an admin call, the
outcome of a data action) runs under one lock, and so does the Ready cycle,
in the order the core's docstring numbers:

  1. persist ready.state durably (StateFile: temp + fsync + rename);
  2. hand ready.messages to the gossip links (non-blocking queues);
  3. start ready.actions (ListKeys/MoveKeys) as tasks of the migrator,
     which report back through keys_listed / keys_moved / move_failed;
  4. advance(ready).

Holding the lock across the fsync is what keeps a message stepped in during
the write from being acknowledged by a state that was never persisted.

The driver also keeps `stable`, one byte per slot: 1 where this node owns the
slot and no migration touches it (none while the node is withdrawn). The store service looks there first, so a
request for a stable slot costs a bytearray index instead of a core route().
It is recomputed after every mutation that changed the table or the
migrations (a cheap fingerprint decides).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import trio
from trio import TaskStatus  # type: ignore[attr-defined]  # trio-typing's stubs lack it

from dscluster.core.gossip import Liveness
from dscluster.core.messages import Message
from dscluster.core.node import Action, ClusterCore
from dscluster.core.slots import SLOT_COUNT, SlotSet
from dscluster.errors import BadRequestError
from dscluster.node.statefile import StateFile

log = logging.getLogger(__name__)


class Outbox(Protocol):
    def send(self, peer: str, msg: Message) -> None: ...


ActionRunner = Callable[[Action], Awaitable[None]]


class CoreDriver:
    def __init__(self, core: ClusterCore, state_file: StateFile, outbox: Outbox,
                 tick_interval: float = 0.5) -> None:
        self.core = core
        self._state_file = state_file
        self._outbox = outbox
        self._tick_interval = tick_interval
        self._lock = trio.Lock()
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._run_action: ActionRunner | None = None
        self.stable = bytearray(SLOT_COUNT)
        self._fingerprint: Any = None
        self._liveness: dict[str, Liveness] = {}
        self._refresh()

    # -- queries -------------------------------------------------------------

    @property
    def me(self) -> str:
        return self.core.me

    def addrs_of(self, peer: str) -> list[str]:
        node = self.core.table.nodes.get(peer)
        return list(node.addrs) if node else []

    def is_member(self, peer: str) -> bool:
        return peer in self.core.table.nodes

    # -- mutations -------------------------------------------------------------

    async def step(self, sender: str, msg: Message) -> None:
        """Feed one inbound message (ProtocolError propagates to the link)."""
        async with self._lock:
            try:
                self.core.step(sender, msg)
            finally:
                self._after_mutation()

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a core method (admin call or action outcome) under the lock."""
        async with self._lock:
            try:
                return fn(*args)
            finally:
                self._after_mutation()

    async def start_migration(self, slots: SlotSet, target: str) -> int:
        mid: int = await self.call(self.core.start_migration, slots, target)
        log.info("migration %d: moving slots %s to %s", mid, slots, target)
        return mid

    async def report(self, fn: Callable[..., None], *args: Any) -> None:
        """An action outcome; a migration that ended meanwhile is not an error."""
        try:
            await self.call(fn, *args)
        except BadRequestError as exc:
            log.info("dropping a stale data-action outcome: %s", exc)

    def _after_mutation(self) -> None:
        self._refresh()
        self._wake.set()

    def _refresh(self) -> None:
        core = self.core
        fp = (core.table.digest(), tuple((m.mid, m.source, m.phase) for m in core.migrations),
              core.withdrawn)
        if fp == self._fingerprint:
            return
        self._fingerprint = fp
        stable = bytearray(SLOT_COUNT)
        for start, end, _, owner in () if core.withdrawn else core.table.runs():
            if owner == core.me:
                stable[start:end + 1] = b"\x01" * (end - start + 1)
        for m in core.migrations:
            for start, end in m.slots.ranges:
                stable[start:end + 1] = bytes(end - start + 1)
        self.stable = stable

    # -- the loop ---------------------------------------------------------------

    async def run(self, run_action: ActionRunner, *,
                  task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._run_action = run_action
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._process_ready()  # the first Ready persists a bootstrapped state
            nursery.start_soon(self._ticker)
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                await self._process_ready()

    async def _ticker(self) -> None:
        while True:
            await trio.sleep(self._tick_interval)
            async with self._lock:
                self.core.tick()
                self._after_mutation()
            self._log_liveness()

    async def _process_ready(self) -> None:
        async with self._lock:
            if not self.core.has_ready():
                return
            ready = self.core.ready()
            if ready.state is not None:
                await self._state_file.save(ready.state)
            for peer, msg in ready.messages:
                self._outbox.send(peer, msg)
            assert self._nursery is not None and self._run_action is not None
            for action in ready.actions:
                self._nursery.start_soon(self._run_action, action)
            self.core.advance(ready)
            self._refresh()

    def _log_liveness(self) -> None:
        for peer in self._peers():
            now = self.core.liveness(peer)
            before = self._liveness.get(peer, Liveness.UP)
            if now is not before:
                if now is Liveness.UP:
                    log.info("peer %s is up", peer)
                else:
                    log.warning("peer %s is %s", peer, now.value.upper())
            self._liveness[peer] = now

    def _peers(self) -> Sequence[str]:
        return [p for p in self.core.table.data_nodes() if p != self.me]

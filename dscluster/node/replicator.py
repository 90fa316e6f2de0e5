"""Replicator: a data node's side of copies, both as primary and as copy.

Theory of operation
-------------------
A slot's copy set is in the table (primary first, core/table.py). The store
service writes a key on the primary (here, under the key's lock), then hands
the write to ``forward``: one ``Replicate`` request per other copy, all at
once, each bounded by ``timeout``. The client's acknowledgement waits for
every copy's Ok, so an acknowledged write is on every copy of the slot's set
(doc/copies.md). A copy that does not answer in time, cannot be reached, or
refuses makes the write *unknown* for the client: it gets UnavailableError
saying so, and may retry (the primary keeps its own copy of the write; a later
repair brings copies that disagree back together). Nothing is acknowledged on
fewer copies than the set names: a primary whose copy is down stops
acknowledging writes of that copy's slots until the copy returns; once
gossip holds the copy PFAIL or FAIL it fails them at once, without a dial.

On the copy, ``check`` runs the core's ``CopyGuard`` (core/replication.py;
elections this node stands for or votes in raise its fences, core/changes.py)
for every slot of a ``Replicate``: a write from a primary whose epoch is
older than one this copy knows for the slot, or from another primary at a
known epoch, is refused. The table gives the guard what it knows; a newer
epoch than the table's raises the guard's fence.

The key's lock is held on the primary across the forward, so two writes of
one key reach every copy in the order the primary applied them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import trio

from dscluster.core.election import Config
from dscluster.core.gossip import Liveness
from dscluster.core.replication import Replicate, ReplicateRefused
from dscluster.core.slots import SLOT_COUNT, SlotSet, key_slot
from dscluster.errors import BadRequestError, DSClusterError, FencedError, UnavailableError
from dscluster.node.driver import CoreDriver
from dscluster.wire import messages as wm

log = logging.getLogger(__name__)

REPLICATE_TIMEOUT = 10.0  # seconds a copy has to confirm a write
CallPeer = Callable[[str, wm.Request], Awaitable[wm.Response]]
Op = tuple[str, bytes | None]  # (key, value); None: a delete


@dataclass
class _ToCopy:
    """The writes one copy is sent: indices into the caller's ops."""

    slots: dict[int, int] = field(default_factory=dict)  # slot -> the primary's epoch
    indices: list[int] = field(default_factory=list)


class Replicator:
    def __init__(self, driver: CoreDriver, call_peer: CallPeer,
                 timeout: float = REPLICATE_TIMEOUT) -> None:
        self._driver = driver
        self._call_peer = call_peer
        self.timeout = timeout
        self.forwarded = 0  # writes a copy confirmed (for metrics and tests)
        self.refused = 0  # Replicate requests this copy refused
        # A copy being filled (node/refill.py), per slot: sent every write like an
        # in-sync copy, and a write it does not confirm is not acknowledged.
        self.learners: dict[int, str] = {}
        self.learner_failures = 0  # writes a learner did not confirm (the refill starts over)
        # The copy's side: slot -> time.monotonic() of the last write taken of a slot
        # whose copy set does not name this node (it is being filled as a learner):
        # node/sweep.py leaves those keys alone.
        self.learned: dict[int, float] = {}

    # -- the primary --------------------------------------------------------------

    def copies_to_feed(self, slot: int) -> tuple[str, ...]:
        """The other copies of a slot this node is the table's primary of (else ())."""
        table = self._driver.core.table
        if table.owner(slot) != self._driver.core.me:
            return ()  # an ASKING import or a forwarded delete: the owner replicates
        learner = self.learners.get(slot)
        replicas = table.replicas(slot)
        return replicas if learner is None or learner in replicas else (*replicas, learner)

    async def forward(self, ops: Sequence[Op]) -> dict[int, DSClusterError]:
        """Send written ops to their slots' other copies; the errors by op index.

        An empty answer: every copy of every op's slot confirmed it."""
        table = self._driver.core.table
        if not table.has_replicas() and not self.learners:  # copies 1: nothing to do
            return {}
        by_copy: dict[str, _ToCopy] = {}
        for i, (key, _value) in enumerate(ops):
            slot = key_slot(key)
            for peer in self.copies_to_feed(slot):
                to = by_copy.setdefault(peer, _ToCopy())
                to.slots[slot] = table.claim(slot)[0]
                to.indices.append(i)
        errors: dict[int, DSClusterError] = {}
        if not by_copy:
            return errors

        async def feed(peer: str, to: _ToCopy) -> None:
            liveness = self._driver.core.liveness(peer)
            if liveness is not Liveness.UP:  # gossip holds it down: do not wait for a dial
                fail(peer, to, f"it is {liveness.value.upper()} in this node's view")
                return
            puts = tuple((ops[i][0], ops[i][1]) for i in to.indices if ops[i][1] is not None)
            deletes = tuple(ops[i][0] for i in to.indices if ops[i][1] is None)
            request = wm.Replicate(0, tuple(to.slots.items()), puts, deletes)  # type: ignore[arg-type]
            try:
                with trio.fail_after(self.timeout):
                    response = await self._call_peer(peer, request)
                if not isinstance(response, wm.Ok):
                    raise BadRequestError(f"unexpected {type(response).__name__}")
            except trio.TooSlowError:
                reason = f"no answer within {self.timeout:g} s"
            except DSClusterError as exc:
                reason = str(exc).splitlines()[0][:160]
                if isinstance(exc, FencedError):
                    # The copy voted in an election above this slot's epoch that came
                    # to nothing: renew the same copy set above it (core/changes.py).
                    await self._driver.call(self._driver.core.request_renew,
                                            SlotSet.from_slots(to.slots))
            else:
                self.forwarded += len(to.indices)
                return
            fail(peer, to, reason)

        def fail(peer: str, to: _ToCopy, reason: str) -> None:
            log.warning("copy %s did not confirm %d writes: %s", peer, len(to.indices), reason)
            if peer in self.learners.values():
                self.learner_failures += 1
            for i in to.indices:
                errors[i] = UnavailableError(
                    f"slot {key_slot(ops[i][0])}: its copy on {peer} did not confirm the write "
                    f"({reason}); the write may or may not be kept: retry")

        async with trio.open_nursery() as nursery:
            for peer, to in by_copy.items():
                nursery.start_soon(feed, peer, to)
        return errors

    # -- the copy ---------------------------------------------------------------------

    def check(self, primary: str, request: wm.Replicate) -> None:
        """Raise unless this node may take ``request`` from ``primary``."""
        table = self._driver.core.table
        if self._driver.core.withdrawn:  # it would look in sync while missing older writes
            raise UnavailableError("this copy lost its data (a wiped disk) and takes no "
                                   "write until its slots have copies elsewhere")
        epochs = dict(request.slots)
        for key in (*(k for k, _ in request.puts), *request.deletes):
            if key_slot(key) not in epochs:
                raise BadRequestError(f"replicated key {key} is of slot {key_slot(key)}, "
                                      "which the request does not list")
        for slot, epoch in epochs.items():
            if not 0 <= slot < SLOT_COUNT:
                raise BadRequestError(f"slot {slot} out of range")
            claim_epoch, owner = table.claim(slot)
            guard = self._driver.core.copy_guard  # fenced by elections too
            guard.learn(slot, Config(claim_epoch, table.copies(slot) if owner else ()))
            verdict = guard.on_replicate(Replicate(request.id, slot, epoch, primary))
            if isinstance(verdict, ReplicateRefused):
                self.refused += 1
                raise FencedError(f"slot {slot}: this copy knows a newer configuration "
                                  f"than epoch {epoch} of {primary}")
        me = self._driver.core.me
        now = time.monotonic()
        for slot in epochs:
            if me not in table.copies(slot):
                self.learned[slot] = now

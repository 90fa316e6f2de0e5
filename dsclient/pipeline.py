"""Coalescing per-node pipelines: many concurrent key operations, few messages.

Theory of operation (Redis pipelining, done for the caller): each node has a
queue of pending key operations and one sender task. The sender waits for the
first operation, then takes EVERYTHING waiting and packs it into batched
store requests (``GetMany``, ``HasMany``, ``GetSizeMany``, ``Batch``), at most
``max_messages`` of them in flight per node. While those are in flight, new
operations pile up and travel together in the next messages. A message costs
py-libp2p about 0.37 ms whatever it carries, so 64 concurrent 4 KiB gets
become a handful of messages instead of 64.

Answers are per key (``OkMany``): each operation gets its value or its own
error (not found, moved, ask...). A whole message that fails (the node is
down, the stream broke) fails every operation in it with that error; the
client decides what to retry. ``pack`` is pure and keeps messages under the
frame limit: gets are capped by count (their values come back in one frame),
puts by bytes.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import trio

from dscluster.errors import BadRequestError, DSClusterError, ProtocolError
from dscluster.wire import messages as wm
from dscluster.wire.framing import FRAME_LIMIT_TEXT

log = logging.getLogger(__name__)


class OpKind(enum.Enum):
    GET = "get"
    HAS = "has"
    SIZE = "size"
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True)
class PackLimits:
    max_gets: int = 32  # keys per GetMany: 32 blocks of 256 KiB answer in 8 MiB
    max_keys: int = 4096  # keys per HasMany / GetSizeMany / Batch
    max_put_bytes: int = 8 * 1024 * 1024  # value bytes per Batch (frames are 16 MiB)


@dataclass(eq=False)
class Op:
    """One key operation and, once done, its result or error."""

    kind: OpKind
    key: str
    value: bytes | None = None
    asking: bool = False
    done: trio.Event = field(default_factory=trio.Event)
    result: object = None
    error: DSClusterError | None = None
    # bookkeeping for the client's retries
    redirects: int = 0
    failures: int = 0
    peer: str = ""
    on_done: Callable[[], None] | None = None  # frees the client's in-flight slot

    def finish(self, result: object) -> None:
        self.result = result
        self._done()

    def fail(self, error: DSClusterError) -> None:
        self.error = error
        self._done()

    def _done(self) -> None:
        if self.on_done is not None:
            self.on_done()
            self.on_done = None
        self.done.set()

    def reset(self) -> None:
        """Make the op ready to be sent once more (its counters carry over)."""
        self.done = trio.Event()
        self.result = None
        self.error = None


def single_request(op: Op) -> wm.Request:
    """The one-key request for ``op`` (used for ASK redirects, which carry ``asking``)."""
    if op.kind is OpKind.GET:
        return wm.Get(0, op.key, op.asking)
    if op.kind is OpKind.HAS:
        return wm.Has(0, op.key, op.asking)
    if op.kind is OpKind.SIZE:
        return wm.GetSize(0, op.key, op.asking)
    if op.kind is OpKind.PUT:
        assert op.value is not None
        return wm.Put(0, op.key, op.value, op.asking)
    return wm.Delete(0, op.key, op.asking)


def _chunks(ops: list[Op], size: int) -> Iterable[list[Op]]:
    for i in range(0, len(ops), size):
        yield ops[i:i + size]


def pack(ops: Iterable[Op], limits: PackLimits = PackLimits()) -> list[tuple[wm.Request, list[Op]]]:
    """Batched requests carrying ``ops``, each with the ops its answers belong to, in order."""
    by_kind: dict[OpKind, list[Op]] = {k: [] for k in OpKind}
    for op in ops:
        by_kind[op.kind].append(op)
    out: list[tuple[wm.Request, list[Op]]] = []
    for chunk in _chunks(by_kind[OpKind.GET], limits.max_gets):
        out.append((wm.GetMany(0, tuple(o.key for o in chunk)), chunk))
    for chunk in _chunks(by_kind[OpKind.HAS], limits.max_keys):
        out.append((wm.HasMany(0, tuple(o.key for o in chunk)), chunk))
    for chunk in _chunks(by_kind[OpKind.SIZE], limits.max_keys):
        out.append((wm.GetSizeMany(0, tuple(o.key for o in chunk)), chunk))
    # Puts and deletes share Batch messages; a Batch answers puts first, then deletes.
    writes = by_kind[OpKind.PUT] + by_kind[OpKind.DELETE]
    group: list[Op] = []
    size = 0
    for op in writes:
        n = len(op.value or b"") + len(op.key)
        if group and (size + n > limits.max_put_bytes or len(group) >= limits.max_keys):
            out.append(_batch(group))
            group, size = [], 0
        group.append(op)
        size += n
    if group:
        out.append(_batch(group))
    return out


def _batch(group: list[Op]) -> tuple[wm.Request, list[Op]]:
    puts = [o for o in group if o.kind is OpKind.PUT]
    deletes = [o for o in group if o.kind is OpKind.DELETE]
    request = wm.Batch(0, tuple((o.key, o.value or b"") for o in puts),
                       tuple(o.key for o in deletes))
    return request, puts + deletes


def settle(ops: list[Op], response: wm.Response) -> None:
    """Hand each op its item of an ``OkMany`` answer."""
    if not isinstance(response, wm.OkMany) or len(response.results) != len(ops):
        got = type(response).__name__
        n = len(response.results) if isinstance(response, wm.OkMany) else 0
        error = ProtocolError(f"expected OkMany with {len(ops)} results, got {got} ({n})")
        for op in ops:
            op.fail(error)
        return
    for op, item in zip(ops, response.results, strict=True):
        if isinstance(item, wm.ErrorInfo):
            op.fail(item.to_exception())
        else:
            op.finish(item)


Send = Callable[[wm.Request], Awaitable[wm.Response]]


class NodePipe:
    """The queue and sender task of one node; ``submit`` never blocks."""

    def __init__(self, peer_id: str, send: Send, *, max_messages: int = 8,
                 limits: PackLimits = PackLimits()) -> None:
        self.peer_id = peer_id
        self._send = send
        self._limits = limits
        self._slots = trio.Semaphore(max_messages)
        self._in, self._out = trio.open_memory_channel[Op](math.inf)
        self.messages_sent = 0
        self.ops_sent = 0

    def submit(self, op: Op) -> None:
        op.peer = self.peer_id
        self._in.send_nowait(op)

    async def run(self) -> None:
        """The sender: drain, pack, send; runs until cancelled."""
        async with trio.open_nursery() as nursery:
            while True:
                ops = [await self._out.receive()]
                await self._slots.acquire()  # wait for room: meanwhile more ops arrive
                while True:
                    try:
                        ops.append(self._out.receive_nowait())
                    except trio.WouldBlock:
                        break
                messages = pack(ops, self._limits)
                for i, (request, group) in enumerate(messages):
                    if i:
                        await self._slots.acquire()
                    nursery.start_soon(self._exchange, request, group)

    async def _exchange(self, request: wm.Request, ops: list[Op]) -> None:
        try:
            self.messages_sent += 1
            self.ops_sent += len(ops)
            await self._send_and_settle(request, ops)
        finally:
            self._slots.release()

    async def _send_and_settle(self, request: wm.Request, ops: list[Op]) -> None:
        try:
            response = await self._send(request)
        except BadRequestError as exc:
            if len(ops) > 1 and isinstance(request, wm.GetMany) and FRAME_LIMIT_TEXT in str(exc):
                # Large values whose answers together exceed a frame: ask in halves.
                half = len(ops) // 2
                for group in (ops[:half], ops[half:]):
                    keys = tuple(op.key for op in group)
                    await self._send_and_settle(wm.GetMany(0, keys, asking=request.asking),
                                                group)
                return
            for op in ops:
                op.fail(exc)
            return
        except DSClusterError as exc:
            for op in ops:
                op.fail(exc)
            return
        settle(ops, response)


"""StoreService: the store protocol's handler on a data node.

Theory of operation
-------------------
The RpcServer hands each request here with the caller's Noise-verified peer
ID. Authorization comes first, by the node's Authorizer (auth.py): reads
need READ_ONLY, writes READ_WRITE (members always may: the migrator of another
node writes here with ASKING); everyone else gets UnauthorizedError. With
`read_only_client` no client writes, with `disable_delete` no client deletes.

Each keyed operation holds the key's lock (keylocks.py) around routing and
the datastore call, as the migration rule in core/node.py requires. Routing
first reads one byte of the driver's `stable` map: a slot this node owns and
no migration touches is served at once. Only a migrating, importing or
foreign slot asks the core (route(), with whether the key exists here), and
an Ask or Moved decision becomes AskError/MovedError carrying the peer's
addresses. A delete of a key whose slot is migrating first deletes the key at
the target (which may hold a copy from an earlier batch), then here.

Batched requests are answered per key: one key's error does not fail the
others. Queries stream this node's local entries.

Copies (doc/copies.md, node/replicator.py): on a slot's primary every write
is handed to the slot's other copies while the key's lock is held, and
answered Ok only when each confirmed it. A `Replicate` from a member is a
copy's side: checked against the copy's fence, then stored in one batch. A
Get with `any_copy` is served by a node holding any copy of the slot.

Info carries the node's key count and bytes from a keys-only scan that
count_keys repeats every minute (a counter kept on put/delete would drift on
overwrites and on moves; a scan is exact when it ends and costs one pass).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import trio
from libp2p.peer.id import ID

from dscluster import __version__
from dscluster.core.migration import Migration
from dscluster.core.routing import Ask, Moved, Serve
from dscluster.core.slots import key_slot
from dscluster.core.table import NodeRole
from dscluster.datastore import Key
from dscluster.datastore.query import Query
from dscluster.errors import (
    AskError,
    BadRequestError,
    DSClusterError,
    MovedError,
    UnavailableError,
)
from dscluster.node.auth import Authorizer, Role
from dscluster.node.driver import CoreDriver
from dscluster.node.keylocks import KeyLocks
from dscluster.node.replicator import Op, Replicator
from dscluster.node.slotindex import SlotIndexedDatastore, check_user_key
from dscluster.wire import messages as wm

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_CHUNK_ENTRIES = 4096  # entries per query chunk, whatever the client asks
MAX_CHUNK_BYTES = 4 * 1024 * 1024  # keys and values per query chunk (a frame is 16 MiB)
ForwardDelete = Callable[[str, str], Awaitable[None]]  # (target peer, key)


class StoreService:
    def __init__(self, driver: CoreDriver, datastore: SlotIndexedDatastore, locks: KeyLocks, *,
                 auth: Authorizer, forward_delete: ForwardDelete,
                 my_addrs: Callable[[], list[str]], replicator: Replicator) -> None:
        self._driver = driver
        self._replicator = replicator
        self._ds = datastore
        self._locks = locks
        self.auth = auth
        self._forward_delete = forward_delete
        self._my_addrs = my_addrs
        self.key_count = -1  # -1 until count_keys finishes its first scan
        self.byte_count = -1

    async def count_keys(self, interval: float = 60.0) -> None:
        """Refresh key_count and byte_count with a keys-only scan, forever."""
        while True:
            await self.recount()
            await trio.sleep(interval)

    async def recount(self) -> None:
        """One keys-only scan of the datastore into key_count and byte_count."""
        keys = size = 0
        try:
            async for e in await self._ds.query(Query(keys_only=True, returns_sizes=True)):
                keys += 1
                size += max(e.size, 0)
        except DSClusterError as exc:  # a closing datastore: keep the last figures
            log.debug("key count failed: %s", exc)
            return
        self.key_count, self.byte_count = keys, size

    # -- authorization ---------------------------------------------------------

    def _authorize(self, peer: ID, request: wm.Request) -> Role:
        name = peer.to_base58()
        if isinstance(request, wm.Replicate):
            return self.auth.require(name, Role.MEMBER)
        if isinstance(request, wm.Put | wm.Delete | wm.Batch):
            deletes = isinstance(request, wm.Delete) or (
                isinstance(request, wm.Batch) and bool(request.deletes))
            return self.auth.require_write(name, deletes=deletes)
        return self.auth.require(name, Role.READ_ONLY)

    # -- routing -------------------------------------------------------------------

    async def _route(self, key: str, asking: bool, any_copy: bool = False) -> Serve:
        """Serve() or raise Ask/MovedError; the caller holds the key's lock."""
        slot = key_slot(key)
        if self._driver.stable[slot]:
            return _SERVE
        core = self._driver.core
        if core.withdrawn and core.me in core.table.copies(slot):
            raise UnavailableError(
                f"slot {slot}: this node lost its data (a wiped disk) and serves none of its "
                "copies until the others take over; retry")
        if any_copy and core.me in core.table.copies(slot):
            return _SERVE
        # Whether the key exists here matters only where the answer would be
        # Ask (a slot migrating out): look it up there alone.
        decision = core.route(key, exists_locally=False, asking=asking)
        if isinstance(decision, Ask) and await self._ds.has(key):
            decision = core.route(key, exists_locally=True, asking=asking)
        if isinstance(decision, Serve):
            return decision
        addrs = self._driver.addrs_of(decision.peer)
        if isinstance(decision, Ask):
            raise AskError(decision.slot, decision.peer, addrs)
        assert isinstance(decision, Moved)
        raise MovedError(decision.slot, decision.peer, addrs)

    async def _keyed(self, key: str, asking: bool, op: Callable[[str, Serve], Awaitable[T]],
                     any_copy: bool = False) -> T:
        clean = str(Key(key))
        async with self._locks.hold((clean,)):
            decision = await self._route(clean, asking, any_copy)
            return await op(clean, decision)

    async def _to_copies(self, ops: Sequence[Op]) -> None:
        """Hand one written key to its slot's other copies; raise if one did not confirm."""
        errors = await self._replicator.forward(ops)
        if errors:
            raise next(iter(errors.values()))

    # -- requests ----------------------------------------------------------------------

    async def handle(self, peer: ID, request: wm.Request) -> wm.Response:
        self._authorize(peer, request)
        rid = request.id
        match request:
            case wm.Get(key=key, asking=asking, any_copy=any_copy):
                return wm.Ok(rid, await self._keyed(key, asking, self._get, any_copy))
            case wm.Has(key=key, asking=asking):
                return wm.Ok(rid, await self._keyed(key, asking, self._has))
            case wm.GetSize(key=key, asking=asking):
                return wm.Ok(rid, await self._keyed(key, asking, self._get_size))
            case wm.Put(key=key, value=value, asking=asking):
                async def put(k: str, _d: Serve) -> None:
                    await self._ds.put(k, value)
                    await self._to_copies([(k, value)])
                await self._keyed(key, asking, put)
                return wm.Ok(rid)
            case wm.Delete(key=key, asking=asking):
                await self._keyed(key, asking, self._delete)
                return wm.Ok(rid)
            case wm.GetMany(keys=keys, asking=asking, any_copy=any_copy):
                return wm.OkMany(rid, await self._many(keys, asking, self._get, any_copy))
            case wm.HasMany(keys=keys, asking=asking):
                return wm.OkMany(rid, await self._many(keys, asking, self._has))
            case wm.GetSizeMany(keys=keys, asking=asking):
                return wm.OkMany(rid, await self._many(keys, asking, self._get_size))
            case wm.Batch():
                return wm.OkMany(rid, await self._batch(request))
            case wm.Info():
                return self._info(rid)
            case wm.Replicate():
                await self._take_copies(peer, request)
                return wm.Ok(rid)
        raise BadRequestError(f"{type(request).__name__} is not a store request")

    async def _get(self, key: str, _d: Serve) -> bytes:
        return await self._ds.get(key)

    async def _has(self, key: str, _d: Serve) -> bool:
        return await self._ds.has(key)

    async def _get_size(self, key: str, _d: Serve) -> int:
        return await self._ds.get_size(key)

    async def _delete(self, key: str, decision: Serve) -> None:
        if decision.forward_deletes_to is not None:
            await self._forward_delete(decision.forward_deletes_to, key)
        await self._ds.delete(key)
        await self._to_copies([(key, None)])

    async def _many(self, keys: Sequence[str], asking: bool,
                    op: Callable[[str, Serve], Awaitable[Any]],
                    any_copy: bool = False) -> tuple[Any, ...]:
        results: list[Any] = []
        for key in keys:
            try:
                results.append(await self._keyed(key, asking, op, any_copy))
            except DSClusterError as exc:
                results.append(wm.ErrorInfo.from_exception(exc))
        return tuple(results)

    async def _batch(self, request: wm.Batch) -> tuple[Any, ...]:
        """Puts then deletes, answered per key; the served puts land in one datastore batch."""
        ops: list[tuple[str, bytes | None]] = [(k, v) for k, v in request.puts]
        ops += [(k, None) for k in request.deletes]
        results: list[Any] = [None] * len(ops)
        clean: list[str | None] = []
        for i, (key, _) in enumerate(ops):
            try:
                cleaned = str(Key(key))
                check_user_key(cleaned)  # here, or the datastore batch would refuse them all
                clean.append(cleaned)
            except DSClusterError as exc:
                clean.append(None)
                results[i] = wm.ErrorInfo.from_exception(exc)
        async with self._locks.hold(k for k in clean if k is not None):
            batch = await self._ds.batch()
            forwards: list[tuple[str, str]] = []
            served: list[int] = []
            for i, (_key, value) in enumerate(ops):
                k = clean[i]
                if k is None:
                    continue
                try:
                    decision = await self._route(k, request.asking)
                except DSClusterError as exc:
                    results[i] = wm.ErrorInfo.from_exception(exc)
                    continue
                if value is None:
                    if decision.forward_deletes_to is not None:
                        forwards.append((decision.forward_deletes_to, k))
                    batch.delete(k)
                else:
                    batch.put(k, value)
                served.append(i)
            for target, k in forwards:
                await self._forward_delete(target, k)
            try:
                await batch.commit()
            except DSClusterError as exc:
                for i in served:
                    results[i] = wm.ErrorInfo.from_exception(exc)
                return tuple(results)
            written: list[Op] = [(str(clean[i]), ops[i][1]) for i in served]
            for j, err in (await self._replicator.forward(written)).items():
                results[served[j]] = wm.ErrorInfo.from_exception(err)
        return tuple(results)

    async def _take_copies(self, peer: ID, request: wm.Replicate) -> None:
        """A copy's side: check the primary's epoch, then store the writes in one batch."""
        self._replicator.check(peer.to_base58(), request)
        if request.clear:
            await self._clear_slots([slot for slot, _epoch in request.slots])
        puts = [(str(Key(k)), v) for k, v in request.puts]
        deletes = [str(Key(k)) for k in request.deletes]
        async with self._locks.hold([k for k, _ in puts] + deletes):
            batch = await self._ds.batch()
            for key, value in puts:
                batch.put(key, value)
            for key in deletes:
                batch.delete(key)
            await batch.commit()

    async def _clear_slots(self, slots: list[int]) -> None:
        """Drop every key held of ``slots`` (stale ones from before this copy is filled)."""
        for slot in slots:
            await self._ds.drop_slot(slot, self._locks)

    def _info(self, rid: int) -> wm.NodeInfo:
        core = self._driver.core
        slots = core.table.slots_of(core.me)
        return wm.NodeInfo(rid, core.me, tuple(self._my_addrs()), tuple(slots.ranges),
                           core.epoch, __version__, self.key_count, self.byte_count,
                           tuple(_describe(m, core.me) for m in core.migrations),
                           tuple(core.table.replica_slots_of(core.me).ranges),
                           tuple((n.id, n.addrs[:8]) for n in core.table.nodes.values()
                                 if n.role is NodeRole.DATA and n.id != core.me)[:1024])

    # -- query -----------------------------------------------------------------------------

    def stream(self, peer: ID, request: wm.Query) -> AsyncIterator[wm.QueryChunk]:
        self._authorize(peer, request)
        return self._chunks(request)

    async def _chunks(self, request: wm.Query) -> AsyncIterator[wm.QueryChunk]:
        results = await self._ds.query(request.to_query())
        # The client's chunk_size is a wish: a chunk is cut at MAX_CHUNK_ENTRIES or
        # MAX_CHUNK_BYTES, so no query makes the node hold more than one chunk.
        most = min(request.chunk_size, MAX_CHUNK_ENTRIES)
        try:
            entries: list[wm.QueryEntry] = []
            size = 0
            async for e in results:
                entries.append(wm.QueryEntry(e.key, e.value, e.size))
                size += len(e.key) + (len(e.value) if e.value else 0)
                if len(entries) >= most or size >= MAX_CHUNK_BYTES:
                    yield wm.QueryChunk(request.id, tuple(entries), True)
                    entries = []
                    size = 0
            yield wm.QueryChunk(request.id, tuple(entries), False)
        finally:
            await results.aclose()


_SERVE = Serve()


def _describe(m: Migration, me: str) -> str:
    """One line for node info: direction, slots, the other side, phase."""
    ranges = ",".join(f"{a}-{b}" if a != b else str(a) for a, b in m.slots.ranges)
    if m.source == me:
        return f"out {ranges} -> {m.target} {m.phase.value}"
    return f"in {ranges} <- {m.source} {m.phase.value}"

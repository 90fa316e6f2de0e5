"""ClusterClient: the whole cluster as one Datastore.

Theory of operation
-------------------
The client is a libp2p host with one RpcClient: one long-lived, pipelined
store stream per node. Every key operation is routed by its slot
(``RoutingTable``) to the node serving it and queued on that node's
``NodePipe``, which coalesces whatever is waiting into batched requests.

Each operation then ends in one of three ways:

- a value or a per-key error (not found, bad key...): done;
- ``MovedError``: the slot has a new owner. The table learns it, the client
  asks both nodes for their current slots (``Info``) and sends the op again
  (at most ``max_redirects`` times);
- ``AskError``: the slot is migrating and the key is already at the target:
  one request straight to the target with ``asking`` set, as Redis clients
  do, without touching the table;
- ``UnavailableError`` (node down, stream broken, node busy): retried with
  exponential backoff (``backoff``) while the op's ``request_timeout`` lasts
  (so ``--timeout 2`` bounds the op, not each of its attempts), then reported
  as an UnavailableError naming the node and the slot. A slot with copies is
  retried until the deadline (its copies take over by failover, and the
  client asks them for the table); one without stops after the backoff list.

Queries go to every node at once, with prefix, filters and orders pushed
down, and are merged (``merge.py``). ``batch().commit()`` keeps the last op
per key and sends all of them through the pipes. At start, the client asks
the nodes it knows for their slots and, while slots remain unknown, asks
about a key of an unknown slot to be told (MOVED) who serves it.

Lifetime: ``open_cluster_client`` (an async context manager), or
``ClusterClient.start(nursery, ...)`` and ``close()`` for code that cannot
hold a context open (the Datastore contract's open/close).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import cast

import trio
from libp2p.network.config import RetryConfig
from libp2p.network.swarm import Swarm
from trio import TaskStatus  # type: ignore[attr-defined]

from dsclient.merge import merge, node_query
from dsclient.pipeline import NodePipe, Op, OpKind, PackLimits, single_request
from dsclient.routing import RoutingTable, probe_key
from dscluster.blocks import is_block_key
from dscluster.config import ClientConfig, config_file, load_client_config
from dscluster.core.slots import key_slot
from dscluster.datastore.base import BatchOp, Datastore
from dscluster.datastore.key import Key
from dscluster.datastore.query import Entry, Query, Results, naive_results
from dscluster.errors import (
    AskError,
    BadKeyError,
    BadRequestError,
    ConfigError,
    DatastoreClosedError,
    DSClusterError,
    MovedError,
    NotFoundError,
    UnavailableError,
)
from dscluster.net.host import HostHandle, Identity, open_host, parse_peer_id
from dscluster.net.pnet import swarm_key_of
from dscluster.net.rpc_client import RpcClient, open_rpc_client
from dscluster.net.rpc_limits import RpcLimits
from dscluster.wire import messages as wm

log = logging.getLogger(__name__)

__all__ = ["ClientOptions", "ClusterClient", "NodeStatus", "open_cluster_client",
           "parse_bootstrap"]


@dataclass(frozen=True)
class ClientOptions:
    request_timeout: float = 30.0  # one op, its retries included
    backoff: tuple[float, ...] = (0.05, 0.1, 0.2, 0.4, 0.8)  # waits between retries
    max_redirects: int = 5  # MOVED/ASK hops for one op
    max_pending_ops: int = 4096  # key ops queued or in flight, all nodes together
    max_messages_per_node: int = 8  # batched messages in flight per node
    query_chunk: int = 1024  # entries per query chunk
    pack: PackLimits = PackLimits()
    # The private network's key (pnet.py); kept out of repr so it is never logged.
    swarm_key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class NodeStatus:
    """What a node said about itself (``info``), or why it could not be asked (``error``)."""

    peer_id: str
    addrs: tuple[str, ...]
    info: wm.NodeInfo | None
    error: str = ""

    @property
    def up(self) -> bool:
        return self.info is not None


def parse_bootstrap(multiaddrs: Iterable[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(peer id, (transport addr,)) for each ``.../p2p/<peer id>`` multiaddr."""
    out: list[tuple[str, tuple[str, ...]]] = []
    for ma in multiaddrs:
        if "/p2p/" not in ma:
            raise ConfigError(f"bootstrap address {ma!r} needs the node's /p2p/<peer id>")
        transport, peer = ma.rsplit("/p2p/", 1)
        parse_peer_id(peer)
        out.append((peer, (transport,) if transport else ()))
    return out


class ClusterClient(Datastore):
    """The Datastore contract over a running cluster; create it with ``start`` or
    ``open_cluster_client``."""

    def __init__(self, host: HostHandle, rpc: RpcClient, nursery: trio.Nursery,
                 table: RoutingTable, options: ClientOptions) -> None:
        super().__init__()
        self.host = host
        self.table = table
        self.options = options
        self._rpc = rpc
        self._nursery = nursery
        self._pipes: dict[str, NodePipe] = {}
        self._dialed: set[str] = set()
        self._learning: set[str] = set()  # nodes asked for their slots in the background
        self._pending = trio.Semaphore(options.max_pending_ops)
        self._stop = trio.Event()
        self._stopped = trio.Event()

    # -- lifetime ------------------------------------------------------------------

    @classmethod
    async def start(cls, nursery: trio.Nursery, identity: Identity | None = None, *,
                    bootstrap: Sequence[str] = (), table: RoutingTable | None = None,
                    options: ClientOptions = ClientOptions()) -> ClusterClient:
        """A running client whose tasks live in ``nursery`` until ``close()``.

        ``bootstrap`` are node multiaddrs with /p2p/; ``table`` a known table
        (e.g. from a client config). The client learns the rest from the nodes.
        """
        table = table or RoutingTable()
        for peer, addrs in parse_bootstrap(bootstrap):
            table.add_node(peer, addrs)
        if not table.addrs:
            raise ConfigError("no cluster node to connect to: give a bootstrap address")
        client: ClusterClient = await nursery.start(cls._run, identity, table, options)
        try:
            await client.refresh()
        except BaseException:
            with trio.CancelScope(shield=True):
                await client.close()
            raise
        return client

    @classmethod
    async def _run(cls, identity: Identity | None, table: RoutingTable, options: ClientOptions,
                   task_status: TaskStatus[ClusterClient] = trio.TASK_STATUS_IGNORED) -> None:
        limits = RpcLimits(request_timeout=options.request_timeout,
                           open_timeout=min(10.0, options.request_timeout))
        client: ClusterClient | None = None
        try:
            async with open_host(identity, swarm_key=options.swarm_key) as host, \
                    open_rpc_client(host.host, limits) as rpc, \
                    trio.open_nursery() as nursery:
                _no_dial_retries(host)
                client = cls(host, rpc, nursery, table, options)
                task_status.started(client)
                await client._stop.wait()
                nursery.cancel_scope.cancel()
        finally:
            if client is not None:
                client._stopped.set()

    async def _close(self) -> None:
        self._stop.set()
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await self._stopped.wait()

    # -- the Datastore contract --------------------------------------------------------

    async def _get(self, key: Key) -> bytes:
        return cast(bytes, await self._one(OpKind.GET, str(key)))

    async def _has(self, key: Key) -> bool:
        return cast(bool, await self._one(OpKind.HAS, str(key)))

    async def _get_size(self, key: Key) -> int:
        return cast(int, await self._one(OpKind.SIZE, str(key)))

    async def _put(self, key: Key, value: bytes) -> None:
        await self._one(OpKind.PUT, str(key), value)

    async def _delete(self, key: Key) -> None:
        await self._one(OpKind.DELETE, str(key))

    async def _commit_batch(self, ops: Sequence[BatchOp]) -> None:
        last: dict[str, bytes | None] = {}
        for bop in ops:  # only the last op on a key decides what it holds
            k = str(bop.key)
            last.pop(k, None)
            last[k] = bop.value
        for k, v in last.items():
            check_request(k, v)
        todo = [Op(OpKind.DELETE if v is None else OpKind.PUT, k, v) for k, v in last.items()]
        await self.execute(todo)
        for op in todo:
            if op.error is not None:
                raise op.error

    async def _query(self, q: Query) -> Results:
        if q.offset + q.limit > MAX_QUERY_WINDOW:  # nodes are asked for offset + limit
            raise BadRequestError(f"query offset + limit must be below 2**63 "
                                  f"(got {q.offset} + {q.limit})")
        try:
            wire = wm.Query.from_query(0, node_query(q), self.options.query_chunk)
            local = None
        except BadRequestError:
            # A filter or order the wire cannot carry: fetch by prefix, apply here.
            wire = wm.Query(0, q.prefix, chunk_size=self.options.query_chunk)
            local = q
        if not self.table.is_complete():
            await self.refresh()
        peers = self.table.owners()
        streams = [self._node_entries(peer, wire) for peer in peers]

        async def close() -> None:
            for stream in streams:
                await stream.aclose()  # type: ignore[attr-defined]

        if local is not None:
            merged = Results(merge(Query(prefix=q.prefix), streams, peers, self.table.owner_of),
                             close)
            return naive_results(local, merged)
        return Results(merge(q, streams, peers, self.table.owner_of), close)

    async def _node_entries(self, peer: str, wire: wm.Query) -> AsyncIterator[Entry]:
        if self._closed:
            raise DatastoreClosedError("ClusterClient is closed")
        try:
            await self._dial(peer)
            async with self._rpc.query(parse_peer_id(peer), wm.STORE_PROTOCOL, wire,
                                       timeout=self.options.request_timeout) as chunks:
                async for chunk in chunks:
                    for e in chunk.entries:
                        yield Entry(e.key, e.value, e.size)
        except UnavailableError as exc:
            self._dialed.discard(peer)
            if self._closed:
                raise DatastoreClosedError("ClusterClient is closed") from exc
            raise UnavailableError(f"query: node {peer} is unavailable: {exc}") from exc

    # -- operations --------------------------------------------------------------------

    async def _one(self, kind: OpKind, key: str, value: bytes | None = None) -> object:
        check_request(key, value)
        op = Op(kind, key, value)
        await self.execute([op])
        if op.error is not None:
            raise op.error
        return op.result

    async def execute(self, ops: list[Op]) -> None:
        """Run ``ops`` to the end: each gets its result or its final error."""
        pending = list(ops)
        deadline = trio.current_time() + self.options.request_timeout
        while pending:
            await self._dispatch(pending)
            await self._read_copies([op for op in pending if self._copy_may_answer(op)])
            retry: list[Op] = []
            asks: list[Op] = []
            to_refresh: set[str] = set()  # asked before the retry: did it move or restart?
            to_learn: set[str] = set()  # asked meanwhile: MOVED already routes the retry
            waits: list[float] = []
            for op in pending:
                err = op.error
                if isinstance(err, MovedError | AskError):
                    op.redirects += 1
                    if op.redirects > self.options.max_redirects:
                        continue  # ping-pong between nodes: report the last redirect
                    if isinstance(err, AskError):
                        self.table.add_node(err.peer_id, err.addrs)
                        asks.append(op)
                    else:
                        self.table.apply_moved(err.slot, err.peer_id, err.addrs)
                        to_learn.update((err.peer_id, op.peer))
                        retry.append(op)
                elif isinstance(err, UnavailableError):
                    backoff = self.options.backoff
                    replicas = self.table.replicas_of(op.key)
                    wait = backoff[min(op.failures, len(backoff) - 1)]
                    # A slot with copies fails over: its ops wait for that while the
                    # deadline lasts; one without gives up after the backoff list.
                    if ((op.failures < len(backoff) or replicas)
                            and trio.current_time() + wait < deadline):
                        waits.append(wait)
                        op.failures += 1
                        retry.append(op)
                        to_refresh.add(op.peer)
                        to_refresh.update(replicas)  # after a failover, one of them leads
                        if not replicas:  # copies this client has not heard of yet
                            to_refresh.update(self.table.addrs)
                    else:
                        op.error = UnavailableError(
                            f"node {op.peer} serving slot {key_slot(op.key)} is unavailable: "
                            f"{_one_line(err)}")
            if asks:
                async with trio.open_nursery() as nursery:
                    for op in asks:
                        nursery.start_soon(self._ask, op)
                retry += [op for op in asks if isinstance(op.error, MovedError)]
            if waits:
                await trio.sleep(max(waits))
            for peer in to_learn - self._learning - {""}:
                self._learning.add(peer)
                self._nursery.start_soon(self._learn, peer)
            if to_refresh:
                with trio.move_on_after(max(0.0, deadline - trio.current_time())):
                    await self._refresh_nodes(p for p in to_refresh if p)
            for op in retry:
                op.reset()
            pending = retry

    async def _dispatch(self, ops: list[Op]) -> None:
        for op in ops:
            _slot, peer = self.table.route(op.key)
            if peer is None:
                op.fail(UnavailableError("no cluster node is known"))
                continue
            try:  # the common case skips acquire()'s extra trip through trio's scheduler
                self._pending.acquire_nowait()
            except trio.WouldBlock:
                await self._pending.acquire()
            op.on_done = self._pending.release
            self._pipe(peer).submit(op)
        for op in ops:
            await op.done.wait()

    def _copy_may_answer(self, op: Op) -> bool:
        """A block its primary could not give (down, or lost it) that a replica may hold."""
        return (op.kind is OpKind.GET and isinstance(op.error, UnavailableError | NotFoundError)
                and is_block_key(op.key) and bool(self.table.replicas_of(op.key)))

    async def _read_copies(self, ops: list[Op]) -> None:
        """Ask each op's replicas in turn (any_copy); the first value wins. Blocks are
        content-addressed (dsclient's UnixFS exporter checks each against its CID), so a
        copy's answer is as good as the primary's. An op no copy answers keeps its error."""
        async def read(op: Op) -> None:
            for peer in self.table.replicas_of(op.key):
                try:
                    response = await self._call(peer, wm.Get(0, op.key, any_copy=True))
                except DSClusterError as exc:
                    log.debug("copy %s of %s: %s", peer, op.key, exc)
                    continue
                if isinstance(response, wm.Ok) and isinstance(response.value, bytes):
                    op.error, op.result = None, response.value
                    return

        if ops:
            async with trio.open_nursery() as nursery:
                for op in ops:
                    nursery.start_soon(read, op)

    async def _ask(self, op: Op) -> None:
        assert isinstance(op.error, AskError)
        target = op.error.peer_id
        op.reset()
        op.peer = target
        asked = replace(op, asking=True)
        try:
            response = await self._call(target, single_request(asked))
        except DSClusterError as exc:
            op.error = exc
            return
        if isinstance(response, wm.Ok):
            op.result = response.value
        else:
            op.error = BadRequestError(f"unexpected {type(response).__name__} from {target}")

    def _pipe(self, peer: str) -> NodePipe:
        pipe = self._pipes.get(peer)
        if pipe is None:
            async def send(request: wm.Request) -> wm.Response:
                return await self._call(peer, request)

            pipe = self._pipes[peer] = NodePipe(
                peer, send, max_messages=self.options.max_messages_per_node,
                limits=self.options.pack)
            self._nursery.start_soon(pipe.run)
        return pipe

    async def _dial(self, peer: str) -> None:
        if peer in self._dialed:
            return
        addrs = self.table.addrs.get(peer, ())
        if addrs:
            await self.host.connect(peer, addrs, timeout=min(10.0, self.options.request_timeout))
        self._dialed.add(peer)

    async def _call(self, peer: str, request: wm.Request) -> wm.Response:
        if self._closed:
            raise DatastoreClosedError("ClusterClient is closed")
        try:
            await self._dial(peer)
            return await self._rpc.call(parse_peer_id(peer), wm.STORE_PROTOCOL, request,
                                        timeout=self.options.request_timeout)
        except UnavailableError:
            self._dialed.discard(peer)
            raise

    # -- the table -----------------------------------------------------------------------

    async def node_info(self, peer: str) -> wm.NodeInfo:
        response = await self._call(peer, wm.Info(0))
        if not isinstance(response, wm.NodeInfo):
            raise BadRequestError(f"{peer} answered Info with {type(response).__name__}")
        return response

    async def _refresh_nodes(self, peers: Iterable[str]) -> dict[str, DSClusterError]:
        """Ask each node for its slots; returns the errors of those that did not answer."""
        errors: dict[str, DSClusterError] = {}

        async def ask(peer: str) -> None:
            try:
                info = await self.node_info(peer)
            except DSClusterError as exc:
                errors[peer] = exc
                return
            self.table.apply_node_info(info.peer_id, info.addrs, info.slots, info.epoch,
                                       info.replicas)
            for member, addrs in info.members:  # members serving no slot, too
                self.table.add_node(member, addrs)

        async with trio.open_nursery() as nursery:
            for peer in set(peers):
                nursery.start_soon(ask, peer)
        return errors

    async def _learn(self, peer: str) -> None:
        try:
            await self._refresh_nodes([peer])
        finally:
            self._learning.discard(peer)

    async def refresh(self) -> None:
        """Learn the slot table from the nodes; UnavailableError if none answers."""
        known = list(self.table.addrs)
        errors = await self._refresh_nodes(known)
        if len(errors) == len(known):
            reasons = "; ".join(f"{p}: {_one_line(e)}" for p, e in errors.items())
            first = next(iter(errors.values()))
            if not isinstance(first, UnavailableError):
                raise first  # unauthorized, protocol error: not worth hiding
            raise UnavailableError(f"no cluster node answered ({reasons})")
        failed = set(errors)
        named = [p for p in self.table.addrs if p not in errors and p not in known]
        if named:  # members the answers named (NodeInfo.members): ask them too
            failed.update(await self._refresh_nodes(named))
        for _ in range(64):  # each round finds one more node
            unknown = self.table.unknown_slots()
            if not unknown:
                return
            key = probe_key(unknown)
            # Ask a node that answered: a frozen one would cost a timeout per round.
            answered = sorted(p for p in self.table.addrs if p not in failed)
            if key is None or not answered:
                return
            try:
                await self._call(answered[0], wm.Has(0, key))
                return  # served: the node does not know better than we do
            except MovedError as exc:
                if self.table.owner(exc.slot) == exc.peer_id:
                    return  # no news: the table is as good as the nodes know
                self.table.apply_moved(exc.slot, exc.peer_id, exc.addrs)
                if exc.peer_id in failed:
                    return  # its owner is down: its slots are found by MOVED when used
                failed.update(await self._refresh_nodes([exc.peer_id]))
            except DSClusterError as exc:
                log.info("table discovery stopped: %s", exc)
                return

    async def status(self) -> list[NodeStatus]:
        """Every known node's own NodeInfo (or why it did not answer); members the
        answers name that this client did not know are asked too. A node that does
        not answer and that no answer names as a member is left out: it was retired
        (remove-node, forget-node), though this client's config still lists it."""
        out: dict[str, NodeStatus] = {}
        named: set[str] = set()

        async def ask(peer: str) -> None:
            addrs = self.table.addrs.get(peer, ())
            try:
                info = await self.node_info(peer)
            except DSClusterError as exc:
                out[peer] = NodeStatus(peer, addrs, None, str(exc))
                return
            out[peer] = NodeStatus(peer, info.addrs or addrs, info)
            named.add(peer)
            for member, member_addrs in info.members:
                named.add(member)
                self.table.add_node(member, member_addrs)

        for _ in range(2):  # the second round asks the members the first one named
            async with trio.open_nursery() as nursery:
                for peer in [p for p in self.table.addrs if p not in out]:
                    nursery.start_soon(ask, peer)
        answered = any(st.info is not None for st in out.values())
        return [out[p] for p in sorted(out) if not answered or p in named]

    @property
    def messages_sent(self) -> int:
        """Batched messages sent through the pipes so far (for tests and benchmarks)."""
        return sum(p.messages_sent for p in self._pipes.values())


def _no_dial_retries(host: HostHandle) -> None:
    """Turn off py-libp2p's own dial retries (3, backing off from 0.1 s): the client
    retries whole requests itself, and stacked retries made a down node cost ~20 s."""
    network = host.host.get_network()
    if isinstance(network, Swarm):
        network.retry_config = RetryConfig(max_retries=0)


MAX_QUERY_WINDOW = 2**63 - 1  # the wire's unsigned fields are read as int64 by Go peers
# A value must fit in one frame with its key and the message's few bytes of overhead.
MAX_VALUE = RpcLimits().max_frame_size - wm.MAX_KEY_LEN * 4 - 64


def check_request(key: str, value: bytes | None) -> None:
    """Refuse here what a node would refuse as a broken message (which resets the stream
    that other requests share): over-long keys and values that cannot fit a frame."""
    if len(key) > wm.MAX_KEY_LEN:
        raise BadKeyError(f"key of {len(key)} characters: at most {wm.MAX_KEY_LEN}")
    if value is not None and len(value) > MAX_VALUE:
        raise BadRequestError(f"value of {len(value)} bytes: at most {MAX_VALUE} in one key")


def _one_line(exc: BaseException) -> str:
    """py-libp2p's dial errors span many lines; the first says what happened."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@asynccontextmanager
async def open_cluster_client(identity: Identity | None = None, *,
                              bootstrap: Sequence[str] = (), table: RoutingTable | None = None,
                              options: ClientOptions = ClientOptions()
                              ) -> AsyncIterator[ClusterClient]:
    """A running ClusterClient for the body of the ``async with``."""
    async with trio.open_nursery() as nursery:
        client = await ClusterClient.start(nursery, identity, bootstrap=bootstrap, table=table,
                                           options=options)
        try:
            yield client
        finally:
            with trio.CancelScope(shield=True):
                await client.close()


def options_for_config(path: str | os.PathLike[str], options: ClientOptions) -> ClientOptions:
    """``options`` with the config directory's swarm.key, if it has one and none is set."""
    if options.swarm_key is not None:
        return options
    key = swarm_key_of(config_file(path).parent)
    return options if key is None else replace(options, swarm_key=key)


def config_table(cfg: ClientConfig) -> RoutingTable:
    """The routing table a client config holds (its ``nodes`` and bootstrap addrs)."""
    table = RoutingTable()
    table.load((n.id, n.slots, n.swarm) for n in cfg.nodes)
    for peer, addrs in parse_bootstrap(cfg.bootstrap_addrs):
        table.add_node(peer, addrs)
    return table


@asynccontextmanager
async def client_from_config(path: str, options: ClientOptions = ClientOptions()
                             ) -> AsyncIterator[ClusterClient]:
    """A ClusterClient for a client config file (or directory holding config.json)."""
    cfg = load_client_config(path)
    async with open_cluster_client(cfg.identity.identity(), table=config_table(cfg),
                                   options=options_for_config(path, options)) as client:
        yield client

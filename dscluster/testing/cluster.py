"""Start real clusters for tests and benchmarks: in-process or as processes.

In-process (`local_cluster`): N real libp2p hosts on 127.0.0.1 port 0 in the
caller's trio run, each with its own datastore (memory by default) and conf
dir; the table is built from the real bound addresses, so nodes find each
other at once. `stop_node(i)` / `start_node(i)` stop a node and bring it back
on the same addresses from its conf dir (state file, clients file) and the
same datastore, as a restarted process would. `ClusterClientHelper` adds a
client host that talks the store protocol to whichever node owns a key (a tiny
router following MOVED/ASK).

Processes (`ProcessCluster`, re-exported from dscluster/procs.py): `dscfg
cluster -n N`, the bootstrap node, and the others joining with
--bootstrapper/--identity/--join-secret-file, exactly as an operator starts
them; see that class.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import trio
from trio import TaskStatus  # type: ignore[attr-defined]

from dscluster.core.gossip import GossipConfig
from dscluster.core.planner import with_copies
from dscluster.core.slots import key_slot
from dscluster.core.table import NodeInfo, NodeRole, SlotTable
from dscluster.datastore import Datastore, MemoryDatastore
from dscluster.errors import AskError, MovedError
from dscluster.net.host import HostHandle, Identity, open_host, parse_peer_id
from dscluster.net.rpc import RpcClient, open_rpc_client
from dscluster.node import DataNode, NodeSettings, run_data_node
from dscluster.node.auth import Role
from dscluster.procs import ProcessCluster, _script, rss_kib
from dscluster.wire import messages as wm

FAST_GOSSIP = GossipConfig(heartbeat_ticks=1, pfail_ticks=6, fail_window_ticks=12, retry_ticks=2)


@dataclass
class _NodeRunner:
    """One in-process node in a task of its own, so it can stop and start alone.

    ``open`` starts the task with the host listening (port 0 the first time, the
    same addresses after a stop) and returns the host; ``run_node`` then runs the
    node on it; ``stop`` ends both. An error in the node fails the cluster's
    nursery, so it surfaces in the test."""

    identity: Identity
    nursery: trio.Nursery
    listen: list[str] = field(default_factory=list)
    conf: str = ""
    datastore: Datastore | None = None
    settings: NodeSettings | None = None
    serve_admin: bool = False
    node: DataNode | None = None
    _go: trio.Event = field(default_factory=trio.Event)
    _ready: trio.Event = field(default_factory=trio.Event)
    _stop: trio.Event = field(default_factory=trio.Event)
    _done: trio.Event | None = None

    @property
    def running(self) -> bool:
        return self._done is not None and not self._done.is_set()

    async def open(self) -> HostHandle:
        self._go, self._ready, self._stop, self._done = (trio.Event() for _ in range(4))
        host: HostHandle = await self.nursery.start(self._serve)
        return host

    async def run_node(self) -> DataNode:
        self._go.set()
        await self._ready.wait()
        assert self.node is not None
        return self.node

    async def start(self) -> DataNode:
        await self.open()
        return await self.run_node()

    async def stop(self) -> None:
        if self.running:
            assert self._done is not None
            self._stop.set()
            await self._done.wait()

    async def _serve(self, *, task_status: TaskStatus[HostHandle]) -> None:
        from dscluster.node.admin import serve_admin

        assert self._done is not None
        try:
            async with open_host(self.identity, self.listen or ["/ip4/127.0.0.1/tcp/0"]) as host:
                self.listen = host.listen_addrs
                task_status.started(host)
                await self._go.wait()
                assert self.datastore is not None and self.settings is not None
                async with run_data_node(host, self.datastore, self.settings) as node, \
                        AsyncExitStack() as stack:
                    if self.serve_admin:
                        await stack.enter_async_context(serve_admin(node, self.conf))
                    self.node = node
                    self._ready.set()
                    await self._stop.wait()
        finally:
            self.node = None
            self._done.set()


@dataclass
class InProcessCluster:
    nodes: list[DataNode]
    table: SlotTable
    client_identity: Identity
    _runners: list[_NodeRunner] = field(default_factory=list, repr=False)

    def node(self, peer_id: str) -> DataNode:
        return next(n for n in self.nodes if n.peer_id == peer_id)

    def conf(self, i: int) -> str:
        return self._runners[i].conf

    def running(self, i: int) -> bool:
        return self._runners[i].running

    async def stop_node(self, i: int) -> None:
        """Stop node i cleanly; its conf dir and datastore stay for `start_node`."""
        await self._runners[i].stop()

    def wipe_node(self, i: int) -> None:
        """Give stopped node i an empty datastore (a wiped disk; its state file stays)."""
        assert not self._runners[i].running, "stop the node first"
        self._runners[i].datastore = MemoryDatastore()

    async def start_node(self, i: int) -> DataNode:
        """Start node i again on the addresses it had; ``nodes[i]`` is the new node."""
        self.nodes[i] = await self._runners[i].start()
        return self.nodes[i]

    def owner_of(self, key: str) -> DataNode:
        return self.node(self.nodes[0].core.table.owner(key_slot(key)) or "")


@asynccontextmanager
async def local_cluster(
    base_dir: str | os.PathLike[str], n: int = 3, *,
    datastore: Callable[[int], Datastore] | None = None,
    tick_interval: float = 0.1, gossip: GossipConfig = FAST_GOSSIP,
    identities: Sequence[Identity] | None = None, extra_members: Sequence[str] = (),
    admins: Sequence[str] | None = None, copies: int = 1,
) -> AsyncIterator[InProcessCluster]:
    """N running nodes on loopback; a client identity is authorized read-write.

    ``extra_members`` are peer IDs listed as slot-less members without a
    running node (a test host can then speak gossip as a member). With
    ``admins`` every node serves the admin protocol, those peers listed in its
    DIR/admins. ``copies`` places that many copies of every slot (doc/copies.md).
    """
    identities = list(identities or [Identity.generate() for _ in range(n)])
    client = Identity.generate()
    async with trio.open_nursery() as nursery:
        runners = [_NodeRunner(i, nursery) for i in identities]
        try:
            hosts = [await runner.open() for runner in runners]
            ids = [h.peer_id.to_base58() for h in hosts]
            table = SlotTable.initial(ids, {pid: h.listen_addrs
                                            for pid, h in zip(ids, hosts, strict=True)})
            if copies != 1:
                table = with_copies(table, copies)
            table.merge_nodes([NodeInfo(m, (), NodeRole.DATA, 1) for m in extra_members])
            cluster = InProcessCluster([], table, client, runners)
            for i, runner in enumerate(runners):
                runner.conf = conf = os.path.join(os.fspath(base_dir), f"node{i}")
                os.makedirs(conf, exist_ok=True)
                if admins is not None:
                    with open(os.path.join(conf, "admins"), "w", encoding="utf-8") as f:
                        f.write("".join(f"{a}\n" for a in admins))
                runner.datastore = datastore(i) if datastore else MemoryDatastore()
                runner.settings = NodeSettings(conf, table.copy(),
                                               {client.peer_id_str: Role.READ_WRITE},
                                               tick_interval=tick_interval, gossip=gossip,
                                               max_backoff=0.5)
                runner.serve_admin = admins is not None
                cluster.nodes.append(await runner.run_node())
            yield cluster
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(60):
                for runner in reversed(runners):
                    await runner.stop()
            nursery.cancel_scope.cancel()  # anything a stuck stop left behind


class StoreClient:
    """A minimal router for tests: sends each request to the key's owner, follows MOVED/ASK."""

    def __init__(self, host: HostHandle, rpc: RpcClient, table: SlotTable) -> None:
        self.host = host
        self.rpc = rpc
        self.owners = {s: table.owner(s) for s in range(16384)}
        self.addrs = {nid: list(node.addrs) for nid, node in table.nodes.items()}

    async def call_node(self, peer: str, request: wm.Request, timeout: float = 10) -> wm.Response:
        if self.addrs.get(peer):
            await self.host.connect(peer, self.addrs[peer])
        return await self.rpc.call(parse_peer_id(peer), wm.STORE_PROTOCOL, request,
                                   timeout=timeout)

    async def call(self, key: str, request: wm.Request) -> wm.Response:
        slot = key_slot(key)
        peer = self.owners[slot] or ""
        for _ in range(5):
            try:
                return await self.call_node(peer, request)
            except MovedError as exc:
                self.owners[slot] = peer = exc.peer_id
                self.addrs[peer] = exc.addrs or self.addrs.get(peer, [])
            except AskError as exc:
                self.addrs[exc.peer_id] = exc.addrs or self.addrs.get(exc.peer_id, [])
                asked = type(request)(**{**_fields(request), "asking": True})
                return await self.call_node(exc.peer_id, asked)
        raise MovedError(slot, peer)

    async def put(self, key: str, value: bytes) -> None:
        await self.call(key, wm.Put(0, key, value))

    async def get(self, key: str) -> bytes:
        resp = await self.call(key, wm.Get(0, key))
        assert isinstance(resp, wm.Ok) and isinstance(resp.value, bytes)
        return resp.value

    async def delete(self, key: str) -> None:
        await self.call(key, wm.Delete(0, key))


def _fields(msg: wm.Request) -> dict[str, object]:
    return {name: getattr(msg, name) for name in msg.__dataclass_fields__}  # type: ignore[attr-defined]


@asynccontextmanager
async def store_client(identity: Identity, table: SlotTable) -> AsyncIterator[StoreClient]:
    async with open_host(identity) as host, open_rpc_client(host.host) as rpc:
        yield StoreClient(host, rpc, table)


# Real processes live in dscluster/procs.py (localcluster needs them without a test harness).
__all__ = ["FAST_GOSSIP", "InProcessCluster", "ProcessCluster", "StoreClient", "_script",
           "local_cluster", "rss_kib", "store_client"]

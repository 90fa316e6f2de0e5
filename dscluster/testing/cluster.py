"""Start real clusters for tests and benchmarks: in-process or as processes.

In-process (`local_cluster`): N real libp2p hosts on 127.0.0.1 port 0 in the
caller's trio run, each with its own datastore (memory by default) and conf
dir; the table is built from the real bound addresses, so nodes find each
other at once. `ClusterClientHelper` adds a client host that talks the store
protocol to whichever node owns a key (a tiny router following MOVED/ASK).

Processes (`ProcessCluster`): `dscfg cluster -n N`, the bootstrap node, and
the others joining with --bootstrapper/--identity, exactly as an operator
starts them; see that class.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

from dscluster.core.gossip import GossipConfig
from dscluster.core.slots import key_slot
from dscluster.core.table import SlotTable
from dscluster.datastore import Datastore, MemoryDatastore
from dscluster.errors import AskError, MovedError
from dscluster.net.host import HostHandle, Identity, open_host, parse_peer_id
from dscluster.net.rpc import RpcClient, open_rpc_client
from dscluster.node import DataNode, NodeSettings, run_data_node
from dscluster.wire import messages as wm

FAST_GOSSIP = GossipConfig(heartbeat_ticks=1, pfail_ticks=6, fail_window_ticks=12, retry_ticks=2)


@dataclass
class InProcessCluster:
    nodes: list[DataNode]
    table: SlotTable
    client_identity: Identity

    def node(self, peer_id: str) -> DataNode:
        return next(n for n in self.nodes if n.peer_id == peer_id)

    def owner_of(self, key: str) -> DataNode:
        return self.node(self.nodes[0].core.table.owner(key_slot(key)) or "")


@asynccontextmanager
async def local_cluster(
    base_dir: str | os.PathLike[str], n: int = 3, *,
    datastore: Callable[[int], Datastore] | None = None,
    tick_interval: float = 0.1, gossip: GossipConfig = FAST_GOSSIP,
    identities: Sequence[Identity] | None = None,
) -> AsyncIterator[InProcessCluster]:
    """N running nodes on loopback; a client identity is authorized read-write."""
    identities = list(identities or [Identity.generate() for _ in range(n)])
    client = Identity.generate()
    async with AsyncExitStack() as stack:
        hosts: list[HostHandle] = [await stack.enter_async_context(open_host(i))
                                   for i in identities]
        ids = [h.peer_id.to_base58() for h in hosts]
        table = SlotTable.initial(ids, {pid: h.listen_addrs for pid, h in zip(ids, hosts,
                                                                               strict=True)})
        nodes = []
        for i, host in enumerate(hosts):
            conf = os.path.join(os.fspath(base_dir), f"node{i}")
            os.makedirs(conf, exist_ok=True)
            ds = datastore(i) if datastore else MemoryDatastore()
            settings = NodeSettings(conf, table.copy(), {client.peer_id_str: False},
                                    tick_interval=tick_interval, gossip=gossip,
                                    max_backoff=0.5)
            nodes.append(await stack.enter_async_context(run_data_node(host, ds, settings)))
        yield InProcessCluster(nodes, table, client)


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



"""DataNode: one data node of the cluster, assembled from its parts.

Theory of operation
-------------------
A node is a libp2p host (opened by the caller, so tests can bind port 0 and
learn the addresses first) plus a datastore (also the caller's to open and
close) plus what this package adds:

  CoreDriver    the ClusterCore, its state file and the Ready cycle
  GossipLinks   core messages to and from peers on long-lived streams
  Authorizer    who may do what (node.auth: members and the table's client roles)
  ClientsFileSync  DIR/clients: edits there become table entries, and the
                persisted roles are written back there (node/clients.py)
  StoreService  the store protocol (served by the wire's RpcServer)
  Migrator      ListKeys/MoveKeys, writing to the target with an RpcClient
  Replicator    writes forwarded to a slot's other copies (node/replicator.py)
  Refiller      a new copy filled where a slot has too few (node/refill.py)
  JoinServer    (bootstrap node only) hands a node its config for a proof
                of the join secret

`run_data_node` starts them in one nursery and yields the running node;
leaving the block stops every task, closing streams, within a few seconds.
A restarted node loads its state file (table with its client roles, epoch,
migrations) and resumes; config.json's table is only used the very first time.
`NodeSettings.clients` are merged at every start as entries of version 0: they
fill in a peer the table knows nothing about and lose to every real change.
Role changes (`set_client_role`, `revoke_client_role`) return once persisted.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from dscluster.core.gossip import GossipConfig
from dscluster.core.node import ClusterCore, PersistentState
from dscluster.core.slots import SlotSet
from dscluster.core.table import ClientInfo, SlotTable
from dscluster.datastore import Datastore
from dscluster.errors import ConfigError
from dscluster.net.admission import set_trust
from dscluster.net.host import HostHandle, parse_peer_id
from dscluster.net.rpc_client import RpcClient, open_rpc_client
from dscluster.net.rpc_limits import RpcLimits
from dscluster.net.rpc_server import reject_stream, serve_rpc
from dscluster.node.auth import Authorizer, Role, from_table, to_table
from dscluster.node.clients import ClientsFileSync, Edit
from dscluster.node.driver import CoreDriver
from dscluster.node.gossip import GossipLinks
from dscluster.node.keylocks import KeyLocks
from dscluster.node.migrator import Migrator
from dscluster.node.refill import Refiller
from dscluster.node.replicator import Replicator
from dscluster.node.service import StoreService
from dscluster.node.slotindex import SlotIndexedDatastore, slot_indexed
from dscluster.node.statefile import StateFile
from dscluster.node.sweep import Sweeper
from dscluster.wire import messages as wm

log = logging.getLogger(__name__)

PEER_CALL_TIMEOUT = 30.0


@dataclass(frozen=True)
class NodeSettings:
    conf_dir: str
    table: SlotTable  # config.json's table; used only when there is no state file yet
    clients: Mapping[str, Role] = field(default_factory=dict)  # seed roles, at version 0
    read_only_client: bool = False
    disable_delete: bool = False
    tick_interval: float = 0.5
    gossip: GossipConfig = GossipConfig()
    max_backoff: float = 2.0  # seconds between reconnects to a down peer, at most


class DataNode:
    """A running node; created by run_data_node."""

    def __init__(self, host: HostHandle, datastore: SlotIndexedDatastore, driver: CoreDriver,
                 links: GossipLinks, rpc: RpcClient, settings: NodeSettings,
                 state_file: StateFile) -> None:
        self.host = host
        self.datastore = datastore
        self.driver = driver
        self.links = links
        self.rpc = rpc
        self.settings = settings
        self.state_file = state_file
        self.locks = KeyLocks()
        self.auth = Authorizer(driver.is_member,
                               lambda peer: from_table(driver.core.table.client_role(peer)),
                               read_only_client=settings.read_only_client,
                               disable_delete=settings.disable_delete)
        self.clients_file = ClientsFileSync(
            settings.conf_dir, apply=self._apply_file_edits, durable_roles=self._durable_roles,
            saved=state_file.wait_saved)
        self.replicator = Replicator(driver, self.call_peer)
        self.service = StoreService(
            driver, datastore, self.locks, auth=self.auth,
            forward_delete=self._forward_delete, my_addrs=lambda: host.addrs,
            replicator=self.replicator)
        self.migrator = Migrator(driver, datastore, self.locks, self._send_batch)
        self.refiller = Refiller(driver, datastore, self.locks, self.replicator, self.call_peer)
        # built now, from the table the node starts with: the slots it held before
        self.sweeper = Sweeper(driver, datastore, self.locks, self.replicator.learned)

    @property
    def peer_id(self) -> str:
        return self.host.peer_id.to_base58()

    @property
    def addrs(self) -> list[str]:
        return self.host.addrs

    @property
    def core(self) -> ClusterCore:
        return self.driver.core

    async def start_migration(self, slots: SlotSet, target: str) -> int:
        return await self.driver.start_migration(slots, target)

    # -- client roles (table entries) ---------------------------------------------

    def client_roles(self) -> dict[str, Role]:
        """The roles this node's table gives clients now (gossip may still bring news)."""
        roles = {p: from_table(r) for p, r in self.core.table.client_roles().items()}
        return {p: r for p, r in roles.items() if r is not None}

    async def set_client_role(self, peer: str, role: Role) -> ClientInfo:
        """Publish ``role`` for a client; returns the entry once it is persisted.

        BadRequestError for a member (its role is the table's)."""
        entry: ClientInfo = await self.driver.call(
            lambda: self.core.set_client(peer, to_table(role), now_ms=_now_ms()))
        await self._persisted([entry])
        return entry

    async def revoke_client_role(self, peer: str, only: Role | None = None) -> ClientInfo | None:
        """Tombstone a client's role (only ``only``, if named); None if it had no such role."""
        entry: ClientInfo | None = await self.driver.call(
            lambda: self.core.revoke_client(peer, to_table(only) if only else None,
                                            now_ms=_now_ms()))
        if entry is not None:
            await self._persisted([entry])
        return entry

    async def _apply_file_edits(self, edits: Sequence[Edit], mtime_ms: int) -> None:
        def publish() -> list[ClientInfo]:
            entries = []
            for peer, role in edits:
                if self.driver.is_member(peer):
                    log.warning("clients file lists member %s: ignored (members are the "
                                "table's)", peer)
                    continue
                entries.append(self.core.set_client(peer, to_table(role), now_ms=mtime_ms))
            return entries

        await self._persisted(await self.driver.call(publish))

    async def _persisted(self, entries: Sequence[ClientInfo]) -> None:
        """Wait until the state on disk holds ``entries`` (or newer ones)."""
        def holds(state: PersistentState) -> bool:
            have = state.table.clients
            return all(e.id in have and have[e.id].order_key() >= e.order_key()
                       for e in entries)

        await self.state_file.wait_for(holds)

    def _durable_roles(self) -> dict[str, Role] | None:
        last = self.state_file.last
        if last is None:
            return None
        roles = {p: from_table(r) for p, r in last.table.client_roles().items()}
        return {p: r for p, r in roles.items() if r is not None}

    async def call_peer(self, peer: str, request: wm.Request) -> wm.Response:
        """A store request to another node (dialing it by its table addresses)."""
        addrs = self.driver.addrs_of(peer)
        if addrs:
            await self.host.connect(peer, addrs)
        return await self.rpc.call(parse_peer_id(peer), wm.STORE_PROTOCOL, request,
                                   timeout=PEER_CALL_TIMEOUT)

    async def _send_batch(self, target: str, request: wm.Batch) -> wm.Response:
        return await self.call_peer(target, request)

    async def _forward_delete(self, target: str, key: str) -> None:
        await self.call_peer(target, wm.Delete(0, key, asking=True))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _holds_copies(core: ClusterCore) -> bool:
    """Whether some slot of this node has another copy to be taken over from."""
    t = core.table
    return any(len(t.copies(s)) > 1 for s in (*t.slots_of(core.me),
                                              *t.replica_slots_of(core.me)))


def _make_core(me: str, settings: NodeSettings, state_file: StateFile) -> ClusterCore:
    state = state_file.load()
    rng = random.Random()
    if state is not None:
        log.info("recovered state: epoch %d, %d migrations, %d client roles", state.epoch,
                 len(state.migrations), len(state.table.client_roles()))
        core = ClusterCore(me, state, rng=rng, config=settings.gossip)
    else:
        log.info("first start: table from config.json")
        core = ClusterCore.bootstrap(me, settings.table, rng=rng, config=settings.gossip)
    core.merge_clients(ClientInfo(peer, to_table(role), 0) for peer, role in
                       settings.clients.items() if peer not in core.table.nodes)
    return core


@asynccontextmanager
async def run_data_node(host: HostHandle, datastore: Datastore,
                        settings: NodeSettings) -> AsyncIterator[DataNode]:
    """Run a data node on ``host`` over ``datastore`` for the body of the block.

    The caller keeps ``datastore`` and closes it; an index store this opens
    beside it (a flatfs's, node/slotindex.py) is closed here."""
    indexed = slot_indexed(datastore)
    opened_here = indexed is not datastore and indexed.index is not indexed.data
    side_index = indexed.index if opened_here else None
    try:
        async with _run_data_node(host, indexed, settings) as node:
            yield node
    finally:
        if side_index is not None:
            await side_index.close()


@asynccontextmanager
async def _run_data_node(host: HostHandle, datastore: SlotIndexedDatastore,
                         settings: NodeSettings) -> AsyncIterator[DataNode]:
    me = host.peer_id.to_base58()
    had_index = await datastore.has_index()
    indexed = await datastore.ensure_index()
    state_file = StateFile(settings.conf_dir)
    restarted = state_file.load() is not None
    core = _make_core(me, settings, state_file)
    if me not in core.table.nodes:
        raise ConfigError(f"this node ({me}) is not in the cluster's table")
    if restarted and not had_index and not indexed and _holds_copies(core):
        # The state says this node holds data; the datastore was never written by it.
        log.warning("the datastore is empty but this node's state says it holds copies: "
                    "the disk was wiped or replaced; withdrawing until they are re-made "
                    "on other nodes")
        core.withdraw()
    bound = host.listen_addrs
    if not set(bound) <= set(core.table.nodes[me].addrs):
        log.info("advertising addresses %s", bound)
        core.add_member(me, bound)
    async with trio.open_nursery() as nursery, open_rpc_client(host.host, RpcLimits()) as rpc:
        links = GossipLinks(host, nursery, lambda p: driver.addrs_of(p),
                            max_backoff=settings.max_backoff)
        driver = CoreDriver(core, state_file, links, settings.tick_interval)
        links.driver = driver
        node = DataNode(host, datastore, driver, links, rpc, settings, state_file)
        node.refiller.resume()  # before serving: a grow in flight keeps its learner
        # Peers with no role are strangers: small frames, few streams (net/admission.py).
        set_trust(host.host, lambda peer: node.auth.role_of(peer) is not None)
        host.host.set_stream_handler(wm.GOSSIP_PROTOCOL, links.handle_stream)  # type: ignore[arg-type]
        try:
            async with serve_rpc(host.host, wm.STORE_PROTOCOL, node.service):
                await nursery.start(driver.run, node.migrator.run)
                await nursery.start(node.clients_file.run)
                nursery.start_soon(node.service.count_keys)
                nursery.start_soon(node.refiller.run)
                nursery.start_soon(node.sweeper.run)
                log.info("node %s serving slots %s", me, core.table.slots_of(me))
                yield node
        finally:
            # Replace, never remove, a handler (see RpcServer.close): serve_rpc
            # already did the store protocol's.
            host.host.set_stream_handler(wm.GOSSIP_PROTOCOL, reject_stream)  # type: ignore[arg-type]
            nursery.cancel_scope.cancel()

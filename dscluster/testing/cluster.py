"""Start real clusters for tests and benchmarks: in-process or as processes.

In-process (`local_cluster`): N real libp2p hosts on 127.0.0.1 port 0 in the
caller's trio run, each with its own datastore (memory by default) and conf
dir; the table is built from the real bound addresses, so nodes find each
other at once. `stop_node(i)` / `start_node(i)` stop a node and bring it back
on the same addresses from its conf dir (state file, clients file) and the
same datastore, as a restarted process would. `ClusterClientHelper` adds a
client host that talks the store protocol to whichever node owns a key (a tiny
router following MOVED/ASK).

Processes (`ProcessCluster`): `dscfg cluster -n N`, the bootstrap node, and
the others joining with --bootstrapper/--identity, exactly as an operator
starts them; see that class.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import trio

from dscluster.core.gossip import GossipConfig
from dscluster.core.slots import key_slot
from dscluster.core.table import NodeInfo, NodeRole, SlotTable
from dscluster.datastore import Datastore, MemoryDatastore
from dscluster.errors import AskError, MovedError
from dscluster.net.host import HostHandle, Identity, open_host, parse_peer_id
from dscluster.net.rpc import RpcClient, open_rpc_client
from dscluster.node import DataNode, NodeSettings, run_data_node
from dscluster.node.auth import Role
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

    async def _serve(self, *, task_status: trio.TaskStatus[HostHandle]) -> None:
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
    admins: Sequence[str] | None = None,
) -> AsyncIterator[InProcessCluster]:
    """N running nodes on loopback; a client identity is authorized read-write.

    ``extra_members`` are peer IDs listed as slot-less members without a
    running node (a test host can then speak gossip as a member). With
    ``admins`` every node serves the admin protocol, those peers listed in its
    DIR/admins.
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




# -- real processes ---------------------------------------------------------------------


class ProcessCluster:
    """N ``dscluster`` processes started as go-ds-cluster's README starts them.

    ``dscfg cluster -n N DIR/n0`` writes the bootstrap config; a clients file
    authorizes ``client_identity``; node 0 starts from its config and nodes
    1..N-1 join with ``--bootstrapper --identity --join-secret``. Each node's
    stdout/stderr go to DIR/n<i>.out / DIR/n<i>.log. Use ``async with``.
    """

    def __init__(self, base_dir: str | os.PathLike[str], n: int = 3, *,
                 datastore: str = "leveldb", tick: float = 0.2,
                 extra_args: Sequence[str] = (), admin_client: bool = False,
                 env: Mapping[str, str] | None = None) -> None:
        self.base = os.fspath(base_dir)
        self.env = {**os.environ, **env} if env else None  # the daemons' environment
        self.admin_client = admin_client  # the client identity is also a cluster admin
        self.n = n
        self.datastore = datastore
        self.tick = tick
        self.extra_args = list(extra_args)
        self.client_identity = Identity.generate()
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n
        self.bootstrap_addr = ""
        self.secret = ""
        self.table: SlotTable | None = None

    def conf(self, i: int) -> str:
        return os.path.join(self.base, f"n{i}")

    def seeds(self) -> dict[str, list[str]]:
        """Every node's peer ID and addresses, as open_admin takes them."""
        assert self.table is not None
        return {p: list(n.addrs) for p, n in self.table.nodes.items()}

    def peer_id(self, i: int) -> str:
        from dscluster.config import load_node_config

        return load_node_config(self.conf(i)).identity.peer_id

    def log_path(self, i: int) -> str:
        return os.path.join(self.base, f"n{i}.log")

    def log_text(self, i: int) -> str:
        with open(self.log_path(i), encoding="utf-8", errors="replace") as f:
            return f.read()

    async def __aenter__(self) -> ProcessCluster:
        out = subprocess.run([_script("dscfg"), "cluster", f"--cluster-node-number={self.n}",
                              self.conf(0)], check=True, capture_output=True, text=True)
        lines = out.stdout.splitlines()
        self.bootstrap_addr = lines[0].strip()
        self.secret = lines[1].split(":", 1)[1].strip()
        with open(os.path.join(self.conf(0), "clients"), "w", encoding="utf-8") as f:
            f.write(f"{self.client_identity.peer_id_str}\n")
        await self.start(0)
        for i in range(1, self.n):
            await self.start(i)
        from dscluster.cli import table_of
        from dscluster.config import load_node_config

        self.table = table_of(load_node_config(self.conf(0)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for i in range(self.n):
            self.stop(i)

    def command(self, i: int) -> list[str]:
        cmd = [_script("dscluster"), "--conf", self.conf(i), "--datastore", self.datastore,
               "--tick", str(self.tick), *self.extra_args]
        if i and not os.path.exists(os.path.join(self.conf(i), "config.json")):
            cmd += ["--bootstrapper", self.bootstrap_addr, "--identity", str(i),
                    "--join-secret", self.secret]
        return cmd

    async def start(self, i: int, timeout: float = 30) -> None:
        """Start node i and wait until it prints its listening address."""
        if self.admin_client:
            os.makedirs(self.conf(i), exist_ok=True)
            with open(os.path.join(self.conf(i), "admins"), "w", encoding="utf-8") as f:
                f.write(f"{self.client_identity.peer_id_str}\n")
        out_path = os.path.join(self.base, f"n{i}.out")
        with open(out_path, "wb") as out, open(self.log_path(i), "ab") as err:
            self.procs[i] = subprocess.Popen(self.command(i), stdout=out, stderr=err,
                                             env=self.env)
        with trio.fail_after(timeout):
            while True:
                with open(out_path, encoding="utf-8", errors="replace") as f:
                    if "node listening on" in f.read():
                        return
                proc = self.procs[i]
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"node {i} exited with {proc.returncode}: "
                                       f"{self.log_text(i)[-2000:]}")
                await trio.sleep(0.05)

    def listening_addrs(self, i: int) -> list[str]:
        """The multiaddrs node i printed at its last start."""
        marker = "node listening on "
        with open(os.path.join(self.base, f"n{i}.out"), encoding="utf-8",
                  errors="replace") as f:
            return [line.split(marker, 1)[1].strip() for line in f if marker in line]

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=20)

    def stop(self, i: int) -> int | None:
        """SIGTERM and wait (SIGKILL after 20 s); returns the exit status."""
        proc = self.procs[i]
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    async def wait_for_log(self, i: int, *texts: str, timeout: float = 30,
                           after: int = 0) -> str:
        """Wait until node i's log holds one of ``texts`` past offset ``after``; returns it."""
        with trio.fail_after(timeout):
            while True:
                log_text = self.log_text(i)[after:]
                for text in texts:
                    if text in log_text:
                        return text
                await trio.sleep(0.1)


def rss_kib(pid: int) -> int:
    """A process's resident set (VmRSS) in KiB, 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _script(name: str) -> str:
    """The console script next to this interpreter (the venv's), else on PATH."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.path.exists(candidate) else (shutil.which(name) or name)

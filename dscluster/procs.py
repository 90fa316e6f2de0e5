"""Run a cluster of real ``dscluster`` processes, as an operator starts them.

What `make run` (dscluster/localcluster.py), the end-to-end tests and the
benchmarks share; it needs nothing from a test framework.

``ProcessCluster(DIR, N)`` runs ``dscfg cluster -n N DIR/n0`` (which also
writes an operator client, admin of the whole cluster, unless
``operator_client`` is empty), authorizes ``client_identity`` in the
bootstrap node's clients file, starts node 0 from its config and nodes
1..N-1 joining with ``--bootstrapper --identity --join-secret-file
DIR/n0/join.secret``: the secret never appears on a command line, where
``ps`` shows it to every user. Each node's stdout and stderr go to
DIR/n<i>.out and DIR/n<i>.log. If a node fails to start, the nodes already
started are stopped before the error propagates. Use ``async with``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

import trio

from dscluster.config import JOIN_SECRET_FILE, load_node_config, table_of
from dscluster.core.table import SlotTable
from dscluster.net.host import Identity
from dscluster.node.clients import CLIENTS_FILE

LISTENING = "node listening on "  # what dscluster prints once it serves


class ProcessCluster:
    """N ``dscluster`` processes started as go-ds-cluster's README starts them.

    ``client_identity`` is authorized read-write (with ``admin_client`` also
    listed in every node's DIR/admins). ``operator_client`` is the directory
    that ``dscfg cluster --client-dir`` fills with an admin client config
    ("" for none). ``copies`` is the cluster's (``dscfg cluster --copies``).
    """

    def __init__(self, base_dir: str | os.PathLike[str], n: int = 3, *,
                 datastore: str = "leveldb", tick: float = 0.2,
                 extra_args: Sequence[str] = (), admin_client: bool = False,
                 env: Mapping[str, str] | None = None, operator_client: str = "",
                 copies: int = 1) -> None:
        self.base = os.fspath(base_dir)
        self.env = {**os.environ, **env} if env else None  # the daemons' environment
        self.admin_client = admin_client  # the client identity is also a cluster admin
        self.operator_client = operator_client
        self.n = n
        self.datastore = datastore
        self.copies = copies  # dscfg cluster --copies
        self.tick = tick
        self.extra_args = list(extra_args)
        self.client_identity = Identity.generate()
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n
        self.bootstrap_addr = ""
        self.secret = ""
        self.table: SlotTable | None = None

    def conf(self, i: int) -> str:
        return os.path.join(self.base, f"n{i}")

    @property
    def secret_file(self) -> str:
        """The bootstrap node's join.secret: what joiners read the secret from."""
        return os.path.join(self.conf(0), JOIN_SECRET_FILE)

    def seeds(self) -> dict[str, list[str]]:
        """Every node's peer ID and addresses, as open_admin takes them."""
        assert self.table is not None
        return {p: list(n.addrs) for p, n in self.table.nodes.items()}

    def peer_id(self, i: int) -> str:
        return load_node_config(self.conf(i)).identity.peer_id

    def log_path(self, i: int) -> str:
        return os.path.join(self.base, f"n{i}.log")

    def log_text(self, i: int) -> str:
        with open(self.log_path(i), encoding="utf-8", errors="replace") as f:
            return f.read()

    async def __aenter__(self) -> ProcessCluster:
        dscfg = [script("dscfg"), "cluster", f"--cluster-node-number={self.n}",
                 f"--copies={self.copies}", self.conf(0)]
        dscfg += ["--client-dir", self.operator_client] if self.operator_client else \
            ["--no-client"]
        out = subprocess.run(dscfg, check=True, capture_output=True, text=True)
        lines = out.stdout.splitlines()
        self.bootstrap_addr = lines[0].strip()
        self.secret = lines[1].split(":", 1)[1].strip()
        # Next to the operator's line, if dscfg wrote one.
        with open(os.path.join(self.conf(0), CLIENTS_FILE), "a", encoding="utf-8") as f:
            f.write(f"{self.client_identity.peer_id_str}\n")
        await self.start_all()
        return self

    async def start_all(self) -> None:
        """Start every node from its config; if one fails, stop those already started."""
        try:
            for i in range(self.n):
                await self.start(i)
        except BaseException:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self.stop_all)
            raise
        self.table = table_of(load_node_config(self.conf(0)))

    async def __aexit__(self, *exc: object) -> None:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.stop_all)

    def stop_all(self) -> None:
        """SIGTERM every running node at once, then wait for each."""
        running = [p for p in self.procs if p is not None and p.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        for i in range(len(self.procs)):
            self.stop(i)

    def command(self, i: int) -> list[str]:
        cmd = [script("dscluster"), "--conf", self.conf(i), "--datastore", self.datastore,
               "--tick", str(self.tick), *self.extra_args]
        if i and not os.path.exists(os.path.join(self.conf(i), "config.json")):
            cmd += ["--bootstrapper", self.bootstrap_addr, "--identity", str(i),
                    "--join-secret-file", self.secret_file]
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
                    if LISTENING in f.read():
                        return
                proc = self.procs[i]
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"node {i} exited with {proc.returncode}: "
                                       f"{self.log_text(i)[-2000:]}")
                await trio.sleep(0.05)

    def listening_addrs(self, i: int) -> list[str]:
        """The multiaddrs node i printed at its last start."""
        with open(os.path.join(self.base, f"n{i}.out"), encoding="utf-8",
                  errors="replace") as f:
            return [line.split(LISTENING, 1)[1].strip() for line in f if LISTENING in line]

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


def script(name: str) -> str:
    """The console script next to this interpreter (the venv's), else on PATH."""
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.path.exists(candidate) else (shutil.which(name) or name)


_script = script  # the name the tests import

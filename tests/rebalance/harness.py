"""Helpers for the rebalance tests: a process cluster that grows, bulk load and verify."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from dsclient.admin import AdminClient
from dscluster.core.slots import key_slot
from dscluster.core.table import SlotTable
from dscluster.testing.cluster import ProcessCluster, StoreClient
from dscluster.wire import messages as wm

CHUNK = 500  # keys per batched request


class GrowingCluster(ProcessCluster):
    """ProcessCluster whose client is also an admin, and that can add ``--join`` nodes."""

    def __init__(self, base_dir: str | os.PathLike[str], n: int = 3, **kw: object) -> None:
        super().__init__(base_dir, n, admin_client=True, **kw)  # type: ignore[arg-type]
        self.initial = n

    async def start(self, i: int, timeout: float = 90) -> None:
        await super().start(i, timeout)

    def command(self, i: int) -> list[str]:
        if i < self.initial or os.path.exists(os.path.join(self.conf(i), "config.json")):
            return super().command(i)
        return [*super().command(0)[:1], "--conf", self.conf(i), "--datastore", self.datastore,
                "--tick", str(self.tick), *self.extra_args, "--bootstrapper",
                self.bootstrap_addr, "--join", "--join-secret-file", self.secret_file]

    async def add_node(self) -> int:
        """Start one more node with ``--join``; returns its index."""
        i = self.n
        self.n += 1
        self.procs.append(None)
        await self.start(i)
        return i


def _by_owner(table: SlotTable, keys: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k in keys:
        out.setdefault(table.owner(key_slot(k)) or "", []).append(k)
    return out


async def bulk_put(client: StoreClient, table: SlotTable, items: Mapping[str, bytes]) -> None:
    for owner, keys in _by_owner(table, items).items():
        for i in range(0, len(keys), CHUNK):
            part = keys[i:i + CHUNK]
            resp = await client.call_node(owner, wm.Batch(0, tuple((k, items[k]) for k in part),
                                                          (), False), timeout=60)
            assert isinstance(resp, wm.OkMany)
            assert all(r is None for r in resp.results), resp.results[:3]


async def bulk_get(client: StoreClient, admin: AdminClient, keys: Iterable[str]
                   ) -> dict[str, bytes | None]:
    """Each key's value (None: not found), asking each key's current owner."""
    table = await admin.table()
    client.addrs.update({p: list(n.addrs) for p, n in table.nodes.items()})
    out: dict[str, bytes | None] = {}
    for owner, part_keys in _by_owner(table, keys).items():
        for i in range(0, len(part_keys), CHUNK):
            part = part_keys[i:i + CHUNK]
            resp = await client.call_node(owner, wm.GetMany(0, tuple(part)), timeout=60)
            assert isinstance(resp, wm.OkMany)
            for k, r in zip(part, resp.results, strict=True):
                if isinstance(r, wm.ErrorInfo):
                    assert r.code is wm.ErrorCode.NOT_FOUND, (k, r)
                    out[k] = None
                else:
                    assert isinstance(r, bytes)
                    out[k] = r
    return out


def write_client_conf(cluster: ProcessCluster, conf_dir: str) -> str:
    """A dsclient config for the cluster's client identity (an admin in GrowingCluster)."""
    from dscluster.config import ClientConfig, IdentityConfig, save_config

    assert cluster.table is not None
    os.makedirs(conf_dir, exist_ok=True)
    boot = tuple(f"{a}/p2p/{p}" for p, n in sorted(cluster.table.nodes.items())
                 for a in n.addrs[:1])
    save_config(ClientConfig(IdentityConfig.of(cluster.client_identity),
                             bootstrap_addrs=boot), conf_dir)
    return conf_dir


def cluster_cli(conf_dir: str, *args: str, timeout: float = 300):  # -> CompletedProcess[str]
    """Run ``python -m dsclient.cluster_cli --conf DIR ARGS`` (blocking; use a thread)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "dsclient.cluster_cli", "--conf", conf_dir,
                           *args], capture_output=True, text=True, timeout=timeout)


def dsclient(conf_dir: str, *args: str, timeout: float = 300):  # -> CompletedProcess[str]
    """Run the ``dsclient`` console script with ``--conf DIR`` (blocking; use a thread)."""
    import subprocess

    from dscluster.testing.cluster import _script

    return subprocess.run([_script("dsclient"), "--conf", conf_dir, *args],
                          capture_output=True, text=True, timeout=timeout)

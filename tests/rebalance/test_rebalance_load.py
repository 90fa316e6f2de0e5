"""Rebalancing under load, through the CLI: grow 3 -> 4, then remove a node, clients running."""

from __future__ import annotations

import random
import subprocess
import sys

import trio

from dsclient.admin import open_admin
from dscluster.core.slots import SLOT_COUNT
from dscluster.testing.cluster import store_client
from tests.rebalance.harness import (
    GrowingCluster,
    bulk_get,
    bulk_put,
    cluster_cli,
    dsclient,
    write_client_conf,
)
from tests.rebalance.workload import Workload


async def test_grow_and_shrink_under_load_loses_no_acknowledged_write(tmp_path):
    with trio.fail_after(300):
        async with GrowingCluster(tmp_path, 3) as cluster:
            assert cluster.table is not None
            conf = write_client_conf(cluster, str(tmp_path / "client"))
            stable = {f"/stable/{i}": f"s{i}".encode() for i in range(1500)}
            async with store_client(cluster.client_identity, cluster.table) as client, \
                    open_admin(cluster.client_identity, cluster.seeds()) as admin:
                await bulk_put(client, cluster.table, stable)
                new = await cluster.add_node()
                new_peer = cluster.peer_id(new)
                out = await trio.to_thread.run_sync(cluster_cli, conf, "add-node", new_peer)
                assert out.returncode == 0, out.stderr
                assert f"{new_peer} is a member with 0 slots" in out.stdout

                data = tmp_path / "file.bin"
                data.write_bytes(random.Random(6).randbytes(3 * 262144 + 1000))
                load = Workload(client, stable, seed=6)
                async with trio.open_nursery() as nursery:
                    load.start(nursery)
                    dry = await trio.to_thread.run_sync(cluster_cli, conf, "rebalance",
                                                        "--dry-run")
                    assert dry.returncode == 0, dry.stderr
                    assert dry.stdout.count(f"-> {new_peer}") == 3
                    coordinator = subprocess.Popen(
                        [sys.executable, "-m", "dsclient.cluster_cli", "--conf", conf,
                         "rebalance"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    # (e) a file added while the slots move reads back whole
                    added = await trio.to_thread.run_sync(dsclient, conf, "add", str(data))
                    assert added.returncode == 0, added.stderr
                    stdout, stderr = await trio.to_thread.run_sync(coordinator.communicate)
                    out = subprocess.CompletedProcess(coordinator.args, coordinator.returncode,
                                                      stdout, stderr)
                    assert out.returncode == 0, out.stderr
                    assert "rebalance done" in out.stdout
                    assert f"slots {SLOT_COUNT // 4}/{SLOT_COUNT // 4}" in out.stderr

                    gone = cluster.peer_id(2)
                    out = await trio.to_thread.run_sync(cluster_cli, conf, "remove-node", gone)
                    assert out.returncode == 0, out.stderr
                    assert f"{gone} retired" in out.stdout
                    load.stop.set()

                led = load.ledger
                assert led.ops > 100 and not led.bad_reads, led.bad_reads[:5]
                table = await admin.table()
                assert len(table.slots_of(gone)) == 0
                assert gone not in await admin.members()
                assert {len(table.slots_of(p)) for p in await admin.members()} <= {
                    SLOT_COUNT // 3, SLOT_COUNT // 3 + 1}
                cluster.stop(2)  # the retired node leaves; nothing may depend on it

                keys = set(led.acked) | set(led.maybe)
                final = await bulk_get(client, admin, keys)
                assert not load.wrong_keys(final), load.wrong_keys(final)[:5]
                assert await bulk_get(client, admin, stable) == stable

                cid = added.stdout.split()[1]
                back = tmp_path / "back.bin"
                got = await trio.to_thread.run_sync(dsclient, conf, "get", cid, str(back))
                assert got.returncode == 0, got.stderr
                assert back.read_bytes() == data.read_bytes()

                out = await trio.to_thread.run_sync(cluster_cli, conf, "check")
                assert out.returncode == 0, out.stdout + out.stderr
                assert out.stdout.startswith("ok: 3 members agree")

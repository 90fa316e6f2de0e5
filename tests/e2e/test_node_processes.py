"""End to end: real dscluster processes, started as go-ds-cluster's README starts them."""

from __future__ import annotations

import os
import subprocess

import trio

from dscluster.testing.cluster import ProcessCluster, _script, store_client

KEYS = [f"/e2e/{i}" for i in range(90)]


async def test_three_processes_join_store_survive_kill9_and_report_liveness(tmp_path):
    with trio.fail_after(150):
        async with ProcessCluster(tmp_path, 3) as cluster:
            assert cluster.table is not None
            ids = sorted(cluster.table.data_nodes())
            assert len(ids) == 3
            # the joiners fetched 0600 configs and never needed the secret in them
            for i in (1, 2):
                path = os.path.join(cluster.conf(i), "config.json")
                assert os.stat(path).st_mode & 0o777 == 0o600
                assert cluster.secret not in open(path).read()
            async with store_client(cluster.client_identity, cluster.table) as client:
                for k in KEYS:
                    await client.put(k, k.encode())
                for k in KEYS:
                    assert await client.get(k) == k.encode()

                # kill -9 node 1, restart it from its own config: every write is still there
                mark = len(cluster.log_text(0))
                cluster.kill(1)
                node1 = cluster.peer_id(1)
                await cluster.wait_for_log(0, f"peer {node1} is PFAIL", f"peer {node1} is FAIL",
                                           after=mark)
                mark = len(cluster.log_text(0))
                await cluster.start(1)
                assert "--bootstrapper" not in " ".join(cluster.procs[1].args)  # type: ignore[union-attr]
                await cluster.wait_for_log(0, f"peer {node1} is up", after=mark)
                for k in KEYS:
                    assert await client.get(k) == k.encode()

            # a clean stop exits 0 and says so
            assert cluster.stop(2) == 0
            assert "datastore closed" in cluster.log_text(2)


async def test_stranger_without_the_secret_cannot_join(tmp_path):
    with trio.fail_after(60):
        async with ProcessCluster(tmp_path, 2) as cluster:
            conf = os.path.join(tmp_path, "stranger")
            out = await trio.to_thread.run_sync(lambda: subprocess.run(
                [_script("dscluster"), "--conf", conf, "--bootstrapper", cluster.bootstrap_addr,
                 "--identity", "1", "--join-secret", "not-the-secret"],
                capture_output=True, text=True, timeout=30))
            assert out.returncode == 1
            assert out.stderr.strip().splitlines()[-1] == (
                "dscluster: error: bootstrap node refused: wrong join secret")
            assert "Traceback" not in out.stderr
            assert not os.path.exists(os.path.join(conf, "config.json"))
            await cluster.wait_for_log(0, "join: refused")
            assert cluster.stop(0) == 0


def test_user_errors_are_one_line(tmp_path):
    out = subprocess.run([_script("dscluster"), "--conf", str(tmp_path / "none")],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 1
    assert out.stderr.count("\n") == 1 and "no " in out.stderr and "config.json" in out.stderr

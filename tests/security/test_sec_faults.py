"""Faults on real processes: kill -9 under load, a frozen node, secrets kept out of logs."""

from __future__ import annotations

import json
import os
import signal

import trio

from dscluster.core.slots import key_slot
from dscluster.errors import DSClusterError
from dscluster.testing.cluster import ProcessCluster, store_client
from dscluster.wire import messages as wm


async def test_kill9_under_load_freeze_and_heal_no_secret_in_logs(tmp_path) -> None:
    with trio.fail_after(170):
        async with ProcessCluster(tmp_path, 3) as cluster:
            assert cluster.table is not None
            ids = [cluster.peer_id(i) for i in range(3)]
            acked: dict[str, bytes] = {}
            failed = 0
            async with store_client(cluster.client_identity, cluster.table) as client:
                # -- kill -9 of node 1 in the middle of a write load -------------------------
                stop_writing = trio.Event()

                async def writer(w: int) -> None:
                    nonlocal failed
                    n = 0
                    while not stop_writing.is_set() and n < 400:
                        key, value = f"/load/{w}/{n}", f"{w}-{n}".encode()
                        n += 1
                        try:
                            await client.put(key, value)
                        except DSClusterError:
                            failed += 1  # the killed node's slots are unavailable for a while
                            continue
                        acked[key] = value

                async with trio.open_nursery() as nursery:
                    for w in range(3):
                        nursery.start_soon(writer, w)
                    while len(acked) < 60:
                        await trio.sleep(0.05)
                    cluster.kill(1)
                    await trio.sleep(1.0)
                    await cluster.start(1)
                    await trio.sleep(1.0)
                    stop_writing.set()
                assert len(acked) >= 60
                for key, value in acked.items():
                    assert await client.get(key) == value, key

                # -- freeze node 2 (SIGSTOP): the others keep serving their slots -------------
                mark = len(cluster.log_text(0))
                cluster.procs[2].send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
                try:
                    await cluster.wait_for_log(0, f"peer {ids[2]} is PFAIL",
                                               f"peer {ids[2]} is FAIL", after=mark)
                    live = [k for k in (f"/frozen/{i}" for i in range(60))
                            if cluster.table.owner(key_slot(k)) != ids[2]]
                    for k in live:
                        await client.put(k, b"while frozen")
                        assert await client.get(k) == b"while frozen"
                    mark = len(cluster.log_text(0))
                finally:
                    cluster.procs[2].send_signal(signal.SIGCONT)  # type: ignore[union-attr]
                await cluster.wait_for_log(0, f"peer {ids[2]} is up", after=mark)
                # healed: every node answers, at one epoch, and the frozen node's keys serve
                epochs = set()
                for peer in ids:
                    info = await client.call_node(peer, wm.Info(1))
                    assert isinstance(info, wm.NodeInfo)
                    epochs.add(info.epoch)
                assert len(epochs) == 1
                for key, value in acked.items():
                    assert await client.get(key) == value, key

            # -- secrets and keys never reach a log --------------------------------------------
            secrets_ = [cluster.secret]
            for i in range(3):
                with open(os.path.join(cluster.conf(i), "config.json")) as f:
                    secrets_.append(json.load(f)["identity"]["sk"])
            logs = "".join(cluster.log_text(i) for i in range(3))
            logs += "".join(open(os.path.join(tmp_path, f"n{i}.out")).read() for i in range(3))
            assert "node listening" in logs
            for secret in secrets_:
                assert secret and secret not in logs

"""A node that joined with --join keeps its address across a kill -9 and restart.

``--join`` writes ``/ip4/127.0.0.1/tcp/0`` into the new node's config.json; before the
node saved the port it bound, a restart listened on another port while the cluster's
table still named the old one, and nobody could reach it.
"""

from __future__ import annotations

import json
import os

import trio

from dsclient.admin import open_admin
from dscluster.datastore.key import Key
from tests.rebalance.harness import GrowingCluster


def _swarm(conf: str) -> list[str]:
    with open(os.path.join(conf, "config.json"), encoding="utf-8") as f:
        return json.load(f)["addresses"]["swarm"]


async def test_joined_node_restarts_on_the_address_the_table_names(tmp_path):
    from dsclient.client import open_cluster_client

    with trio.fail_after(180):
        async with GrowingCluster(tmp_path, 1) as cluster:
            new = await cluster.add_node()
            peer = cluster.peer_id(new)
            first = _swarm(cluster.conf(new))
            assert first and not any(a.endswith("/tcp/0") for a in first), first
            async with open_admin(cluster.client_identity, cluster.seeds()) as admin:
                await admin.wait_member(peer)
                # Give the new node slots, so that a client must reach it.
                await admin.execute(await admin.plan_rebalance())
                await admin.wait_converged()
                table = await admin.table()
                assert len(table.slots_of(peer)) > 0

                cluster.kill(new)
                await cluster.start(new)
                assert _swarm(cluster.conf(new)) == first
                assert any(a.startswith(first[0]) for a in cluster.listening_addrs(new)), \
                    (first, cluster.listening_addrs(new))
                status = await admin.wait_member(peer)
                assert status is not None
            seeds = [f"{a}/p2p/{p}" for p, n in table.nodes.items() for a in n.addrs]
            async with open_cluster_client(cluster.client_identity, bootstrap=seeds) as client:
                for i in range(200):  # keys on both nodes, the restarted one included
                    await client.put(Key(f"/restart/{i}"), b"v%d" % i)
                for i in range(200):
                    assert await client.get(Key(f"/restart/{i}")) == b"v%d" % i

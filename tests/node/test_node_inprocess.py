"""Data nodes in one process: real libp2p hosts on 127.0.0.1, real gossip and RPC."""

from __future__ import annotations

import pytest
import trio

from dscluster.errors import BadKeyError, MovedError, NotFoundError, UnauthorizedError
from dscluster.net.host import Identity, parse_peer_id
from dscluster.testing.cluster import local_cluster, store_client
from dscluster.wire import messages as wm


async def test_puts_and_gets_reach_the_owner(tmp_path):
    with trio.fail_after(30):
        async with local_cluster(tmp_path, 3) as cluster, \
                store_client(cluster.client_identity, cluster.table) as client:
            keys = [f"/k/{i}" for i in range(60)]
            for k in keys:
                await client.put(k, k.encode() * 3)
            for k in keys:
                assert await client.get(k) == k.encode() * 3
            # each key lives on its owner only
            for k in keys:
                owner = cluster.owner_of(k)
                for node in cluster.nodes:
                    assert await node.datastore.has(k) == (node is owner)
            await client.delete(keys[0])
            with pytest.raises(NotFoundError):
                await client.get(keys[0])


async def test_wrong_node_answers_moved_with_owner_addresses(tmp_path):
    with trio.fail_after(30):
        async with local_cluster(tmp_path, 3) as cluster, \
                store_client(cluster.client_identity, cluster.table) as client:
            key = "/moved/key"
            owner = cluster.owner_of(key)
            other = next(n for n in cluster.nodes if n is not owner)
            with pytest.raises(MovedError) as info:
                await client.call_node(other.peer_id, wm.Get(0, key))
            assert info.value.peer_id == owner.peer_id
            assert info.value.addrs == owner.host.listen_addrs


async def test_batched_requests_are_answered_per_key(tmp_path):
    with trio.fail_after(30):
        async with local_cluster(tmp_path, 3) as cluster, \
                store_client(cluster.client_identity, cluster.table) as client:
            node = cluster.nodes[0]
            mine = [k for k in (f"/b/{i}" for i in range(200)) if cluster.owner_of(k) is node]
            foreign = next(k for k in (f"/f/{i}" for i in range(200))
                           if cluster.owner_of(k) is not node)
            puts = tuple((k, b"v" + k.encode()) for k in mine[:5]) + ((foreign, b"x"),)
            resp = await client.call_node(node.peer_id, wm.Batch(0, puts))
            assert isinstance(resp, wm.OkMany)
            assert resp.results[:5] == (None,) * 5
            assert isinstance(resp.results[5], wm.ErrorInfo)
            assert resp.results[5].code is wm.ErrorCode.MOVED
            resp = await client.call_node(node.peer_id, wm.GetMany(0, (mine[0], "/b/none")))
            assert resp.results[0] == b"v" + mine[0].encode()
            assert resp.results[1].code is wm.ErrorCode.NOT_FOUND
            assert not await node.datastore.has(foreign)
            # the node's own namespace is refused per key, the rest of the batch lands
            reserved = next(k for k in (f"/.dscluster/slot/{i}" for i in range(500))
                            if cluster.owner_of(k) is node)
            resp = await client.call_node(node.peer_id, wm.Batch(
                0, ((mine[6], b"ok"), (reserved, b"no"))))
            assert resp.results[0] is None
            assert resp.results[1].code is wm.ErrorCode.BAD_KEY
            assert await node.datastore.get(mine[6]) == b"ok"
            with pytest.raises(BadKeyError):
                await client.put(reserved, b"no")


async def test_stranger_is_refused_and_info_answers(tmp_path):
    with trio.fail_after(30):
        async with local_cluster(tmp_path, 3) as cluster:
            node = cluster.nodes[1]
            async with store_client(Identity.generate(), cluster.table) as stranger:
                with pytest.raises(UnauthorizedError):
                    await stranger.call_node(node.peer_id, wm.Get(0, "/x"))
            async with store_client(cluster.client_identity, cluster.table) as client:
                info = await client.call_node(node.peer_id, wm.Info(0))
                assert isinstance(info, wm.NodeInfo)
                assert info.peer_id == node.peer_id
                assert info.slots == ((5461, 10922),)
                assert parse_peer_id(info.peer_id)


async def test_query_streams_local_entries(tmp_path):
    with trio.fail_after(30):
        async with local_cluster(tmp_path, 3) as cluster, \
                store_client(cluster.client_identity, cluster.table) as client:
            node = cluster.nodes[2]
            for i in range(30):
                await node.datastore.put(f"/q/{i:02}", b"v")
            await client.host.connect(node.peer_id, node.host.listen_addrs)
            async with client.rpc.query(node.host.peer_id, wm.STORE_PROTOCOL,
                                        wm.Query(0, prefix="/q", chunk_size=7)) as chunks:
                got = [e.key async for c in chunks for e in c.entries]
            assert sorted(got) == [f"/q/{i:02}" for i in range(30)]

"""A query never makes the node build more than one bounded chunk."""

import trio

from dscluster.node.service import MAX_CHUNK_ENTRIES
from dscluster.testing.cluster import local_cluster, store_client
from dscluster.wire import messages as wm


async def test_huge_chunk_size_is_capped(tmp_path) -> None:
    n = MAX_CHUNK_ENTRIES + 500
    with trio.fail_after(60):
        async with local_cluster(tmp_path, 1) as cluster:
            node = cluster.nodes[0]
            batch = await node.datastore.batch()
            for i in range(n):
                batch.put(f"/q/{i:06d}", b"v")
            await batch.commit()
            async with store_client(cluster.client_identity, cluster.table) as client:
                await client.host.connect(node.peer_id, node.host.listen_addrs)
                query = wm.Query(1, "/q", keys_only=True, chunk_size=10**9)
                async with client.rpc.query(node.host.peer_id, wm.STORE_PROTOCOL,
                                            query) as chunks:
                    sizes = [len(c.entries) async for c in chunks]
    assert sum(sizes) == n
    assert max(sizes) == MAX_CHUNK_ENTRIES

"""Daemons running py-libp2p as shipped and a client running our fixes talk normally.

dscluster/net/libp2p_fixes.py changes how bytes are read and when yamux
credits windows, not what goes on the wire: an operator may turn the fixes
off on some processes (DSCLUSTER_LIBP2P_FIXES=0) and not others.
"""

from __future__ import annotations

import os

import trio

from dscluster.datastore.key import Key
from dscluster.net import libp2p_fixes
from dscluster.testing.cluster import ProcessCluster


async def test_unfixed_daemons_serve_a_fixed_client_small_and_large_values(tmp_path):
    from dsclient.client import open_cluster_client

    libp2p_fixes.install()  # this process: fixes on (as every host built here)
    small = {Key(f"/mixed/small/{i}"): os.urandom(4096) for i in range(300)}
    large = {Key(f"/mixed/large/{i}"): os.urandom(256 * 1024) for i in range(24)}
    with trio.fail_after(120):
        async with ProcessCluster(tmp_path, 2, env={libp2p_fixes.ENV_SWITCH: "0"}) as pc, \
                open_cluster_client(pc.client_identity, bootstrap=[pc.bootstrap_addr]) as client:
            async with trio.open_nursery() as nursery:  # concurrent: coalesced batches
                for key, value in {**small, **large}.items():
                    nursery.start_soon(client.put, key, value)
            for key, value in {**small, **large}.items():
                assert await client.get(key) == value

"""Connections that come and go: a node keeps accepting after any number of them.

Before dscluster/net/libp2p_fixes.py's inbound fix, py-libp2p 0.8.1 kept one
of 300 inbound slots per connection until the node shut down, so about 300
short client sessions (or CLI runs) made a node refuse everyone new. These
tests open and close many sessions against a real node process, the way
users' scripts and the CLI do, then check that a new client still connects.
"""

from __future__ import annotations

import pytest
import trio

from dscluster.datastore.key import Key
from dscluster.net import libp2p_fixes
from dscluster.net.host import Identity, open_host
from dscluster.testing.cluster import ProcessCluster

PARALLEL = 4  # short sessions in flight at once


# 700 is more than twice py-libp2p's 300 slots (the default run); 2000 with -m slow.
@pytest.mark.parametrize("count", [700, pytest.param(2000, marks=pytest.mark.slow)])
async def test_thousands_of_short_sessions_then_a_new_client_connects(tmp_path, count):
    from dsclient.client import open_cluster_client

    with trio.fail_after(240):
        async with ProcessCluster(tmp_path, 1) as pc:
            done = 0

            async def sessions(worker: int) -> None:
                nonlocal done
                for i in range(worker, count, PARALLEL):
                    if i % 50 == 0:  # a full client session: table fetch, a put, a get
                        async with open_cluster_client(
                                pc.client_identity, bootstrap=[pc.bootstrap_addr]) as client:
                            key = Key(f"/churn/{i}")
                            await client.put(key, b"%d" % i)
                            assert await client.get(key) == b"%d" % i
                    else:  # a bare connection that opens and closes, as a CLI run does
                        async with open_host() as host:
                            await host.connect(pc.peer_id(0), [pc.bootstrap_addr], timeout=10)
                    done += 1

            async with trio.open_nursery() as nursery:
                for worker in range(PARALLEL):
                    nursery.start_soon(sessions, worker)
            assert done == count
            async with open_cluster_client(pc.client_identity,
                                           bootstrap=[pc.bootstrap_addr]) as client:
                await client.put(Key("/churn/after"), b"still open")
                assert await client.get(Key("/churn/after")) == b"still open"
                assert await client.get(Key("/churn/0")) == b"0"


async def test_inbound_caps_refuse_and_then_admit_again():
    """Past a cap a connection is refused (logged, counted); once one closes, the next is
    admitted: the caps count live connections, not connections ever made."""
    libp2p_fixes.install()
    with trio.fail_after(60):
        async with open_host() as server:
            swarm = server.host.get_network()
            libp2p_fixes.set_connection_caps(
                swarm, libp2p_fixes.ConnectionCaps(max_inbound=100, max_per_ip=3, max_per_peer=1))
            stats = libp2p_fixes.inbound_stats(swarm)
            async with open_host() as a, open_host() as b, open_host() as c:
                for host in (a, b, c):
                    await host.connect(server.peer_id, server.listen_addrs, timeout=10)
                await wait_for(lambda: stats.open == 3)
                async with open_host() as d:
                    with pytest.raises(Exception):  # noqa: B017 - refused in the handshake
                        await d.connect(server.peer_id, server.listen_addrs, timeout=5)
                    assert stats.refused >= 1
            await wait_for(lambda: stats.open == 0)
            async with open_host() as e:
                await e.connect(server.peer_id, server.listen_addrs, timeout=10)
                await wait_for(lambda: stats.open == 1)

            # One peer ID, a second connection at once: the per-peer cap refuses it.
            identity = Identity.generate()
            refused = stats.refused
            async with open_host(identity) as f1, open_host(identity) as f2:
                await f1.connect(server.peer_id, server.listen_addrs, timeout=10)
                await wait_for(lambda: stats.by_peer.get(identity.peer_id_str) == 1)
                with trio.move_on_after(5):
                    await f2.connect(server.peer_id, server.listen_addrs, timeout=5)
                await wait_for(lambda: stats.refused == refused + 1)
                assert stats.by_peer[identity.peer_id_str] == 1


async def test_a_busy_port_fails_the_start(tmp_path):
    """No SO_REUSEPORT: a second host on a port in use gets a clear error."""
    from dscluster.errors import UnavailableError

    with trio.fail_after(30):
        async with open_host() as first:
            addr = first.listen_addrs[0]
            with pytest.raises(UnavailableError, match="cannot listen"):
                async with open_host(listen_addrs=[addr]):
                    pass


async def wait_for(condition, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.02)


"""A peer that keeps breaking the protocol loses its connection; others are served."""

import trio

from dscluster.net.host import open_host
from dscluster.net.rpc import RpcLimits, open_rpc_client, serve_rpc
from dscluster.testing.cluster import local_cluster
from dscluster.wire import messages as wm
from dscluster.wire.framing import encode_frame

GARBAGE = [b"\xff" * 12, encode_frame(b"\x9f\xff not cbor"), encode_frame(b"\x82\x18\x63\x00"),
           b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", encode_frame(b"\xa1\x61t\x61x")]


async def test_repeated_garbage_drops_the_connection_others_still_served(tmp_path) -> None:
    with trio.fail_after(60):
        async with local_cluster(tmp_path, 1) as cluster:
            node = cluster.nodes[0]
            async with open_host() as abuser:
                await abuser.connect(node.peer_id, node.host.listen_addrs)
                server_peer = node.host.peer_id
                for n, junk in enumerate(GARBAGE, 1):
                    stream = await abuser.host.new_stream(server_peer, [wm.STORE_PROTOCOL])
                    await stream.write(junk)
                    try:
                        await stream.read(100)  # the server resets it
                    except Exception:  # noqa: BLE001 - py-libp2p's reset errors have no base
                        pass
                    if n < len(GARBAGE):
                        assert abuser.host.get_network().get_connections(server_peer)
                limit = RpcLimits().max_protocol_errors
                assert len(GARBAGE) == limit
                while any(not c.is_closed
                          for c in abuser.host.get_network().get_connections(server_peer)):
                    await trio.sleep(0.05)
            # an authorized client is served as before
            async with open_host(cluster.client_identity) as host, \
                    open_rpc_client(host.host) as rpc:
                await host.connect(node.peer_id, node.host.listen_addrs)
                await rpc.call(server_peer, wm.STORE_PROTOCOL, wm.Put(1, "/ok", b"v"),
                               timeout=10)
                reply = await rpc.call(server_peer, wm.STORE_PROTOCOL, wm.Get(2, "/ok"),
                                       timeout=10)
                assert reply == wm.Ok(2, b"v")


async def test_strikes_expire_outside_the_window() -> None:
    with trio.fail_after(30):
        await _strikes_expire()


async def _strikes_expire() -> None:
    limits = RpcLimits(max_protocol_errors=2, protocol_error_window=0.2)
    async with open_host() as server, open_host() as client:
        async with serve_rpc(server.host, wm.STORE_PROTOCOL, None, limits) as rpc_server:  # type: ignore[arg-type]
            await client.connect(server.peer_id, server.addrs)
            for _ in range(3):  # slower than the window: never two strikes in it
                stream = await client.host.new_stream(server.peer_id, [wm.STORE_PROTOCOL])
                await stream.write(b"\xff" * 12)
                while rpc_server.protocol_errors < _ + 1:
                    await trio.sleep(0.02)
                await trio.sleep(0.3)
            assert rpc_server.peers_dropped == 0
            assert client.host.get_network().get_connections(server.peer_id)

"""Small hostile inputs (issue 14): each gets one clear error, and the node keeps serving.

- a join hello with an identity that is not an index, a peer ID or "new"
  (``"²"``, a 5,000-digit number) gets the join protocol's error message;
- a stranger opening many join streams gets the extra ones refused, and a
  legitimate joiner still joins;
- a put of key ``/`` names ``/``, not the node's internal index key;
- a frame holding a valid message followed by more bytes is a ProtocolError,
  in both codecs (the store protocol's arrays and gossip's maps), while
  gossip's maps still tolerate unknown keys inside the message.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import cbor2
import pytest
import trio

from dscluster.config import IdentityConfig, NodeConfig, NodeEntry
from dscluster.core import messages as core_messages
from dscluster.errors import BadKeyError, ProtocolError, UnauthorizedError
from dscluster.net.host import Identity, open_host
from dscluster.node.join import (
    MAX_JOIN_STREAMS_PER_PEER,
    JoinServer,
    JoinStream,
    fetch_config,
    join_proof,
)
from dscluster.testing.cluster import InProcessCluster, local_cluster, store_client
from dscluster.wire import messages as wm
from dscluster.wire import schema
from dscluster.wire.framing import FrameDecoder, encode_frame
from dscluster.wire.join_messages import JoinChallenge, JoinConfig, JoinError, JoinHello, JoinProof
from dscluster.wire.messages import JOIN_PROTOCOL

SECRET = "the-join-secret"
BUSY = f"at most {MAX_JOIN_STREAMS_PER_PEER} join streams at once"

# -- join: a real data node (node 0 of an in-process cluster) serving the join protocol --


@asynccontextmanager
async def _bootstrap(tmp_path, n: int = 2) -> AsyncIterator[tuple[InProcessCluster, JoinServer]]:
    """An in-process cluster whose node 0 serves JOIN_PROTOCOL as a bootstrap node does."""
    identities = [Identity.generate() for _ in range(n)]
    async with local_cluster(tmp_path, n, identities=identities) as cluster:
        ids = tuple(IdentityConfig.of(i) for i in identities)
        nodes = tuple(NodeEntry(p, cluster.table.slots_of(p).ranges, tuple(info.addrs))
                      for p, info in cluster.table.nodes.items())
        node0 = cluster.nodes[0]
        cfg = NodeConfig(identity=ids[0], swarm=tuple(node0.host.listen_addrs), nodes=nodes,
                         bootstrap_node=True, identity_list=ids, join_secret_file="join.secret")
        server = JoinServer(cfg, SECRET, node0.peer_id, lambda peer: [], lambda: [])
        node0.host.host.set_stream_handler(JOIN_PROTOCOL, server.handle_stream)  # type: ignore[arg-type]
        yield cluster, server


def _bootstrap_addr(cluster: InProcessCluster) -> str:
    node0 = cluster.nodes[0]
    return f"{node0.host.listen_addrs[0]}/p2p/{node0.peer_id}"


async def _hello(cluster: InProcessCluster, identity: object) -> str:
    """Send one raw hello as a stranger would; the bootstrap's answer (an error's text)."""
    node0 = cluster.nodes[0]
    async with open_host() as host:
        await host.connect(node0.peer_id, node0.host.listen_addrs)
        stream = await host.host.new_stream(node0.host.peer_id, [JOIN_PROTOCOL])  # type: ignore[list-item]
        conn = JoinStream(stream)
        await conn.send(JoinHello(identity))  # type: ignore[arg-type]  # 7: not a str
        with pytest.raises(UnauthorizedError) as err:
            await conn.receive(JoinChallenge)
        return str(err.value)


async def _still_serving(cluster: InProcessCluster, tag: str) -> None:
    """The node serves data, and a legitimate joiner gets its config."""
    async with store_client(cluster.client_identity, cluster.table) as client:
        await client.put(f"/after/{tag}", b"v")
        assert await client.get(f"/after/{tag}") == b"v"
    config, _clients = await fetch_config(_bootstrap_addr(cluster), "1", SECRET)
    assert config["identity"]["peer_id"] == cluster.nodes[1].peer_id


@pytest.mark.parametrize(("identity", "said"), [
    ("\u00b2", "hello: identity '\u00b2' is neither an index, a peer ID nor 'new'"),
    ("1" * 5000, "frame of 5006 bytes exceeds the limit of 4096"),
    ("1" * 1000, "hello: an identity of 1000 characters"),
    ("123456", "hello: identity index 123456... has more than 5 digits"),
    ("", "hello: an identity of 0 characters"),
    ("a b\nc", "hello: identity 'a b\\nc' is neither an index"),
    (7, "JoinHello: expected str"),
])
async def test_bad_join_identity_gets_one_line_error_and_node_keeps_serving(
        tmp_path, identity, said) -> None:
    with trio.fail_after(60):
        async with _bootstrap(tmp_path) as (cluster, server):
            answer = await _hello(cluster, identity)
            assert answer.startswith("bootstrap node refused: ")
            assert said in answer
            assert "\n" not in answer and len(answer) < 300
            assert server.refused == 1 and server.served == 0
            await _still_serving(cluster, "bad-identity")
            assert server.served == 1


async def test_index_out_of_range_is_told_only_after_the_proof(tmp_path) -> None:
    with trio.fail_after(60):
        async with _bootstrap(tmp_path) as (cluster, server):
            with pytest.raises(UnauthorizedError, match="no identity '99999' in this cluster"):
                await fetch_config(_bootstrap_addr(cluster), "99999", SECRET)
            with pytest.raises(UnauthorizedError, match="wrong join secret"):
                await fetch_config(_bootstrap_addr(cluster), "99999", "not-the-secret")
            assert server.refused == 2
            await _still_serving(cluster, "range")


async def _open_join_streams(stranger, peer, many: int) -> tuple[list, int]:
    """Open ``many`` join streams; (the streams opened, how many were refused at once)."""
    opened, refused = [], 0
    for _ in range(many):
        try:
            opened.append(await stranger.host.new_stream(peer, [JOIN_PROTOCOL]))  # type: ignore[list-item]
        except Exception:  # noqa: BLE001 - reset while negotiating (the node's stream caps)
            refused += 1
    return opened, refused


async def _refused_after_the_first(opened: list, held: int) -> int:
    """Of the opened streams past the first ``held``, how many the node refused."""
    refused = 0
    for stream in opened[held:]:
        # an error frame then a reset: a reader already waiting usually gets the frame,
        # a late one (as here) only the reset
        assert await _read_answer(stream) in ("reset", BUSY)
        refused += 1
    return refused


async def _held_streams_are_real(opened: list, held: int) -> None:
    for stream in opened[:held]:
        conn = JoinStream(stream)
        await conn.send(JoinHello("1"))
        assert isinstance((await conn.receive(JoinChallenge)).nonce, bytes)


async def test_stranger_opening_many_join_streams_gets_them_refused(tmp_path) -> None:
    """On a data node: the extra streams are refused (by the join server's per-peer limit,
    or before it by the node's caps on strangers' streams), and a joiner still joins."""
    many = 12
    with trio.fail_after(60):
        async with _bootstrap(tmp_path) as (cluster, server):
            node0 = cluster.nodes[0]
            async with open_host() as stranger:
                await stranger.connect(node0.peer_id, node0.host.listen_addrs)
                opened, refused = await _open_join_streams(stranger, node0.host.peer_id, many)
                assert len(opened) >= MAX_JOIN_STREAMS_PER_PEER
                refused += await _refused_after_the_first(opened, MAX_JOIN_STREAMS_PER_PEER)
                assert refused == many - MAX_JOIN_STREAMS_PER_PEER
                await _still_serving(cluster, "many")  # the stranger's streams block no one
                await _held_streams_are_real(opened, MAX_JOIN_STREAMS_PER_PEER)
            with trio.fail_after(10):  # the stranger gone, its count is forgotten
                while server._open:
                    await trio.sleep(0.02)


async def test_join_server_limits_join_streams_per_peer(caplog) -> None:
    """The join server's own limit, on a host that trusts every peer (no stream caps)."""
    caplog.set_level(logging.WARNING, logger="dscluster.node.join")
    many = 12
    identities = [Identity.generate() for _ in range(2)]
    ids = tuple(IdentityConfig.of(i) for i in identities)
    with trio.fail_after(60):
        async with open_host(identities[0]) as host:
            nodes = (NodeEntry(ids[0].peer_id, ((0, 8191),), tuple(host.listen_addrs)),
                     NodeEntry(ids[1].peer_id, ((8192, 16383),), ("/ip4/127.0.0.1/tcp/1",)))
            cfg = NodeConfig(identity=ids[0], swarm=tuple(host.listen_addrs), nodes=nodes,
                             bootstrap_node=True, identity_list=ids,
                             join_secret_file="join.secret")
            server = JoinServer(cfg, SECRET, ids[0].peer_id, lambda peer: [], lambda: [])
            host.host.set_stream_handler(JOIN_PROTOCOL, server.handle_stream)  # type: ignore[arg-type]
            async with open_host() as stranger:
                await stranger.connect(ids[0].peer_id, host.listen_addrs)
                opened, refused = await _open_join_streams(stranger, host.peer_id, many)
                assert refused == 0 and len(opened) == many
                while server.busy < many - MAX_JOIN_STREAMS_PER_PEER:
                    await trio.sleep(0.02)
                assert await _refused_after_the_first(opened, MAX_JOIN_STREAMS_PER_PEER) \
                    == many - MAX_JOIN_STREAMS_PER_PEER
                assert server.busy == many - MAX_JOIN_STREAMS_PER_PEER
                # another peer is not held up by this one's streams
                config, _ = await fetch_config(f"{host.listen_addrs[0]}/p2p/{ids[0].peer_id}",
                                               "1", SECRET)
                assert config["identity"]["peer_id"] == ids[1].peer_id
                await _held_streams_are_real(opened, MAX_JOIN_STREAMS_PER_PEER)
            # one warning line for the refused streams, not one per stream
            busy_lines = [r for r in caplog.records if "already open" in r.getMessage()]
            assert len(busy_lines) == 1
            with trio.fail_after(10):
                while server._open:
                    await trio.sleep(0.02)


async def _read_answer(stream) -> str:
    """The error message the bootstrap wrote on a refused stream, or "reset"."""
    decoder = FrameDecoder(4096)
    try:
        while (frame := decoder.next_frame()) is None:
            data = await stream.read(4096)
            if not data:
                return "reset"
            decoder.feed(data)
    except Exception:  # noqa: BLE001 - py-libp2p's reset errors have no common base
        return "reset"
    msg = schema.decode(frame)
    assert isinstance(msg, JoinError)
    return msg.message


async def test_join_request_frames_are_small(tmp_path) -> None:
    """A proof frame past the request limit is refused before it is buffered."""
    with trio.fail_after(60):
        async with _bootstrap(tmp_path) as (cluster, server):
            node0 = cluster.nodes[0]
            async with open_host() as host:
                await host.connect(node0.peer_id, node0.host.listen_addrs)
                stream = await host.host.new_stream(node0.host.peer_id, [JOIN_PROTOCOL])  # type: ignore[list-item]
                conn = JoinStream(stream)
                await conn.send(JoinHello("1"))
                nonce = (await conn.receive(JoinChallenge)).nonce
                mac = join_proof(SECRET, nonce, node0.peer_id, host.peer_id.to_base58(), "1")
                big = cbor2.dumps([JoinProof.TAG, mac, b"x" * 100_000])  # a padding field
                await stream.write(encode_frame(big, len(big)))
                with pytest.raises(UnauthorizedError, match="exceeds the limit of 4096"):
                    await conn.receive(JoinConfig)
            assert server.served == 0
            await _still_serving(cluster, "big")


# -- a put of "/" names "/" ------------------------------------------------------------


async def test_put_of_root_key_names_the_users_key(tmp_path) -> None:
    with trio.fail_after(60):
        async with local_cluster(tmp_path, 1) as cluster:
            async with store_client(cluster.client_identity, cluster.table) as client:
                for key in ("/", "//", ""):
                    with pytest.raises(BadKeyError) as err:
                        await client.put(key, b"x")
                    assert str(err.value).startswith("/: the root key cannot hold a value")
                    assert ".dscluster" not in str(err.value)
                    with pytest.raises(BadKeyError) as err:
                        await client.delete(key)
                    assert ".dscluster" not in str(err.value)
                # in a batch, "/" is refused alone and the other keys are stored
                reply = await client.call_node(cluster.nodes[0].peer_id, wm.Batch(
                    0, (("/", b"x"), ("/fine", b"y")), ()))
                assert isinstance(reply, wm.OkMany)
                bad, ok = reply.results
                assert isinstance(bad, wm.ErrorInfo) and bad.message.startswith("/: the root key")
                assert ".dscluster" not in bad.message
                assert ok is None
                assert await client.get("/fine") == b"y"

# -- a frame holds exactly one message -------------------------------------------------


@pytest.mark.parametrize("extra", [b"\x00", b"\xf6", b"\xff", cbor2.dumps([1, 2, "/x"]),
                                   b"\x82\x01"])
def test_store_message_with_trailing_bytes_is_refused(extra: bytes) -> None:
    payload = wm.encode(wm.Get(7, "/k"))
    assert wm.decode(payload) == wm.Get(7, "/k")
    with pytest.raises(ProtocolError, match="bytes after the message"):
        wm.decode(payload + extra)
    with pytest.raises(ProtocolError, match="bytes after the message"):
        schema.decode(payload + extra)


def test_store_message_truncated_or_empty_is_refused() -> None:
    payload = wm.encode(wm.Put(1, "/k", b"v" * 100))
    for bad in (b"", payload[:-1], payload[:1]):
        with pytest.raises(ProtocolError):
            wm.decode(bad)


def test_store_message_extra_fields_inside_it_are_ignored() -> None:
    """Issue 15: fields past the known ones (a newer peer's) are ignored; bytes past the
    message are still refused (above)."""
    assert wm.decode(cbor2.dumps([1, 7, "/k", False, False, "extra", "more"])) == wm.Get(7, "/k")


@pytest.mark.parametrize("extra", [b"\x00", b"\xa0", b"\xff", cbor2.dumps({"t": "ping"})])
def test_gossip_message_with_trailing_bytes_is_refused(extra: bytes) -> None:
    msg = core_messages.MigrateAbort(mid=42)
    payload = core_messages.encode(msg)
    assert core_messages.decode(payload) == msg
    with pytest.raises(ProtocolError, match="bytes after the message"):
        core_messages.decode(payload + extra)


def test_gossip_message_tolerates_unknown_keys_inside_it() -> None:
    """Rolling upgrades (issue 15): a newer peer's extra fields are ignored."""
    msg = core_messages.MigrateAbort(mid=42)
    obj = cbor2.loads(core_messages.encode(msg))
    obj.append([1, 2, 3])  # a field added in a later version
    assert core_messages.decode(cbor2.dumps(obj)) == msg

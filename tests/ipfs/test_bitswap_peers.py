"""Our bitswap between real py-libp2p hosts on 127.0.0.1: DAGs, limits, bad peers."""

from __future__ import annotations

import logging
import random

import pytest
import trio
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from multiformats import CID, multihash

from dscluster.blocks import block_key
from dscluster.datastore.memory import MemoryDatastore
from dscluster.errors import NotFoundError
from dscluster.ipld.protobuf import encode_varint
from dscluster.net.host import open_host
from ipfs_plugin import bitswap_message as bm
from ipfs_plugin.framing import FrameReader, frame
from ipfs_plugin.node import fetch_dag, open_node
from tests.ipfs.helpers import build_file, leaf_file, oversized_file, read_file

MiB = 1024 * 1024


async def stored(dag) -> MemoryDatastore:
    store = MemoryDatastore()
    for cid, block in dag.blocks.items():
        await store.put(block_key(cid), block)
    return store


async def test_fetch_dag_between_two_nodes():
    rng = random.Random(1)
    small_content = rng.randbytes(600_000)
    big_content = rng.randbytes(MiB + MiB // 2)
    small = await build_file(small_content)  # CIDv0 leaves
    big = oversized_file(big_content)  # one 1.5 MiB block
    server_store = await stored(small)
    for cid, block in big.blocks.items():
        await server_store.put(block_key(cid), block)
    client_store = MemoryDatastore()
    with trio.fail_after(20):
        async with open_node(server_store) as server, open_node(client_store) as client:
            peer = await client.connect(server.multiaddrs[0])
            first = await client.bitswap.fetch_dag(small.root, peer)
            assert (first.blocks, first.fetched) == (4, 4)
            again = await client.bitswap.fetch_dag(small.root, peer)
            assert (again.blocks, again.fetched) == (4, 0)  # nothing asked twice
            stats = await fetch_dag(client_store, str(big.root), server.multiaddrs[0])
            assert (stats.blocks, stats.fetched, stats.bytes_fetched) == (2, 2, sum(
                len(b) for b in big.blocks.values()
            ))
    assert await read_file(client_store, small.root) == small_content
    assert await read_file(client_store, big.root) == big_content


async def test_missing_block_is_not_found():
    with trio.fail_after(20):
        async with open_node(MemoryDatastore()) as server, open_node(MemoryDatastore()) as client:
            peer = await client.connect(server.multiaddrs[0])
            with pytest.raises(NotFoundError):
                await client.bitswap.fetch_blocks(peer, [leaf_file(b"absent").root])
            with pytest.raises(NotFoundError):  # bare, not inside an exception group
                await fetch_dag(MemoryDatastore(), str(leaf_file(b"absent").root),
                                server.multiaddrs[0])


@pytest.mark.parametrize(
    ("junk", "logged"),
    [
        (frame(b"\x0b\x00"), "wire type"),
        (encode_varint(bm.MAX_MESSAGE_SIZE + 1) + b"\x00" * 100, "exceeds the limit"),
        (frame(bm.encode(bm.Message(blocks=(bm.Block(leaf_file(b"x").root, b"y"),)))
               .replace(b"\x00\x70\x12\x20", b"\x00\x55\x12\x20")), "CIDv0 prefix"),
    ],
)
async def test_bad_message_resets_only_that_stream(junk, logged, caplog):
    dag = leaf_file(b"still served\n")
    server_store = await stored(dag)
    client_store = MemoryDatastore()
    caplog.set_level(logging.WARNING, logger="ipfs_plugin.bitswap")
    with trio.fail_after(20):
        async with open_node(server_store) as server, open_node(client_store) as client:
            peer = await client.connect(server.multiaddrs[0])
            stream = await client.handle.host.new_stream(peer, [bm.PROTOCOL_1_2_0])
            await stream.write(junk)
            # the server resets that stream (py-libp2p may report it as EOF)
            with pytest.raises((StreamReset, StreamEOF)):
                while await stream.read(1024):
                    pass
            await client.bitswap.fetch_dag(dag.root, peer)  # the peer is still served
    assert logged in caplog.text
    assert await read_file(client_store, dag.root) == b"still served\n"


async def test_block_that_does_not_match_its_cid_is_not_stored():
    wanted = leaf_file(b"the real block\n").root

    async def lying_peer(stream):
        # Answer the wantlist with other bytes under the wanted CID's prefix,
        # then say DONT_HAVE, on a stream of our own (bitswap streams are one-way).
        reader = FrameReader(stream, bm.MAX_MESSAGE_SIZE)
        message = bm.decode(await reader.read_frame())
        cid = message.wants[0].cid
        reply = bm.Message(
            blocks=(bm.Block(cid, b"forged bytes"),),
            presences=(bm.Presence(cid, bm.PresenceType.DONT_HAVE),),
        )
        out = await liar.host.new_stream(stream.muxed_conn.peer_id, [bm.PROTOCOL_1_2_0])
        await out.write(frame(bm.encode(reply)))
        await out.close()

    client_store = MemoryDatastore()
    with trio.fail_after(20):
        async with open_host() as liar, open_node(client_store) as client:
            liar.host.set_stream_handler(bm.PROTOCOL_1_2_0, lying_peer)
            peer = await client.connect(liar.addrs[0])
            with pytest.raises(NotFoundError):
                await client.bitswap.fetch_blocks(peer, [wanted])
    assert not await client_store.has(block_key(wanted))
    forged = CID("base58btc", 0, "dag-pb", multihash.digest(b"forged bytes", "sha2-256"))
    assert not await client_store.has(block_key(forged))


async def test_a_bitswap_1_0_0_peer_gets_bare_blocks():
    dag = leaf_file(b"for an old peer\n")  # a CIDv0 block: all 1.0.0 can name
    server_store = await stored(dag)
    received: list[tuple[str, bm.Message]] = []
    got_reply = trio.Event()

    async def old_peer(stream):
        reader = FrameReader(stream, bm.MAX_MESSAGE_SIZE)
        while (data := await reader.read_frame()) is not None:
            received.append((str(stream.get_protocol()), bm.decode(data)))
            got_reply.set()

    with trio.fail_after(20):
        async with open_node(server_store) as server, open_host() as old:
            old.host.set_stream_handler(bm.PROTOCOL_1_0_0, old_peer)
            await old.connect(server.peer_id, server.multiaddrs)
            out = await old.host.new_stream(server.peer_id, [bm.PROTOCOL_1_0_0])
            await out.write(frame(bm.encode(bm.Message(wants=(bm.WantEntry(dag.root),)),
                                            bm.PROTOCOL_1_0_0)))
            await got_reply.wait()
    assert received == [(bm.PROTOCOL_1_0_0, bm.Message(blocks=(bm.Block(dag.root, dag.blocks[dag.root]),)))]

"""Live migration, hostile gossip and restart, with real hosts in one process."""

from __future__ import annotations

import cbor2
import trio

from dscluster.core import messages as core_messages
from dscluster.core.slots import SlotSet, key_slot
from dscluster.datastore.leveldb import LevelDatastore
from dscluster.net.host import Identity, open_host
from dscluster.testing.cluster import local_cluster, store_client
from dscluster.wire import messages as wm
from dscluster.wire.framing import encode_frame, encode_varint
from dscluster.wire.messages import GOSSIP_PROTOCOL


async def _wait(predicate, step: float = 0.05) -> None:
    while not predicate():
        await trio.sleep(step)


async def test_migration_moves_the_keys_and_every_key_stays_readable(tmp_path):
    with trio.fail_after(60):
        async with local_cluster(tmp_path, 3) as cluster, \
                store_client(cluster.client_identity, cluster.table) as client:
            source, target = cluster.nodes[0], cluster.nodes[1]
            slots = SlotSet.of([(0, 999)])
            moving = [k for k in (f"/m/{i}" for i in range(3000)) if key_slot(k) in slots][:150]
            staying = [k for k in (f"/s/{i}" for i in range(300))
                       if cluster.owner_of(k) is source and key_slot(k) not in slots][:20]
            for k in moving + staying:
                await client.put(k, k.encode())
            mid = await source.start_migration(slots, target.peer_id)
            assert mid >= 1
            # node info lists the migration (read in the same step as the core's view)
            info = source.service._info(0)
            assert len(info.migrations) == len(source.core.migrations) == 1
            assert info.migrations[0].startswith(f"out 0-999 -> {target.peer_id} ")
            # reads keep working while the slots move (MOVED/ASK followed by the client)
            for k in moving[:10]:
                assert await client.get(k) == k.encode()
            await _wait(lambda: all(n.core.table.owner(0) == target.peer_id
                                    and n.core.table.owner(999) == target.peer_id
                                    and not n.core.migrations for n in cluster.nodes))
            for k in moving:
                assert await target.datastore.has(k)
                assert not await source.datastore.has(k)
                assert await client.get(k) == k.encode()
            for k in staying:
                assert await client.get(k) == k.encode()
            assert source.migrator.moved[mid] == len(moving)
            assert source.driver.stable[0] == 0 and target.driver.stable[0] == 1


async def test_migration_of_more_values_than_one_frame_holds(tmp_path):
    """80 values of 256 KiB (20 MiB, above the 16 MiB frame) move in chunks, all of them."""
    with trio.fail_after(120):
        async with local_cluster(tmp_path, 2) as cluster, \
                store_client(cluster.client_identity, cluster.table) as client:
            source, target = cluster.nodes
            slots = SlotSet.of([(0, 99)])
            moving = [k for k in (f"/big/{i}" for i in range(20_000)) if key_slot(k) in slots][:80]
            assert len(moving) == 80 and all(cluster.owner_of(k) is source for k in moving)
            values = {k: k.encode().ljust(256 * 1024, b".") for k in moving}
            for k, v in values.items():
                await client.put(k, v)
            mid = await source.start_migration(slots, target.peer_id)
            await _wait(lambda: not source.core.migrations and not target.core.migrations)
            assert source.migrator.moved[mid] == 80
            assert source.migrator.moved_bytes[mid] == 80 * 256 * 1024
            assert await source.datastore.keys_in_slots(0, 99, 1000) == []
            assert sorted(await target.datastore.keys_in_slots(0, 99, 1000)) == sorted(moving)
            for k, v in values.items():
                assert await client.get(k) == v


async def test_garbage_from_a_member_closes_that_stream_only(tmp_path):
    member = Identity.generate()
    with trio.fail_after(60):
        async with local_cluster(tmp_path, 2, extra_members=[member.peer_id_str]) as cluster, \
                store_client(cluster.client_identity, cluster.table) as client:
            node = cluster.nodes[0]
            bad_frames = [
                encode_frame(b"\xff\x00garbage"),  # not CBOR
                encode_varint(64 * 1024 * 1024),  # announces an oversized frame
                encode_frame(b"\xa1at" + b"\x65bogus"),  # {"t": "bogus"}: the old map form
                encode_frame(cbor2.dumps([999, 1])),  # an unknown tag
                encode_frame(wm.Get(1, "/k").encode()),  # a store request, not gossip
            ]
            async with open_host(member) as host:
                await host.connect(node.peer_id, node.host.listen_addrs)
                for n, frame in enumerate(bad_frames, 1):
                    stream = await host.host.new_stream(node.host.peer_id, [GOSSIP_PROTOCOL])
                    await stream.write(frame)
                    await _wait(lambda n=n: node.links.broken_streams >= n)
                # a well-formed message from the same member is still welcome
                stream = await host.host.new_stream(node.host.peer_id, [GOSSIP_PROTOCOL])
                await stream.write(encode_frame(core_messages.encode(core_messages.TableDelta())))
            assert node.links.broken_streams == len(bad_frames)
            key = next(k for k in (f"/g/{i}" for i in range(100)) if cluster.owner_of(k) is node)
            await client.put(key, b"still serving")
            assert await client.get(key) == b"still serving"


async def test_stranger_gossip_is_refused(tmp_path):
    with trio.fail_after(30):
        async with local_cluster(tmp_path, 2) as cluster:
            node = cluster.nodes[0]
            async with open_host(Identity.generate()) as host:
                await host.connect(node.peer_id, node.host.listen_addrs)
                try:  # the node may reset the stream before our write lands
                    stream = await host.host.new_stream(node.host.peer_id, [GOSSIP_PROTOCOL])
                    await stream.write(
                        encode_frame(core_messages.encode(core_messages.TableDelta())))
                except Exception:  # noqa: BLE001 - py-libp2p's stream errors have no common base
                    pass
                await _wait(lambda: node.links.refused_streams >= 1)
            assert node.core.table.nodes.keys() == cluster.table.nodes.keys()


async def test_restart_recovers_table_from_state_file_and_data(tmp_path):
    identities = [Identity.generate() for _ in range(2)]
    slots = SlotSet.of([(0, 99)])

    def leveldb(i: int) -> LevelDatastore:
        return LevelDatastore(tmp_path / f"ds{i}")

    with trio.fail_after(60):
        stores: list[LevelDatastore] = []

        def keep(i: int) -> LevelDatastore:
            stores.append(leveldb(i))
            return stores[-1]

        async with local_cluster(tmp_path, 2, identities=identities, datastore=keep) as cluster:
            a, b = cluster.nodes
            await a.datastore.put("/x", b"1")
            await a.start_migration(slots, b.peer_id)
            await _wait(lambda: all(n.core.table.owner(0) == b.peer_id and not n.core.migrations
                                    for n in cluster.nodes))
            epoch = a.core.epoch
        for ds in stores:
            await ds.close()
        stores.clear()
        # the same conf dirs: the state files win over the initial table
        async with local_cluster(tmp_path, 2, identities=identities, datastore=keep) as cluster:
            a, b = cluster.nodes
            assert a.core.table.owner(0) == b.peer_id
            assert a.core.epoch >= epoch
        for ds in stores:
            await ds.close()

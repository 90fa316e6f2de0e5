"""Copies on real in-process nodes (libp2p on 127.0.0.1): writes reach every copy
before the client's acknowledgement, a dead copy stops acknowledgements for
its slots only, blocks are read from a copy when their primary is down or has
lost them, and a copy refuses writes from a primary older than one it knows."""

from __future__ import annotations

import hashlib

import pytest
import trio
from multiformats import CID, multihash

from dsclient.client import ClientOptions, open_cluster_client
from dscluster.blocks import block_key
from dscluster.core.planner import Move
from dscluster.core.slots import SlotSet, key_slot
from dscluster.datastore.key import Key
from dscluster.errors import BadRequestError, NotFoundError, UnavailableError
from dscluster.net.host import Identity
from dscluster.testing.cluster import InProcessCluster, local_cluster, store_client
from dscluster.wire import messages as wm

FAST = ClientOptions(request_timeout=3.0)


def _holders(cluster: InProcessCluster, key: str) -> tuple[str, ...]:
    return cluster.nodes[0].core.table.copies(key_slot(key))


async def _on_disk(cluster: InProcessCluster, key: str) -> dict[str, bytes | None]:
    """Each node's stored value of ``key`` (None: not there)."""
    out: dict[str, bytes | None] = {}
    for node in cluster.nodes:
        try:
            out[node.peer_id] = await node.datastore.get(key)
        except NotFoundError:
            out[node.peer_id] = None
    return out


def _block(i: int) -> tuple[str, bytes]:
    data = b"block %d " % i * 50
    cid = CID("base32", 1, "raw", multihash.wrap(hashlib.sha256(data).digest(), "sha2-256"))
    return block_key(cid), data


async def test_every_acknowledged_write_is_on_every_copy_and_nowhere_else(tmp_path) -> None:
    with trio.fail_after(60):
        async with local_cluster(tmp_path, 3, copies=2) as cluster, open_cluster_client(
                cluster.client_identity, bootstrap=[cluster.nodes[0].addrs[0]]) as client:
            keys = [f"/copies/{i}" for i in range(60)]
            for k in keys[:30]:
                await client.put(Key(k), k.encode())
            batch = await client.batch()
            for k in keys[30:]:
                batch.put(Key(k), k.encode() + b"!")
            await batch.commit()
            await client.delete(Key(keys[0]))
            batch = await client.batch()
            batch.delete(Key(keys[59]))
            await batch.commit()
            for k in keys:
                holders = _holders(cluster, k)
                assert len(holders) == 2
                want = (None if k in (keys[0], keys[59])
                        else k.encode() + (b"!" if keys.index(k) >= 30 else b""))
                stored = await _on_disk(cluster, k)
                assert {p: v for p, v in stored.items() if p in holders} == dict.fromkeys(
                    holders, want)
                assert [v for p, v in stored.items() if p not in holders] == [None]
            # every node's Info names the replicas it holds; the client learnt them
            assert client.table.replicas_of(keys[1]) == _holders(cluster, keys[1])[1:]


async def test_without_a_majority_a_primary_whose_copy_is_dead_acknowledges_nothing(
        tmp_path) -> None:
    """Two nodes, two copies: one dies and the other cannot win a shrink (no
    majority), so it takes no write it cannot replicate, until the copy returns."""
    with trio.fail_after(90):
        async with local_cluster(tmp_path, 2, copies=2) as cluster, open_cluster_client(
                cluster.client_identity, bootstrap=[cluster.nodes[0].addrs[0]],
                options=ClientOptions(request_timeout=1.0)) as client:
            alive, dead = cluster.nodes[0], cluster.nodes[1].peer_id
            keys = [f"/dead-copy/{i}" for i in range(16)]
            mine = [k for k in keys if _holders(cluster, k)[0] == alive.peer_id]
            assert mine and len(mine) < len(keys)
            await cluster.stop_node(1)
            with trio.fail_after(20):  # gossip holds it down: no dial per write
                while alive.core.liveness(dead).value == "up":
                    await trio.sleep(0.1)
            await trio.sleep(2)  # time for elections, which cannot be won
            for k in mine:
                with pytest.raises(UnavailableError, match="did not confirm"):
                    await client.put(Key(k), b"v")
            assert all(alive.core.table.copies(key_slot(k)) == _holders(cluster, k)
                       for k in keys)
            await cluster.start_node(1)
            for k in keys:  # the copy is back: every slot takes writes again
                await client.put(Key(k), b"w")
            for k in keys:
                stored = await _on_disk(cluster, k)
                assert [stored[p] for p in _holders(cluster, k)] == [b"w", b"w"]


async def test_writes_and_reads_go_on_after_a_node_dies_with_nothing_lost(tmp_path) -> None:
    """Three nodes, two copies: kill one; its slots fail over to their copies and
    the copies it held are shrunk out, by majority; every acknowledged write
    is still read, and writes of every slot are acknowledged again."""
    with trio.fail_after(120):
        async with local_cluster(tmp_path, 3, copies=2) as cluster, open_cluster_client(
                cluster.client_identity, bootstrap=[cluster.nodes[0].addrs[0]],
                options=ClientOptions(request_timeout=20.0)) as client:
            keys = [f"/failover/{i}" for i in range(48)]
            for k in keys:
                await client.put(Key(k), b"before")
            dead = cluster.nodes[2].peer_id
            theirs = [k for k in keys if _holders(cluster, k)[0] == dead]
            assert theirs
            await cluster.stop_node(2)
            started = trio.current_time()
            await client.put(Key(theirs[0]), b"after")  # waits out the failover
            failover_s = trio.current_time() - started
            for k in keys:
                assert await client.get(Key(k)) in (b"before", b"after")
            for k in keys:
                await client.put(Key(k), b"after")
            live = cluster.nodes[0].core.table
            for k in keys:
                holders = live.copies(key_slot(k))
                assert dead not in holders and holders
                stored = await _on_disk(cluster, k)
                assert [stored[p] for p in holders] == [b"after"] * len(holders)
            assert cluster.nodes[1].core.table.digest() == live.digest()
            print(f"writes of a dead primary's slot resumed after {failover_s:.2f} s")


async def _until(check, timeout: float = 60) -> None:
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(0.1)


async def test_a_slot_that_lost_a_copy_gets_a_new_one_while_clients_write(tmp_path) -> None:
    """Three nodes, two copies: one stops, its slots fail over and shrink to one
    copy; the survivors fill a copy of each on the other survivor (writes go on
    meanwhile); it comes back and holds nothing stale: a key deleted while it
    was away does not return from its old disk."""
    with trio.fail_after(150):
        async with local_cluster(tmp_path, 3, copies=2) as cluster, open_cluster_client(
                cluster.client_identity, bootstrap=[cluster.nodes[0].addrs[0]],
                options=ClientOptions(request_timeout=20.0)) as client:
            keys = [f"/refill/{i}" for i in range(120)]
            for k in keys:
                await client.put(Key(k), b"v1")
            dead = cluster.nodes[2].peer_id
            gone = next(k for k in keys if dead in _holders(cluster, k))
            await cluster.stop_node(2)
            await client.delete(Key(gone))  # waits out the failover or shrink
            written = 0
            table = cluster.nodes[0].core.table

            def whole() -> bool:
                t = cluster.nodes[0].core.table
                return all(len(t.copies(s)) == 2 and dead not in t.copies(s)
                           for s in range(16384))

            while not whole():  # writes go on while the copies are filled
                k = keys[written % len(keys)]
                if k != gone:
                    await client.put(Key(k), b"v2")
                written += 1
                await trio.sleep(0.01)
            assert written > 0
            # each survivor filled a copy (counted once its refill task sees the commit)
            await _until(lambda: all(n.refiller.filled >= 1 for n in cluster.nodes[:2]), 10)
            table = cluster.nodes[0].core.table
            for k in keys:
                stored = await _on_disk(cluster, k)
                holders = table.copies(key_slot(k))
                want = None if k == gone else await client.get(Key(k))
                assert [stored[p] for p in holders] == [want, want], k
            # The stopped node returns: it is a data member again, and no copy
            # it held is trusted; its stale value of `gone` is never served.
            await cluster.start_node(2)
            await _until(lambda: cluster.nodes[2].core.table.digest() == table.digest())
            with pytest.raises(NotFoundError):
                await client.get(Key(gone))
            assert dead not in cluster.nodes[0].core.table.copies(key_slot(gone))
            # and it drops its stale keys of the slots it was taken out of (node/sweep.py)
            back = cluster.nodes[2]
            await _until(lambda: back.sweeper.dropped > 0, 30)
            for k in keys:
                if dead not in back.core.table.copies(key_slot(k)):
                    assert (await _on_disk(cluster, k))[dead] is None, k


async def test_a_node_back_with_a_wiped_disk_serves_nothing_and_loses_nothing(tmp_path) -> None:
    """Three nodes, two copies: a node restarts on an empty datastore with its
    old state. It withdraws (reports itself FAIL, serves and takes no copy),
    its slots fail over, every acknowledged write reads back, and once no copy
    set names it with another copy it is back in service, refilled."""
    with trio.fail_after(150):
        async with local_cluster(tmp_path, 3, copies=2) as cluster, open_cluster_client(
                cluster.client_identity, bootstrap=[cluster.nodes[0].addrs[0]],
                options=ClientOptions(request_timeout=20.0)) as client:
            keys = [f"/wiped/{i}" for i in range(120)]
            for k in keys:
                await client.put(Key(k), k.encode())
            wiped = cluster.nodes[2].peer_id
            assert any(_holders(cluster, k)[0] == wiped for k in keys)
            await cluster.stop_node(2)
            cluster.wipe_node(2)
            node = await cluster.start_node(2)
            assert node.core.withdrawn
            mine = next(k for k in keys if wiped in _holders(cluster, k))
            async with store_client(cluster.client_identity, cluster.table) as sc:
                with pytest.raises(UnavailableError, match="wiped disk"):
                    await sc.call_node(wiped, wm.Get(0, mine))
            for k in keys:  # waits out the failovers
                assert await client.get(Key(k)) == k.encode()
            await _until(lambda: not node.core.withdrawn)  # (refills may pick it again at once)
            await _until(lambda: all(len(cluster.nodes[0].core.table.copies(s)) == 2
                                     for s in range(16384)))
            for k in keys:
                await client.put(Key(k), b"again")
                stored = await _on_disk(cluster, k)
                assert [stored[p] for p in _holders(cluster, k)] == [b"again", b"again"]


async def test_set_copies_on_a_running_cluster_fills_and_drops_copies(tmp_path) -> None:
    """copies 1 -> 2 on three running nodes: every slot gets a second copy, filled
    while a client writes, every key on both; then 2 -> 1 drops them again."""
    with trio.fail_after(120):
        async with local_cluster(tmp_path, 3) as cluster, open_cluster_client(
                cluster.client_identity, bootstrap=[cluster.nodes[0].addrs[0]],
                options=ClientOptions(request_timeout=20.0)) as client:
            keys = [f"/set-copies/{i}" for i in range(90)]
            for k in keys:
                await client.put(Key(k), b"one")
            node = cluster.nodes[1]
            await node.driver.call(node.core.set_copies, 2)

            def copies_are(n: int) -> bool:
                return all(len(c.core.table.copies(s)) == n for c in cluster.nodes
                           for s in range(16384))

            i = refused = 0
            while not copies_are(2):
                try:
                    await client.put(Key(keys[i % len(keys)]), b"two")
                except UnavailableError as exc:  # refused during a grow election, once
                    assert "may or may not be kept: retry" in str(exc)  # (doc/copies.md)
                    refused += 1
                    assert refused < 20, exc
                i += 1
                await trio.sleep(0.02)
            for k in keys:
                want = await client.get(Key(k))
                stored = await _on_disk(cluster, k)
                assert [stored[p] for p in _holders(cluster, k)] == [want, want], k
            counts = cluster.nodes[0].core.table.replica_counts()
            assert len(counts) == 3  # spread over every node
            await node.driver.call(node.core.set_copies, 1)
            await _until(lambda: copies_are(1))
            for k in keys:
                assert await client.get(Key(k)) in (b"one", b"two")

            async def only_on_holders() -> bool:  # the dropped copies' keys are swept
                for k in keys:
                    stored = await _on_disk(cluster, k)
                    if [p for p, v in stored.items() if v is not None] != [_holders(cluster, k)[0]]:
                        return False
                return True

            with trio.fail_after(30):
                while not await only_on_holders():
                    await trio.sleep(0.2)
            # and 1 -> 2 again: the new copies, some on nodes that held and dropped the
            # slot, are filled whole (a learner's keys are not swept)
            await node.driver.call(node.core.set_copies, 2)
            await _until(lambda: copies_are(2))
            await trio.sleep(2 * 2.0)  # a sweep or two (node/sweep.py SWEEP_EVERY)
            for k in keys:
                want = await client.get(Key(k))
                stored = await _on_disk(cluster, k)
                assert [stored[p] for p in _holders(cluster, k)] == [want, want], k


async def test_moving_slots_with_copies_keeps_every_copy_while_clients_write(tmp_path) -> None:
    """A reshard of slots with two copies: the target is filled and grown into the
    copy sets, the primary role is handed over by majority, the old primary's copy
    is shrunk away and its keys dropped; no write is held on one copy meanwhile."""
    from dsclient.admin import open_admin

    admin = Identity.generate()
    with trio.fail_after(150):
        async with local_cluster(tmp_path, 3, copies=2, admins=[admin.peer_id_str]) as cluster, \
                open_cluster_client(cluster.client_identity,
                                    bootstrap=[cluster.nodes[0].addrs[0]],
                                    options=ClientOptions(request_timeout=20.0)) as client:
            table = cluster.nodes[0].core.table
            source, target = cluster.nodes[0].peer_id, cluster.nodes[2].peer_id
            moving = [s for s in table.slots_of(source) if target not in table.copies(s)][:300]
            keys = [f"/move/{i}" for i in range(4000)]
            keys = [k for k in keys if key_slot(k) in moving][:60]
            assert len(keys) > 20
            for k in keys:
                await client.put(Key(k), b"before")
            seeds = {n.peer_id: list(n.addrs) for n in cluster.nodes}
            async with open_admin(admin, seeds) as ac, trio.open_nursery() as nursery:
                writes = [0]
                done = trio.Event()

                async def write_on() -> None:  # every write acknowledged: none cut off
                    while not done.is_set():
                        await client.put(Key(keys[writes[0] % len(keys)]), b"during")
                        writes[0] += 1
                        await trio.sleep(0.01)

                nursery.start_soon(write_on)
                await ac.execute([Move(SlotSet.from_slots(moving), source, target)])
                done.set()
            assert writes[0] > 0
            t = cluster.nodes[0].core.table
            for s in moving:
                assert t.owner(s) == target and len(t.copies(s)) == 2 and source not in t.copies(s)
            for k in keys:
                want = await client.get(Key(k))
                stored = await _on_disk(cluster, k)
                assert [stored[p] for p in t.copies(key_slot(k))] == [want, want], (k, stored)
                assert stored[source] is None, (k, stored)  # dropped from the old primary
            # To a node that already holds a copy: the handover alone.
            node = cluster.nodes[2]
            back = SlotSet.from_slots(moving[:50])
            mid = node.refiller.start_move(back, t.replicas(moving[0])[0])
            await _until(lambda: mid not in node.refiller.moves)
            t = node.core.table
            assert all(t.owner(s) != target and len(t.copies(s)) == 2 for s in back)


async def test_blocks_are_read_from_a_copy_when_their_primary_is_down_or_lost_them(
        tmp_path) -> None:
    with trio.fail_after(90):
        async with local_cluster(tmp_path, 3, copies=2) as cluster, open_cluster_client(
                cluster.client_identity, bootstrap=[cluster.nodes[0].addrs[0]],
                options=FAST) as client:
            blocks = [_block(i) for i in range(30)]
            for key, data in blocks:
                await client.put(Key(key), data)
            lost = cluster.nodes[1]
            # a primary that lost its disk's blocks: NotFound there, the copy answers
            for key, _ in blocks:
                if _holders(cluster, key)[0] == lost.peer_id:
                    await lost.datastore.delete(key)
            for key, data in blocks:
                assert await client.get(Key(key)) == data
            # a primary that is down: its blocks come from the copies at once
            on_lost = [k for k, _ in blocks if _holders(cluster, k)[0] == lost.peer_id]
            assert on_lost  # (read before the stop: a failover moves them after it)
            await cluster.stop_node(1)
            started = trio.current_time()
            for key, data in blocks:
                assert await client.get(Key(key)) == data
            assert trio.current_time() - started < 60  # bounded by the client's deadline


async def test_a_copy_refuses_an_older_or_second_primary_and_a_newer_one_fences(
        tmp_path) -> None:
    member = Identity.generate()  # a member with no slots: it can speak as a primary
    with trio.fail_after(60):
        async with local_cluster(tmp_path, 3, copies=2,
                                 extra_members=[member.peer_id_str]) as cluster:
            table = cluster.nodes[0].core.table
            key = "/fence/k"
            slot = key_slot(key)
            primary, copy = table.copies(slot)
            epoch = table.claim(slot)[0]
            async with store_client(member, table) as sc:
                async def replicate(at: int, value: bytes) -> wm.Response:
                    return await sc.call_node(copy, wm.Replicate(0, ((slot, at),),
                                                                 ((key, value),)))

                for stale in (epoch - 1, epoch):  # older; the same epoch, another primary
                    with pytest.raises(UnavailableError, match="newer configuration"):
                        await replicate(stale, b"stale")
                with pytest.raises(NotFoundError):
                    await cluster.node(copy).datastore.get(key)
                # a write naming a key of another slot is refused whole
                other = next(f"/o/{i}" for i in range(99) if key_slot(f"/o/{i}") != slot)
                with pytest.raises(Exception, match="does not list"):
                    await sc.call_node(copy, wm.Replicate(0, ((slot, epoch + 1),),
                                                          ((other, b"x"),)))
                # a newer epoch is taken, and from then on the old primary is fenced
                assert isinstance(await replicate(epoch + 1, b"newer"), wm.Ok)
                assert await cluster.node(copy).datastore.get(key) == b"newer"
            async with open_cluster_client(cluster.client_identity,
                                           bootstrap=[cluster.nodes[0].addrs[0]],
                                           options=FAST) as client:
                # The primary's next write is refused as older; it renews its copy set
                # above the fence (a majority agrees: no one else won the slot) and
                # the client's retry is acknowledged at the new epoch.
                await client.put(Key(key), b"renewed")
            assert cluster.node(primary).core.table.claim(slot)[0] >= epoch + 1  # the fence
            assert cluster.node(primary).core.table.copies(slot) == (primary, copy)
            assert await cluster.node(copy).datastore.get(key) == b"renewed"
            # a client is not a member: it cannot replicate at all
            async with store_client(cluster.client_identity, table) as sc:
                with pytest.raises(Exception, match="member"):
                    await sc.call_node(primary, wm.Replicate(0, ((slot, epoch + 5),),
                                                             ((key, b"x"),)))


async def test_forget_node_retires_a_dead_node_and_its_slots_get_their_copies_again(
        tmp_path) -> None:
    """`dsclient cluster forget-node`: refused for a running node and for a node
    holding a slot's only copy; for a dead node with copies: its slots fail over,
    it is retired, every slot gets its second copy on the others, nothing lost."""
    from dsclient.admin import open_admin
    from dscluster.core.table import NodeRole

    admin = Identity.generate()
    with trio.fail_after(150):
        async with local_cluster(tmp_path, 3, copies=2, admins=[admin.peer_id_str]) as cluster, \
                open_cluster_client(cluster.client_identity,
                                    bootstrap=[cluster.nodes[0].addrs[0]],
                                    options=ClientOptions(request_timeout=20.0)) as client:
            keys = [f"/forget/{i}" for i in range(60)]
            for k in keys:
                await client.put(Key(k), k.encode())
            dead = cluster.nodes[2].peer_id
            seeds = {n.peer_id: list(n.addrs) for n in cluster.nodes}
            async with open_admin(admin, seeds) as ac:
                with pytest.raises(BadRequestError, match="is running: retire it with"):
                    await ac.forget(dead)
                await cluster.stop_node(2)
                seen: list[tuple[int, int]] = []
                await ac.forget(dead, lambda done, total: seen.append((done, total)))
                assert seen and seen[-1] == (16384, 16384)
                table = await ac.table()
            assert table.nodes[dead].role is NodeRole.RETIRED
            # status leaves the retired node out, though the client knew it
            assert dead in client.table.addrs
            assert [st.peer_id for st in await client.status()] == sorted(
                n.peer_id for n in cluster.nodes[:2])
            assert all(len(c := table.copies(s)) == 2 and dead not in c for s in range(16384))
            for k in keys:
                assert await client.get(Key(k)) == k.encode()
                stored = await _on_disk(cluster, k)
                assert [stored[p] for p in table.copies(key_slot(k))] == [k.encode()] * 2


async def test_forget_node_refuses_to_lose_a_slots_only_copy(tmp_path) -> None:
    from dsclient.admin import open_admin

    admin = Identity.generate()
    with trio.fail_after(60):
        async with local_cluster(tmp_path, 3, admins=[admin.peer_id_str]) as cluster:
            dead = cluster.nodes[2].peer_id
            seeds = {n.peer_id: list(n.addrs) for n in cluster.nodes[:2]}
            await cluster.stop_node(2)
            async with open_admin(admin, seeds) as ac:
                with pytest.raises(BadRequestError, match=f"{dead} holds the only copy of 5461 "
                                                          "slots"):
                    await ac.forget(dead)
                with pytest.raises(BadRequestError, match="is not a data member"):
                    await ac.forget(cluster.client_identity.peer_id_str)

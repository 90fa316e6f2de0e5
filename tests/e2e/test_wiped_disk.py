"""A node whose data directory is wiped (config.json and key kept) comes back and serves.

With one copy of each slot (go-ds-cluster's mode, `--copies 1`, the
ProcessCluster default) the wiped node's keys are gone, and the first test says so; what
must hold is everything else: the node restarts on its address with its
slots, the other nodes' keys are intact, and new writes to the wiped node's
slots are acknowledged and read back. With two copies (the second test) the
wiped node's keys read back too: it withdraws, its copies take over, and it
is refilled (doc/copies.md).
"""

from __future__ import annotations

import shutil

import trio

from dscluster.core.slots import key_slot
from dscluster.datastore.key import Key
from dscluster.errors import NotFoundError
from dscluster.testing.cluster import ProcessCluster

KEYS = 300
WIPED = 2


async def test_node_with_wiped_data_dir_restarts_and_serves(tmp_path):
    from dsclient.client import open_cluster_client

    with trio.fail_after(240):
        async with ProcessCluster(tmp_path, 3) as pc:
            assert pc.table is not None
            victim = pc.peer_id(WIPED)
            keys = [Key(f"/wipe/{i}") for i in range(KEYS)]
            on_victim = {k for k in keys if pc.table.owner(key_slot(str(k))) == victim}
            assert 0 < len(on_victim) < KEYS
            async with open_cluster_client(pc.client_identity,
                                           bootstrap=[pc.bootstrap_addr]) as client:
                for k in keys:
                    await client.put(k, str(k).encode())

            pc.kill(WIPED)
            shutil.rmtree(f"{pc.conf(WIPED)}/datastore")
            await pc.start(WIPED)

            async with open_cluster_client(pc.client_identity,
                                           bootstrap=[pc.bootstrap_addr]) as client:
                for k in keys:
                    if k in on_victim:
                        try:
                            await client.get(k)
                        except NotFoundError:
                            continue  # one copy: the wiped disk held the only one
                        raise AssertionError(f"{k} survived a wiped disk with one copy?")
                    assert await client.get(k) == str(k).encode()
                for k in sorted(on_victim, key=str)[:50]:  # the wiped node takes writes again
                    await client.put(k, b"again")
                    assert await client.get(k) == b"again"


async def test_with_two_copies_a_wiped_node_loses_nothing_and_is_refilled(tmp_path):
    from dsclient.admin import open_admin
    from dsclient.client import ClientOptions, open_cluster_client

    options = ClientOptions(request_timeout=30.0)
    with trio.fail_after(240):
        async with ProcessCluster(tmp_path, 3, copies=2, admin_client=True) as pc:
            victim = pc.peer_id(WIPED)
            async with open_admin(pc.client_identity, pc.seeds()) as admin:
                # nodes start seconds apart: wait until the copy sets are settled
                table = await _until_two_copies(admin)
            keys = [Key(f"/wipe/{i}") for i in range(KEYS)]
            on_victim = {k for k in keys if victim in table.copies(key_slot(str(k)))}
            assert 0 < len(on_victim) < KEYS
            async with open_cluster_client(pc.client_identity, bootstrap=[pc.bootstrap_addr],
                                           options=options) as client:
                for k in keys:
                    await client.put(k, str(k).encode())

            pc.kill(WIPED)
            shutil.rmtree(f"{pc.conf(WIPED)}/datastore")
            await pc.start(WIPED)

            async with open_cluster_client(pc.client_identity, bootstrap=[pc.bootstrap_addr],
                                           options=options) as client:
                for k in keys:  # every acknowledged write, the wiped node's included
                    assert await client.get(k) == str(k).encode()
                for k in sorted(on_victim, key=str)[:50]:
                    await client.put(k, b"again")
                    assert await client.get(k) == b"again"
            await pc.wait_for_log(WIPED, "withdrawing until they are re-made")
            async with open_admin(pc.client_identity, pc.seeds()) as admin:
                await _until_two_copies(admin)  # every slot has two copies again


async def _until_two_copies(admin):  # type: ignore[no-untyped-def]
    with trio.fail_after(120):
        while True:
            table = await admin.table()
            if all(len(table.copies(s)) == 2 for s in range(16384)):
                return table
            await trio.sleep(0.5)

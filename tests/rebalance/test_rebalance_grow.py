"""Growing a live cluster: a 4th node joins with --join, rebalance, every key still there."""

from __future__ import annotations

import pytest
import trio

from dsclient.admin import open_admin
from dscluster.core.slots import SLOT_COUNT
from dscluster.errors import BadRequestError, UnauthorizedError
from dscluster.net.host import Identity
from dscluster.testing.cluster import store_client
from tests.rebalance.harness import GrowingCluster, bulk_get, bulk_put


async def _bad_admin_requests_are_refused(seeds, admin) -> None:
    async with open_admin(Identity.generate(), seeds) as stranger:
        with pytest.raises(UnauthorizedError):
            await stranger.status(next(iter(seeds)))
    a, b = sorted(seeds)[:2]
    table = await admin.table()
    with pytest.raises(BadRequestError, match="not owned here"):
        await admin.migrate(a, table.slots_of(b), b)
    with pytest.raises(BadRequestError, match="still owns slots"):
        await admin.remove_member(a)
    with pytest.raises(BadRequestError, match="--slots"):
        await admin.reshard(0, a, b)
    with pytest.raises(BadRequestError, match="no outgoing migration"):
        await admin.abort(a, 999)
    assert (await admin.table()) == table  # refused requests changed nothing


async def _grow_3_to_4(tmp_path, nkeys: int) -> None:
    async with GrowingCluster(tmp_path, 3) as cluster:
        assert cluster.table is not None
        items = {f"/grow/{i}": f"v{i}".encode() * 8 for i in range(nkeys)}
        async with store_client(cluster.client_identity, cluster.table) as client, \
                open_admin(cluster.client_identity, cluster.seeds()) as admin:
            await bulk_put(client, cluster.table, items)
            await _bad_admin_requests_are_refused(cluster.seeds(), admin)

            new = await cluster.add_node()
            new_peer = cluster.peer_id(new)
            # the bootstrap added it; gossip spreads it and the addresses it listens on
            status = await admin.wait_member(new_peer)
            assert new_peer in await admin.members()
            assert len(status.table.slots_of(new_peer)) == 0

            plan = await admin.plan_rebalance()
            assert {m.target for m in plan} == {new_peer}
            assert sum(len(m.slots) for m in plan) == SLOT_COUNT // 4
            seen: list[str] = []
            progress = await admin.rebalance(on_progress=lambda p: seen.append(p.line()))
            assert progress.slots_done == SLOT_COUNT // 4 and progress.moves_done == len(plan)
            assert progress.keys > 0 and seen

            table = await admin.table()
            assert len(table.slots_of(new_peer)) == SLOT_COUNT // 4
            report = await admin.check()
            assert report.ok, report.problems
            assert report.keys == nkeys  # no copy left behind on a source
            held = (await admin.check_keys(new_peer)).keys
            assert 0.18 * nkeys < held < 0.32 * nkeys
            assert progress.keys == held

            got = await bulk_get(client, admin, items)
            assert got == items
            # a second rebalance has nothing to do
            assert await admin.plan_rebalance() == []


async def test_grow_three_to_four_with_20000_keys(tmp_path):
    """The issue's case (a): about 17 s here since migrations list from the slot index."""
    with trio.fail_after(300):
        await _grow_3_to_4(tmp_path, 20_000)

"""The rules: every store, admin and gossip operation against every role on a real node.

One node owns every slot (no MOVED); the roles come from its clients file,
which the running node picks up; the member is a slot-less table member.
Join needs the secret, not a role: tests/e2e covers a stranger's refusal.
"""

import os
from collections.abc import Awaitable, Callable

import pytest
import trio

from dscluster.core import messages as core_messages
from dscluster.errors import BadRequestError, NotFoundError, UnauthorizedError
from dscluster.net.host import Identity, open_host
from dscluster.net.rpc import RpcClient, open_rpc_client
from dscluster.node.admin import serve_admin
from dscluster.node.clients import save_clients
from dscluster.testing.cluster import local_cluster
from dscluster.wire import admin_messages as am
from dscluster.wire import messages as wm
from dscluster.wire.framing import encode_frame

STRANGER, RO, RW, ADMIN, MEMBER = "stranger", "read-only", "read-write", "admin", "member"
ROLES = (STRANGER, RO, RW, ADMIN, MEMBER)
READS = {RO, RW, ADMIN, MEMBER}
WRITES = {RW, ADMIN, MEMBER}

Op = Callable[[RpcClient, object, int], Awaitable[object]]


async def _query(rpc: RpcClient, peer: object, i: int) -> object:
    async with rpc.query(peer, wm.STORE_PROTOCOL, wm.Query(i, "/m")) as chunks:  # type: ignore[arg-type]
        return [c async for c in chunks]


def _call(make: Callable[[int], wm.Request], protocol: str = wm.STORE_PROTOCOL) -> Op:
    async def op(rpc: RpcClient, peer: object, i: int) -> object:
        return await rpc.call(peer, protocol, make(i), timeout=10)  # type: ignore[arg-type]
    return op


ADMINS = {ADMIN, MEMBER}


OPS: dict[str, tuple[Op, set[str]]] = {
    "get": (_call(lambda i: wm.Get(i, "/m/seed")), READS),
    "has": (_call(lambda i: wm.Has(i, "/m/seed")), READS),
    "get_size": (_call(lambda i: wm.GetSize(i, "/m/seed")), READS),
    "get_many": (_call(lambda i: wm.GetMany(i, ("/m/seed",))), READS),
    "query": (_query, READS),
    "info": (_call(lambda i: wm.Info(i)), READS),
    "put": (_call(lambda i: wm.Put(i, f"/m/p{i}", b"v")), WRITES),
    "delete": (_call(lambda i: wm.Delete(i, "/m/absent")), WRITES),
    "batch_put": (_call(lambda i: wm.Batch(i, puts=((f"/m/b{i}", b"v"),))), WRITES),
    "batch_delete": (_call(lambda i: wm.Batch(i, deletes=("/m/absent",))), WRITES),
    "admin_status": (_call(lambda i: am.AdminStatus(i), wm.ADMIN_PROTOCOL), ADMINS),
    "admin_check": (_call(lambda i: am.AdminCheck(i), wm.ADMIN_PROTOCOL), ADMINS),
    "admin_abort": (_call(lambda i: am.AdminAbort(i, 999), wm.ADMIN_PROTOCOL), ADMINS),
}


async def _allowed(op: Op, rpc: RpcClient, peer: object, i: int) -> bool:
    try:
        await op(rpc, peer, i)
    except UnauthorizedError:
        return False
    except (NotFoundError, BadRequestError):
        pass  # allowed, then refused for its content (an absent key, no such migration)
    return True


@pytest.fixture
async def matrix_node(tmp_path):  # type: ignore[no-untyped-def]
    identities = {role: Identity.generate() for role in ROLES}
    with trio.fail_after(60):
        async with local_cluster(tmp_path, 1,
                                 extra_members=[identities[MEMBER].peer_id_str]) as cluster:
            node = cluster.nodes[0]
            conf = os.path.join(tmp_path, "node0")
            save_clients(conf, [
                f"{identities[RO].peer_id_str} read-only",
                f"{identities[RW].peer_id_str} read-write",
                f"{identities[ADMIN].peer_id_str} admin"])
            while node.auth.role_of(identities[ADMIN].peer_id_str) is None:
                await trio.sleep(0.1)  # the node re-reads its clients file
            await node.datastore.put("/m/seed", b"seed")
            async with serve_admin(node, conf):
                yield node, identities


async def _run_matrix(node, identities, expected):  # type: ignore[no-untyped-def]
    results: dict[tuple[str, str], bool] = {}
    with trio.fail_after(90):
        for role in ROLES:
            async with open_host(identities[role]) as host, open_rpc_client(host.host) as rpc:
                await host.connect(node.peer_id, node.host.listen_addrs)
                for i, (name, (op, _)) in enumerate(OPS.items(), 1):
                    results[(role, name)] = await _allowed(op, rpc, node.host.peer_id, i)
    assert results == expected


async def test_gossip_only_from_members(matrix_node) -> None:  # type: ignore[no-untyped-def]
    node, identities = matrix_node
    for role in ROLES:
        before = node.links.refused_streams
        with trio.fail_after(20):
            async with open_host(identities[role]) as host:
                await host.connect(node.peer_id, node.host.listen_addrs)
                try:  # the node may reset the stream before our write lands
                    stream = await host.host.new_stream(node.host.peer_id,
                                                        [wm.GOSSIP_PROTOCOL])  # type: ignore[list-item]
                    await stream.write(encode_frame(core_messages.encode(
                        core_messages.TableDelta())))
                except Exception:  # noqa: BLE001 - py-libp2p's stream errors have no base
                    pass
                if role != MEMBER:
                    while node.links.refused_streams == before:
                        await trio.sleep(0.02)
                else:
                    await trio.sleep(0.5)
        assert (node.links.refused_streams > before) == (role != MEMBER), role


async def test_every_operation_against_every_role(matrix_node) -> None:  # type: ignore[no-untyped-def]
    node, identities = matrix_node
    refused_before = node.auth.refused
    expected = {(role, name): role in allowed for role in ROLES
                for name, (_, allowed) in OPS.items()}
    await _run_matrix(node, identities, expected)
    assert node.auth.refused - refused_before == sum(not v for v in expected.values())
    assert await node.datastore.get("/m/seed") == b"seed"  # nothing lost to refusals


async def test_read_only_client_and_disable_delete_enforced_by_server(matrix_node) -> None:  # type: ignore[no-untyped-def]
    node, identities = matrix_node
    node.auth.read_only_client = True
    expected = {(role, name): role == MEMBER or (role in allowed and allowed is not WRITES)
                for role in ROLES for name, (_, allowed) in OPS.items()}
    await _run_matrix(node, identities, expected)
    node.auth.read_only_client = False
    node.auth.disable_delete = True
    expected = {(role, name): role in allowed and (role == MEMBER or "delete" not in name)
                for role in ROLES for name, (_, allowed) in OPS.items()}
    await _run_matrix(node, identities, expected)
    assert await node.datastore.get("/m/seed") == b"seed"


async def test_impersonation_gets_another_peer_id(matrix_node) -> None:  # type: ignore[no-untyped-def]
    """Noise proves the key: a host with another key is another peer, whatever it claims."""
    node, identities = matrix_node
    impostor = Identity.generate()
    assert impostor.peer_id_str != identities[MEMBER].peer_id_str
    with trio.fail_after(30):
        async with open_host(impostor) as host, open_rpc_client(host.host) as rpc:
            await host.connect(node.peer_id, node.host.listen_addrs)
            with pytest.raises(UnauthorizedError):
                await rpc.call(node.host.peer_id, wm.STORE_PROTOCOL, wm.Put(1, "/m/x", b"x"),
                               timeout=10)
    assert not await node.datastore.has("/m/x")

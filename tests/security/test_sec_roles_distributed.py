"""`dsclient cluster auth`: client roles sent to every node, by admins only."""

import json
import os
import sys
from contextlib import AsyncExitStack

import pytest
import trio

from dsclient.admin import open_admin
from dscluster.config import ClientConfig, IdentityConfig, client_config_json, write_private_file
from dscluster.core.slots import key_slot
from dscluster.errors import BadRequestError, ConfigError, UnauthorizedError
from dscluster.net.host import Identity
from dscluster.node.admin import ADMINS_FILE, serve_admin
from dscluster.node.auth import Role
from dscluster.node.clients import CLIENTS_FILE, load_clients, save_clients
from dscluster.testing.cluster import local_cluster, store_client


def client_conf(tmp_path, name: str, identity: Identity, bootstrap: list[str]) -> str:
    d = os.path.join(tmp_path, name)
    os.makedirs(d)
    cfg = ClientConfig(IdentityConfig.of(identity), bootstrap_addrs=tuple(bootstrap))
    write_private_file(os.path.join(d, "config.json"), json.dumps(client_config_json(cfg)))
    return d


async def auth_cli(conf: str, *args: str) -> tuple[int, str]:
    """``dsclient cluster --conf CONF auth ARGS`` in a real process: (exit status, output)."""
    proc = await trio.run_process(
        [sys.executable, "-m", "dsclient.cluster_cli", "--conf", conf, "auth", *args],
        capture_stdout=True, capture_stderr=True, check=False)
    return proc.returncode, (proc.stdout + proc.stderr).decode()


def key_owned_by(table, peer: str, prefix: str) -> str:
    return next(k for k in (f"{prefix}/{i}" for i in range(10_000))
                if table.owner(key_slot(k)) == peer)


@pytest.fixture
async def admin_cluster(tmp_path):  # type: ignore[no-untyped-def]
    """3 in-process nodes serving the admin protocol; an admin listed in each DIR/admins."""
    admin = Identity.generate()
    with trio.fail_after(120):
        async with local_cluster(tmp_path, 3) as cluster, AsyncExitStack() as stack:
            for i, node in enumerate(cluster.nodes):
                conf = os.path.join(tmp_path, f"node{i}")
                with open(os.path.join(conf, ADMINS_FILE), "w", encoding="utf-8") as f:
                    f.write(f"{admin.peer_id_str}\n")
                await stack.enter_async_context(serve_admin(node, conf))
            node0 = cluster.nodes[0]
            bootstrap = [f"{a}/p2p/{node0.peer_id}" for a in node0.host.listen_addrs]
            yield cluster, client_conf(tmp_path, "admin", admin, bootstrap), bootstrap, admin


async def test_roles_reach_every_node_and_only_admins_change_them(
        tmp_path, admin_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, admin_conf, bootstrap, admin = admin_cluster
    peers = sorted(node.peer_id for node in cluster.nodes)
    rw, ro = Identity.generate(), Identity.generate()
    confs = [os.path.join(tmp_path, f"node{i}") for i in range(3)]
    with trio.fail_after(120):
        code, out = await auth_cli(admin_conf, "add", rw.peer_id_str, "read-write")
        assert code == 0, out
        assert out.count(f"{rw.peer_id_str} read-write") == 3
        for conf, node in zip(confs, cluster.nodes, strict=True):
            assert load_clients(conf)[rw.peer_id_str] is Role.READ_WRITE
            assert os.stat(os.path.join(conf, CLIENTS_FILE)).st_mode & 0o777 == 0o600
            assert node.auth.role_of(rw.peer_id_str) is Role.READ_WRITE

        # the read-write client writes on every node (each node owns one key here)
        async with store_client(rw, cluster.table) as client:
            for node in cluster.nodes:
                key = key_owned_by(cluster.table, node.peer_id, "/rw")
                await client.put(key, b"written")
                assert await node.datastore.get(key) == b"written"

        async with open_admin(admin, bootstrap) as api:  # the same call, in-process
            assert await api.grant(ro.peer_id_str, "read-only") == dict.fromkeys(peers)
        async with store_client(ro, cluster.table) as client:
            for node in cluster.nodes:
                key = key_owned_by(cluster.table, node.peer_id, "/rw")
                assert await client.get(key) == b"written"
                with pytest.raises(UnauthorizedError):
                    await client.put(key, b"not allowed")

        # a non-admin (even a read-write client) cannot change roles: refused at once
        # (it may not even read the membership)
        rw_conf = client_conf(tmp_path, "rw", rw, bootstrap)
        code, out = await auth_cli(rw_conf, "add", rw.peer_id_str, "admin")
        assert code == 1 and "read-write: admin needed" in out, out
        for conf in confs:
            assert load_clients(conf)[rw.peer_id_str] is Role.READ_WRITE

        code, out = await auth_cli(admin_conf, "list")
        assert code == 0, out
        assert "agree: 3 nodes, 2 clients" in out

        # removal: with a role named it must match; without one it goes
        async with open_admin(admin, bootstrap) as api:
            assert await api.revoke(ro.peer_id_str, "admin") == dict.fromkeys(peers, False)
            assert await api.revoke(ro.peer_id_str) == dict.fromkeys(peers, True)
            assert await api.revoke(ro.peer_id_str) == dict.fromkeys(peers, False)
        for node in cluster.nodes:
            assert node.auth.role_of(ro.peer_id_str) is None
        async with store_client(ro, cluster.table) as client:
            with pytest.raises(UnauthorizedError):
                await client.get(key_owned_by(cluster.table, cluster.nodes[0].peer_id, "/rw"))

        # one node's file changed by hand: list flags the disagreement
        save_clients(confs[2], [f"{rw.peer_id_str} read-only"])
        code, out = await auth_cli(admin_conf, "list")
        assert code == 2, out
        assert f"DISAGREE: the nodes differ on 1 clients: {rw.peer_id_str}" in out


async def test_bad_role_and_member_grants_are_refused(
        tmp_path, admin_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, admin_conf, bootstrap, admin = admin_cluster
    stranger = Identity.generate().peer_id_str
    with trio.fail_after(60):
        code, out = await auth_cli(admin_conf, "add", stranger, "root")
        assert code == 1 and "unknown role 'root'" in out, out
        async with open_admin(admin, bootstrap) as api:
            # the nodes check too (another client could send anything)
            for peer, err in (await api.grant(stranger, "member")).items():
                assert isinstance(err, BadRequestError), (peer, err)
            member = cluster.nodes[1].peer_id
            for err in (await api.grant(member, "read-only")).values():
                assert isinstance(err, BadRequestError) and "cluster member" in str(err)
            for err in (await api.revoke(stranger, "superuser")).values():
                assert isinstance(err, BadRequestError)
            with pytest.raises(ConfigError, match="bad peer ID"):
                await api.grant("not-a-peer", "admin")
        for i in range(3):
            assert load_clients(os.path.join(tmp_path, f"node{i}")) == {}

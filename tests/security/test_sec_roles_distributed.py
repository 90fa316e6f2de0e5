"""`dsclient cluster auth`: client roles are cluster state, changed by admins only.

A change is recorded by one member and gossiped in the slot table to every other
one, a member that was down included once it is back: no file is copied.
"""

import json
import os
import sys

import pytest
import trio

from dsclient.admin import open_admin
from dscluster.config import ClientConfig, IdentityConfig, client_config_json, write_private_file
from dscluster.core.slots import key_slot
from dscluster.errors import BadRequestError, ConfigError, UnauthorizedError
from dscluster.net.host import Identity
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


async def until(check, timeout: float = 10,  # type: ignore[no-untyped-def]
                step: float = 0.05) -> None:
    with trio.fail_after(timeout):
        while not check():
            await trio.sleep(step)


@pytest.fixture
async def admin_cluster(tmp_path):  # type: ignore[no-untyped-def]
    """3 in-process nodes serving the admin protocol; an admin listed in each DIR/admins."""
    admin = Identity.generate()
    with trio.fail_after(120):
        async with local_cluster(tmp_path, 3, admins=[admin.peer_id_str]) as cluster:
            node0 = cluster.nodes[0]
            bootstrap = [f"{a}/p2p/{node0.peer_id}" for a in node0.host.listen_addrs]
            yield cluster, client_conf(tmp_path, "admin", admin, bootstrap), bootstrap, admin


async def test_roles_reach_every_node_and_only_admins_change_them(
        tmp_path, admin_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, admin_conf, bootstrap, admin = admin_cluster
    rw, ro = Identity.generate(), Identity.generate()
    confs = [cluster.conf(i) for i in range(3)]
    with trio.fail_after(120):
        code, out = await auth_cli(admin_conf, "add", rw.peer_id_str, "read-write")
        assert code == 0, out
        assert f"{rw.peer_id_str} read-write: recorded by" in out
        assert "3 of 3 members show it" in out, out
        for node in cluster.nodes:
            assert node.auth.role_of(rw.peer_id_str) is Role.READ_WRITE
        for conf in confs:  # each node writes the roles back to its own clients file
            await until(lambda conf=conf: load_clients(conf).get(rw.peer_id_str)
                        is Role.READ_WRITE)
            assert os.stat(os.path.join(conf, CLIENTS_FILE)).st_mode & 0o777 == 0o600

        # the read-write client writes on every node (each node owns one key here)
        async with store_client(rw, cluster.table) as client:
            for node in cluster.nodes:
                key = key_owned_by(cluster.table, node.peer_id, "/rw")
                await client.put(key, b"written")
                assert await node.datastore.get(key) == b"written"

        async with open_admin(admin, bootstrap) as api:  # the same call, in-process
            change = await api.grant(ro.peer_id_str, "read-only")
            assert change.changed and change.version > 0
            views = await api.wait_roles(ro.peer_id_str, "read-only")
            assert list(views.values()) == [True] * 3
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
        assert code == 1 and "read-write, admin needed" in out, out
        for node in cluster.nodes:
            assert node.auth.role_of(rw.peer_id_str) is Role.READ_WRITE

        code, out = await auth_cli(admin_conf, "list")
        assert code == 0, out
        assert "agree: 3 nodes, 3 clients" in out  # rw, ro and local_cluster's own client

        # removal: with a role named it must match; without one it goes
        async with open_admin(admin, bootstrap) as api:
            assert not (await api.revoke(ro.peer_id_str, "admin")).changed
            assert (await api.revoke(ro.peer_id_str)).changed
            assert not (await api.revoke(ro.peer_id_str)).changed
            views = await api.wait_roles(ro.peer_id_str, None)
            assert list(views.values()) == [True] * 3
        for node in cluster.nodes:
            assert node.auth.role_of(ro.peer_id_str) is None
        async with store_client(ro, cluster.table) as client:
            with pytest.raises(UnauthorizedError):
                await client.get(key_owned_by(cluster.table, cluster.nodes[0].peer_id, "/rw"))

        # one node's file edited by hand (as `dscfg auth` does): the edit is a cluster
        # change, so every node takes it, and the line removed is a removal everywhere
        await until(lambda: ro.peer_id_str not in load_clients(confs[2]))
        save_clients(confs[2], [f"{rw.peer_id_str} read-only"])
        for node in cluster.nodes:
            await until(lambda node=node: node.auth.role_of(rw.peer_id_str) is Role.READ_ONLY)
            await until(lambda node=node: node.auth.role_of(cluster.client_identity.peer_id_str)
                        is None)
        code, out = await auth_cli(admin_conf, "list")
        assert code == 0 and "agree: 3 nodes, 1 clients" in out, out


async def test_bad_role_and_member_grants_are_refused(
        tmp_path, admin_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, admin_conf, bootstrap, admin = admin_cluster
    stranger = Identity.generate().peer_id_str
    with trio.fail_after(60):
        code, out = await auth_cli(admin_conf, "add", stranger, "root")
        assert code == 1 and "unknown role 'root'" in out, out
        async with open_admin(admin, bootstrap) as api:
            # the nodes check too (another client could send anything)
            with pytest.raises(BadRequestError):
                await api.grant(stranger, "member")
            member = cluster.nodes[1].peer_id
            with pytest.raises(BadRequestError, match="cluster member"):
                await api.grant(member, "read-only")
            with pytest.raises(BadRequestError, match="cluster member"):
                await api.revoke(member)
            with pytest.raises(BadRequestError):
                await api.revoke(stranger, "superuser")
            with pytest.raises(ConfigError, match="bad peer ID"):
                await api.grant("not-a-peer", "admin")
        for node in cluster.nodes:
            assert node.auth.role_of(stranger) is None
            assert node.auth.role_of(member) is Role.MEMBER
            assert stranger not in node.core.table.clients and member not in node.core.table.clients


async def test_a_node_down_during_auth_add_authorizes_the_client_when_back(
        tmp_path, admin_cluster) -> None:  # type: ignore[no-untyped-def]
    cluster, admin_conf, bootstrap, admin = admin_cluster
    new, gone = Identity.generate(), Identity.generate()
    down = 2
    conf = cluster.conf(down)
    peer = cluster.nodes[down].peer_id
    key = key_owned_by(cluster.table, peer, "/back")
    with trio.fail_after(120):
        code, out = await auth_cli(admin_conf, "add", gone.peer_id_str, "read-write")
        assert code == 0 and "3 of 3 members show it" in out, out
        await until(lambda: gone.peer_id_str in load_clients(conf))

        await cluster.stop_node(down)
        # both changes go through the members that are up; the down one is named
        code, out = await auth_cli(admin_conf, "add", new.peer_id_str, "read-write",
                                   "--wait", "3")
        assert code == 0, out
        assert f"{peer}  unreachable" in out and "2 of 3 members show it" in out, out
        code, out = await auth_cli(admin_conf, "remove", gone.peer_id_str, "--wait", "3")
        assert code == 0 and f"{gone.peer_id_str} removed: recorded by" in out, out
        assert f"{peer}  unreachable" in out, out
        # nothing is copied to the stopped node: its file still has the old roles
        assert new.peer_id_str not in load_clients(conf)
        assert load_clients(conf)[gone.peer_id_str] is Role.READ_WRITE

        node = await cluster.start_node(down)
        started = trio.current_time()
        # it came back with its stale state; the first gossip exchanges bring the news
        await until(lambda: node.auth.role_of(new.peer_id_str) is Role.READ_WRITE
                    and node.auth.role_of(gone.peer_id_str) is None, timeout=10)
        gossip_rounds = (trio.current_time() - started) / node.settings.tick_interval
        assert gossip_rounds < 30, gossip_rounds  # a few heartbeats (plus reconnecting)
        assert node.core.table.clients == cluster.nodes[0].core.table.clients

        async with store_client(new, cluster.table) as client:
            await client.put(key, b"back")
            assert await client.get(key) == b"back"
        async with store_client(gone, cluster.table) as client:
            with pytest.raises(UnauthorizedError):  # the stale grant did not come back
                await client.get(key)
        # and it writes the converged roles to its own file, which stays stale no more
        await until(lambda: load_clients(conf).get(new.peer_id_str) is Role.READ_WRITE
                    and gone.peer_id_str not in load_clients(conf))
        for other in cluster.nodes:
            assert other.auth.role_of(gone.peer_id_str) is None

        # and the roles survive a restart from its own state file
        await cluster.stop_node(down)
        node = await cluster.start_node(down)
        assert node.auth.role_of(new.peer_id_str) is Role.READ_WRITE
        assert node.auth.role_of(gone.peer_id_str) is None

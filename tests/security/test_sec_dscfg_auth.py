"""dscfg auth add|remove|list and cluster --private-network."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dscfg.cli import main
from dscluster.config import load_client_config, load_node_config
from dscluster.net.host import Identity
from dscluster.net.pnet import load_swarm_key
from dscluster.node.auth import Role
from dscluster.node.clients import load_clients


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    assert main(["cluster", "-n", "2", str(tmp_path / "c"), "--private-network",
                 "--no-client"]) == 0
    return tmp_path / "c"


def test_cluster_writes_an_operator_client_admin_on_the_bootstrap(tmp_path: Path) -> None:
    conf = tmp_path / "c"
    assert main(["cluster", "-n", "2", str(conf), "--private-network"]) == 0
    client = load_client_config(conf / "client")
    assert load_clients(str(conf)) == {client.identity.peer_id: Role.ADMIN}
    boot = load_node_config(conf)
    # every node, the bootstrap first
    assert client.bootstrap_addrs == tuple(f"{n.swarm[0]}/p2p/{n.id}" for n in boot.nodes)
    assert client.bootstrap_addrs[0] == f"{boot.swarm[0]}/p2p/{boot.identity.peer_id}"
    assert load_swarm_key(conf / "client" / "swarm.key") == load_swarm_key(conf / "swarm.key")
    for path in (conf / "client" / "config.json", conf / "client" / "swarm.key"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # an existing operator config is not overwritten without --force
    assert main(["cluster", "-n", "2", str(tmp_path / "d"), "--client-dir",
                 str(conf / "client")]) == 1
    assert not (tmp_path / "d" / "config.json").exists()


def test_private_network_key_file(conf: Path) -> None:
    path = conf / "swarm.key"
    assert len(load_swarm_key(path)) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for name in ("config.json", "join.secret"):
        assert stat.S_IMODE(os.stat(conf / name).st_mode) == 0o600


def test_auth_add_list_remove(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = Identity.generate().peer_id_str, Identity.generate().peer_id_str
    assert main(["auth", "add", a, "admin", "--conf", str(conf)]) == 0
    assert main(["auth", "add", b, "read-only", "--conf", str(conf)]) == 0
    assert main(["auth", "add", b, "read-write", "--conf", str(conf)]) == 0  # replaces
    assert load_clients(str(conf)) == {a: Role.ADMIN, b: Role.READ_WRITE}
    assert stat.S_IMODE(os.stat(conf / "clients").st_mode) == 0o600
    capsys.readouterr()
    assert main(["auth", "list", "--conf", str(conf)]) == 0
    assert set(capsys.readouterr().out.split("\n")) >= {f"{a} admin", f"{b} read-write"}
    assert main(["auth", "remove", a, "read-only", "--conf", str(conf)]) == 1  # wrong role
    assert main(["auth", "remove", a, "--conf", str(conf)]) == 0
    assert load_clients(str(conf)) == {b: Role.READ_WRITE}


@pytest.mark.parametrize("args", [
    ["auth", "add", "notapeer", "admin"],
    ["auth", "add", "PEER", "member"],
    ["auth", "add", "PEER", "root"],
    ["auth", "remove", "PEER"],
])
def test_auth_bad_input_one_line_and_nothing_lost(conf: Path, args: list[str],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    keep = Identity.generate().peer_id_str
    assert main(["auth", "add", keep, "read-only", "--conf", str(conf)]) == 0
    peer = Identity.generate().peer_id_str
    capsys.readouterr()
    assert main([x.replace("PEER", peer) for x in args] + ["--conf", str(conf)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dscfg: error: ") and err.count("\n") == 1
    assert load_clients(str(conf)) == {keep: Role.READ_ONLY}


def test_auth_needs_a_node_dir(tmp_path: Path) -> None:
    peer = Identity.generate().peer_id_str
    assert main(["auth", "add", peer, "admin", "--conf", str(tmp_path)]) == 1
    assert not (tmp_path / "clients").exists()


def test_auth_as_a_process(conf: Path) -> None:
    peer = Identity.generate().peer_id_str
    run = subprocess.run([sys.executable, "-m", "dscfg.cli", "auth", "add", peer, "read-write",
                          "--conf", str(conf)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert load_clients(str(conf)) == {peer: Role.READ_WRITE}

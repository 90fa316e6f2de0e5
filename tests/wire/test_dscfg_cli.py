"""dscfg run as a real process: configs written, multiaddr printed, one-line errors."""

from __future__ import annotations

import json
import stat
import subprocess
import sys

from dscluster.config import load_client_config, load_node_config, read_join_secret, table_of
from dscluster.core.slots import initial_ranges


def dscfg(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dscfg.cli", *args], capture_output=True,
                          text=True, timeout=60)


def test_cluster_writes_bootstrap_config(tmp_path):
    out = dscfg("cluster", "--cluster-node-number=3", "--base-port", "45001", "--copies", "1",
                str(tmp_path / "c"))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    cfg = load_node_config(tmp_path / "c")
    me = cfg.nodes[0]
    assert lines[0] == f"/ip4/127.0.0.1/tcp/45001/p2p/{me.id}"  # the bootstrap multiaddr
    assert cfg.identity.peer_id == me.id and cfg.bootstrap_node
    assert [n.slots for n in cfg.nodes] == [(r,) for r in initial_ranges(3)]
    assert [n.swarm for n in cfg.nodes] == [(f"/ip4/127.0.0.1/tcp/{p}",) for p in (45001, 45002,
                                                                                    45003)]
    assert [i.peer_id for i in cfg.identity_list] == [n.id for n in cfg.nodes]
    # the operator client names every node: it finds the cluster with node 0 down
    operator = load_client_config(tmp_path / "c" / "client")
    assert operator.bootstrap_addrs == tuple(f"{n.swarm[0]}/p2p/{n.id}" for n in cfg.nodes)
    assert len({n.id for n in cfg.nodes}) == 3
    secret = read_join_secret(cfg, tmp_path / "c")
    assert f"join secret: {secret}" in lines
    for name in ("config.json", "join.secret"):
        assert stat.S_IMODE((tmp_path / "c" / name).stat().st_mode) == 0o600
    # go-ds-cluster's shapes on disk.
    doc = json.loads((tmp_path / "c" / "config.json").read_text())
    assert doc["nodes"][1]["slots"] == {"start": 5461, "end": 10922}


def test_cluster_with_free_ports_and_short_option(tmp_path):
    out = dscfg("cluster", "-n", "5", str(tmp_path))
    assert out.returncode == 0, out.stderr
    cfg = load_node_config(tmp_path)
    assert [n.slots[0] for n in cfg.nodes] == initial_ranges(5)
    ports = {n.swarm[0].rsplit("/", 1)[1] for n in cfg.nodes}
    assert len(ports) == 5 and "0" not in ports


def test_cluster_with_copies_places_every_slot_on_distinct_nodes(tmp_path):
    out = dscfg("cluster", "-n", "3", str(tmp_path / "c"))  # two copies by default
    assert out.returncode == 0, out.stderr
    cfg = load_node_config(tmp_path / "c")
    assert cfg.copies == 2
    table = table_of(cfg)
    assert table.settings.copies == 2
    ids = [n.id for n in cfg.nodes]
    held = {p: 0 for p in ids}
    for slot in range(16384):
        copies = table.copies(slot)
        assert len(copies) == 2 and len(set(copies)) == 2
        held[copies[1]] += 1
    assert max(held.values()) - min(held.values()) <= 1  # replicas spread evenly
    doc = json.loads((tmp_path / "c" / "config.json").read_text())
    assert doc["copies"] == 2 and "replicas" in doc["nodes"][0]
    # --copies 1 is go-ds-cluster's form: no copies, no replicas
    assert dscfg("cluster", "-n", "3", "--copies", "1", str(tmp_path / "d")).returncode == 0
    plain = json.loads((tmp_path / "d" / "config.json").read_text())
    assert "copies" not in plain and all("replicas" not in n for n in plain["nodes"])
    assert dscfg("cluster", "-n", "1", str(tmp_path / "one")).returncode == 0
    assert load_node_config(tmp_path / "one").copies == 1  # one node: one copy
    bad = dscfg("cluster", "-n", "2", "--copies", "3", str(tmp_path / "e"))
    assert bad.returncode != 0
    assert bad.stderr.strip() == ("dscfg: error: --copies must be between 1 and 2 "
                                  "(at most one copy per node), got 3")


def test_client_config(tmp_path):
    node = "12D3KooWPkzd31YUfGFDqD1UJJ9pxEQ1sBFp1749yejA3PTvDtmf"
    out = dscfg("client", str(tmp_path / "client.json"), "--read-only",
                "--bootstrap", f"/ip4/127.0.0.1/tcp/4001/p2p/{node}")
    assert out.returncode == 0, out.stderr
    cfg = load_client_config(tmp_path / "client.json")
    assert cfg.read_only_client and cfg.nodes == ()
    assert cfg.identity.peer_id in out.stdout
    assert stat.S_IMODE((tmp_path / "client.json").stat().st_mode) == 0o600


def test_errors_are_one_line_without_traceback(tmp_path):
    assert dscfg("cluster", "-n", "2", str(tmp_path)).returncode == 0
    before = (tmp_path / "config.json").read_text()
    cases = [
        ("cluster", "-n", "2", str(tmp_path)),  # would overwrite
        ("cluster", "-n", "0", str(tmp_path / "x")),
        ("cluster", "-n", "3", "--base-port", "65534", str(tmp_path / "z")),
        ("client", str(tmp_path / "c.json"), "--bootstrap", "/ip4/127.0.0.1/tcp/1"),
    ]
    for args in cases:
        out = dscfg(*args)
        assert out.returncode == 1, args
        assert out.stderr.startswith("dscfg: error: ") and out.stderr.count("\n") == 1, out.stderr
        assert "Traceback" not in out.stderr
    assert (tmp_path / "config.json").read_text() == before  # nothing lost
    assert not (tmp_path / "x").exists()


def test_usage_errors_and_help():
    out = dscfg("cluster")
    assert out.returncode == 2 and "Usage: dscfg cluster" in out.stderr
    assert "Traceback" not in out.stderr
    out = dscfg("--help")
    assert out.returncode == 0 and "cluster" in out.stdout and "client" in out.stdout

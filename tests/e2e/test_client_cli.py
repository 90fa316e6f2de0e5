"""dsclient end to end: dscfg, three real dscluster processes (flatfs), the dsclient CLI.

Everything is started as an operator would: `dscfg cluster -n 3`, `dscfg
client`, the client's peer ID in the bootstrap node's clients file, the
bootstrap node, two nodes joining with --bootstrapper/--identity/--join-secret-file,
then `dsclient init` and the other commands. Kubo's own `ipfs add
--only-hash` is the oracle for CIDs.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dsclient import Client
from dscluster.blocks import block_key
from dscluster.core.slots import key_slot
from dscluster.testing.kubo import run_kubo

TIMEOUT = 60  # seconds for any one command
STARTUP = 60


def cli(module: str, *args: str, stdin: bytes | None = None,
        timeout: float = TIMEOUT) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", module, *args], input=stdin,
                          capture_output=True, timeout=timeout, check=False)


@dataclass
class Cluster:
    base: Path
    conf: Path  # the client's config dir
    bootstrap: str
    procs: list[subprocess.Popen[bytes]]
    dirs: list[Path]
    peers: list[str]

    def dsclient(self, *args: str, stdin: bytes | None = None,
                 timeout: float = TIMEOUT) -> subprocess.CompletedProcess[bytes]:
        return cli("dsclient.cli", "--conf", str(self.conf), *args, stdin=stdin,
                   timeout=timeout)

    def ok(self, *args: str, stdin: bytes | None = None) -> str:
        r = self.dsclient(*args, stdin=stdin)
        assert r.returncode == 0, r.stderr.decode()
        return r.stdout.decode()


def _wait_listening(log: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        if "node listening on" in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"node exited: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"node did not start: {log.read_text(errors='replace')[-2000:]}")


def _start_node(d: Path, *args: str) -> subprocess.Popen[bytes]:
    d.mkdir(parents=True, exist_ok=True)
    log = d / "node.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dscluster.cli", "--conf", str(d), "--datastore", "flatfs",
             "--tick", "0.2", *args], stdout=out, stderr=subprocess.STDOUT)
    _wait_listening(log, proc)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("cli-cluster")
    boot = base / "node0"
    # --copies 1: go-ds-cluster's flow, whose dead node makes its slots unavailable
    r = cli("dscfg.cli", "cluster", "-n", "3", "--copies", "1", "--no-client", str(boot))
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().splitlines()
    bootstrap = lines[0]
    assert lines[1].startswith("join secret: ")
    conf = base / "client"
    conf.mkdir()
    r = cli("dscfg.cli", "client", str(conf / "config.json"))
    assert r.returncode == 0, r.stderr.decode()
    client_peer = json.loads((conf / "config.json").read_text())["identity"]["peer_id"]
    (boot / "clients").write_text(client_peer + "\n")
    procs: list[subprocess.Popen[bytes]] = []
    dirs = [boot, base / "node1", base / "node2"]
    try:
        procs.append(_start_node(boot))
        for i in (1, 2):
            procs.append(_start_node(dirs[i], "--bootstrapper", bootstrap, "--identity", str(i),
                                     "--join-secret-file", str(boot / "join.secret")))
        peers = [json.loads((d / "config.json").read_text())["identity"]["peer_id"]
                 for d in dirs]
        yield Cluster(base, conf, bootstrap, procs, dirs, peers)
    finally:
        for p in procs:
            _stop(p)


@pytest.fixture(scope="module")
def initialized(cluster: Cluster) -> Cluster:
    out = cluster.ok("init", "--bootstrapper", cluster.bootstrap)
    assert "3 nodes, 16384 of 16384 slots known" in out
    return cluster


def test_init_refuses_an_unauthorized_client_but_writes_its_config(cluster, tmp_path):
    r = cli("dsclient.cli", "--conf", str(tmp_path / "stranger"), "init", "--bootstrapper",
            cluster.bootstrap)
    assert r.returncode == 1
    err = r.stderr.decode()
    peer = json.loads((tmp_path / "stranger" / "config.json").read_text())["identity"]["peer_id"]
    assert err.startswith("dsclient: error:") and err.count("\n") == 1 and len(err) < 200
    assert f"dsclient cluster auth add {peer} read-write" in err and "restart" not in err
    assert "Traceback" not in err


def test_add_cat_get_stat_match_kubo(initialized, tmp_path):
    c = initialized
    data = random.Random(7).randbytes(1_300_000)
    f = tmp_path / "file.bin"
    f.write_bytes(data)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.txt").write_bytes(b"alpha\n")
    (tree / "sub" / "b.bin").write_bytes(random.Random(8).randbytes(300_000))
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    work = tmp_path / "kubo"
    work.mkdir()
    results = run_kubo({"repo": str(work / "repo"), "start": "offline",
                        "predict": [str(f), str(tree)]}, work, timeout=120)
    kubo = {Path(r["predicted"]).name: r["cid"] for r in results if r.get("cid")}

    # One launch per output form: the default line for the file, -q for the rest.
    cid = kubo["file.bin"]
    assert c.ok("add", str(f)).strip() == f"added {cid} file.bin"
    assert c.ok("add", "-q", "-r", str(tree)).strip() == kubo["tree"]
    assert c.ok("add", "-q", str(empty)).strip() == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    v1 = c.ok("add", "-q", "--cid-version", "1", str(f)).strip()
    assert v1.startswith("bafy")

    r = c.dsclient("cat", cid)
    assert r.returncode == 0 and r.stdout == data
    assert c.dsclient("cat", v1).stdout == data
    c.ok("get", cid, str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == data
    c.ok("get", kubo["tree"], str(tmp_path / "tree-back"))
    assert (tmp_path / "tree-back" / "sub" / "b.bin").read_bytes() == \
        (tree / "sub" / "b.bin").read_bytes()
    st = c.ok("stat", cid)
    assert "type: file" in st and f"size: {len(data)}" in st and "blocks: 5" in st


def test_hashslot_and_status(initialized):
    c = initialized
    out = c.ok("hashslot", "/foo")
    assert "slot: 3194" in out and f"node: {c.peers[0]}" in out
    cid = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    out = c.ok("hashslot", cid)
    key = block_key(cid)
    assert f"key: {key}" in out and f"slot: {key_slot(key)}" in out
    status = c.ok("status")
    assert status.split()[:7] == ["PEER", "STATE", "SLOTS", "COPIES", "KEYS", "BYTES", "MIGR"]
    for peer in c.peers:  # keys and bytes: the node's last scan (at start-up, then each minute)
        assert re.search(rf"{peer}\s+up\s+(5461|5462)\s+0\s+\d+\s+\d+(\.\d)?(B|KiB|MiB)\s+0\s",
                         status), status


def test_keys_put_get_rm_ls(initialized, tmp_path):
    c = initialized
    # flatfs nodes take flat keys of 0-9 A-Z + - _ = only
    c.ok("put", "/CLI-A", stdin=b"from stdin")
    value = tmp_path / "v"
    value.write_bytes(b"\x00binary\xff")
    c.ok("put", "/CLI-B", str(value))
    assert c.dsclient("get-key", "/CLI-A").stdout == b"from stdin"
    assert c.dsclient("get-key", "/CLI-B").stdout == b"\x00binary\xff"
    assert c.ok("ls", "/CLI-").split() == ["/CLI-A", "/CLI-B"]
    c.ok("rm", "/CLI-A")
    r = c.dsclient("get-key", "/CLI-A")
    assert r.returncode == 1 and r.stderr.decode().startswith("dsclient: error:")
    assert c.ok("ls", "/CLI-", "--sizes").split() == ["8", "/CLI-B"]
    r = c.dsclient("put", "/lower/case", stdin=b"x")
    assert r.returncode == 1 and "flatfs" in r.stderr.decode()


def test_user_errors_are_one_line(initialized, tmp_path):
    c = initialized
    for args in (("cat", "not-a-cid"), ("add", str(tmp_path / "missing")),
                 ("get", "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQX"),
                 ("put", "/k", str(tmp_path / "missing"))):
        r = c.dsclient(*args)
        err = r.stderr.decode()
        assert r.returncode == 1, args
        assert err.startswith("dsclient: error:") and err.count("\n") == 1, err
    r = cli("dsclient.cli", "--conf", str(tmp_path / "nowhere"), "status")
    assert r.returncode == 1 and "no client config" in r.stderr.decode()


def test_corrupted_block_is_detected_on_get(initialized, tmp_path):
    c = initialized
    f = tmp_path / "victim.bin"
    f.write_bytes(random.Random(9).randbytes(100_000))
    cid = c.ok("add", "-q", str(f)).strip()
    name = block_key(cid)[1:]
    files = [p for d in c.dirs for p in d.rglob(f"{name}.data")]
    assert len(files) == 1
    files[0].write_bytes(b"not the block at all")
    r = c.dsclient("cat", cid)
    assert r.returncode == 1
    assert "corrupt block" in r.stderr.decode()


def test_node_down_names_node_and_slot_while_others_work(initialized):
    """Last in the module: it stops a node."""
    c = initialized
    keys = [f"/DOWN-{i}" for i in range(30)]
    with Client.from_config(c.conf) as client:
        for key in keys:
            client.put_key(key, key.encode())
        table = client.aio.cluster.table
        owner = {k: table.owner_of(k) for k in keys}
    victim = 2
    _stop(c.procs[victim])
    dead = c.peers[victim]
    on_dead = [k for k in keys if owner[k] == dead]
    alive = [k for k in keys if owner[k] != dead]
    assert on_dead and alive
    started = time.monotonic()
    r = c.dsclient("get-key", on_dead[0])
    print(f"get-key on a dead node took {time.monotonic() - started:.1f}s")
    err = r.stderr.decode()
    assert r.returncode == 1
    assert f"node {dead} serving slot {key_slot(on_dead[0])} is unavailable" in err, err
    assert err.count("\n") == 1
    for k in alive[:2]:
        assert c.dsclient("get-key", k).stdout == k.encode()
    r = c.dsclient("status")
    assert r.returncode == 1 and re.search(rf"{dead}\s+down", r.stdout.decode())

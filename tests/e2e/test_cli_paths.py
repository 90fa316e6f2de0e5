"""Every dsclient failure path a person meets is one readable line, with the right exit status.

Real processes only: the console scripts, `python -m dscluster.localcluster`
for a live cluster, a cluster written by `dscfg cluster` but never started
(every node down: connection refused), a "silent peer" (a TCP listener in
this test that accepts connections and never says a word, as a hung node
or a wrong address does), and a live node frozen with SIGSTOP. For each:
one line on stderr, under 200 characters, no traceback, and the exit status
(1 for an error, 2 for a usage error, 130 for Ctrl-C).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest

from dscluster.config import ClientConfig, load_client_config, load_node_config, save_config
from dscluster.net.host import Identity
from dscluster.procs import script

TIMEOUT = 120  # seconds for any one command, as a hang guard
EMPTY_CID = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"


def dsclient(*args: str, stdin: bytes | None = b"", env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([script("dsclient"), *args], input=stdin or b"", capture_output=True,
                       timeout=TIMEOUT, env={**os.environ, **env} if env else None)
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(errors="replace"),
                                       r.stderr.decode(errors="replace"))


def one_line(r: subprocess.CompletedProcess[str], code: int = 1) -> str:
    """The error line, after checking it is one readable line and the exit status."""
    err = r.stderr
    assert r.returncode == code, (r.returncode, err)
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert len(err) - 1 < 200, (len(err), err)
    assert err.startswith("dsclient: "), err
    return err.strip()


# -- a silent peer ----------------------------------------------------------------------------


class SilentPeer:
    """Accepts TCP connections on 127.0.0.1 and never writes a byte."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.peer_id = Identity.generate().peer_id_str
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def multiaddr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.port}/p2p/{self.peer_id}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self._held.append(conn)
            self.accepted += 1

    def wait_for_connection(self, after: int, proc: subprocess.Popen[str]) -> None:
        """Until the process under test has connected (it is then in its network phase)."""
        deadline = time.monotonic() + TIMEOUT
        while self.accepted <= after:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._held:
            conn.close()
        self.sock.close()


@pytest.fixture(scope="module")
def silent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SilentPeer, Path]]:
    peer = SilentPeer()
    conf = tmp_path_factory.mktemp("silent-client")
    r = subprocess.run([script("dscfg"), "client", str(conf), "--force", "--bootstrap",
                        peer.multiaddr], capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    yield peer, conf
    peer.close()


# -- every node down ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def down(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A client of a 3-node cluster that dscfg wrote and nobody started."""
    base = tmp_path_factory.mktemp("down")
    r = subprocess.run([script("dscfg"), "cluster", "-n", "3", str(base / "n0")],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    operator = load_client_config(base / "n0" / "client")
    # what `dsclient init` writes: every node with its slots and addresses
    save_config(ClientConfig(identity=operator.identity, nodes=load_node_config(base / "n0").nodes,
                             bootstrap_addrs=operator.bootstrap_addrs), base / "n0" / "client")
    (base / "file.txt").write_bytes(b"some bytes\n")
    return base


def _commands(base: Path) -> list[list[str]]:
    boot = load_client_config(base / "n0" / "client").bootstrap_addrs[0]
    peer = Identity.generate().peer_id_str
    f = str(base / "file.txt")
    return [
        ["add", f], ["add", "-"], ["get", EMPTY_CID, str(base / "out")], ["cat", EMPTY_CID],
        ["stat", EMPTY_CID], ["stat", "--json", EMPTY_CID], ["put", "/k", f], ["get-key", "/k"],
        ["rm", "/k"], ["ls"], ["ls", "--json"], ["status"], ["status", "--json"],
        ["init", "--bootstrapper", boot],
        ["cluster", "status"], ["cluster", "status", "--json"], ["cluster", "members"],
        ["cluster", "check"], ["cluster", "rebalance", "--dry-run"], ["cluster", "auth", "list"],
        ["cluster", "auth", "add", peer, "read-write"],
        ["ipfs", "fetch", EMPTY_CID, "--from", boot], ["ipfs", "serve"],
    ]


def test_every_command_with_every_node_down_says_so_in_one_line(down):
    conf = str(down / "n0" / "client")
    commands = _commands(down)
    with ThreadPoolExecutor(2) as pool:  # two processes at a time: start-up is CPU on 2 cores
        results = pool.map(lambda args: dsclient("--conf", conf, *args, stdin=b"from stdin\n"),
                           commands)
        for args, r in zip(commands, results, strict=True):
            err = one_line(r)
            assert "cannot reach any of 3 cluster nodes (connection refused): are they running?" \
                in err, (args, err)


# -- timeouts ---------------------------------------------------------------------------------


def test_a_silent_peer_times_out_in_one_line(silent):
    peer, conf = silent
    for args in (["status"], ["add", "-"], ["ls"], ["cluster", "status"], ["get-key", "/k"]):
        r = dsclient("--conf", str(conf), "--timeout", "1", *args, stdin=b"x")
        err = one_line(r)
        assert "cannot reach any of 1 cluster node (accepts connections, then no answer)" in err
        assert "--timeout S" in err


def test_ctrl_c_is_one_line_and_exit_130(silent):
    peer, conf = silent
    for args in (["status"], ["add", "-"], ["ls"], ["cluster", "members"], ["get", EMPTY_CID]):
        before = peer.accepted
        proc = subprocess.Popen([script("dsclient"), "--conf", str(conf), *args],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=conf)
        peer.wait_for_connection(before, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
        assert proc.returncode == 130, (args, err)
        assert err == "dsclient: interrupted\n", (args, err)


# -- usage errors: checked before anything connects --------------------------------------------


def test_bad_option_values_are_usage_errors_before_connecting(silent, tmp_path):
    peer, conf = silent
    f = tmp_path / "f"
    f.write_bytes(b"x")
    before = peer.accepted
    cases = [
        (["add", "--cid-version", "2", str(f)], "--cid-version"),
        (["add", "--chunker", "rabin", str(f)], "--chunker"),
        (["--log-level", "loud", "status"], "--log-level"),
        (["--timeout", "0", "status"], "--timeout"),
        (["--swarm-key", str(tmp_path / "missing.key"), "status"], "--swarm-key"),
        (["add", "-r", "-"], "PATH"),
        (["ipfs", "fetch", EMPTY_CID, "--from", "/ip4/127.0.0.1/tcp/1"], "--from"),
        (["ipfs", "fetch", EMPTY_CID, "--from", peer.multiaddr, "--timeout", "-1"], "--timeout"),
        (["--bogus", "status"], "--bogus"),
        (["status", "--bogus"], "--bogus"),
    ]
    for args, named in cases:
        err = one_line(dsclient("--conf", str(conf), *args), code=2)
        assert named in err and "--help" in err, (args, err)
    assert peer.accepted == before  # none of them connected


# -- a live cluster --------------------------------------------------------------------------


@dataclass
class Live:
    base: Path
    conf: Path
    proc: subprocess.Popen[bytes]

    def ok(self, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> str:
        r = dsclient("--conf", str(self.conf), *args, stdin=stdin, env=env)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout

    def node_pid(self, peer_id: str) -> int:
        """The pid of the dscluster process of that node (found by its --conf DIR)."""
        conf = next(str(self.base / f"n{i}") for i in range(3)
                    if load_node_config(self.base / f"n{i}").identity.peer_id == peer_id)
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if b"--conf" in argv and argv[argv.index(b"--conf") + 1] == conf.encode():
                return int(pid)
        raise AssertionError(f"no process for {conf}")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    base = tmp_path_factory.mktemp("live")
    out = base / "localcluster.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "dscluster.localcluster", "--dir",
                                 str(base), "--datastore", "memory"],
                                stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while "Ctrl-C stops every node" not in out.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        live = Live(base, base / "client", proc)
        boot = load_client_config(live.conf).bootstrap_addrs[0]
        live.ok("init", "--bootstrapper", boot)  # the config then lists every node
        yield live
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)


def test_ipfs_fetch_from_a_silent_peer_times_out_in_one_line(live, silent):
    peer, _ = silent
    r = dsclient("--conf", str(live.conf), "ipfs", "fetch", EMPTY_CID, "--from", peer.multiaddr,
                 "--timeout", "2")
    err = one_line(r)
    assert f"ipfs fetch of {EMPTY_CID} timed out after 2s" in err


def test_ipfs_fetch_from_a_peer_that_is_not_there_is_one_line(live, down):
    nobody = load_client_config(down / "n0" / "client").bootstrap_addrs[0]  # refuses
    err = one_line(dsclient("--conf", str(live.conf), "ipfs", "fetch", EMPTY_CID, "--from",
                            nobody))
    assert f"cannot connect to the IPFS peer {nobody.rsplit('/p2p/')[0]}: is it running" in err


def test_ctrl_c_during_ipfs_fetch(live, silent):
    peer, _ = silent
    before = peer.accepted
    proc = subprocess.Popen([script("dsclient"), "--conf", str(live.conf), "ipfs", "fetch",
                             EMPTY_CID, "--from", peer.multiaddr],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peer.wait_for_connection(before, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 130 and err == "dsclient: interrupted\n", err


def test_a_frozen_node_is_named_in_one_line_while_others_answer(live):
    keys = [f"/frozen/{i}" for i in range(12)]
    owners = {}
    for key in keys:
        out = live.ok("hashslot", key)
        owners[key] = out.split("node: ", 1)[1].strip()
    victim = owners[keys[0]]
    other = next(k for k in keys if owners[k] != victim)
    live.ok("put", other, stdin=b"still here")
    pid = live.node_pid(victim)
    os.kill(pid, signal.SIGSTOP)
    try:
        err = one_line(dsclient("--conf", str(live.conf), "--timeout", "2", "get-key", keys[0]))
        assert f"node {victim} serving slot" in err
        assert "is unavailable (accepts connections, then no answer)" in err
        assert live.ok("--timeout", "3", "get-key", other) == "still here"
    finally:
        os.kill(pid, signal.SIGCONT)
    # It heals: if the freeze outlasted the failure detector, the node's slots
    # failed over; either way `cluster check` is clean again soon (copies
    # refilled, the thawed node's stale keys swept).
    deadline = time.monotonic() + 90
    while True:
        r = dsclient("--conf", str(live.conf), "cluster", "check", "--json")
        check = json.loads(r.stdout)  # exit 2 while it reports problems
        if check["ok"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert check["ok"] is True and check["problems"] == [], check
    assert live.ok("get-key", other) == "still here"


def test_json_outputs_parse(live, tmp_path):
    f = tmp_path / "j.txt"
    f.write_bytes(b"json please\n")
    cid = live.ok("add", "-q", str(f)).strip()
    live.ok("put", "/json/a", stdin=b"12345")
    status = json.loads(live.ok("status", "--json"))
    assert len(status) == 3 and {n["state"] for n in status} == {"up"}
    assert sum(n["slots"] for n in status) == 16384
    st = json.loads(live.ok("stat", "--json", cid))
    assert st["cid"] == cid and st["type"] == "file" and st["size"] == 12
    lines = live.ok("ls", "--json", "--sizes", "/json/").splitlines()
    assert [json.loads(line) for line in lines] == [{"key": "/json/a", "size": 5}]
    members = json.loads(live.ok("cluster", "members", "--json"))
    assert len(members) == 3 and {m["role"] for m in members} == {"data"}
    cstatus = json.loads(live.ok("cluster", "status", "--json"))
    assert sorted(m["peer"] for m in cstatus) == sorted(m["peer"] for m in members)
    assert all(m["state"] == "up" and m["migrations"] == [] for m in cstatus)
    check = json.loads(live.ok("cluster", "check", "--json"))
    assert check["ok"] is True and check["members"] == 3 and check["problems"] == []


def test_add_from_stdin_and_only_hash_give_the_cids_of_add(live, tmp_path):
    data = os.urandom(700_000)
    f = tmp_path / "data.bin"
    f.write_bytes(data)
    stored = live.ok("add", "-q", str(f)).strip()
    assert live.ok("add", "-q", "-", stdin=data).strip() == stored
    # -n needs no cluster and no config at all
    r = dsclient("--conf", str(tmp_path / "no-config"), "add", "-n", "-q", str(f))
    assert r.returncode == 0 and r.stdout.strip() == stored, r.stderr
    r = dsclient("--conf", str(tmp_path / "no-config"), "add", "--only-hash", "-", stdin=b"")
    assert r.returncode == 0 and r.stdout.strip() == f"added {EMPTY_CID} {EMPTY_CID}"
    v1 = live.ok("add", "-q", "--cid-version", "1", str(f)).strip()
    r = dsclient("add", "-nq", "--cid-version", "1", str(f))
    assert r.stdout.strip() == v1 and v1.startswith("bafy")


def test_dsclient_conf_from_the_environment(live):
    r = dsclient("status", env={"DSCLIENT_CONF": str(live.conf)})
    assert r.returncode == 0 and r.stdout.count(" up ") == 3, r.stderr


# -- --version ---------------------------------------------------------------------------------


def test_version_on_every_command():
    want = version("ds-cluster")
    for prog in ("dscfg", "dscluster", "dsclient"):
        r = subprocess.run([script(prog), "--version"], capture_output=True, text=True,
                           timeout=TIMEOUT)
        assert r.returncode == 0 and r.stdout == f"{prog} {want}\n", (prog, r.stderr)


def test_unauthorized_client_is_told_the_command_that_authorizes_it(live, tmp_path):
    boot = load_client_config(live.conf).bootstrap_addrs[0]
    conf = tmp_path / "newcomer"
    r = subprocess.run([script("dscfg"), "client", str(conf), "--bootstrap", boot],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    peer = load_client_config(conf).identity.peer_id
    err = one_line(dsclient("--conf", str(conf), "put", "/newcomer", stdin=b"x"))
    assert err.endswith(f"not authorized: an admin runs dsclient cluster auth add {peer} "
                        "read-write")
    out = live.ok("cluster", "auth", "add", peer, "read-write")  # the operator is an admin
    assert f"{peer} read-write: recorded by" in out
    r = dsclient("--conf", str(conf), "put", "/newcomer", stdin=b"x")
    assert r.returncode == 0, r.stderr
    err = one_line(dsclient("--conf", str(conf), "cluster", "members"))
    assert err.endswith(f"is read-write, admin needed: an admin runs dsclient cluster auth add "
                        f"{peer} admin")


# -- dscluster joining ----------------------------------------------------------------------


def _last_line(err: str, code: int, got: int) -> str:
    """dscluster logs to stderr at info: its last line is the error, the rest is log."""
    assert got == code, err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert len(last) < 200, last
    return last


def test_joining_through_a_bootstrap_node_that_is_down_is_one_line(down, tmp_path):
    boot = load_client_config(down / "n0" / "client").bootstrap_addrs[0]
    r = subprocess.run([script("dscluster"), "--conf", str(tmp_path / "joiner"),
                        "--bootstrapper", boot, "--identity", "1", "--join-secret-file",
                        str(down / "n0" / "join.secret")],
                       capture_output=True, text=True, timeout=TIMEOUT)
    last = _last_line(r.stderr, 1, r.returncode)
    assert last.startswith("dscluster: error: cannot connect to ") and "is it running?" in last
    assert not (tmp_path / "joiner" / "config.json").exists()


def test_ctrl_c_while_joining_a_silent_peer(silent, down, tmp_path):
    peer, _ = silent
    before = peer.accepted
    proc = subprocess.Popen([script("dscluster"), "--conf", str(tmp_path / "joiner"),
                             "--bootstrapper", peer.multiaddr, "--identity", "1",
                             "--join-secret-file", str(down / "n0" / "join.secret")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peer.wait_for_connection(before, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=TIMEOUT)
    assert _last_line(err, 130, proc.returncode) == "dscluster: interrupted"


def test_set_copies_from_the_cli_takes_every_copy_back_and_gives_it_again(live, tmp_path):
    """Last in this module: it changes the shared cluster (copies 2, make run's
    default: 1, then 2 again). Also after the frozen node's test, whose node may
    have been failed over and left without a copy: the new copies are spread over
    every node again."""
    f = tmp_path / "c.bin"
    f.write_bytes(os.urandom(300_000))
    cid = live.ok("add", "-q", str(f)).strip()
    bad = dsclient("--conf", str(live.conf), "cluster", "set-copies", "4")
    assert _last_line(bad.stderr, 1, bad.returncode) == (
        "dsclient: error: copies must be from 1 to 3 (at most one copy per data node), got 4")
    assert live.ok("cluster", "set-copies", "1").strip() == (
        "copies set to 1; every slot has them")
    assert sum(n["copies"] for n in json.loads(live.ok("status", "--json"))) == 0
    assert live.ok("cluster", "set-copies", "2").strip() == (
        "copies set to 2; every slot has them")
    status = json.loads(live.ok("status", "--json"))
    assert sum(n["copies"] for n in status) == 16384 and all(n["copies"] for n in status)
    check = json.loads(live.ok("cluster", "check", "--json"))  # every slot fully copied
    assert check["ok"] is True and check["problems"] == [], check
    out = tmp_path / "back.bin"
    live.ok("get", cid, str(out))
    assert out.read_bytes() == f.read_bytes()

"""`make run` as a newcomer meets it: python -m dscluster.localcluster, then the printed lines.

Also ProcessCluster's start-up failure path: a node that cannot start leaves
no node of that cluster running.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from dscluster.procs import ProcessCluster

STARTUP = 90  # seconds for three nodes on a busy machine


def _wait_for(out: Path, proc: subprocess.Popen[bytes], text: str) -> str:
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        got = out.read_text(errors="replace")
        if text in got:
            return got
        if proc.poll() is not None:
            raise AssertionError(f"localcluster exited {proc.returncode}: {got}")
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} in: {out.read_text(errors='replace')}")


def _node_pids(base: Path) -> list[int]:
    """The dscluster processes serving ``base`` (found by their --conf in /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except (OSError, ValueError):
            continue
        if any(a.startswith(str(base / "n").encode()) for a in args) and b"--conf" in args:
            pids.append(int(entry))
    return sorted(pids)


def _pasted(line: str) -> list[str]:
    """A printed command line as the shell would split it."""
    return shlex.split(line.strip())


def test_make_run_prints_commands_that_work_as_pasted(tmp_path):
    base = tmp_path / "cluster"
    out = tmp_path / "localcluster.out"
    with open(out, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "dscluster.localcluster", "--dir",
                                 str(base)], stdout=f, stderr=subprocess.STDOUT)
    try:
        text = _wait_for(out, proc, "Ctrl-C stops every node")
        assert "3 nodes, 2 copies of every slot" in text  # survives a dead node by default
        lines = text.splitlines()
        commands = [line for line in lines if line.startswith("  ") and "--conf" in line]
        assert len(commands) == 3, text
        add, status, cluster_status = (_pasted(c) for c in commands)
        assert add[-2:] == ["add", "FILE"] and status[-1] == "status"
        assert cluster_status[-2:] == ["cluster", "status"]
        assert (base / "client" / "config.json").exists()

        data = tmp_path / "hello.txt"
        data.write_bytes(b"hello from a newcomer\n")
        r = subprocess.run([*add[:-1], str(data)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("added Qm") and r.stdout.strip().endswith("hello.txt")
        cid = r.stdout.split()[1]
        r = subprocess.run([*add[:-2], "cat", cid], capture_output=True, timeout=120)
        assert r.returncode == 0 and r.stdout == data.read_bytes()
        r = subprocess.run(status, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.count(" up ") == 3, r.stdout
        r = subprocess.run(cluster_status, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert r.stdout.count(" slots ") == 3, r.stdout  # the operator is an admin
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    tail = out.read_text()
    assert "stopped;" in tail and "is kept" in tail
    assert (base / "n0" / "config.json").exists()  # the directory stays

    # started again from the kept directory: same cluster, same data, same client
    again = tmp_path / "again.out"
    with open(again, "wb") as f:
        proc = subprocess.Popen([sys.executable, "-m", "dscluster.localcluster", "--dir",
                                 str(base)], stdout=f, stderr=subprocess.STDOUT)
    try:
        _wait_for(again, proc, "Ctrl-C stops every node")
        r = subprocess.run([*add[:-2], "cat", cid], capture_output=True, timeout=120)
        assert r.returncode == 0 and r.stdout == data.read_bytes(), r.stderr
        # kill -9 of a node: the file is still read whole, from the copies
        for pid in _node_pids(base):
            os.kill(pid, signal.SIGKILL)
            break
        else:
            raise AssertionError(f"no node process of {base}")
        r = subprocess.run([*add[:-2], "cat", cid], capture_output=True, timeout=120)
        assert r.returncode == 0 and r.stdout == data.read_bytes(), r.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0


async def test_process_cluster_stops_started_nodes_when_a_later_one_fails(tmp_path):
    bad = tmp_path / "n2"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")  # node 2 starts from it and fails
    cluster = ProcessCluster(tmp_path, 3)
    with trio.fail_after(120), pytest.raises(RuntimeError, match="node 2 exited"):
        await cluster.__aenter__()
    started = [p for p in cluster.procs[:2] if p is not None]
    assert len(started) == 2
    assert all(p.poll() is not None for p in started)  # stopped, not left running


async def test_process_cluster_keeps_the_join_secret_off_the_command_line(tmp_path):
    with trio.fail_after(120):
        async with ProcessCluster(tmp_path, 2) as cluster:
            joiner = cluster.procs[1]
            assert joiner is not None
            args = [str(a) for a in joiner.args]  # type: ignore[union-attr]
            assert "--join-secret-file" in args and cluster.secret not in args
            with open(f"/proc/{joiner.pid}/cmdline", "rb") as f:
                assert cluster.secret.encode() not in f.read()
            assert os.path.exists(cluster.secret_file)

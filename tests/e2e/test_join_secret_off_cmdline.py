"""The join secret never appears on a command line (issue 14): `ps` shows argv to every user.

`make run` (python -m dscluster.localcluster) starts the bootstrap node and
joiners; while they run, no process's /proc/PID/cmdline holds the secret. A
joiner given the secret in DSCLUSTER_JOIN_SECRET joins the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from dscluster.testing.cluster import _script

START_TIMEOUT = 120.0


def _cmdlines() -> dict[int, bytes]:
    """Every readable process's argv (NUL-separated), by PID."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                out[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:  # gone, or not ours to read
                pass
    return out


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def _wait_for(path: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = path.read_text(errors="replace") if path.exists() else ""
        if text in got:
            return got
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode} before {text!r}: {got[-2000:]}")
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} in {path} after {timeout} s")


def _stop(proc: subprocess.Popen[bytes], sig: int) -> int:
    """Stop a process this test started (and, if it will not go, the nodes it started)."""
    if proc.poll() is None:
        kids = _children(proc.pid)
        proc.send_signal(sig)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            for kid in kids:
                try:
                    os.kill(kid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.kill()
            proc.wait()
    return proc.returncode


def test_make_run_and_an_env_joiner_keep_the_secret_off_every_command_line(tmp_path):
    base = tmp_path / "cluster"
    out_path = tmp_path / "localcluster.out"
    with open(out_path, "wb") as out:
        local = subprocess.Popen([sys.executable, "-m", "dscluster.localcluster", "--nodes", "3",
                                  "--dir", str(base)], stdout=out, stderr=subprocess.STDOUT)
    joiner: subprocess.Popen[bytes] | None = None
    try:
        text = _wait_for(out_path, "Ctrl-C stops every node", local, START_TIMEOUT)
        secret = (base / "n0" / "join.secret").read_text().strip()
        assert len(secret) >= 32
        nodes = _children(local.pid)
        assert len(nodes) == 3, nodes  # the bootstrap node and two joiners are running
        for pid, argv in _cmdlines().items():
            assert secret.encode() not in argv, (pid, argv.split(b"\0"))
        for i in (1, 2):  # the joiners did join, through the secret file
            assert (base / f"n{i}" / "config.json").exists()
            assert secret not in (base / f"n{i}" / "config.json").read_text()

        # a joiner with the secret in its environment (the CLI's envvar)
        bootstrap = next(line.split(": ", 1)[1] for line in text.splitlines()
                         if line.startswith("bootstrap: "))
        env = {**os.environ, "DSCLUSTER_JOIN_SECRET": secret}
        joiner_out = tmp_path / "joiner.out"
        with open(joiner_out, "wb") as out, open(tmp_path / "joiner.log", "wb") as err:
            joiner = subprocess.Popen([_script("dscluster"), "--conf", str(tmp_path / "extra"),
                                       "--bootstrapper", bootstrap, "--join", "--tick", "0.5"],
                                      stdout=out, stderr=err, env=env)
        _wait_for(joiner_out, "node listening on", joiner, START_TIMEOUT)
        assert secret.encode() not in Path(f"/proc/{joiner.pid}/cmdline").read_bytes()
        log = (tmp_path / "joiner.log").read_text()
        assert "joined as new member" in log and "visible to every user" not in log
    finally:
        if joiner is not None:
            _stop(joiner, signal.SIGTERM)
        status = _stop(local, signal.SIGINT)
    assert status == 0, out_path.read_text()[-2000:]

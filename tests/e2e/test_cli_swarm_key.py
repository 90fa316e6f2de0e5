"""`dsclient --swarm-key FILE`: a client whose config directory has no swarm.key joins the
private network with the key named on the command line (one real dscluster process)."""

from __future__ import annotations

import signal
import subprocess
import time

from dscluster.procs import LISTENING, script

TIMEOUT = 120


def test_swarm_key_option_lets_a_client_into_a_private_network(tmp_path):
    node = tmp_path / "node"
    r = subprocess.run([script("dscfg"), "cluster", "-n", "1", "--private-network", str(node)],
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    client = node / "client"
    key = tmp_path / "kept-elsewhere.key"
    (client / "swarm.key").rename(key)  # the operator keeps the key apart from the config
    log = tmp_path / "node.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen([script("dscluster"), "--conf", str(node), "--datastore",
                                 "memory", "--tick", "0.2"], stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while LISTENING not in log.read_text(errors="replace"):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        outside = subprocess.run([script("dsclient"), "--conf", str(client), "--timeout", "3",
                                  "status"], capture_output=True, text=True, timeout=TIMEOUT)
        assert outside.returncode == 1 and outside.stderr.count("\n") == 1, outside.stderr
        assert "cannot reach any of 1 cluster node" in outside.stderr
        inside = subprocess.run([script("dsclient"), "--conf", str(client), "--swarm-key",
                                 str(key), "status"], capture_output=True, text=True,
                                timeout=TIMEOUT)
        assert inside.returncode == 0, inside.stderr
        assert inside.stdout.count(" up ") == 1
        admin = subprocess.run([script("dsclient"), "--conf", str(client), "--swarm-key",
                                str(key), "cluster", "members"], capture_output=True,
                               text=True, timeout=TIMEOUT)
        assert admin.returncode == 0 and " data " in admin.stdout, admin.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)

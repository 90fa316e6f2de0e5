"""End to end: `dscluster --http` on three real node processes and `dsclient gateway`.

Started as an operator would: `dscfg cluster -n 3` (with its admin operator
client), nodes 1 and 2 joining; a second client made with `dscfg client` and
authorized read-only with `dscfg auth add`, which then runs `dsclient gateway`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from dscluster.procs import ProcessCluster, script

TIMEOUT = 60


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=TIMEOUT,
                          check=False)


def http_url(out_file: Path) -> str:
    match = re.search(r"dscluster: HTTP on (http://\S+)", out_file.read_text())
    assert match, out_file.read_text()
    return match.group(1)


async def wait_line(proc: subprocess.Popen[str], pattern: str) -> str:
    assert proc.stdout is not None
    with trio.fail_after(TIMEOUT):
        while True:
            line = await trio.to_thread.run_sync(proc.stdout.readline)
            if not line:
                raise AssertionError(f"exited with {proc.wait()}: {proc.stderr.read()}")  # type: ignore[union-attr]
            if m := re.search(pattern, line):
                return m.group(1)


async def test_node_http_port_and_client_gateway(tmp_path: Path) -> None:
    op = tmp_path / "op"
    async with ProcessCluster(tmp_path, 3, datastore="memory", operator_client=str(op),
                              extra_args=["--http", "127.0.0.1:0"]) as cluster:
        node_url = http_url(tmp_path / "n0.out")
        # A non-loopback bind without a token is refused in one line, before anything opens.
        r = cli(script("dscluster"), "--conf", cluster.conf(0), "--http", "0.0.0.0:0")
        assert r.returncode == 1 and "--http-token" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr

        src = tmp_path / "hello.txt"
        src.write_bytes(b"hello over http\n" * 1000)
        added = cli(sys.executable, "-m", "dsclient.cli", "--conf", str(op), "add", "-q",
                    str(src))
        assert added.returncode == 0, added.stderr
        cid = added.stdout.strip()

        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            assert (await http.get(node_url + "/healthz")).status_code == 200
            got = await http.get(f"{node_url}/ipfs/{cid}")
            assert got.status_code == 200 and got.content == src.read_bytes()
            metrics = (await http.get(node_url + "/metrics")).text
            assert re.search(r"^dscluster_slots_owned 5461\.0$", metrics, re.M)

            ro = tmp_path / "ro"
            made = cli(script("dscfg"), "client", str(ro / "config.json"))
            peer = re.search(r"for client (\S+)", made.stdout)
            assert made.returncode == 0 and peer, made.stderr
            for i in range(3):
                auth = cli(script("dscfg"), "auth", "add", peer.group(1), "read-only",
                           "--conf", cluster.conf(i))
                assert auth.returncode == 0, auth.stderr
            with trio.fail_after(TIMEOUT):  # the nodes pick the file up within a second
                while cli(sys.executable, "-m", "dsclient.cli", "--conf", str(ro), "init",
                          "--bootstrapper", cluster.bootstrap_addr).returncode != 0:
                    await trio.sleep(0.5)
            refused = cli(sys.executable, "-m", "dsclient.cli", "--conf", str(ro), "gateway",
                          "--listen", "0.0.0.0:0")
            assert refused.returncode == 1 and "--http-token" in refused.stderr
            gateway = subprocess.Popen(
                [sys.executable, "-m", "dsclient.cli", "--conf", str(ro), "gateway",
                 "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
            try:
                url = await wait_line(gateway, r"gateway on (http://\S+)")
                got = await http.get(f"{url}/ipfs/{cid}")
                assert got.status_code == 200 and got.content == src.read_bytes()
                raw = await http.get(f"{url}/ipfs/{cid}?format=car")
                assert raw.headers["content-type"].startswith("application/vnd.ipld.car")
            finally:
                gateway.terminate()
                assert await trio.to_thread.run_sync(gateway.wait, TIMEOUT) == 0

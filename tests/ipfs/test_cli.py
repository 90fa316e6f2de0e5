"""`python -m ipfs_plugin serve|fetch` as real processes over flatfs directories."""

from __future__ import annotations

import random
import signal
import subprocess
import sys

import pytest
import trio

from dscluster.blocks import block_key
from dscluster.datastore.flatfs import FlatfsDatastore
from ipfs_plugin.__main__ import main
from tests.ipfs.helpers import build_file, leaf_file, read_file

CLI = [sys.executable, "-m", "ipfs_plugin"]


async def run_cli(*args: str) -> subprocess.CompletedProcess:
    return await trio.run_process([*CLI, *args], capture_stdout=True, capture_stderr=True, check=False)


async def test_serve_then_fetch_between_processes(tmp_path):
    content = random.Random(3).randbytes(300_000)
    dag = await build_file(content)
    async with FlatfsDatastore(tmp_path / "served") as store:
        for cid, block in dag.blocks.items():
            await store.put(block_key(cid), block)
    with trio.fail_after(60):
        server = await trio.lowlevel.open_process(
            [*CLI, "serve", "--flatfs", str(tmp_path / "served")], stdout=subprocess.PIPE
        )
        try:
            line = b""
            while not line.endswith(b"\n"):
                chunk = await server.stdout.receive_some(1024)
                assert chunk, "serve exited before printing its address"
                line += chunk
            addr = line.decode().strip()
            assert addr.startswith("/ip4/127.0.0.1/tcp/") and "/p2p/" in addr

            fetched = await run_cli("fetch", str(dag.root), "--from", addr,
                                    "--flatfs", str(tmp_path / "fetched"))
            assert fetched.returncode == 0, fetched.stderr
            assert b"3 blocks, 3 fetched" in fetched.stdout

        finally:
            server.send_signal(signal.SIGTERM)
            assert await server.wait() == 0
    async with FlatfsDatastore(tmp_path / "fetched") as store:
        assert await read_file(store, dag.root) == content


def test_bad_peer_address_is_one_line(tmp_path, capsys):
    # In-process (main() runs its own trio loop): a process start costs seconds here.
    code = main(["fetch", str(leaf_file(b"x").root), "--from", "/ip4/nonsense",
                 "--flatfs", str(tmp_path / "f")])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: not a peer multiaddr") and err.count("\n") == 1


def test_repo_without_a_config_is_one_line(tmp_path, capsys):
    code = main(["serve", "--repo", str(tmp_path / "no-repo")])
    assert code == 1
    err = capsys.readouterr().err
    assert err == f"error: no Kubo config at {tmp_path / 'no-repo' / 'config'}\n"


def test_serve_needs_exactly_one_store(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--repo", str(tmp_path), "--flatfs", str(tmp_path / "f")])
    assert "not allowed with argument" in capsys.readouterr().err

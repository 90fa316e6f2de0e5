"""Shared test fixtures.

``mongodb_uri`` (session): the URI of a MongoDB-wire server for the mongo
tests. MONGODB_URI when set; otherwise a SecantusDB server started on a free
127.0.0.1 port for this session and stopped at its end. Under CI=true a server
that cannot be started fails the tests loudly instead of skipping them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MONGO_START_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(uri: str) -> bool:
    import pymongo

    client: pymongo.MongoClient = pymongo.MongoClient(uri, serverSelectionTimeoutMS=500)
    try:
        client.admin.command("ping")
        return True
    except Exception:  # not up yet, whatever the reason
        return False
    finally:
        client.close()


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"MongoDB test server unavailable under CI: {reason}")
    pytest.skip(f"MongoDB test server unavailable: {reason}")


@pytest.fixture(scope="session")
def mongodb_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if uri := os.environ.get("MONGODB_URI"):
        yield uri
        return
    port = _free_port()
    storage: Path = tmp_path_factory.mktemp("secantus")
    log_path = storage / "secantus.log"
    # retryWrites=false: with retryable writes SecantusDB keeps a record per write
    # and slows down by an order of magnitude after some thousands of writes.
    uri = f"mongodb://127.0.0.1:{port}/?retryWrites=false"
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(port),
                 "--storage-path", str(storage / "data")],
                stdout=log, stderr=subprocess.STDOUT, cwd=storage,
            )
        except OSError as exc:
            _unavailable(f"cannot start SecantusDB: {exc}")
    try:
        deadline = time.monotonic() + MONGO_START_TIMEOUT
        while not _ping(uri):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                _unavailable(f"SecantusDB did not answer on port {port}:\n{tail}")
            time.sleep(0.1)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

"""A full store gives clients errors, not corruption, and recovers when space returns."""

from __future__ import annotations

import os
import subprocess

import pytest
import trio

from dscluster.datastore.flatfs import FlatfsDatastore
from dscluster.errors import DSClusterError, UnavailableError
from dscluster.testing.cluster import local_cluster, store_client

VALUE = 16 * 1024


@pytest.fixture
def tiny_fs(tmp_path):  # type: ignore[no-untyped-def]
    """A 512 KiB tmpfs (needs root: CI and this machine run tests as root)."""
    where = tmp_path / "tiny"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(where)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


async def test_full_flatfs_errors_then_recovers(tmp_path, tiny_fs) -> None:  # type: ignore[no-untyped-def]
    store = os.path.join(tiny_fs, "flatfs")
    with trio.fail_after(60):
        async with local_cluster(tmp_path, 1, datastore=lambda i: FlatfsDatastore(store)) as c:
            async with store_client(c.client_identity, c.table) as client:
                acked: dict[str, bytes] = {}
                errors: list[DSClusterError] = []
                for i in range(200):  # 200 x 16 KiB is far more than 512 KiB
                    key, value = f"/FULL{i}", bytes([i % 256]) * VALUE
                    try:
                        await client.put(key, value)
                    except DSClusterError as exc:
                        errors.append(exc)
                        continue
                    acked[key] = value
                assert errors, "the store never filled up"
                assert all(isinstance(e, UnavailableError) for e in errors), errors[0]
                assert 0 < len(acked) < 200
                for key, value in acked.items():  # nothing acknowledged is lost or torn
                    assert await client.get(key) == value
                # space returns: the node takes writes again
                for key in list(acked)[: len(acked) // 2]:
                    await client.delete(key)
                    del acked[key]
                await client.put("/FULLAFTER", b"x" * VALUE)
                assert await client.get("/FULLAFTER") == b"x" * VALUE
                for key, value in acked.items():
                    assert await client.get(key) == value
            print(f"full store: {len(errors)} refused puts, first: {errors[0]!r}")

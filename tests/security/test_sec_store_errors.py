"""LevelDB and MongoDB storage failures (a full disk) are UnavailableError, not internal."""

from __future__ import annotations

import os
import subprocess

import pytest
import trio
from pymongo import errors as mongo_errors

from dscluster.datastore.key import Key
from dscluster.datastore.leveldb import LevelDatastore
from dscluster.datastore.mongo import _mapped
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


async def test_full_leveldb_is_unavailable_and_keeps_acked_writes(tiny_fs) -> None:  # type: ignore[no-untyped-def]
    ds = LevelDatastore(os.path.join(tiny_fs, "level"), sync=True)
    acked: dict[Key, bytes] = {}
    errors: list[Exception] = []
    try:
        with trio.fail_after(60):
            for i in range(100):  # 100 x 16 KiB is far more than 512 KiB
                key, value = Key(f"/FULL{i}"), bytes([i]) * VALUE
                try:
                    await ds.put(key, value)
                except Exception as exc:  # noqa: BLE001 - the type is what is asserted
                    errors.append(exc)
                    continue
                acked[key] = value
            assert errors, "the store never filled up"
            assert all(isinstance(e, UnavailableError) for e in errors), errors[0]
            assert "No space left" in str(errors[0])
            assert 0 < len(acked) < 100
            for key, value in acked.items():
                assert await ds.get(key) == value
            with pytest.raises(UnavailableError):  # a batch and a delete: the same
                await ds.delete(next(iter(acked)))
    finally:
        try:
            await ds.close()
        except DSClusterError:
            pass


async def test_full_leveldb_reaches_the_client_as_unavailable(tmp_path, tiny_fs) -> None:  # type: ignore[no-untyped-def]
    where = os.path.join(tiny_fs, "node")
    with trio.fail_after(60):
        async with local_cluster(tmp_path, 1, datastore=lambda i: LevelDatastore(where)) as c:
            async with store_client(c.client_identity, c.table) as client:
                errors: list[DSClusterError] = []
                for i in range(100):
                    try:
                        await client.put(f"/FULL{i}", bytes([i]) * VALUE)
                    except DSClusterError as exc:
                        errors.append(exc)
                assert errors and all(isinstance(e, UnavailableError) for e in errors), errors


@pytest.mark.parametrize("exc", [
    mongo_errors.WriteError("Out of disk space", 14031, {"code": 14031}),
    mongo_errors.WriteConcernError("waiting for replication timed out", 64, {}),
    mongo_errors.BulkWriteError({"writeErrors": [{"index": 0, "code": 14031,
                                                  "errmsg": "Out of disk space"}]}),
    mongo_errors.OperationFailure("No space left on device", 14031),
])
def test_mongo_write_failures_are_unavailable(exc: Exception) -> None:
    def fail() -> None:
        raise exc

    with pytest.raises(UnavailableError, match="MongoDB"):
        _mapped(fail, "put /k")

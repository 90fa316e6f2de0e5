"""A full store gives clients errors, not corruption, and recovers when space returns.

Each test mounts a real tmpfs with a size limit (needs root: CI and this
machine run tests as root) and fills it. For LevelDB a "ballast" file takes
part of the filesystem, so that deleting it frees space (deleting keys frees
nothing in LevelDB until a compaction, which itself needs space).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio

from dscluster.datastore.flatfs import FlatfsDatastore
from dscluster.datastore.key import Key
from dscluster.datastore.leveldb import LevelDatastore
from dscluster.datastore.query import Query
from dscluster.errors import DSClusterError, UnavailableError
from dscluster.testing.cluster import local_cluster, store_client

VALUE = 16 * 1024
KiB, MiB = 1024, 1024 * 1024


@contextmanager
def _tmpfs(where: str, size: int) -> Iterator[str]:
    os.makedirs(where)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", where],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", where], check=False)


@pytest.fixture
def tiny_fs(tmp_path):  # type: ignore[no-untyped-def]
    """A 512 KiB tmpfs."""
    with _tmpfs(str(tmp_path / "tiny"), 512 * KiB) as where:
        yield where


def _ballast(where: str, size: int) -> str:
    path = os.path.join(where, "ballast")
    with open(path, "wb") as f:
        f.write(b"\0" * size)
    return path


def _one_line(errors: list[Exception]) -> None:
    assert errors, "the store never filled up"
    assert all(isinstance(e, UnavailableError) for e in errors), errors[0]
    assert all("\n" not in str(e) and str(e) for e in errors), errors[0]


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
                # space returns: the node takes writes again. The node's slot index
                # is a LevelDB beside the flatfs, on the same filesystem: a failed
                # write left it refusing writes until it can reopen, so the first
                # deletes (each frees its file before the index entry is dropped)
                # may be refused; retried, they go through once there is room.
                refused_deletes = 0
                pending = list(acked)[: len(acked) // 2]
                for _ in range(3):
                    refused = []
                    for key in pending:
                        try:
                            await client.delete(key)
                        except UnavailableError:
                            refused.append(key)
                            continue
                        del acked[key]
                    refused_deletes += len(refused)
                    pending = refused
                assert not pending, f"deletes still refused: {pending}"
                await client.put("/FULLAFTER", b"x" * VALUE)
                assert await client.get("/FULLAFTER") == b"x" * VALUE
                for key, value in acked.items():
                    assert await client.get(key) == value
            print(f"full store: {len(errors)} refused puts, first: {errors[0]!r}; "
                  f"{refused_deletes} deletes refused before the index could reopen")


async def test_full_leveldb_log_heals_without_losing_acked_writes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The log append fails (LevelDB does not remember that, but leaves a torn
    record): the store refuses writes until space returns, then reopens itself,
    and every acknowledged write is still there after a later reopen. Without
    the reopen, writes taken after the torn record are dropped by the next
    replay of the log (measured: 20 of 20)."""
    with _tmpfs(str(tmp_path / "fs"), 2 * MiB) as where:
        ballast = _ballast(where, 1200 * KiB)
        ds = LevelDatastore(os.path.join(where, "level"))
        acked: dict[Key, bytes] = {}
        errors: list[Exception] = []
        with trio.fail_after(60):
            try:
                for i in range(100):  # 100 x 16 KiB is more than the ~800 KiB left
                    key, value = Key(f"/FULL{i}"), bytes([i]) * VALUE
                    try:
                        await ds.put(key, value)
                    except DSClusterError as exc:
                        errors.append(exc)
                        continue
                    acked[key] = value
                _one_line(errors)
                assert "No space left on device" in str(errors[0]), errors[0]
                assert 0 < len(acked) < 100
                assert ds.reopens == 0
                with pytest.raises(UnavailableError):  # deletes and batches: refused alike
                    await ds.delete(next(iter(acked)))
                for key, value in acked.items():  # reads go on while the disk is full
                    assert await ds.get(key) == value
                os.remove(ballast)  # space returns: the next write reopens, then succeeds
                for i in range(20):
                    key, value = Key(f"/AFTER{i}"), bytes([i]) * 1000
                    await ds.put(key, value)
                    acked[key] = value
                assert ds.reopens == 1
                b = await ds.batch()
                b.put("/AFTERBATCH", b"batch")
                b.delete("/AFTER0")
                await b.commit()
                acked[Key("/AFTERBATCH")] = b"batch"
                del acked[Key("/AFTER0")]
                await ds.sync()
            finally:
                await ds.close()
            ds = LevelDatastore(os.path.join(where, "level"))  # the log is replayed again
            try:
                for key, value in acked.items():
                    assert await ds.get(key) == value, key
                assert not await ds.has("/AFTER0")
            finally:
                await ds.close()
        print(f"leveldb log full: {len(errors)} refused puts, first: {errors[0]}")


async def test_full_leveldb_sticky_error_heals_through_a_node(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The memtable cannot become a table file: LevelDB keeps that background
    error and refuses every later write, even with space back. Here the node's
    store reopens itself once space returns: the client's next put succeeds,
    with no restart, and everything acknowledged reads back, also after one."""
    with _tmpfs(str(tmp_path / "fs"), 12 * MiB) as where:
        ballast = _ballast(where, 5 * MiB)
        path = os.path.join(where, "node")
        stores: list[LevelDatastore] = []

        def open_store(i: int) -> LevelDatastore:
            stores.append(LevelDatastore(path))
            return stores[-1]

        big = 64 * KiB
        acked: dict[str, bytes] = {}
        errors: list[DSClusterError] = []
        with trio.fail_after(120):
            async with local_cluster(tmp_path, 1, datastore=open_store) as c:
                async with store_client(c.client_identity, c.table) as client:
                    paused = False
                    for i in range(200):  # LevelDB turns its memtable into a table at 4 MiB
                        key, value = f"/FULL{i}", bytes([i % 256]) * big
                        try:
                            await client.put(key, value)
                        except DSClusterError as exc:
                            errors.append(exc)
                            if len(errors) == 20:
                                break
                            continue
                        acked[key] = value
                        logs = [n for n in os.listdir(path) if n.endswith(".log")]
                        if len(logs) > 1 and not paused:
                            # a second log: the 4 MiB table is being written, into the
                            # 3 MiB left. Let it fail alone (had a log append failed in
                            # the moment the disk was full, that would be the failure).
                            await trio.sleep(0.5)
                            paused = True
                    _one_line(errors)
                    assert ".ldb: No space left on device" in str(errors[0]), errors[0]  # sticky
                    assert 0 < len(acked) < 200
                    for key, value in acked.items():  # the node stays up and serves reads
                        assert await client.get(key) == value
                    assert stores[0].reopens == 0
                    os.remove(ballast)
                    await client.put("/FULLAFTER", b"x" * big)  # no restart
                    acked["/FULLAFTER"] = b"x" * big
                    assert stores[0].reopens == 1
                    for i in range(10):
                        await client.put(f"/AFTER{i}", bytes([i]) * big)
                        acked[f"/AFTER{i}"] = bytes([i]) * big
                    for key, value in acked.items():
                        assert await client.get(key) == value
            await stores[0].close()  # the caller owns the store it hands to a node
            ds = LevelDatastore(path)  # replay the log again: a restart loses nothing
            try:
                for key, value in acked.items():
                    assert await ds.get(key) == value, key
            finally:
                await ds.close()
        print(f"leveldb sticky: {len(errors)} refused puts, first: {errors[0]}")


async def test_a_query_open_across_a_reopen_fails_cleanly(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with _tmpfs(str(tmp_path / "fs"), 2 * MiB) as where:
        ballast = _ballast(where, 1200 * KiB)
        ds = LevelDatastore(os.path.join(where, "level"))
        ds.query_chunk = 2  # several steps, so that one comes after the reopen
        try:
            with trio.fail_after(60):
                for i in range(100):
                    try:
                        await ds.put(f"/Q/{i:03}", bytes([i]) * VALUE)
                    except UnavailableError:
                        break
                else:
                    raise AssertionError("the store never filled up")
                results = await ds.query(Query(prefix="/Q", keys_only=True))
                first = [await results.__anext__() for _ in range(3)]
                assert [e.key for e in first] == ["/Q/000", "/Q/001", "/Q/002"]
                os.remove(ballast)
                await ds.put("/after", b"x")  # reopens
                assert ds.reopens == 1
                with pytest.raises(UnavailableError, match="reopened"):
                    async for _ in results:
                        pass
                await results.aclose()
                # a new query sees everything, on the reopened database
                got = await (await ds.query(Query(prefix="/Q", keys_only=True))).rest()
                assert len(got) == i and got[0].key == "/Q/000"
        finally:
            await ds.close()

"""LevelDatastore's write queue: group commit, and the fence after a failed write.

The full-disk behaviour itself is tested on a real small filesystem in
tests/security/test_sec_full_disk.py; here a failure is injected in front of a
real LevelDB to check the rules one at a time.
"""

from __future__ import annotations

import plyvel
import pytest
import trio

from dscluster.datastore.leveldb import LevelDatastore
from dscluster.errors import UnavailableError


class FailingDB:
    """A real plyvel DB whose next ``fail`` writes raise plyvel.IOError(message)."""

    def __init__(self, db: plyvel.DB, message: str, fail: int = 1) -> None:
        self.db, self.message, self.fail, self.writes = db, message, fail, 0

    def _write(self) -> None:
        self.writes += 1
        if self.fail:
            self.fail -= 1
            raise plyvel.IOError(self.message.encode())

    def put(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._write()
        return self.db.put(*args, **kwargs)

    def delete(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._write()
        return self.db.delete(*args, **kwargs)

    def write_batch(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._write()
        return self.db.write_batch(*args, **kwargs)

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        return getattr(self.db, name)


async def test_concurrent_synced_writes_share_a_commit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ds = LevelDatastore(tmp_path / "db", sync=True)
    groups: list[int] = []
    apply = ds._apply

    def counting(group):  # type: ignore[no-untyped-def]
        groups.append(len(group))
        apply(group)

    ds._apply = counting  # type: ignore[method-assign]
    with trio.fail_after(30):
        async def writer(t: int) -> None:
            for i in range(25):
                await ds.put(f"/w{t}/{i}", bytes([t, i]) * 100)

        async with trio.open_nursery() as nursery:
            for t in range(8):
                nursery.start_soon(writer, t)
        await ds.close()
    assert sum(groups) == 200
    assert max(groups) > 1, "no two synced writes ever shared a commit"
    ds = LevelDatastore(tmp_path / "db")
    for t in range(8):
        for i in range(25):
            assert await ds.get(f"/w{t}/{i}") == bytes([t, i]) * 100
    await ds.close()
    print(f"{len(groups)} commits for 200 synced puts, largest group {max(groups)}")


async def test_a_failed_write_fences_later_ones_until_reopened(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ds = LevelDatastore(tmp_path / "db")
    await ds.put("/before", b"1")
    fake = FailingDB(ds._db, "IO error: /x/000003.log: Read-only file system")
    ds._db = fake
    with pytest.raises(UnavailableError, match="Read-only file system") as first:
        await ds.put("/a", b"x")
    assert "\n" not in str(first.value) and "b'" not in str(first.value)
    writes = fake.writes
    for attempt in range(3):  # refused here, without reaching LevelDB's log
        with pytest.raises(UnavailableError, match="refused"):
            await ds.put(f"/b{attempt}", b"y")
        with pytest.raises(UnavailableError, match="refused"):
            await ds.delete("/before")
        with pytest.raises(UnavailableError):
            await ds.sync()
    assert fake.writes == writes
    assert await ds.get("/before") == b"1"  # reads are served
    assert not await ds.has("/a")
    assert ds.reopens == 0  # not a full disk: no reopen (a restart reopens)
    await ds.close()


async def test_a_full_disk_failure_with_room_again_is_healed_and_retried(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A sticky background error seen when space is back: the write that hits it
    reopens the store and goes through, so the client never sees it."""
    ds = LevelDatastore(tmp_path / "db")
    await ds.put("/before", b"1")
    ds._db = FailingDB(ds._db, "IO error: /x/000005.ldb: No space left on device", fail=5)
    await ds.put("/a", b"x")  # fails, reopens (this disk has room), retried once: fine
    assert ds.reopens == 1
    assert not isinstance(ds._db, FailingDB)
    assert await ds.get("/a") == b"x"
    assert await ds.get("/before") == b"1"
    await ds.close()

"""Datastore backends beside their raw libraries: put and get, 4 KiB and 256 KiB values.

For each backend, the same keys and values are written and read once through
our async Datastore (one awaited call per operation, as a node serves them)
and once straight through the library underneath in the same process: file
write + rename for flatfs, plyvel for leveldb, pymongo for mongo. The ratio
ours/raw is the cost of the contract (validation, the thread hops of
blocking calls). Raw and ours alternate for two rounds and the best of each
is shown (the machine may be shared). Counts are bounded: a full run takes
one to two minutes.

MongoDB: MONGODB_URI when set, else a SecantusDB started for the run
(``retryWrites=false``). Run: ``python -m bench datastore``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import plyvel
import pymongo
import trio
from bson import Binary

from dscluster.datastore.base import Datastore
from dscluster.datastore.flatfs import DEFAULT_SHARD, FlatfsDatastore
from dscluster.datastore.leveldb import LevelDatastore
from dscluster.datastore.mongo import MongoDatastore

SIZES = (4 * 1024, 256 * 1024)
ROUNDS = 2  # raw and ours alternate; the best round of each is shown
COUNTS = {4 * 1024: 1000, 256 * 1024: 200}  # per backend, size, side and round
SYNC_COUNTS = {4 * 1024: 150, 256 * 1024: 60}  # fsync per write is slower


@dataclass(frozen=True)
class Figure:
    ops: int
    seconds: float
    size: int

    @property
    def ops_per_s(self) -> float:
        return self.ops / self.seconds

    @property
    def mb_per_s(self) -> float:
        return self.ops * self.size / self.seconds / 1e6


def _timed(fn: Callable[[], None], ops: int, size: int) -> Figure:
    start = time.perf_counter()
    fn()
    return Figure(ops, time.perf_counter() - start, size)


async def _atimed(fn: Callable[[], object], ops: int, size: int) -> Figure:
    start = time.perf_counter()
    await fn()  # type: ignore[misc]
    return Figure(ops, time.perf_counter() - start, size)


def _keys(n: int, size: int) -> list[str]:
    # flatfs-compatible single-level keys (the others accept them too)
    return [f"/BENCH{size}-{i:06d}X" for i in range(n)]


# -- raw baselines: (put, get) over the library, blocking ---------------------


class RawFlatfs:
    def __init__(self, root: str, sync: bool) -> None:
        self.root, self.sync = root, sync
        self.temp = os.path.join(root, ".temp")
        os.makedirs(self.temp, exist_ok=True)

    def _path(self, key: str) -> str:
        name = key[1:]
        return os.path.join(self.root, DEFAULT_SHARD.directory(name), name + ".data")

    def put(self, key: str, value: bytes) -> None:
        path = self._path(key)
        with contextlib.suppress(FileExistsError):
            os.mkdir(os.path.dirname(path))
        fd, tmp = tempfile.mkstemp(prefix="temp-", dir=self.temp)
        with os.fdopen(fd, "wb") as f:
            f.write(value)
            if self.sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if self.sync:
            dfd = os.open(os.path.dirname(path), os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)

    def get(self, key: str) -> bytes:
        with open(self._path(key), "rb") as f:
            return f.read()

    def close(self) -> None:
        pass


class RawLevel:
    def __init__(self, path: str, sync: bool) -> None:
        self.db = plyvel.DB(path, create_if_missing=True, compression=None)
        self.sync = sync

    def put(self, key: str, value: bytes) -> None:
        self.db.put(key.encode(), value, sync=self.sync)

    def get(self, key: str) -> bytes:
        return self.db.get(key.encode())

    def close(self) -> None:
        self.db.close()


class RawMongo:
    def __init__(self, uri: str, collection: str) -> None:
        self.client: pymongo.MongoClient = pymongo.MongoClient(uri)
        self.col = self.client["dscluster_bench"][collection]

    def put(self, key: str, value: bytes) -> None:
        doc = {"_id": key, "v": Binary(value), "size": len(value)}
        self.col.replace_one({"_id": key}, doc, upsert=True)

    def get(self, key: str) -> bytes:
        return bytes(self.col.find_one({"_id": key}, {"v": 1})["v"])

    def close(self) -> None:
        self.col.drop()
        self.client.close()


# -- one comparison ------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    name: str
    raw: Callable[[str], object]  # workdir -> raw store
    ours: Callable[[str], Datastore]  # workdir -> our store
    counts: dict[int, int]


def _run_raw(raw, keys: list[str], value: bytes) -> tuple[Figure, Figure]:
    n, size = len(keys), len(value)

    def puts() -> None:
        for k in keys:
            raw.put(k, value)

    def gets() -> None:
        for k in keys:
            assert len(raw.get(k)) == size

    return _timed(puts, n, size), _timed(gets, n, size)


async def _run_ours(ds: Datastore, keys: list[str], value: bytes) -> tuple[Figure, Figure]:
    n, size = len(keys), len(value)

    async def puts() -> None:
        for k in keys:
            await ds.put(k, value)

    async def gets() -> None:
        for k in keys:
            assert len(await ds.get(k)) == size

    return await _atimed(puts, n, size), await _atimed(gets, n, size)


async def _ours(backend: Backend, workdir: str, keys: list[str], value: bytes):
    ds = backend.ours(workdir)
    try:
        return await _run_ours(ds, keys, value)
    finally:
        if isinstance(ds, MongoDatastore):
            await ds.drop()
        await ds.close()


def _fmt(label: str, ours: Figure, raw: Figure) -> str:
    return (
        f"  {label:<4} {ours.ops_per_s:>9.0f} ops/s {ours.mb_per_s:>8.1f} MB/s | raw "
        f"{raw.ops_per_s:>9.0f} ops/s {raw.mb_per_s:>8.1f} MB/s | ratio "
        f"{ours.ops_per_s / raw.ops_per_s:.2f}"
    )


def _best(a: Figure | None, b: Figure) -> Figure:
    return b if a is None or b.seconds < a.seconds else a


def compare(backend: Backend) -> None:
    for size in SIZES:
        n = backend.counts[size]
        value = os.urandom(size)
        keys = _keys(n, size)
        raw_put = raw_get = put = get = None
        # Alternate raw and ours and keep the best of each: the machine is shared,
        # and a lone run of either side can land on a busy moment.
        for rnd in range(ROUNDS):
            with tempfile.TemporaryDirectory(prefix="bench-ds-") as work:
                raw = backend.raw(os.path.join(work, f"raw{rnd}"))
                try:
                    p, g = _run_raw(raw, keys, value)
                finally:
                    raw.close()
                raw_put, raw_get = _best(raw_put, p), _best(raw_get, g)
                p, g = trio.run(_ours, backend, os.path.join(work, f"ours{rnd}"), keys, value)
                put, get = _best(put, p), _best(get, g)
        assert raw_put and raw_get and put and get
        print(f"{backend.name} {size // 1024} KiB x {n}")
        print(_fmt("put", put, raw_put))
        print(_fmt("get", get, raw_get))


# -- MongoDB server for the run --------------------------------------------------


@contextlib.contextmanager
def mongodb() -> Iterator[str | None]:
    """MONGODB_URI, or a SecantusDB started for the run (None when it cannot start)."""
    if uri := os.environ.get("MONGODB_URI"):
        yield uri
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    storage = tempfile.mkdtemp(prefix="bench-secantus-")
    uri = f"mongodb://127.0.0.1:{port}/?retryWrites=false"
    proc = subprocess.Popen(
        [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(port),
         "--storage-path", os.path.join(storage, "data")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=storage,
    )
    try:
        client: pymongo.MongoClient = pymongo.MongoClient(uri, serverSelectionTimeoutMS=30_000)
        try:
            client.admin.command("ping")
        except pymongo.errors.PyMongoError as exc:
            print(f"mongo: SecantusDB did not start ({exc}); skipped")
            yield None
            return
        finally:
            client.close()
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(storage, ignore_errors=True)


def main() -> None:
    backends = []
    for sync in (False, True):
        counts = SYNC_COUNTS if sync else COUNTS
        backends.append(Backend(
            f"flatfs sync={sync}",
            lambda d, s=sync: RawFlatfs(d, s),
            lambda d, s=sync: FlatfsDatastore(d, sync=s),
            counts,
        ))
        backends.append(Backend(
            f"leveldb sync={sync}",
            lambda d, s=sync: RawLevel(d, s),
            lambda d, s=sync: LevelDatastore(d, sync=s),
            counts,
        ))
    for backend in backends:
        compare(backend)
    with mongodb() as uri:
        if uri is not None:
            compare(Backend(
                "mongo",
                lambda d: RawMongo(uri, "raw"),
                lambda d: MongoDatastore(uri, "dscluster_bench", "ours"),
                {4 * 1024: 400, 256 * 1024: 100},
            ))


if __name__ == "__main__":
    main()

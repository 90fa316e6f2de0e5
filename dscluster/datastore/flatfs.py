"""flatfs: one file per key, in go-ds-flatfs's on-disk layout.

Theory of operation. A key "/NAME" is stored in the file
``<root>/<shard(NAME)>/NAME.data``; the shard function is named in the
``SHARDING`` file at the root (``/repo/flatfs/shard/v1/next-to-last/2`` by
default, as Kubo's ``blocks/`` uses), so a directory written here opens in
go-ds-flatfs and the reverse. Keys are a single namespace of go-ds-flatfs's
charset ``[0-9A-Z+-_=]``; IPFS block keys ("/CIQ...") are such keys.

A put writes the value to a temporary file under ``<root>/.temp`` and renames
it into place, so a reader never sees half a value and a crash leaves at most
a stray temp file (emptied at the next open, as go-ds-flatfs does). With
``sync=True`` the file is fsynced before the rename and its directory after
it (and the root after creating a shard directory): an acknowledged put
survives power loss. Without it, it survives a process kill (the page cache
holds it) but not power loss.

``diskUsage.cache`` holds the bytes used, as go-ds-flatfs keeps it: read at
open (computed by a walk when missing), kept current on writes, and written
back at close so Kubo's ``repo stat`` stays right after we add blocks.

Blocking: a get or a stat of a page-cached file costs tens of microseconds,
less than a thread hop (about 250 us here), so reads run inline. Writes cost
about 0.25 ms for a small file and a few ms with fsync; writes with
``sync=True`` or of values of OFFLOAD_BYTES or more run in a worker thread.
Batches do all their file work in one thread hop.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from dscluster.datastore.base import BatchOp, BlockingDatastore
from dscluster.datastore.key import Key
from dscluster.datastore.query import Entry, Query, naive_query
from dscluster.errors import BadKeyError, ConfigError, NotFoundError, UnavailableError

log = logging.getLogger(__name__)

SHARDING_FILE = "SHARDING"
README_FILE = "_README"
DISK_USAGE_FILE = "diskUsage.cache"
TEMP_DIR = ".temp"
EXTENSION = ".data"
SHARD_PREFIX = "/repo/flatfs/shard/v1/"
OFFLOAD_BYTES = 64 * 1024  # values this large go to a worker thread
KEY_RULE = 'a flatfs key is "/" followed by one or more of 0-9 A-Z + - _ ='
_KEY_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ+-_=")


@dataclass(frozen=True)
class ShardFunc:
    """A go-ds-flatfs shard function: which characters of a name pick its directory."""

    kind: str  # "prefix", "suffix" or "next-to-last"
    length: int

    def __post_init__(self) -> None:
        if self.kind not in ("prefix", "suffix", "next-to-last"):
            raise ConfigError(
                f"unknown flatfs shard function {self.kind!r}: "
                "expected 'prefix', 'suffix' or 'next-to-last'"
            )
        if self.length < 1:
            raise ConfigError(f"flatfs shard length must be at least 1, got {self.length}")

    def __str__(self) -> str:
        return f"{SHARD_PREFIX}{self.kind}/{self.length}"

    @classmethod
    def parse(cls, text: str) -> ShardFunc:
        """Read a SHARDING string such as ``/repo/flatfs/shard/v1/next-to-last/2``."""
        text = text.strip()
        if not text.startswith(SHARD_PREFIX.removesuffix("v1/")):
            raise ConfigError(f"invalid flatfs shard identifier {text!r}")
        parts = text.removeprefix(SHARD_PREFIX.removesuffix("v1/")).split("/")
        if len(parts) != 3 or parts[0] != "v1":
            raise ConfigError(f"invalid flatfs shard identifier {text!r}: expected v1/<kind>/<n>")
        try:
            length = int(parts[2])
        except ValueError:
            raise ConfigError(f"invalid flatfs shard length in {text!r}") from None
        return cls(parts[1], length)

    def directory(self, name: str) -> str:
        """The shard directory of a key's name (the key without its "/"); "_" pads short names."""
        n = self.length
        if self.kind == "prefix":
            return (name + "_" * n)[:n]
        if self.kind == "suffix":
            return ("_" * n + name)[-n:]
        padded = "_" * (n + 1) + name  # next-to-last: the n characters before the last one
        return padded[len(padded) - n - 1 : len(padded) - 1]


DEFAULT_SHARD = ShardFunc("next-to-last", 2)


def key_name(key: str) -> str:
    """The file stem of a flatfs key; BadKeyError when flatfs cannot hold it."""
    name = key[1:]
    if not key.startswith("/") or not name or not _KEY_CHARS.issuperset(name):
        raise BadKeyError(f"key {key!r} cannot be stored in flatfs: {KEY_RULE}")
    return name


def is_flatfs_key(key: str) -> bool:
    """Whether flatfs can hold ``key`` (the form of IPFS block keys, "/CIQ...")."""
    name = key[1:]
    return key.startswith("/") and bool(name) and _KEY_CHARS.issuperset(name)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _folder_size(path: str) -> int:
    """Bytes of every file and directory under path, as go-ds-flatfs counts them."""
    total = 0
    with os.scandir(path) as it:
        for entry in it:
            st = entry.stat(follow_symlinks=False)
            total += st.st_size
            if entry.is_dir(follow_symlinks=False):
                total += _folder_size(entry.path)
    return total


_README_TEXT = """\
This directory is a flatfs datastore (go-ds-flatfs layout).
Each key "/NAME" is stored in the file <shard>/NAME.data, where NAME is, for
an IPFS block, the upper-case base32 of its multihash ("CIQ..." or "AFK..."),
and <shard> is given by the function named in the SHARDING file. With
next-to-last/2 it is the two characters before the last one of NAME, so the
block CIQB...FBZFBA is stored as FB/CIQB...FBZFBA.data.
"""


class FlatfsFiles:
    """The blocking file operations of a flatfs directory (no trio, no Key objects)."""

    def __init__(self, root: str, shard: ShardFunc, sync: bool) -> None:
        self.root = root
        self.shard = shard
        self.sync = sync
        self.temp = os.path.join(root, TEMP_DIR)
        self._lock = threading.Lock()  # guards disk_usage across worker threads
        self.disk_usage = 0
        shutil.rmtree(self.temp, ignore_errors=True)  # leftovers of a crash
        os.mkdir(self.temp)
        self.disk_usage = self._read_disk_usage()

    # -- layout ---------------------------------------------------------
    def path_of(self, name: str) -> tuple[str, str]:
        directory = os.path.join(self.root, self.shard.directory(name))
        return directory, os.path.join(directory, name + EXTENSION)

    def _read_disk_usage(self) -> int:
        try:
            with open(os.path.join(self.root, DISK_USAGE_FILE), "rb") as f:
                value = int(json.load(f)["diskUsage"])
        except (OSError, ValueError, KeyError, TypeError):
            value = 0
        if value > 0:
            return value
        value = _folder_size(self.root)
        self.write_disk_usage(value, accuracy="initial-exact")
        return value

    def write_disk_usage(self, value: int | None = None, accuracy: str = "initial-exact") -> None:
        du = self.disk_usage if value is None else value
        text = json.dumps({"diskUsage": du, "accuracy": accuracy}) + "\n"
        fd, tmp = tempfile.mkstemp(prefix="temp-", dir=self.temp)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            if self.sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.root, DISK_USAGE_FILE))

    def _add_usage(self, delta: int) -> None:
        with self._lock:
            self.disk_usage += delta

    # -- reads ----------------------------------------------------------
    def read(self, name: str) -> bytes | None:
        try:
            with open(self.path_of(name)[1], "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def size(self, name: str) -> int:
        """File size, or -1 when missing."""
        try:
            return os.stat(self.path_of(name)[1]).st_size
        except FileNotFoundError:
            return -1

    # -- writes ---------------------------------------------------------
    def _make_dir(self, directory: str) -> bool:
        """Create a shard directory; True when it is new (the root then needs a sync)."""
        try:
            os.mkdir(directory)
        except FileExistsError:
            return False
        self._add_usage(os.stat(directory).st_size)
        return True

    def _write_temp(self, value: bytes) -> str:
        fd, tmp = tempfile.mkstemp(prefix="temp-", dir=self.temp)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(value)
                if self.sync:
                    f.flush()
                    os.fsync(f.fileno())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return tmp

    def _rename_into(self, tmp: str, path: str, size: int) -> None:
        try:
            old = os.stat(path).st_size
        except FileNotFoundError:
            old = 0
        os.replace(tmp, path)
        self._add_usage(size - old)

    def put_one(self, name: str, value: bytes) -> None:
        """``apply({name: value}, set())`` without the bookkeeping of a batch (the common put)."""
        directory, path = self.path_of(name)
        new_dir = self._make_dir(directory)
        tmp = self._write_temp(value)
        try:
            if new_dir and self.sync:
                _fsync_dir(self.root)
            self._rename_into(tmp, path, len(value))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if self.sync:
            _fsync_dir(directory)

    def apply(self, puts: dict[str, bytes], deletes: set[str]) -> None:
        """Write puts and remove deletes (names, disjoint), with one round of syncs."""
        dirs_to_sync: set[str] = set()
        new_dir = False
        staged: list[tuple[str, str, int]] = []
        try:
            for name, value in puts.items():
                directory, path = self.path_of(name)
                new_dir |= self._make_dir(directory)
                staged.append((self._write_temp(value), path, len(value)))
                dirs_to_sync.add(directory)
            if new_dir and self.sync:
                _fsync_dir(self.root)
            while staged:
                tmp, path, size = staged.pop()
                self._rename_into(tmp, path, size)
        finally:
            for tmp, _, _ in staged:  # a failure part-way: drop what was not renamed
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        for name in deletes:
            directory, path = self.path_of(name)
            try:
                size = os.stat(path).st_size
                os.unlink(path)
            except FileNotFoundError:
                continue
            self._add_usage(-size)
            dirs_to_sync.add(directory)
        if self.sync:
            for directory in dirs_to_sync:
                _fsync_dir(directory)

    # -- listing --------------------------------------------------------
    def walk(self, keys_only: bool, sizes: bool) -> Generator[Entry, None, None]:
        """Every stored entry, directory by directory; keys_only never opens a file."""
        with os.scandir(self.root) as top:
            shards = sorted(e.path for e in top if e.is_dir() and not e.name.startswith("."))
        for shard in shards:
            try:
                with os.scandir(shard) as it:
                    names = [e.name for e in it if e.name.endswith(EXTENSION)]
            except FileNotFoundError:  # removed while we walk
                continue
            for file_name in names:
                key = "/" + file_name[: -len(EXTENSION)]
                path = os.path.join(shard, file_name)
                try:
                    if keys_only:
                        size = os.stat(path).st_size if sizes else -1
                        yield Entry(key, None, size)
                    else:
                        with open(path, "rb") as f:
                            value = f.read()
                        yield Entry(key, value, len(value))
                except FileNotFoundError:  # deleted since the listing
                    continue


class FlatfsDatastore(BlockingDatastore):
    """A Datastore over a go-ds-flatfs directory.

    ``FlatfsDatastore(path)`` opens the directory, creating it with ``shard``
    when it does not exist; ``create`` insists on a new one and ``open`` on an
    existing one. A directory that holds files but no SHARDING file is refused.
    Reads of a key flatfs cannot hold find nothing (as in go-ds-flatfs); a put
    of one is a BadKeyError.
    """

    inline_ops = frozenset({"get", "has", "get_size"})

    def __init__(
        self, path: str | os.PathLike[str], shard: ShardFunc | None = None, sync: bool = True
    ) -> None:
        super().__init__()
        root = os.fspath(path)
        existing = _read_sharding(root)
        if existing is None:
            existing = shard or DEFAULT_SHARD
            _initialise(root, existing)
        elif shard is not None and shard != existing:
            raise ConfigError(f"flatfs at {root} is sharded by {existing}, not {shard}")
        self.path = root
        self.shard = existing
        self._files = FlatfsFiles(root, existing, sync)

    @classmethod
    def create(
        cls, path: str | os.PathLike[str], shard: ShardFunc = DEFAULT_SHARD, sync: bool = True
    ) -> FlatfsDatastore:
        """A new flatfs directory; ConfigError when one already exists there."""
        if _read_sharding(os.fspath(path)) is not None:
            raise ConfigError(f"flatfs datastore already exists at {os.fspath(path)}")
        return cls(path, shard, sync)

    @classmethod
    def open(cls, path: str | os.PathLike[str], sync: bool = True) -> FlatfsDatastore:
        """An existing flatfs directory; ConfigError when there is none."""
        if _read_sharding(os.fspath(path)) is None:
            raise ConfigError(f"no flatfs datastore at {os.fspath(path)} (no {SHARDING_FILE})")
        return cls(path, None, sync)

    @property
    def sync_writes(self) -> bool:
        return self._files.sync

    @property
    def disk_usage(self) -> int:
        """Bytes used, as go-ds-flatfs counts them (value files and shard directories)."""
        return self._files.disk_usage

    # -- blocking side ------------------------------------------------------
    def get_blocking(self, key: Key) -> bytes:
        text = str(key)
        value = self._files.read(text[1:]) if is_flatfs_key(text) else None
        if value is None:
            raise NotFoundError(f"{text} not found")
        return value

    def has_blocking(self, key: Key) -> bool:
        text = str(key)
        return is_flatfs_key(text) and self._files.size(text[1:]) >= 0

    def get_size_blocking(self, key: Key) -> int:
        text = str(key)
        size = self._files.size(text[1:]) if is_flatfs_key(text) else -1
        if size < 0:
            raise NotFoundError(f"{text} not found")
        return size

    def put_blocking(self, key: Key, value: bytes) -> None:
        name = key_name(str(key))
        with _storage_errors():
            self._files.put_one(name, value)

    def delete_blocking(self, key: Key) -> None:
        text = str(key)
        if is_flatfs_key(text):  # a key flatfs cannot hold is already absent
            with _storage_errors():
                self._files.apply({}, {text[1:]})

    def commit_blocking(self, ops: Sequence[BatchOp]) -> None:
        # Not atomic across keys (neither is go-ds-flatfs's batch): each key is
        # replaced atomically by its rename. Every key is checked before any write.
        puts: dict[str, bytes] = {}
        deletes: set[str] = set()
        for op in ops:
            text = str(op.key)
            if op.value is not None:
                puts[key_name(text)] = op.value
                deletes.discard(text[1:])
            elif is_flatfs_key(text):
                deletes.add(text[1:])
                puts.pop(text[1:], None)
        with _storage_errors():
            self._files.apply(puts, deletes)

    def query_blocking(self, q: Query) -> tuple[Iterable[Entry], Callable[[], None] | None]:
        # Keys are single-level: a prefix other than "/" matches nothing, which
        # naive_query applies with everything else. keys_only never opens a file.
        walk = self._files.walk(q.keys_only and not q.needs_values, q.returns_sizes)
        return naive_query(q, walk), walk.close

    def sync_blocking(self, prefix: Key) -> None:
        # With sync=True every put is durable on return. Without it, flush the
        # whole filesystem's dirty pages (flatfs keeps no list of unsynced files).
        if not self._files.sync:
            os.sync()
        self._files.write_disk_usage()

    def close_blocking(self) -> None:
        self._files.write_disk_usage()

    # -- async side: inline when a write is cheap ---------------------------
    def _offload(self, nbytes: int) -> bool:
        return self._files.sync or nbytes >= OFFLOAD_BYTES

    async def _put(self, key: Key, value: bytes) -> None:
        key_name(str(key))  # a bad key fails here, before any thread hop
        if self._offload(len(value)):
            await self._call("put", self.put_blocking, key, value)
        else:
            self.put_blocking(key, value)

    async def _delete(self, key: Key) -> None:
        if self._files.sync:
            await self._call("delete", self.delete_blocking, key)
        else:
            self.delete_blocking(key)


@contextlib.contextmanager
def _storage_errors() -> Iterator[None]:
    """A full, read-only or forbidden disk is UnavailableError (transient: space may return)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _STORAGE_ERRNOS:
            raise
        raise UnavailableError(f"flatfs cannot write: {exc.strerror}") from exc


_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _read_sharding(root: str) -> ShardFunc | None:
    try:
        text = Path(root, SHARDING_FILE).read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {SHARDING_FILE} in {root}: {exc}") from exc
    return ShardFunc.parse(text)


def _initialise(root: str, shard: ShardFunc) -> None:
    """Make root a new flatfs directory: it must be missing or empty."""
    os.makedirs(root, exist_ok=True)
    if any(name != TEMP_DIR for name in os.listdir(root)):
        raise ConfigError(f"{root} is not empty and has no {SHARDING_FILE} file: not a flatfs")
    with open(os.path.join(root, SHARDING_FILE), "x") as f:
        f.write(f"{shard}\n")
    if shard == DEFAULT_SHARD:
        readme = os.path.join(root, README_FILE)
        with open(readme, "w") as f:
            f.write(_README_TEXT)
        os.chmod(readme, 0o444)

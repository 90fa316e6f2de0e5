"""flatfs backend: go-ds-flatfs's layout, key rules, durability mechanics, queries."""

from __future__ import annotations

import json
import os

import pytest
import trio

from dscluster.datastore.flatfs import (
    DEFAULT_SHARD,
    DISK_USAGE_FILE,
    README_FILE,
    SHARDING_FILE,
    TEMP_DIR,
    FlatfsDatastore,
    ShardFunc,
)
from dscluster.datastore.key import Key
from dscluster.datastore.query import OrderByKey, Query
from dscluster.errors import (
    BadKeyError,
    BadRequestError,
    ConfigError,
    DatastoreClosedError,
    NotFoundError,
)
from dscluster.testing.conformance import DatastoreSuite, OpenWith

# -- shard functions: go-ds-flatfs's definitions and its README's example ------


def test_next_to_last_matches_go_readme_example():
    name = "AFKREIA22FLID5AJ2KU7URG47MDLROZIH6YF2KALU2PWEFPVI37YLKRSCA"
    assert DEFAULT_SHARD.directory(name) == "SC"


@pytest.mark.parametrize(
    ("shard", "name", "expected"),
    [
        (ShardFunc("prefix", 2), "ABCDE", "AB"),
        (ShardFunc("prefix", 4), "AB", "AB__"),
        (ShardFunc("suffix", 2), "ABCDE", "DE"),
        (ShardFunc("suffix", 4), "AB", "__AB"),
        (ShardFunc("next-to-last", 2), "ABCDE", "CD"),
        (ShardFunc("next-to-last", 2), "AB", "_A"),
        (ShardFunc("next-to-last", 2), "A", "__"),
        (ShardFunc("next-to-last", 3), "ABCDE", "BCD"),
    ],
)
def test_shard_directories(shard, name, expected):
    assert shard.directory(name) == expected


@pytest.mark.parametrize("kind", ["prefix", "suffix", "next-to-last"])
def test_shard_string_round_trips(kind):
    shard = ShardFunc(kind, 3)
    assert str(shard) == f"/repo/flatfs/shard/v1/{kind}/3"
    assert ShardFunc.parse(str(shard) + "\n") == shard


@pytest.mark.parametrize(
    "text",
    [
        "",
        "next-to-last/2",
        "/repo/flatfs/shard/v2/next-to-last/2",
        "/repo/flatfs/shard/v1/middle/2",
        "/repo/flatfs/shard/v1/prefix/x",
        "/repo/flatfs/shard/v1/prefix/0",
    ],
)
def test_bad_shard_strings_are_config_errors(text):
    with pytest.raises(ConfigError):
        ShardFunc.parse(text)


# -- on-disk layout -------------------------------------------------------------


async def test_new_directory_has_go_ds_flatfs_files(tmp_path):
    root = tmp_path / "blocks"
    ds = FlatfsDatastore(root)
    await ds.put("/CIQABCDEFGH", b"value")
    assert (root / SHARDING_FILE).read_text() == "/repo/flatfs/shard/v1/next-to-last/2\n"
    assert (root / README_FILE).exists()
    assert (root / "FG" / "CIQABCDEFGH.data").read_bytes() == b"value"
    assert os.listdir(root / TEMP_DIR) == []  # the temp file was renamed into place
    await ds.close()
    usage = json.loads((root / DISK_USAGE_FILE).read_text())
    assert usage["diskUsage"] == ds.disk_usage > 0
    assert usage["accuracy"] == "initial-exact"


async def test_other_shard_function_is_recorded_and_kept(tmp_path):
    ds = FlatfsDatastore.create(tmp_path / "fs", ShardFunc("prefix", 3))
    await ds.put("/ABCDEF", b"x")
    await ds.close()
    assert (tmp_path / "fs" / "ABC" / "ABCDEF.data").exists()
    assert not (tmp_path / "fs" / README_FILE).exists()  # go writes it for the default only
    reopened = FlatfsDatastore.open(tmp_path / "fs")
    assert reopened.shard == ShardFunc("prefix", 3)
    assert await reopened.get("/ABCDEF") == b"x"
    await reopened.close()
    with pytest.raises(ConfigError, match="sharded by"):
        FlatfsDatastore(tmp_path / "fs", shard=DEFAULT_SHARD)


def test_create_and_open_refuse_the_wrong_directory(tmp_path):
    with pytest.raises(ConfigError, match="no flatfs"):
        FlatfsDatastore.open(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("not flatfs")
    with pytest.raises(ConfigError, match="not empty"):
        FlatfsDatastore(tmp_path / "junk")
    assert (tmp_path / "junk" / "file.txt").read_text() == "not flatfs"  # untouched
    FlatfsDatastore.create(tmp_path / "new")
    with pytest.raises(ConfigError, match="already exists"):
        FlatfsDatastore.create(tmp_path / "new")


async def test_open_empties_leftover_temp_files(tmp_path):
    ds = FlatfsDatastore(tmp_path)
    await ds.close()
    (tmp_path / TEMP_DIR / "temp-123").write_bytes(b"half a value")  # as a crash leaves it
    ds = FlatfsDatastore.open(tmp_path)
    assert os.listdir(tmp_path / TEMP_DIR) == []
    assert [e async for e in await ds.query(Query())] == []
    await ds.close()


async def test_disk_usage_tracks_puts_overwrites_and_deletes(tmp_path):
    ds = FlatfsDatastore(tmp_path, sync=False)
    base = ds.disk_usage
    await ds.put("/AAAA", b"x" * 1000)
    shard_dir = os.stat(tmp_path / "AA").st_size
    assert ds.disk_usage == base + shard_dir + 1000
    await ds.put("/AAAA", b"x" * 10)
    assert ds.disk_usage == base + shard_dir + 10
    await ds.delete("/AAAA")
    assert ds.disk_usage == base + shard_dir
    await ds.close()
    reopened = FlatfsDatastore.open(tmp_path)
    assert reopened.disk_usage == base + shard_dir  # read back from diskUsage.cache
    await reopened.close()


# -- key rules --------------------------------------------------------------------

VALID = ["/FOO", "/1BAR1", "/=EMACS-IS-KING=", "/A+B_C", "/CIQA4T3TDTHK5Z3WFH4QEXOHOOXUGG5ST"]
INVALID = ["/foo", "/FOO/BAR", "/FOO\\BAR", "/FOO\x00BAR", "/=Vim-IS-KING=", "/A.B", "/"]


@pytest.mark.parametrize("key", VALID)
async def test_valid_keys_round_trip(tmp_path, key):
    ds = FlatfsDatastore(tmp_path, sync=False)
    await ds.put(key, b"v")
    assert await ds.get(key) == b"v"
    await ds.close()


@pytest.mark.parametrize("key", INVALID)
async def test_invalid_keys_are_refused_and_never_found(tmp_path, key):
    ds = FlatfsDatastore(tmp_path, sync=False)
    with pytest.raises(BadKeyError, match="0-9 A-Z") as info:
        await ds.put(key, b"v")
    assert repr(str(Key(key))) in str(info.value)  # the message names the key
    assert not await ds.has(key)
    with pytest.raises(NotFoundError):
        await ds.get(key)
    with pytest.raises(NotFoundError):
        await ds.get_size(key)
    await ds.delete(key)  # cannot exist, so deleting it is fine
    await ds.close()


async def test_bad_batch_key_writes_nothing_and_stays_buffered(tmp_path):
    ds = FlatfsDatastore(tmp_path)
    batch = await ds.batch()
    batch.put("/GOOD", b"1")
    batch.put("/bad", b"2")
    with pytest.raises(BadKeyError):
        await batch.commit()
    assert not await ds.has("/GOOD")
    assert len(batch) == 2
    await ds.close()


# -- behaviour ---------------------------------------------------------------------


@pytest.mark.parametrize("sync", [True, False])
@pytest.mark.parametrize("size", [0, 5, 300 * 1024])
async def test_put_get_has_size_delete(tmp_path, sync, size):
    value = os.urandom(size)
    with trio.fail_after(10):
        ds = FlatfsDatastore(tmp_path, sync=sync)
        await ds.put("/KEY", value)
        assert await ds.get("/KEY") == value
        assert await ds.has("/KEY")
        assert await ds.get_size("/KEY") == size
        await ds.delete("/KEY")
        assert not await ds.has("/KEY")
        await ds.delete("/KEY")
        with pytest.raises(NotFoundError):
            await ds.get("/KEY")
        await ds.close()


async def test_values_must_be_bytes(tmp_path):
    ds = FlatfsDatastore(tmp_path)
    with pytest.raises(BadRequestError):
        await ds.put("/KEY", "text")
    assert not await ds.has("/KEY")
    await ds.put("/KEY", bytearray(b"ok"))
    await ds.put("/KEY2", memoryview(b"ok2"))
    assert await ds.get("/KEY") == b"ok"
    assert await ds.get("/KEY2") == b"ok2"
    await ds.close()


async def test_data_survives_reopen_and_close_is_final(tmp_path):
    ds = FlatfsDatastore(tmp_path)
    await ds.put("/PERSIST", b"kept")
    await ds.close()
    await ds.close()  # idempotent
    with pytest.raises(DatastoreClosedError):
        await ds.get("/PERSIST")
    reopened = FlatfsDatastore.open(tmp_path)
    assert await reopened.get("/PERSIST") == b"kept"
    await reopened.close()


async def test_batch_applies_puts_and_deletes_in_order(tmp_path):
    ds = FlatfsDatastore(tmp_path)
    await ds.put("/OLD", b"old")
    batch = await ds.batch()
    for i in range(20):
        batch.put(f"/K{i:02d}", b"%d" % i)
    batch.delete("/OLD")
    batch.put("/K00", b"last")
    batch.delete("/K01")
    with trio.fail_after(10):
        await batch.commit()
    assert await ds.get("/K00") == b"last"
    assert not await ds.has("/K01")
    assert not await ds.has("/OLD")
    assert await ds.get("/K19") == b"19"
    await ds.close()


async def test_query_walks_every_shard(tmp_path):
    ds = FlatfsDatastore(tmp_path, sync=False)
    keys = [f"/KEY{i:03d}X" for i in range(50)]
    for k in keys:
        await ds.put(k, k.encode())
    with trio.fail_after(10):
        got = await (await ds.query(Query(orders=(OrderByKey(),)))).rest()
        assert [e.key for e in got] == sorted(keys)
        assert all(e.value == e.key.encode() for e in got)
        sized = await (await ds.query(Query(keys_only=True, returns_sizes=True))).rest()
        assert {(e.key, e.value, e.size) for e in sized} == {(k, None, len(k)) for k in keys}
        # keys are single-level: a deeper prefix matches nothing
        assert await (await ds.query(Query(prefix="/KEY001X"))).rest() == []
        page = await (await ds.query(Query(orders=(OrderByKey(),), offset=10, limit=5))).rest()
        assert [e.key for e in page] == sorted(keys)[10:15]
    await ds.close()


async def test_keys_only_query_never_opens_value_files(tmp_path):
    ds = FlatfsDatastore(tmp_path, sync=False)
    await ds.put("/READABLE", b"v")
    # An entry whose "file" cannot be read: a directory named like a value file.
    shard = tmp_path / DEFAULT_SHARD.directory("UNREADABLE")
    shard.mkdir(exist_ok=True)
    (shard / "UNREADABLE.data").mkdir()
    with trio.fail_after(10):
        keys = await (await ds.query(Query(keys_only=True))).rest()
        assert sorted(e.key for e in keys) == ["/READABLE", "/UNREADABLE"]
        with pytest.raises(IsADirectoryError):
            await (await ds.query(Query())).rest()
    await ds.close()


async def test_early_close_of_query_releases_the_walk(tmp_path):
    ds = FlatfsDatastore(tmp_path, sync=False)
    for i in range(30):
        await ds.put(f"/E{i}", b"x")
    with trio.fail_after(10):
        results = await ds.query(Query())
        first = await results.__anext__()
        assert first.key.startswith("/E")
        await results.aclose()
        assert results.closed
        await ds.close()  # does not wait on the abandoned walk


class TestFlatfsConformance(DatastoreSuite):
    """The shared suite on unsynced flatfs, over a 2,000-key query matrix (each query
    walks and reads every file)."""

    hierarchical_keys = False
    matrix_size = 2_000
    sync = False

    @pytest.fixture
    def ds_factory(self, tmp_path):
        return OpenWith(lambda: FlatfsDatastore(tmp_path / "fs", sync=self.sync), durable=True)


@pytest.mark.slow
class TestFlatfsSyncConformance(TestFlatfsConformance):
    """The full suite with fsync on every write and the full 10,000-key matrix."""

    matrix_size = 10_000
    deadline = 300.0
    sync = True

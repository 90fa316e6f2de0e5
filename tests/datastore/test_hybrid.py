"""HybridDatastore: block keys to flatfs, the rest to LevelDB; the shared suite on both."""

from __future__ import annotations

import itertools
import os
from dataclasses import replace

import pytest
import trio

from dscluster.datastore.flatfs import FlatfsDatastore
from dscluster.datastore.hybrid import HybridDatastore
from dscluster.datastore.leveldb import LevelDatastore
from dscluster.datastore.memory import MemoryDatastore
from dscluster.datastore.open import open_datastore
from dscluster.datastore.query import (
    FilterKeyCompare,
    FilterValueCompare,
    OrderByKey,
    OrderByKeyDescending,
    OrderByValue,
    Query,
)
from dscluster.errors import BadKeyError, ConfigError, DatastoreClosedError, NotFoundError
from dscluster.testing.conformance import DatastoreSuite, OpenWith


def open_hybrid(path: os.PathLike[str] | str) -> HybridDatastore:
    return HybridDatastore(FlatfsDatastore(os.path.join(path, "blocks"), sync=False),
                           LevelDatastore(os.path.join(path, "leveldb")))


class TestHybridHierarchical(DatastoreSuite):
    """The suite's hierarchical keys: all of them live in LevelDB."""

    @pytest.fixture
    def ds_factory(self, tmp_path):
        return OpenWith(lambda: open_hybrid(tmp_path), durable=True)


class TestHybridBlockKeys(DatastoreSuite):
    """The suite's single-level upper-case keys: all of them live in flatfs."""

    hierarchical_keys = False
    matrix_size = 2_000  # each flatfs query walks and reads every file

    @pytest.fixture
    def ds_factory(self, tmp_path):
        return OpenWith(lambda: open_hybrid(tmp_path), durable=True)


BLOCK_KEYS = [f"/CIQ{i:03d}" for i in range(40)]
OTHER_KEYS = [f"/meta/{i:03d}" for i in range(20)] + [f"/ciq{i:03d}" for i in range(20)]


async def test_keys_go_by_form_and_queries_merge_both_children(tmp_path):
    with trio.fail_after(30):
        ds = open_hybrid(tmp_path)
        ref = MemoryDatastore()
        batch = await ds.batch()
        for i, k in enumerate(BLOCK_KEYS + OTHER_KEYS):
            value = b"%03d" % ((i * 37) % 80)
            batch.put(k, value)
            await ref.put(k, value)
        await batch.commit()
        for k in BLOCK_KEYS + OTHER_KEYS:
            assert await ds.get(k) == await ref.get(k)
        # Each key is in exactly the child its form names.
        assert await ds.blocks.has("/CIQ007") and not await ds.other.has("/CIQ007")
        assert await ds.other.has("/ciq007") and await ds.other.has("/meta/007")
        assert os.path.isdir(tmp_path / "blocks") and len(os.listdir(tmp_path / "blocks")) > 3

        queries = [
            Query(prefix=p, filters=f, orders=o, limit=lim, offset=off, keys_only=ko)
            for p, f, o, lim, off, ko in itertools.product(
                ("", "/meta"),
                ((), (FilterKeyCompare(">", "/CIQ030"),), (FilterValueCompare("<", b"040"),)),
                ((), (OrderByKeyDescending(),), (OrderByValue(),)),
                (0, 7), (0, 5), (False, True))
        ]
        for q in queries:
            got = await (await ds.query(q)).rest()
            # Without orders the hybrid answers in key order (the merge's order).
            want = await (await ref.query(replace(q, orders=q.orders or (OrderByKey(),)))).rest()
            assert got == want, q
        await ds.close()


async def test_batches_split_per_child_and_survive_reopen(tmp_path):
    with trio.fail_after(30):
        ds = open_hybrid(tmp_path)
        batch = await ds.batch()
        batch.put("/CIQA", b"block")
        batch.put("/pins/x", b"meta")
        batch.delete("/CIQA")  # in order: the later delete wins
        batch.put("/CIQB", b"b" * 300_000)
        await batch.commit()
        await ds.sync("/")
        await ds.close()
        with pytest.raises(DatastoreClosedError):
            await ds.get("/CIQB")

        again = open_hybrid(tmp_path)
        assert not await again.has("/CIQA")
        assert await again.get("/pins/x") == b"meta"
        assert await again.get_size("/CIQB") == 300_000
        with pytest.raises(NotFoundError):
            await again.get("/cIQB")  # another key form: LevelDB, where it is absent
        await again.delete("/nothing/here")  # an absent key is not an error
        with pytest.raises(BadKeyError):
            await again.put(42, b"x")  # type: ignore[arg-type]
        assert await again.get("/pins/x") == b"meta"  # bad input lost nothing
        await again.close()


def test_children_must_be_datastores():
    with pytest.raises(ConfigError, match="blocks store"):
        HybridDatastore("not a store", MemoryDatastore())  # type: ignore[arg-type]


async def test_dscluster_datastore_hybrid_opens_both_children(tmp_path):
    with trio.fail_after(30):
        ds = open_datastore("hybrid", str(tmp_path), "datastore", "", "peer")
        assert isinstance(ds, HybridDatastore)
        await ds.put("/CIQXYZ", b"block")
        await ds.put("/meta/a", b"small")
        await ds.close()
        assert os.path.exists(tmp_path / "datastore" / "blocks" / "SHARDING")
        assert os.path.exists(tmp_path / "datastore" / "leveldb" / "CURRENT")

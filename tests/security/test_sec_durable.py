"""`dscluster --sync`: the flag reaches the backend's power-loss-safe setting."""

import json
import os

import pytest
import trio

from dscluster.config import (
    DatastoreConfig,
    IdentityConfig,
    NodeConfig,
    load_node_config,
    save_config,
)
from dscluster.datastore.flatfs import FlatfsDatastore
from dscluster.datastore.hybrid import HybridDatastore
from dscluster.datastore.leveldb import LevelDatastore
from dscluster.datastore.mongo import MongoDatastore
from dscluster.datastore.open import open_datastore, write_mode
from dscluster.testing.cluster import ProcessCluster, store_client


@pytest.mark.parametrize("sync", [False, True])
async def test_leveldb_and_hybrid_follow_the_flag(tmp_path, sync: bool) -> None:
    level = open_datastore("leveldb", str(tmp_path), "ds", "", "peer", sync)
    hybrid = open_datastore("hybrid", str(tmp_path), "hy", "", "peer", sync)
    try:
        assert isinstance(level, LevelDatastore) and level.sync_writes is sync
        assert isinstance(hybrid, HybridDatastore)
        assert isinstance(hybrid.other, LevelDatastore) and hybrid.other.sync_writes is sync
        assert isinstance(hybrid.blocks, FlatfsDatastore) and hybrid.blocks.sync_writes
    finally:
        await level.close()
        await hybrid.close()


@pytest.mark.parametrize("sync", [False, True])
async def test_mongo_follows_the_flag_with_a_journaled_write_concern(tmp_path, sync) -> None:
    # connect=False: no server is contacted; the collection carries the concern.
    ds = open_datastore("mongo", str(tmp_path), "", "mongodb://127.0.0.1:1", "peer", sync)
    try:
        assert isinstance(ds, MongoDatastore) and ds.sync_writes is sync
        assert ds._col.write_concern.document == ({"j": True} if sync else {})
    finally:
        await ds.close()


def test_node_config_records_sync(tmp_path) -> None:
    cfg = NodeConfig(IdentityConfig.generate(), ("/ip4/127.0.0.1/tcp/0",),
                     datastore=DatastoreConfig("leveldb", "ds", "", sync=True))
    save_config(cfg, tmp_path)
    assert load_node_config(tmp_path).datastore.sync is True
    plain = NodeConfig(IdentityConfig.generate(), ("/ip4/127.0.0.1/tcp/0",))
    save_config(plain, tmp_path)  # go-ds-cluster's layout: no "sync" key unless set
    assert "sync" not in json.loads((tmp_path / "config.json").read_text())["datastore"]
    assert load_node_config(tmp_path).datastore.sync is False


def test_write_mode_names_what_an_ack_survives() -> None:
    assert write_mode("leveldb", False) == "unsynced"
    assert write_mode("leveldb", True) == "synced"
    assert write_mode("flatfs", False) == "synced"
    assert write_mode("memory", True) == "memory only"


async def test_process_node_with_sync_flag_serves_synced_writes(tmp_path) -> None:
    with trio.fail_after(90):  # --durable is the same option as --sync
        async with ProcessCluster(tmp_path, n=1, extra_args=["--durable"]) as pc:
            with open(os.path.join(pc.base, "n0.out"), encoding="utf-8") as f:
                assert "leveldb datastore (synced writes)" in f.read()
            assert pc.table is not None
            async with store_client(pc.client_identity, pc.table) as client:
                await client.put("/durable", b"v")
                assert await client.get("/durable") == b"v"
            assert pc.stop(0) == 0
    # the value is in the LevelDB directory the node wrote through
    from dscluster.config import load_node_config

    cfg = load_node_config(pc.conf(0))
    ds = LevelDatastore(os.path.join(pc.conf(0), cfg.datastore.path))
    try:
        from dscluster.datastore.key import Key

        assert await ds.get(Key("/durable")) == b"v"
    finally:
        await ds.close()

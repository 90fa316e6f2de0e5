"""UnixFS DAGs stored in the real local datastores through DatastoreBlockStore."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import trio

from dsclient.unixfs import DatastoreBlockStore, add_path, get_to_path, stat
from dscluster.blocks import block_key
from dscluster.datastore.flatfs import FlatfsDatastore
from dscluster.datastore.leveldb import LevelDatastore
from dscluster.datastore.memory import MemoryDatastore
from dscluster.errors import CorruptBlockError


def make_tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "big").write_bytes(random.Random(1).randbytes(700_000))
    (root / "sub" / "small").write_bytes(b"small")
    (root / "sub" / "empty").write_bytes(b"")


@pytest.mark.parametrize("backend", ["memory", "flatfs", "leveldb"])
async def test_directory_round_trip_through_datastore(backend: str, tmp_path: Path) -> None:
    if backend == "flatfs":
        ds = FlatfsDatastore(tmp_path / "flatfs")
    elif backend == "leveldb":
        ds = LevelDatastore(tmp_path / "leveldb")
    else:
        ds = MemoryDatastore()
    src, out = tmp_path / "src", tmp_path / "out"
    make_tree(src)
    store = DatastoreBlockStore(ds)
    try:
        with trio.fail_after(30):
            cid = await add_path(src, store, recursive=True, cid_version=1)
            await get_to_path(cid, store, out)
            info = await stat(cid, store)
            assert await ds.has(block_key(cid))
    finally:
        await ds.close()
    assert (out / "big").read_bytes() == (src / "big").read_bytes()
    assert (out / "sub" / "small").read_bytes() == b"small"
    assert (out / "sub" / "empty").read_bytes() == b""
    assert [link.name for link in info.links] == ["big", "sub"]


async def test_block_overwritten_in_flatfs_is_detected(tmp_path: Path) -> None:
    ds = FlatfsDatastore(tmp_path / "flatfs")
    store = DatastoreBlockStore(ds)
    src = tmp_path / "file"
    src.write_bytes(random.Random(2).randbytes(600_000))
    try:
        with trio.fail_after(30):
            cid = await add_path(src, store)
            info = await stat(cid, store)
            victim = info.links[1].cid
            await ds.put(block_key(victim), b"not the block")
            with pytest.raises(CorruptBlockError, match=str(victim)):
                await get_to_path(cid, store, tmp_path / "out")
    finally:
        await ds.close()
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.part").exists()

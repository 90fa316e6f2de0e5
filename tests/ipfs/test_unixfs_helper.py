"""The test helpers build the DAGs `ipfs add` builds (checked against Kubo's CIDs)."""

import random

from dscluster.blocks import block_key
from dscluster.datastore.memory import MemoryDatastore
from tests.ipfs.helpers import build_file, leaf_file, oversized_file, read_file


def test_single_chunk_file_has_kubos_cid():
    assert str(leaf_file(b"hello\n").root) == "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"


async def test_empty_file_has_kubos_cid():
    assert str(leaf_file(b"").root) == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
    assert str((await build_file(b"")).root) == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"


async def test_multi_chunk_and_oversized_files_read_back():
    content = random.Random(1).randbytes(768_000)  # three chunks
    for dag in (await build_file(content), oversized_file(content)):
        store = MemoryDatastore()
        for cid, block in dag.blocks.items():
            await store.put(block_key(cid), block)
        assert await read_file(store, dag.root) == content
    assert len((await build_file(content)).blocks) == 4
    assert len(oversized_file(content).blocks) == 2

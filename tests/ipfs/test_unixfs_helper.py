"""The test helper builds the DAGs `ipfs add` builds (checked against Kubo's CIDs)."""

import random

from dscluster.blocks import block_key
from dscluster.datastore.memory import MemoryDatastore
from tests.ipfs.helpers import build_file, read_file


def test_single_chunk_file_has_kubos_cid():
    assert str(build_file(b"hello\n").root) == "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"


def test_empty_file_has_kubos_cid():
    assert str(build_file(b"").root) == "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"


async def test_multi_chunk_file_reads_back():
    content = random.Random(1).randbytes(768_000)  # three chunks
    dag = build_file(content)
    assert len(dag.blocks) == 4
    store = MemoryDatastore()
    for cid, block in dag.blocks.items():
        await store.put(block_key(cid), block)
    assert await read_file(store, dag.root) == content

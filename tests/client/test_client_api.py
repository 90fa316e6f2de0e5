"""dsclient.Client and AsyncClient against a live 3-node cluster."""

from __future__ import annotations

import random
import socket

import pytest
import trio

from dsclient import AsyncClient, Client, ClientOptions
from dscluster.blocks import block_key
from dscluster.errors import BadKeyError, CorruptBlockError, NotFoundError, UnavailableError
from dscluster.net.host import Identity


def test_sync_client_blocks_files_and_keys(live_cluster, tmp_path):
    data = random.Random(1).randbytes(700_000)
    src = tmp_path / "file.bin"
    src.write_bytes(data)
    with Client(bootstrap=live_cluster.bootstrap, identity=live_cluster.identity) as client:
        ref = client.put(b"hello blocks")
        assert str(ref).startswith("bafkrei")  # CIDv1, raw, sha2-256
        assert client.get(ref) == b"hello blocks"
        assert client.get(str(ref)) == b"hello blocks"
        assert client.exists(ref)
        client.delete(ref)
        assert not client.exists(ref)
        with pytest.raises(NotFoundError):
            client.get(ref)
        with pytest.raises(BadKeyError):
            client.get("not-a-cid")

        root = client.add(src)
        assert client.cat(root) == data
        assert b"".join(client.iter_cat(root)) == data
        st = client.stat(root)
        assert st.size == len(data) and st.blocks == 3
        client.get_file(root, tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == data

        client.put_key("/notes/a", b"1")
        client.put_key("/notes/b", b"2")
        assert client.get_key("/notes/a") == b"1"
        assert [e.key for e in client.query(prefix="/notes")] in (
            ["/notes/a", "/notes/b"], ["/notes/b", "/notes/a"])
        client.delete_key("/notes/a")
        with pytest.raises(NotFoundError):
            client.get_key("/notes/a")
    with pytest.raises(Exception, match="closed"):
        client.get_key("/notes/b")


async def test_get_detects_a_corrupted_block(live_cluster):
    with trio.fail_after(30):
        async with AsyncClient.connect(live_cluster.bootstrap,
                                       identity=live_cluster.identity) as client:
            ref = await client.put(b"the real bytes")
            await client.cluster.put(block_key(ref), b"forged bytes")  # same key, other bytes
            with pytest.raises(CorruptBlockError):
                await client.get(ref)


def test_unreachable_cluster_is_a_clear_error():
    # A port bound but not listening refuses every connection, for as long as
    # we hold it (port 9 might have a listener on some machine).
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        peer = Identity.generate().peer_id_str
        for _ in range(3):  # the start-up error path once raced the constructor
            with pytest.raises(UnavailableError, match="no cluster node answered"):
                Client(bootstrap=[f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer}"],
                       options=ClientOptions(request_timeout=3))

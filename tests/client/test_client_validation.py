"""The client refuses locally what would break a shared stream, and large gets coexist.

Before: a 5,000-character key was sent as is, the node reset the shared stream
as a protocol error and other puts on it failed; two 9 MB values fetched at
once came back as one batched answer over the frame limit; a query with
offset + limit of 2**63 or more surfaced as UnavailableError.
"""

from __future__ import annotations

import os

import pytest
import trio

from dscluster.datastore.key import Key
from dscluster.datastore.query import Query
from dscluster.errors import BadKeyError, BadRequestError
from dscluster.testing.cluster import ProcessCluster


async def test_bad_requests_fail_alone_and_large_gets_run_together(tmp_path):
    from dsclient.client import open_cluster_client

    with trio.fail_after(120):
        async with ProcessCluster(tmp_path, 1) as pc, \
                open_cluster_client(pc.client_identity, bootstrap=[pc.bootstrap_addr]) as client:
            results: dict[int, object] = {}

            async def good(i: int) -> None:
                await client.put(Key(f"/good/{i}"), b"%d" % i)
                results[i] = True

            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(good, i)
                with pytest.raises(BadKeyError, match="5001 characters"):
                    await client.put(Key("/" + "k" * 5000), b"x")
            assert len(results) == 200
            for i in range(200):
                assert await client.get(Key(f"/good/{i}")) == b"%d" % i
            with pytest.raises(BadKeyError):
                await client.get(Key("/" + "k" * 5000))
            with pytest.raises(BadRequestError, match="at most"):
                await client.put(Key("/huge"), b"\0" * (17 << 20))

            big = {Key(f"/big/{i}"): os.urandom(9_000_000) for i in range(2)}
            for key, value in big.items():
                await client.put(key, value)
            got: dict[Key, bytes] = {}

            async def fetch(key: Key) -> None:
                got[key] = await client.get(key)

            async with trio.open_nursery() as nursery:  # coalesced into one GetMany
                for key in big:
                    nursery.start_soon(fetch, key)
            assert got == big

            with pytest.raises(BadRequestError, match="2\\*\\*63"):
                await client.query(Query(prefix="/good", limit=2**62, offset=2**62))
            res = await client.query(Query(prefix="/good", limit=5, offset=2))
            assert len([e async for e in res]) == 5

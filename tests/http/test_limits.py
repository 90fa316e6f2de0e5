"""Hostile HTTP clients never stall the node: floods, slow readers, a cluster that is gone.

Every load here is bounded (1,000 requests, one stalled socket) and no test
measures time; the deadlines below only turn a hang into a failure.
"""

from __future__ import annotations

import socket

import httpx
import trio

from dscluster.errors import UnavailableError
from dscluster.http.app import HttpApp, HttpLimits
from dscluster.http.server import serve_client_http
from tests.http.conftest import GatewayCluster
from tests.http.test_metrics import scrape, value


async def flood(url: str, path: str, n: int) -> list[int]:
    codes: list[int] = []
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        async def one() -> None:
            try:
                codes.append((await client.get(url + path)).status_code)
            except httpx.HTTPError as exc:  # a connection the OS refused: not ours to count
                codes.append(-1)
                print("flood:", repr(exc))

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)
    return codes


def test_thousand_concurrent_requests_are_bounded(gw: GatewayCluster) -> None:
    cid = gw.cids["hello"]
    before = scrape(gw.tight_url)
    busy_before = before.get(("dscluster_http_rejected_total", (("reason", "busy"),)), 0.0)
    results: list[int] = []
    libp2p_ok: list[bytes] = []

    async def main() -> None:
        async def libp2p_reads() -> None:
            # The node keeps serving libp2p clients while the flood runs.
            for _ in range(20):
                libp2p_ok.append(await trio.to_thread.run_sync(
                    gw.call, gw.writer.cat_bytes, gw.cids["big"]))

        with trio.fail_after(300):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(libp2p_reads)
                results.extend(await flood(gw.tight_url, f"/ipfs/{cid}?format=raw", 1000))

    trio.run(main)
    assert len(results) == 1000
    assert set(results) <= {200, 503, -1}, set(results)
    assert results.count(200) >= 4
    assert all(data == gw.data["big"] for data in libp2p_ok) and len(libp2p_ok) == 20
    after = scrape(gw.tight_url)
    assert value(after, "dscluster_http_requests_in_flight") == 0
    busy = after.get(("dscluster_http_rejected_total", (("reason", "busy"),)), 0.0)
    # Every 503 a client read was counted; under load a client may also lose a 503
    # the server sent (its connection reset first: -1), which the server counted too.
    assert results.count(503) <= busy - busy_before <= results.count(503) + results.count(-1)
    # and the port still answers
    assert httpx.get(f"{gw.tight_url}/ipfs/{cid}", timeout=60).content == gw.data["hello"]


def test_a_client_that_stops_reading_holds_only_itself(gw: GatewayCluster) -> None:
    cid = gw.cids["big"]
    host, port = gw.node_url.removeprefix("http://").split(":")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((host, int(port)))
    try:
        stalled.sendall(f"GET /ipfs/{cid} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        stalled.recv(1024)  # the headers are out: the server is now blocked on our window
        for _ in range(5):  # others are served, over HTTP and libp2p
            r = httpx.get(f"{gw.node_url}/ipfs/{gw.cids['deep']}", timeout=60)
            assert r.content == gw.data["deep"]
            assert gw.call(gw.writer.cat_bytes, gw.cids["raw"]) == gw.data["raw"]
        assert value(scrape(gw.node_url), "dscluster_http_requests_in_flight") >= 1
    finally:
        stalled.close()

    async def drained() -> None:
        with trio.fail_after(60):  # a hang guard, not a measurement
            while value(scrape(gw.node_url), "dscluster_http_requests_in_flight") != 0:
                await trio.sleep(0.2)

    trio.run(drained)


def test_slow_headers_do_not_block_others(gw: GatewayCluster) -> None:
    host, port = gw.node_url.removeprefix("http://").split(":")
    slow = [socket.create_connection((host, int(port))) for _ in range(50)]
    try:
        for s in slow:
            s.sendall(b"GET /ipfs/")  # and never finish the request line
        r = httpx.get(f"{gw.node_url}/ipfs/{gw.cids['hello']}", timeout=60)
        assert r.content == gw.data["hello"]
    finally:
        for s in slow:
            s.close()


# -- 504: the cluster cannot answer -------------------------------------------------


class StalledSource:
    """A block source that never answers: what a cluster behind a black hole looks like."""

    async def get(self, cid: object) -> bytes:
        await trio.sleep_forever()
        raise AssertionError


class GoneSource:
    """A source whose every node is unreachable (what ClusterClient raises then)."""

    async def get(self, cid: object) -> bytes:
        raise UnavailableError("node 12D3KooW... serving slot 7 is unavailable")


async def test_a_stalled_cluster_is_a_504_within_the_budget(gw: GatewayCluster) -> None:
    cid = gw.cids["hello"]
    limits = HttpLimits(time_budget=1.0, fetch_timeout=0.5)
    for source in (StalledSource(), GoneSource()):
        async with serve_client_http(source, "127.0.0.1:0", limits=limits) as urls:
            async with httpx.AsyncClient(timeout=60) as client:
                for path in (f"/ipfs/{cid}", f"/ipfs/{cid}?format=raw",
                             f"/ipfs/{cid}?format=car"):
                    with trio.fail_after(30):
                        r = await client.get(urls[0] + path)
                    assert r.status_code == 504, r.text
                    assert r.text.startswith("504 Gateway Timeout: ")


async def test_stopped_nodes_give_504_not_a_hang(gw: GatewayCluster) -> None:
    """A real cluster client whose nodes are all gone: UnavailableError -> 504."""
    from dsclient.client import ClientOptions
    from dsclient.unixfs import DatastoreBlockStore
    from dscluster.testing.cluster import local_cluster

    async with local_cluster(gw.base + "/c504", 3) as c:
        from dsclient.api import AsyncClient

        async with trio.open_nursery() as nursery:
            client = await AsyncClient.start(
                nursery, bootstrap=[c.nodes[0].addrs[0]], identity=c.client_identity,
                options=ClientOptions(request_timeout=2.0, backoff=(0.05, 0.1)))
            cid = await client.add_bytes(b"soon unreachable")
            async with serve_client_http(DatastoreBlockStore(client.cluster), "127.0.0.1:0",
                                         limits=HttpLimits(time_budget=20)) as urls:
                async with httpx.AsyncClient(timeout=60) as http:
                    assert (await http.get(f"{urls[0]}/ipfs/{cid}")).status_code == 200
                    for i in range(3):
                        await c.stop_node(i)
                    with trio.fail_after(60):
                        r = await http.get(f"{urls[0]}/ipfs/{cid}?format=raw")
                    assert r.status_code == 504, r.text
            await client.aclose()


def test_app_is_importable_without_a_node() -> None:
    app = HttpApp(source=None, metrics=None, ready=lambda: False)
    assert app.in_flight == 0


def test_hostile_paths_never_500(gw: GatewayCluster) -> None:
    """Seeded junk in every part of the path and query: a 4xx/5xx of ours, never a 500."""
    import random
    import urllib.parse

    rng = random.Random(1800)
    docs = str(gw.cids["docs"])
    pieces = [docs, "ipfs", "", ".", "..", "%00", "%ff", "%2F", "bafy", "Qm", "zzz", "\u00e9",
              "a" * 300, "?", "#", ";", "%", "%%", "index.html", "sub", "c.md"]
    queries = ["", "format=raw", "format=car", "format=car&dag-scope=entity",
               "format=car&entity-bytes=-5:-1", "format=car&entity-bytes=x:y", "format=",
               "filename=%00&download=true", "dag-scope=all"]
    allowed = {200, 301, 400, 404, 405, 414, 416, 501}
    with httpx.Client(timeout=60) as client:
        for _ in range(300):
            parts = [rng.choice(pieces) for _ in range(rng.randint(1, 5))]
            path = "/ipfs/" + "/".join(urllib.parse.quote(p, safe="%?#;") for p in parts)
            query = rng.choice(queries)
            headers = {"Range": rng.choice(["bytes=0-", "bytes=-0", "bytes=9-1", "lines=1-2",
                                            "bytes=abc", "bytes=0-0,5-9"])} \
                if rng.random() < 0.3 else {}
            r = client.get(f"{gw.node_url}{path}" + (f"?{query}" if query else ""),
                           headers=headers)
            assert r.status_code in allowed, (path, query, headers, r.status_code, r.text)
            assert "Traceback" not in r.text

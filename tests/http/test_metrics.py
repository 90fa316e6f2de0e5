"""/metrics scraped and parsed, /healthz, and the bearer token."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from dscluster.blocks import block_key
from dscluster.errors import ConfigError
from dscluster.http.server import check_bind, parse_bind
from dscluster.ipld.cids import sha256_cid
from tests.http.conftest import GatewayCluster

TIMEOUT = httpx.Timeout(60.0)


def scrape(url: str, **kw: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(url + "/metrics", timeout=TIMEOUT, **kw)  # type: ignore[arg-type]
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def a_block_on(gw: GatewayCluster, index: int) -> bytes:
    """Bytes whose raw block lands in a slot of node ``index``."""
    assert gw.cluster is not None
    for i in range(1000):
        data = f"metrics test {i}".encode()
        key = block_key(sha256_cid(data, 1, "raw"))
        if gw.cluster.owner_of(key) is gw.cluster.nodes[index]:
            return data
    raise AssertionError("no key found")


def test_node_metrics(gw: GatewayCluster) -> None:
    data = a_block_on(gw, 0)
    gw.call(gw.writer.put, data)
    cid = gw.cids["big"]
    assert httpx.get(f"{gw.node_url}/ipfs/{cid}", timeout=TIMEOUT).status_code == 200
    m = scrape(gw.node_url)
    assert gw.cluster is not None
    node = gw.cluster.nodes[0]
    assert value(m, "dscluster_slots_owned") == len(node.core.table.slots_of(node.peer_id)) == 5461
    assert value(m, "dscluster_peers", state="up") == 2
    assert value(m, "dscluster_peers", state="fail") == 0
    assert value(m, "dscluster_node_info", peer_id=node.peer_id, version="0.1.0") == 1
    assert value(m, "dscluster_epoch") >= 0
    # Node 0 served the gateway's gets, from its own port.
    assert value(m, "dscluster_store_operations_total", kind="Get", result="ok") > 0
    assert value(m, "dscluster_store_bytes_out_total") > 0
    assert value(m, "dscluster_store_bytes_in_total") >= len(data)  # the writer's put
    assert value(m, "dscluster_store_operations_total", kind="Batch", result="ok") >= 1
    assert value(m, "dscluster_store_operation_seconds_count", kind="Get") > 0
    assert value(m, "dscluster_http_requests_total", route="gateway", method="GET",
                 code="200") >= 1
    assert value(m, "dscluster_http_response_bytes_total", route="gateway") >= len(
        gw.data["big"])
    assert value(m, "dscluster_gateway_block_bytes_total") >= len(gw.data["big"])
    assert value(m, "dscluster_core_ticks_total") > 0
    assert value(m, "dscluster_limits_hit_total", limit="connections") == 0
    assert ("dscluster_keys_stored", ()) in m and ("dscluster_bytes_stored", ()) in m
    assert value(m, "dscluster_http_requests_in_flight") == 0
    missing = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    assert httpx.get(f"{gw.node_url}/ipfs/{missing}", timeout=TIMEOUT).status_code == 404
    after = scrape(gw.node_url)
    assert value(after, "dscluster_http_requests_total", route="gateway", method="GET",
                 code="404") >= 1


def test_each_node_has_its_own_registry(gw: GatewayCluster) -> None:
    assert gw.cluster is not None
    a, b = scrape(gw.node_url), scrape(gw.token_url, headers={"Authorization":
                                                               f"Bearer {gw.token}"})
    ids = {dict(k[1]).get("peer_id") for k in a if k[0] == "dscluster_node_info"}
    ids_b = {dict(k[1]).get("peer_id") for k in b if k[0] == "dscluster_node_info"}
    assert ids == {gw.cluster.nodes[0].peer_id} and ids_b == {gw.cluster.nodes[1].peer_id}


def test_healthz(gw: GatewayCluster) -> None:
    for url in (gw.node_url, gw.client_url, gw.token_url):
        r = httpx.get(url + "/healthz", timeout=TIMEOUT)
        assert r.status_code == 200 and r.text == "ok\n"


def test_token_guards_everything_but_healthz(gw: GatewayCluster) -> None:
    cid = gw.cids["hello"]
    page = httpx.get(gw.token_url + "/", timeout=TIMEOUT)  # the status page holds no data
    assert page.status_code == 200 and "status.json" in page.text
    for path in ("/metrics", f"/ipfs/{cid}", "/status.json"):
        r = httpx.get(gw.token_url + path, timeout=TIMEOUT)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        wrong = httpx.get(gw.token_url + path, headers={"Authorization": "Bearer nope"},
                          timeout=TIMEOUT)
        assert wrong.status_code == 401
        ok = httpx.get(gw.token_url + path, headers={"Authorization": f"Bearer {gw.token}"},
                       timeout=TIMEOUT)
        assert ok.status_code == 200
    ok = httpx.get(gw.token_url + f"/ipfs/{cid}", timeout=TIMEOUT,
                   headers={"Authorization": f"Bearer {gw.token}"})
    assert ok.content == gw.data["hello"]


@pytest.mark.parametrize("bind", ["0.0.0.0:8080", "[::]:8080", "192.168.1.10:80",
                                  "example.org:8080"])
def test_non_loopback_needs_a_token(bind: str) -> None:
    with pytest.raises(ConfigError, match="--http-token"):
        check_bind(bind, None)
    check_bind(bind, "t")


@pytest.mark.parametrize("bind", ["127.0.0.1:0", "[::1]:8080", "localhost:8080",
                                  "127.0.0.2:1"])
def test_loopback_needs_nothing(bind: str) -> None:
    check_bind(bind, None)


@pytest.mark.parametrize("bind", ["8080", ":8080", "127.0.0.1:", "127.0.0.1:99999", "x:y"])
def test_bad_bind(bind: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_bind(bind)

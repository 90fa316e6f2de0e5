"""The gateway over HTTP, as a user's client sees it (httpx against the live fixture).

Every test runs against both gateways: node 0's HTTP port (blocks from its own
datastore or the slot's owner) and the client gateway in front of the cluster
(a read-only client identity), which must answer alike.
"""

from __future__ import annotations

import hashlib
import re

import httpx
import pytest
from multiformats import CID

from dsclient.unixfs.exporter import decode
from tests.http.carread import read_car
from tests.http.conftest import GatewayCluster

TIMEOUT = httpx.Timeout(60.0)
IMMUTABLE = "public, max-age=29030400, immutable"
CAR_TYPE = "application/vnd.ipld.car; version=1; order=dfs; dups=n"


@pytest.fixture(params=["node", "client"])
def url(request: pytest.FixtureRequest, gw: GatewayCluster) -> str:
    return gw.node_url if request.param == "node" else gw.client_url


def get(url: str, path: str, **kw: object) -> httpx.Response:
    return httpx.get(url + path, timeout=TIMEOUT, **kw)  # type: ignore[arg-type]


def file_from_car(root: CID, blocks: list[tuple[CID, bytes]]) -> bytes:
    """Rebuild a file's bytes from a CAR's blocks (checks nothing is missing)."""
    by_digest = {bytes(c.digest): b for c, b in blocks}

    def walk(cid: CID) -> bytes:
        node = decode(cid, by_digest[bytes(cid.digest)])
        return node.data + b"".join(walk(link.cid) for link in node.links)

    return walk(root)


def assert_dfs_preorder(blocks: list[tuple[CID, bytes]]) -> None:
    """Every block after the first is a child of a block before it, in DFS pre-order."""
    stack: list[list[bytes]] = []
    seen: set[bytes] = set()
    for i, (cid, block) in enumerate(blocks):
        d = bytes(cid.digest)
        assert d not in seen, "dups=n: a block came twice"
        seen.add(d)
        if i:
            while stack and not stack[-1]:
                stack.pop()
            assert stack and stack[-1][0] == d, f"block {i} ({cid}) is out of DFS order"
            stack[-1].pop(0)
        node = decode(cid, block)
        kids = [bytes(link.cid.digest) for link in node.links]
        stack.append([k for k in kids if k not in seen])


# -- trustless: raw blocks and CARs ------------------------------------------------


def test_raw_block(gw: GatewayCluster, url: str) -> None:
    cid = gw.cids["hello"]
    r = get(url, f"/ipfs/{cid}?format=raw")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/vnd.ipld.raw"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == IMMUTABLE
    assert r.headers["etag"] == f'"{cid}.raw"'
    assert r.headers["content-disposition"] == f'attachment; filename="{cid}.bin"'
    assert hashlib.sha256(r.content).digest() == bytes(cid.raw_digest)
    by_accept = get(url, f"/ipfs/{cid}", headers={"Accept": "application/vnd.ipld.raw"})
    assert by_accept.content == r.content
    assert by_accept.headers["content-location"] == f"/ipfs/{cid}?format=raw"
    head = httpx.head(url + f"/ipfs/{cid}?format=raw", timeout=TIMEOUT)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(r.content))


def test_identity_cid_probe(url: str) -> None:
    """The spec's probe CID (an empty identity block) answers without the cluster."""
    r = get(url, "/ipfs/bafkqaaa?format=raw")
    assert r.status_code == 200 and r.content == b""
    assert get(url, "/ipfs/bafkqaaa").status_code == 200


def test_car_of_a_file_is_dfs_and_complete(gw: GatewayCluster, url: str) -> None:
    cid = gw.cids["big"]
    r = get(url, f"/ipfs/{cid}?format=car")
    assert r.status_code == 200
    assert r.headers["content-type"] == CAR_TYPE
    assert r.headers["content-disposition"] == f'attachment; filename="{cid}.car"'
    assert r.headers["x-ipfs-roots"] == str(cid)
    roots, blocks = read_car(r.content)
    assert roots == [cid] and blocks[0][0] == cid
    assert len(blocks) == 6  # the root and five leaves
    assert_dfs_preorder(blocks)
    assert file_from_car(cid, blocks) == gw.data["big"]
    by_accept = get(url, f"/ipfs/{cid}", headers={"Accept": "application/vnd.ipld.car"})
    assert by_accept.content == r.content


def test_car_of_a_two_level_file(gw: GatewayCluster, url: str) -> None:
    cid = gw.cids["deep"]
    _, blocks = read_car(get(url, f"/ipfs/{cid}?format=car").content)
    assert len(blocks) == 1 + 2 + 201  # root, two internal nodes, 201 leaves
    assert_dfs_preorder(blocks)
    assert file_from_car(cid, blocks) == gw.data["deep"]


def test_car_scopes_of_a_directory(gw: GatewayCluster, url: str) -> None:
    cid = gw.cids["docs"]
    _, whole = read_car(get(url, f"/ipfs/{cid}?format=car&dag-scope=all").content)
    assert_dfs_preorder(whole)
    names = {decode(c, b).type.value for c, b in whole}
    assert names == {"directory", "file"}
    assert len(whole) == 6  # docs, a.txt, "b & <c>.txt", empty, sub, sub/c.md
    _, entity = read_car(get(url, f"/ipfs/{cid}?format=car&dag-scope=entity").content)
    assert [c for c, _ in entity] == [cid]
    _, block = read_car(get(url, f"/ipfs/{cid}?format=car&dag-scope=block").content)
    assert [c for c, _ in block] == [cid]


def test_car_with_a_path_carries_the_path_blocks(gw: GatewayCluster, url: str) -> None:
    docs = gw.cids["docs"]
    r = get(url, f"/ipfs/{docs}/sub/c.md?format=car")
    assert r.status_code == 200
    roots, blocks = read_car(r.content)
    path_roots = r.headers["x-ipfs-roots"].split(",")
    assert len(path_roots) == 3 and path_roots[0] == str(docs)
    assert [str(c) for c, _ in blocks] == path_roots  # docs, sub, c.md (one block)
    assert blocks[-1][1] and file_from_car(blocks[-1][0], blocks) == b"# nested\n"


def test_car_entity_bytes(gw: GatewayCluster, url: str) -> None:
    cid, data = gw.cids["deep"], gw.data["deep"]
    r = get(url, f"/ipfs/{cid}?format=car&entity-bytes=100000:101000")
    assert r.status_code == 200
    _, blocks = read_car(r.content)
    leaves = [(c, b) for c, b in blocks if not decode(c, b).links]
    assert len(leaves) == 2  # bytes 100000-101000 lie in leaves 97 and 98 of 1024 bytes
    got = b"".join(decode(c, b).data for c, b in leaves)
    assert data[97 * 1024:99 * 1024] == got
    assert blocks[0][0] == cid
    _, tail = read_car(get(url, f"/ipfs/{cid}?format=car&entity-bytes=-1024:*").content)
    tail_leaves = [decode(c, b).data for c, b in tail if not decode(c, b).links]
    assert b"".join(tail_leaves) == data[199 * 1024:]  # the last 1024 bytes span two leaves
    etags = {get(url, f"/ipfs/{cid}?format=car&entity-bytes={q}").headers["etag"]
             for q in ("0:10", "0:*", "-5:*")}
    assert len(etags) == 3  # the range is part of the ETag
    _, beyond = read_car(get(url, f"/ipfs/{cid}?format=car&entity-bytes=999999:*").content)
    assert [c for c, _ in beyond] == [cid]  # outside the file: the root block only


# -- deserialized: files, ranges, directories ------------------------------------------


def test_file_with_sniffed_type_and_caching_headers(gw: GatewayCluster, url: str) -> None:
    cid = gw.cids["hello"]
    r = get(url, f"/ipfs/{cid}")
    assert r.status_code == 200 and r.content == gw.data["hello"]
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.headers["etag"] == f'"{cid}"'
    assert r.headers["cache-control"] == IMMUTABLE
    assert r.headers["x-ipfs-path"] == f"/ipfs/{cid}"
    assert r.headers["x-ipfs-roots"] == str(cid)
    assert r.headers["accept-ranges"] == "bytes"
    png = get(url, f"/ipfs/{gw.cids['png']}")
    assert png.headers["content-type"] == "image/png" and png.content == gw.data["png"]
    same = get(url, f"/ipfs/{cid}", headers={"If-None-Match": f'"{cid}"'})
    assert same.status_code == 304 and same.content == b""


def test_large_file_and_ranges(gw: GatewayCluster, url: str) -> None:
    cid, data = gw.cids["big"], gw.data["big"]
    whole = get(url, f"/ipfs/{cid}")
    assert whole.content == data and whole.headers["content-length"] == str(len(data))
    part = get(url, f"/ipfs/{cid}", headers={"Range": "bytes=262140-524300"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 262140-524300/{len(data)}"
    assert part.content == data[262140:524301]
    suffix = get(url, f"/ipfs/{cid}", headers={"Range": "bytes=-100"})
    assert suffix.status_code == 206 and suffix.content == data[-100:]
    open_end = get(url, f"/ipfs/{cid}", headers={"Range": f"bytes={len(data) - 5}-"})
    assert open_end.content == data[-5:]
    beyond = get(url, f"/ipfs/{cid}", headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{len(data)}"
    raw_leaves = get(url, f"/ipfs/{gw.cids['raw']}", headers={"Range": "bytes=300000-300009"})
    assert raw_leaves.content == gw.data["raw"][300000:300010]
    head = httpx.head(url + f"/ipfs/{cid}", timeout=TIMEOUT)
    assert head.headers["content-length"] == str(len(data)) and head.content == b""


def test_directory_listing_and_redirect(gw: GatewayCluster, url: str) -> None:
    cid = gw.cids["docs"]
    r = get(url, f"/ipfs/{cid}")
    assert r.status_code == 301 and r.headers["location"] == f"/ipfs/{cid}/"
    page = get(url, f"/ipfs/{cid}/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["etag"].startswith("W/")
    assert "b &amp; &lt;c&gt;.txt" in page.text and "<c>" not in page.text
    assert 'href="./b%20%26%20%3Cc%3E.txt"' in page.text
    odd = get(url, f"/ipfs/{cid}/b%20%26%20%3Cc%3E.txt")
    assert odd.content == b"an awkward name\n"
    nested = get(url, f"/ipfs/{cid}/sub/c.md")
    assert nested.content == b"# nested\n"
    assert nested.headers["content-type"].startswith("text/markdown")
    assert len(nested.headers["x-ipfs-roots"].split(",")) == 3
    empty = get(url, f"/ipfs/{cid}/empty")
    assert empty.status_code == 200 and empty.content == b""


def test_index_html_is_served(gw: GatewayCluster, url: str) -> None:
    r = get(url, f"/ipfs/{gw.cids['site']}/")
    assert r.status_code == 200
    assert r.content == gw.files["site/index.html"]
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    css = get(url, f"/ipfs/{gw.cids['site']}/style.css")
    assert css.headers["content-type"] == "text/css; charset=utf-8"


def test_raw_codec_block_as_a_file(gw: GatewayCluster, url: str) -> None:
    r = get(url, f"/ipfs/{gw.cids['block']}")
    assert r.status_code == 200 and r.content == b"a raw block"


# -- errors ----------------------------------------------------------------------------

ABSENT = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"  # sha256 of nothing here


@pytest.mark.parametrize(("path", "status"), [
    ("/ipfs/not-a-cid", 400),
    ("/ipfs/Qm", 400),
    ("/ipfs/bafy!!!!", 400),
    ("/ipfs/", 400),
    ("/ipfs/%00", 400),
    (f"/ipfs/{ABSENT}", 404),
    (f"/ipfs/{ABSENT}?format=raw", 404),
    (f"/ipfs/{ABSENT}?format=car", 404),
    ("/ipns/example.org", 501),
    ("/nothing-here", 404),
])
def test_errors_are_one_line(url: str, path: str, status: int) -> None:
    r = get(url, path)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert r.text.count("\n") == 1 and "Traceback" not in r.text
    assert r.text.startswith(f"{status} ")


def test_path_errors(gw: GatewayCluster, url: str) -> None:
    docs = gw.cids["docs"]
    assert get(url, f"/ipfs/{docs}/nope").status_code == 404
    assert get(url, f"/ipfs/{docs}/a.txt/deeper").status_code == 404
    assert get(url, f"/ipfs/{docs}/..").status_code == 400
    assert get(url, f"/ipfs/{docs}/%ff%fe").status_code == 400
    assert get(url, f"/ipfs/{docs}/a%2Fb").status_code == 400  # a "/" inside one name
    assert get(url, f"/ipfs/{docs}?format=tar").status_code == 400
    assert get(url, f"/ipfs/{docs}?format=car&dag-scope=most").status_code == 400
    assert get(url, f"/ipfs/{gw.cids['deep']}?format=car&entity-bytes=9:3").status_code == 400
    assert get(url, f"/ipfs/{docs}", headers={"Accept": "application/vnd.ipld.car; version=2"}
               ).status_code == 400
    assert get(url, f"/ipfs/{docs}?format=car&car-version=2").status_code == 400
    assert get(url, f"/ipfs/{docs}?format=car&car-order=bfs").status_code == 400
    assert get(url, f"/ipfs/{docs}?format=car&car-order=dfs&car-dups=y").status_code == 200
    r = httpx.post(url + f"/ipfs/{docs}/", timeout=TIMEOUT)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


def test_huge_paths_are_refused(gw: GatewayCluster, url: str) -> None:
    r = get(url, f"/ipfs/{gw.cids['docs']}/" + "a" * 5000)
    assert r.status_code == 414
    r = get(url, "/ipfs/" + "x" * 20000)  # past hypercorn's header bound: it answers itself
    assert r.status_code in (400, 414, 431)
    many = "/".join(["a"] * 300)
    assert get(url, f"/ipfs/{gw.cids['docs']}/{many}").status_code == 400


def test_status_json(gw: GatewayCluster, url: str) -> None:
    """What the status page polls, from the node's view and from the gateway client's."""
    assert gw.cluster is not None
    r = get(url, "/status.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    s = r.json()
    assert s["totals"]["nodes"] == 3 and s["totals"]["up"] == 3
    assert s["totals"]["slots_assigned"] == 16384
    assert {n["peer"] for n in s["nodes"]} == {n.peer_id for n in gw.cluster.nodes}
    assert sum(e - a + 1 for a, e, _ in s["slot_map"]) == 16384
    assert all(n["version"] == "0.1.0" for n in s["nodes"])
    page = get(url, "/")
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert re.search(r"fetch\(\"status.json\"", page.text)

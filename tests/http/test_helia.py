"""An independent IPFS HTTP client against our gateway: Helia (npm), not our code.

``js/fetch.mjs`` runs @helia/verified-fetch over a Helia node whose only block
source is our trustless gateway (Helia fetches every block as
application/vnd.ipld.raw and checks it against its CID), and reads a CAR back
with @ipld/car. Node >= 22 comes from the npm package ``node`` (tests/http/js);
the ``js_client`` fixture installs it when missing.
"""

from __future__ import annotations

import hashlib
import json
import subprocess

import pytest

from tests.http.conftest import JS_DIR, GatewayCluster

# Installing Node and Helia from npm takes about a minute on a fresh machine: this
# interop check runs with `make test-slow`, outside the default run's 15 minutes.
pytestmark = pytest.mark.slow


def run_js(node: str, request: dict[str, object]) -> dict[str, list[dict[str, object]]]:
    proc = subprocess.run([node, str(JS_DIR / "fetch.mjs"), json.dumps(request)], cwd=JS_DIR,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, list[dict[str, object]]] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_verified_fetch_reads_files_and_dags(gw: GatewayCluster, js_client: str) -> None:
    docs, site = gw.cids["docs"], gw.cids["site"]
    wanted = {
        f"ipfs://{gw.cids['hello']}": gw.data["hello"],
        f"ipfs://{gw.cids['big']}": gw.data["big"],
        f"ipfs://{gw.cids['raw']}": gw.data["raw"],
        f"ipfs://{gw.cids['deep']}": gw.data["deep"],
        f"ipfs://{docs}/sub/c.md": gw.files["docs/sub/c.md"],
        f"ipfs://{docs}/a.txt": gw.files["docs/a.txt"],
        f"ipfs://{site}/index.html": gw.files["site/index.html"],
    }
    for url in (gw.client_url, gw.node_url):
        out = run_js(js_client, {"gateway": url, "fetch": list(wanted)})
        for got in out["fetch"]:
            resource = str(got["resource"])
            assert "error" not in got, got
            assert got["status"] == 200, got
            assert got["sha256"] == sha(wanted[resource]), resource
            assert got["length"] == len(wanted[resource])


def test_car_read_back_with_ipld_car(gw: GatewayCluster, js_client: str) -> None:
    cids = [gw.cids["big"], gw.cids["docs"]]
    out = run_js(js_client, {"gateway": gw.client_url, "car": [str(c) for c in cids]})
    for cid, car in zip(cids, out["car"], strict=True):
        assert car["status"] == 200
        assert car["contentType"] == "application/vnd.ipld.car; version=1; order=dfs; dups=n"
        assert car["version"] == 1 and car["roots"] == [str(cid)]
        assert car["verified"] is True
        blocks = car["blocks"]
        assert isinstance(blocks, list) and blocks[0]["cid"] == str(cid)
    assert len(out["car"][0]["blocks"]) == 6  # type: ignore[arg-type]
    assert len(out["car"][1]["blocks"]) == 6  # type: ignore[arg-type]

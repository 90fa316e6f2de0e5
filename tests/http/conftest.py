"""A live 3-node cluster with content, the node's HTTP port and a client gateway.

One trio run in a thread (as tests/client/conftest.py) holds: three real nodes
on 127.0.0.1, a read-write client that adds the test content (the CIDs Kubo
gives), node 0's HTTP port (gateway over the node's own blocks and RPC,
/metrics, /healthz) and a gateway in front of the cluster run by a second
client whose identity the nodes know as read-only (what ``dsclient gateway``
runs). Tests talk HTTP to them with httpx, like any user.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from multiformats import CID

from dsclient.api import AsyncClient
from dsclient.unixfs import DatastoreBlockStore
from dscluster.http.app import HttpLimits
from dscluster.http.server import serve_client_http, serve_node_http
from dscluster.net.host import Identity
from dscluster.node.auth import Role
from dscluster.testing.cluster import InProcessCluster, local_cluster
from dscluster.trio_thread import TrioThread

JS_DIR = Path(__file__).parent / "js"


def make_tree(root: Path) -> dict[str, bytes]:
    """The files added as directories: a site with index.html, and a plain listing."""
    files = {
        "site/index.html": b"<!DOCTYPE html><html><body><h1>hello from the cluster</h1></body></html>\n",
        "site/style.css": b"body { color: teal }\n",
        "docs/a.txt": b"alpha\n",
        "docs/b & <c>.txt": b"an awkward name\n",
        "docs/sub/c.md": b"# nested\n",
        "docs/empty": b"",
    }
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


@dataclass
class GatewayCluster:
    base: str
    cluster: InProcessCluster | None = None
    node_url: str = ""
    client_url: str = ""
    token_url: str = ""
    token: str = "s3cret-token"
    tight_url: str = ""  # a client gateway with 4 slots and a queue of 8
    cids: dict[str, CID] = field(default_factory=dict)
    data: dict[str, bytes] = field(default_factory=dict)
    _loop: TrioThread[GatewayCluster] | None = None

    def start(self) -> None:
        """Run the cluster, clients and gateways on a trio loop in a thread
        (dscluster/trio_thread.py); a failure to start is raised here."""
        self._loop = TrioThread("http-test-cluster", self._serve)

    @asynccontextmanager
    async def _serve(self) -> AsyncIterator[GatewayCluster]:
        async with local_cluster(self.base, 3) as cluster, AsyncExitStack() as stack:
            self.cluster = cluster
            nursery = await stack.enter_async_context(trio.open_nursery())
            boot = [cluster.nodes[0].addrs[0]]
            writer = await AsyncClient.start(nursery, bootstrap=boot,
                                             identity=cluster.client_identity)
            await self._add_content(writer)
            reader_id = Identity.generate()
            for node in cluster.nodes:  # every node knows it at once (no gossip wait)
                await node.set_client_role(reader_id.peer_id_str, Role.READ_ONLY)
            reader = await AsyncClient.start(nursery, bootstrap=boot, identity=reader_id)
            self.node_url = (await stack.enter_async_context(
                serve_node_http(cluster.nodes[0], "127.0.0.1:0")))[0]
            self.client_url = (await stack.enter_async_context(serve_client_http(
                DatastoreBlockStore(reader.cluster), "127.0.0.1:0",
                limits=HttpLimits(max_concurrent=32), cluster=reader.cluster)))[0]
            self.token_url = (await stack.enter_async_context(serve_node_http(
                cluster.nodes[1], "127.0.0.1:0", token=self.token)))[0]
            self.tight_app_limits = HttpLimits(max_concurrent=4, max_waiting=8, max_wait=5)
            self.tight_url = (await stack.enter_async_context(serve_client_http(
                DatastoreBlockStore(reader.cluster), "127.0.0.1:0",
                limits=self.tight_app_limits)))[0]
            self.reader, self.writer = reader, writer
            try:
                yield self
            finally:
                await writer.aclose()
                await reader.aclose()
                nursery.cancel_scope.cancel()

    async def _add_content(self, c: AsyncClient) -> None:
        rng = random.Random(18)
        self.data["hello"] = b"hello, gateway\n"
        self.cids["hello"] = await c.add_bytes(self.data["hello"])
        self.data["big"] = rng.randbytes(4 * 262144 + 12345)  # five leaves under one root
        self.cids["big"] = await c.add_bytes(self.data["big"])
        self.data["raw"] = rng.randbytes(700_000)  # CIDv1, raw leaves
        self.cids["raw"] = await c.add_bytes(self.data["raw"], cid_version=1)
        self.data["deep"] = rng.randbytes(200 * 1024 + 7)  # 201 leaves: two levels
        self.cids["deep"] = await c.add_bytes(self.data["deep"], chunker="size-1024")
        self.data["png"] = b"\x89PNG\r\n\x1a\n" + rng.randbytes(100)
        self.cids["png"] = await c.add_bytes(self.data["png"])
        self.cids["block"] = await c.put(b"a raw block")  # bafkrei..., not UnixFS-added
        tree = Path(self.base) / "tree"
        self.files = await trio.to_thread.run_sync(make_tree, tree)
        self.cids["site"] = await c.add(tree / "site", recursive=True)
        self.cids["docs"] = await c.add(tree / "docs", recursive=True)

    def call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        assert self._loop is not None
        return self._loop.run(fn, *args)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.stop(60)


@pytest.fixture(scope="package")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayCluster]:
    cluster = GatewayCluster(str(tmp_path_factory.mktemp("http-cluster")))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.close()


# -- Node >= 22 and the npm packages (tests/http/js/package.json) ---------------------


def _node_binary() -> str | None:
    local = JS_DIR / "node_modules" / ".bin" / "node"
    return str(local) if local.exists() else None


@pytest.fixture(scope="session")
def js_client() -> str:
    """The path of a Node >= 22 with tests/http/js's packages installed (npm install once).

    Installs Node and npm with apt-get when npm is missing; skips, naming the
    reason, only when that is impossible."""
    if _node_binary() is None or not (JS_DIR / "node_modules" / "@helia").exists():
        if shutil.which("npm") is None:
            try:
                subprocess.run(["apt-get", "update"], check=True, timeout=600,
                               capture_output=True)
                subprocess.run(["apt-get", "install", "-y", "nodejs", "npm"], check=True,
                               timeout=900, capture_output=True)
            except (OSError, subprocess.SubprocessError) as exc:
                pytest.skip(f"npm is missing and apt-get could not install it: {exc}")
        try:
            subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                           cwd=JS_DIR, check=True, timeout=900, capture_output=True,
                           env={**os.environ, "npm_config_update_notifier": "false"})
        except (OSError, subprocess.SubprocessError) as exc:
            pytest.skip(f"npm install in {JS_DIR} failed (no registry?): {exc}")
    node = _node_binary()
    if node is None:
        pytest.skip("npm install did not bring node_modules/.bin/node (the npm package node@22)")
    return node

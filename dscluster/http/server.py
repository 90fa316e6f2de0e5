"""Run the HTTP port: hypercorn's trio worker serving HttpApp, inside the caller's trio run.

``serve_http(app, bind)`` is a trio task for ``nursery.start``: it reports the
bound URLs (port 0 picks one) once hypercorn listens, and stops when its
nursery is cancelled. The libp2p host runs in the same trio run; every HTTP
request is its own task that only awaits (block reads, socket writes), so a
slow or hostile HTTP client waits alone and never holds the loop.

``check_bind`` is the one rule on addresses: loopback binds need nothing, any
other bind needs a bearer token (ConfigError otherwise, one line).

``serve_node_http`` assembles the node's port (gateway over ``NodeBlocks``,
the node's metrics, /healthz tied to the node's life) for the daemon;
``serve_client_http`` the gateway a client process runs (``dsclient gateway``).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio
from trio import TaskStatus  # type: ignore[attr-defined]

from dscluster.errors import ConfigError

try:
    import prometheus_client  # noqa: F401  (metrics.py, imported below)
    from hypercorn.config import Config
    from hypercorn.trio import serve
except ImportError as exc:  # the [http] extra is not installed: one line for the CLI
    raise ConfigError(f"the HTTP port needs the [http] extra ({exc.name} is missing): "
                      "pip install 'ds-cluster[http]'") from None

from dscluster.http.app import HttpApp, HttpLimits
from dscluster.http.gateway import BlockSource, NodeBlocks
from dscluster.http.metrics import Metrics, node_metrics, uninstrument_service
from dscluster.http.status import client_status, node_status

if TYPE_CHECKING:
    from dscluster.node.daemon import DataNode

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 16 * 1024  # request line and headers; hypercorn answers 400 past it


def parse_bind(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT``) as (host, port); ConfigError when malformed."""
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"HTTP address {bind!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.removeprefix("[").removesuffix("]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(bind: str, token: str | None) -> None:
    """Refuse a non-loopback bind without a bearer token."""
    host, _ = parse_bind(bind)
    if not is_loopback(host) and not token:
        raise ConfigError(f"HTTP address {bind} is not loopback: give --http-token "
                          "(clients then send 'Authorization: Bearer TOKEN')")


def hypercorn_config(bind: str) -> Config:
    host, port = parse_bind(bind)
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("dscluster.http.hypercorn")
    config.keep_alive_timeout = 5
    config.read_timeout = 30  # a client silent this long mid-request is dropped
    config.h11_max_incomplete_size = MAX_HEADER_BYTES
    config.graceful_timeout = 2
    config.include_server_header = False
    config.alpn_protocols = ["http/1.1"]
    return config


async def serve_http(app: HttpApp, bind: str, *,
                     task_status: TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` on ``bind`` until cancelled; ``task_status`` gets the bound URLs."""
    check_bind(bind, app.token)
    try:
        await serve(app, hypercorn_config(bind), task_status=task_status,  # type: ignore[arg-type]
                    mode="asgi")
    except OSError as exc:
        raise ConfigError(f"cannot serve HTTP on {bind}: {exc.strerror or exc}") from None


@asynccontextmanager
async def serve_node_http(node: DataNode, bind: str, *, token: str | None = None,
                          limits: HttpLimits = HttpLimits()) -> AsyncIterator[list[str]]:
    """The node's HTTP port for the body of the block; yields the bound URLs."""
    check_bind(bind, token)
    metrics = node_metrics(node)
    try:
        async with _serving(lambda ready: HttpApp(
                source=NodeBlocks(node), metrics=metrics, ready=ready, token=token,
                limits=limits, status=node_status(node)),
                bind, "HTTP on %s (gateway /ipfs, /metrics, /healthz)") as urls:
            yield urls
    finally:
        uninstrument_service(node.service)


@asynccontextmanager
async def serve_client_http(source: BlockSource, bind: str, *, token: str | None = None,
                            limits: HttpLimits = HttpLimits(), metrics: Metrics | None = None,
                            cluster: Any = None) -> AsyncIterator[list[str]]:
    """A gateway over ``source`` (e.g. a ClusterClient's blocks); yields the bound URLs.

    With ``cluster`` (a ClusterClient) it also serves the status page, as that client sees
    the cluster."""
    check_bind(bind, token)
    status = client_status(cluster) if cluster is not None else None
    async with _serving(lambda ready: HttpApp(
            source=source, metrics=metrics, ready=ready, token=token, limits=limits,
            status=status), bind, "gateway on %s") as urls:
        yield urls


@asynccontextmanager
async def _serving(make_app: Callable[[Callable[[], bool]], HttpApp], bind: str,
                   log_line: str) -> AsyncIterator[list[str]]:
    """Serve the app ``make_app(ready)`` builds on ``bind`` for the body of the block;
    ``ready()`` turns false as the block ends, so /healthz stops answering 200 first."""
    running = True
    app = make_app(lambda: running)
    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(serve_http, app, bind)
        log.info(log_line, ", ".join(urls))
        try:
            yield urls
        finally:
            running = False
            nursery.cancel_scope.cancel()

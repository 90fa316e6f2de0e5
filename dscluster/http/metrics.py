"""Prometheus metrics for a node and its HTTP port, on a registry of our own.

Theory of operation
-------------------
Two kinds of figures:

- Counted as they happen, by ``Metrics``: store operations by kind and result
  with a latency histogram and bytes in/out (``instrument_service`` wraps the
  node's ``StoreService.handle`` on the instance: the RPC server looks the
  method up per request, so nothing in the hot path is edited), and the HTTP
  port's own requests (the app calls ``Metrics.http_request``).
- Read at scrape time by ``NodeCollector`` from state the node keeps anyway:
  slots owned, keys and bytes stored (the store service's periodic scan),
  migrations by phase and keys moved, peers up/pfail/fail from the failure
  detector, gossip ticks and dropped or refused gossip, and the stream and
  connection limits hit (net/admission.py, net/libp2p_fixes.py
  ``inbound_stats``). Nothing is computed per operation for these.

The registry is a fresh ``CollectorRegistry`` per node (never the process-wide
default), so several in-process nodes each export their own figures.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from dscluster.errors import DSClusterError

if TYPE_CHECKING:
    from dscluster.node.daemon import DataNode

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The counters and histograms of one node (or one gateway process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ops = Counter("dscluster_store_operations_total",
                           "Store requests served, by request kind and result",
                           ["kind", "result"], registry=r)
        self.op_seconds = Histogram("dscluster_store_operation_seconds",
                                    "Time to serve a store request, by kind", ["kind"],
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.bytes_in = Counter("dscluster_store_bytes_in_total",
                                "Value bytes received in store requests (puts)", registry=r)
        self.bytes_out = Counter("dscluster_store_bytes_out_total",
                                 "Value bytes sent in store answers (gets)", registry=r)
        self.http = Counter("dscluster_http_requests_total",
                            "HTTP requests by route, method and status code",
                            ["route", "method", "code"], registry=r)
        self.http_seconds = Histogram("dscluster_http_request_seconds",
                                      "HTTP request time to the last byte, by route", ["route"],
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.http_bytes = Counter("dscluster_http_response_bytes_total",
                                  "HTTP response body bytes sent, by route", ["route"],
                                  registry=r)
        self.http_rejected = Counter("dscluster_http_rejected_total",
                                     "HTTP requests refused before any work, by reason",
                                     ["reason"], registry=r)
        self.http_in_flight = Gauge("dscluster_http_requests_in_flight",
                                    "HTTP requests being served now", registry=r)
        self.gateway_blocks = Counter("dscluster_gateway_block_bytes_total",
                                      "Block bytes the gateway read from the cluster",
                                      registry=r)

    def http_request(self, route: str, method: str, code: int, seconds: float,
                     sent: int) -> None:
        self.http.labels(route, method, str(code)).inc()
        self.http_seconds.labels(route).observe(seconds)
        if sent:
            self.http_bytes.labels(route).inc(sent)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# -- store operations ---------------------------------------------------------------


def _value_bytes(obj: Any) -> int:
    """Bytes of values in a request or answer (puts in, gets out)."""
    from dscluster.wire import messages as wm

    if isinstance(obj, wm.Put):
        return len(obj.value)
    if isinstance(obj, wm.Batch):
        return sum(len(v) for _, v in obj.puts)
    if isinstance(obj, wm.Ok) and isinstance(obj.value, bytes):
        return len(obj.value)
    if isinstance(obj, wm.OkMany):
        return sum(len(v) for v in obj.results if isinstance(v, bytes))
    if isinstance(obj, wm.QueryChunk):
        return sum(len(e.value) for e in obj.entries if e.value is not None)
    return 0


def _result_of(exc: BaseException) -> str:
    """The wire's error code for ``exc`` (not_found, moved, ask, ...)."""
    from dscluster.wire.messages import ErrorInfo

    return str(ErrorInfo.from_exception(exc).code.value).lower()


def instrument_service(service: Any, metrics: Metrics) -> None:
    """Count every request ``service.handle`` serves (kind, result, latency, bytes).

    Wraps the bound method on this instance only; ``uninstrument_service`` undoes it."""
    inner: Callable[[Any, Any], Awaitable[Any]] = service.handle
    if getattr(inner, "_dscluster_metrics", None) is not None:
        return

    async def handle(peer: Any, request: Any) -> Any:
        kind = type(request).__name__
        start = time.perf_counter()
        try:
            resp = await inner(peer, request)
        except DSClusterError as exc:
            metrics.ops.labels(kind, _result_of(exc)).inc()
            raise
        except Exception:
            metrics.ops.labels(kind, "error").inc()
            raise
        finally:
            metrics.op_seconds.labels(kind).observe(time.perf_counter() - start)
        metrics.ops.labels(kind, "ok").inc()
        if n := _value_bytes(request):
            metrics.bytes_in.inc(n)
        if n := _value_bytes(resp):
            metrics.bytes_out.inc(n)
        return resp

    handle._dscluster_metrics = inner  # type: ignore[attr-defined]
    service.handle = handle


def uninstrument_service(service: Any) -> None:
    inner = getattr(service.handle, "_dscluster_metrics", None)
    if inner is not None:
        service.handle = inner


# -- node state, read at scrape time ------------------------------------------------


class NodeCollector(Collector):
    """Figures the node keeps anyway, read when /metrics is scraped."""

    def __init__(self, node: DataNode) -> None:
        self._node = node

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        from dscluster.core.gossip import Liveness
        from dscluster.net.admission import admission_of
        from dscluster.net.libp2p_fixes import inbound_stats

        node = self._node
        core = node.core
        me = node.peer_id
        table = core.table

        def gauge(name: str, doc: str, value: float, labels: dict[str, str] | None = None
                  ) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=list(labels or {}))
            g.add_metric(list((labels or {}).values()), value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc)
            c.add_metric([], value)
            return c

        yield gauge("dscluster_node_info", "This node (value 1)", 1,
                    {"peer_id": me, "version": _version()})
        yield gauge("dscluster_slots_owned", "Hash slots this node serves as primary",
                    len(table.slots_of(me)))
        yield gauge("dscluster_epoch", "The node's current epoch", core.epoch)
        yield gauge("dscluster_keys_stored",
                    "Keys in the node's datastore at its last scan (-1: not scanned yet)",
                    node.service.key_count)
        yield gauge("dscluster_bytes_stored",
                    "Value bytes in the node's datastore at its last scan (-1: not yet)",
                    node.service.byte_count)
        peers = GaugeMetricFamily("dscluster_peers", "Other data nodes by liveness",
                                  labels=["state"])
        states = {s: 0 for s in Liveness}
        for peer in table.data_nodes():
            if peer != me:
                states[core.liveness(peer)] += 1
        for s, n in states.items():
            peers.add_metric([s.value], n)
        yield peers
        migs = GaugeMetricFamily("dscluster_migrations",
                                 "Slot migrations this node takes part in, by direction and phase",
                                 labels=["direction", "phase"])
        counts: dict[tuple[str, str], int] = {}
        for m in core.migrations:
            direction = "out" if m.source == me else "in"
            counts[(direction, m.phase.value)] = counts.get((direction, m.phase.value), 0) + 1
        for (direction, phase), n in sorted(counts.items()):
            migs.add_metric([direction, phase], n)
        yield migs
        migrator = node.migrator
        yield gauge("dscluster_migration_keys_moved",
                    "Keys moved so far by the migrations this node runs now",
                    sum(migrator.moved.values()))
        yield gauge("dscluster_migration_bytes_moved",
                    "Value bytes moved so far by the migrations this node runs now",
                    sum(migrator.moved_bytes.values()))
        yield counter("dscluster_core_ticks", "Core timer ticks (gossip rounds run on them)",
                      getattr(core, "_now", 0))
        links = node.links
        yield counter("dscluster_gossip_dropped", "Gossip messages dropped (slow or down peer)",
                      links.dropped)
        yield counter("dscluster_gossip_refused_streams",
                      "Gossip streams refused from non-members", links.refused_streams)
        yield counter("dscluster_gossip_broken_streams",
                      "Gossip streams reset for protocol errors", links.broken_streams)
        host = node.host.host
        stats = inbound_stats(host.get_network())
        yield gauge("dscluster_inbound_connections", "Inbound libp2p connections open now",
                    stats.open)
        refused = CounterMetricFamily("dscluster_limits_hit",
                                      "Connections and streams refused by a cap, by limit",
                                      labels=["limit"])
        refused.add_metric(["connections"], stats.refused)
        refused.add_metric(["stranger_streams"], admission_of(host).refused_streams)
        yield refused
        yield counter("dscluster_inbound_handshakes_failed",
                      "Inbound connections whose handshake failed", stats.failed)


def _version() -> str:
    try:
        from dscluster import __version__
        return str(__version__)
    except ImportError:
        return "unknown"


def node_metrics(node: DataNode) -> Metrics:
    """A Metrics for ``node``: its scrape-time collector registered, its service counted."""
    metrics = Metrics()
    metrics.registry.register(NodeCollector(node))
    instrument_service(node.service, metrics)
    return metrics

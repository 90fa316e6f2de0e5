"""The status page: the cluster at a glance, read-only, updating live (polling).

Theory of operation
-------------------
``GET /`` is one static page (``PAGE``: HTML, CSS and a little JavaScript,
shipped here as a string: no build step, no CDN). Its script fetches
``/status.json`` every second and redraws: one row per node (state, slots,
keys, bytes, version, addresses), the 16,384-slot map as a strip coloured by
owner (a rebalance shows as colour moving along it), and the migrations in
progress with the keys moved so far.

``/status.json`` is a snapshot (``NodeStatus.snapshot``): the node's own slot
table for the map and the slot counts, and an ``Info`` request to every data
node (the node's own store service for itself, the node's RPC client for the
others, 2 s each, concurrently) for keys, bytes, version and migrations; a
node that does not answer is ``down`` (or ``pfail``/``fail`` as the failure
detector says). Snapshots are cached for a second and built by one task at a
time, so any number of open pages costs the cluster at most one round of
``Info`` per second.

The page needs no token (it holds no data); ``/status.json`` does when the
port has one, and the page sends the token it finds in its URL fragment
(``http://host:port/#token=TOKEN``; fragments never reach the server).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from dscluster.errors import DSClusterError

if TYPE_CHECKING:
    from dscluster.node.daemon import DataNode

INFO_TIMEOUT = 2.0
CACHE_SECONDS = 1.0


class CachedStatus:
    """``build()`` at most once per ``CACHE_SECONDS``, one build at a time."""

    def __init__(self, build: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self._build = build
        self._lock = trio.Lock()
        self._at = -1e9
        self._last: dict[str, Any] = {}

    async def __call__(self) -> dict[str, Any]:
        async with self._lock:
            if trio.current_time() - self._at >= CACHE_SECONDS:
                self._last = await self._build()
                self._at = trio.current_time()
            return self._last


def node_status(node: DataNode) -> CachedStatus:
    """The snapshot builder for a data node's port."""
    async def build() -> dict[str, Any]:
        from dscluster.wire import messages as wm

        core = node.core
        table = core.table
        me = node.peer_id
        peers = sorted(table.data_nodes())
        infos: dict[str, Any] = {}
        errors: dict[str, str] = {}

        async def ask(peer: str) -> None:
            try:
                with trio.fail_after(INFO_TIMEOUT):
                    if peer == me:
                        infos[peer] = await node.service.handle(node.host.peer_id, wm.Info(0))
                    else:
                        infos[peer] = await node.call_peer(peer, wm.Info(0))
            except (DSClusterError, trio.TooSlowError) as exc:
                errors[peer] = str(exc).splitlines()[0] if str(exc) else "no answer"

        async with trio.open_nursery() as nursery:
            for peer in peers:
                nursery.start_soon(ask, peer)
        nodes = []
        for peer in peers:
            info = infos.get(peer)
            if isinstance(info, wm.NodeInfo):
                state = "up"
            else:
                live = core.liveness(peer).value if peer != me else "up"
                state = live if live != "up" else "down"
            nodes.append(_node_row(peer, table.slots_of(peer).ranges, list(table.nodes[peer].addrs)
                                   if peer in table.nodes else [], info, state,
                                   errors.get(peer)))
        owners = {p: i for i, p in enumerate(peers)}
        return _snapshot(me, nodes, _slot_map(table.owner, owners))

    return CachedStatus(build)


def _node_row(peer: str, ranges: Any, addrs: list[str], info: Any, state: str,
              error: str | None) -> dict[str, Any]:
    from dscluster.wire import messages as wm

    row: dict[str, Any] = {"peer": peer, "state": state, "addrs": addrs,
                           "ranges": [list(r) for r in ranges],
                           "slots": sum(e - s + 1 for s, e in ranges),
                           "keys": None, "bytes": None, "version": None, "epoch": None,
                           "migrations": [], "error": error}
    if isinstance(info, wm.NodeInfo):
        row.update(keys=info.key_count if info.key_count >= 0 else None,
                   bytes=info.byte_count if info.byte_count >= 0 else None,
                   version=info.version, epoch=info.epoch, migrations=list(info.migrations))
    return row


def _slot_map(owner: Callable[[int], str | None], owners: dict[str, int]) -> list[list[int]]:
    """Runs [start, end, owner index] over all 16,384 slots (-1: no owner)."""
    runs: list[list[int]] = []
    for slot in range(16384):
        who = owner(slot)
        index = owners.get(who, -1) if who is not None else -1
        if runs and runs[-1][2] == index and runs[-1][1] == slot - 1:
            runs[-1][1] = slot
        else:
            runs.append([slot, slot, index])
    return runs


def _snapshot(me: str | None, nodes: list[dict[str, Any]], slot_map: list[list[int]]
              ) -> dict[str, Any]:
    from dscluster import __version__

    assigned = sum(e - s + 1 for s, e, i in slot_map if i >= 0)
    return {"me": me, "version": __version__, "time": time.time(), "nodes": nodes,
            "slot_map": slot_map,
            "migrations": [{"node": n["peer"], "line": m} for n in nodes
                           for m in n["migrations"]],
            "totals": {"nodes": len(nodes), "up": sum(n["state"] == "up" for n in nodes),
                       "slots_assigned": assigned,
                       "keys": sum(n["keys"] or 0 for n in nodes),
                       "bytes": sum(n["bytes"] or 0 for n in nodes)}}


def client_status(cluster: Any) -> CachedStatus:
    """The snapshot builder for a gateway process: what ``dsclient status`` sees."""
    async def build() -> dict[str, Any]:
        statuses = await cluster.status()
        table = cluster.table
        peers = sorted(s.peer_id for s in statuses)
        nodes = []
        for s in statuses:
            ranges = s.info.slots if s.info is not None else table.ranges_of(s.peer_id)
            nodes.append(_node_row(s.peer_id, ranges, list(s.addrs), s.info,
                                   "up" if s.info is not None else "down",
                                   s.error.strip().splitlines()[0] if s.error.strip() else None))
        nodes.sort(key=lambda n: n["peer"])
        owners = {p: i for i, p in enumerate(peers)}
        by_slot: dict[int, str] = {}
        for n in nodes:
            for start, end in n["ranges"]:
                for slot in range(start, end + 1):
                    by_slot[slot] = n["peer"]
        return _snapshot(None, nodes, _slot_map(by_slot.get, owners))

    return CachedStatus(build)


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ds-cluster status</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.3em; margin: 0 0 .3em; }
#summary { margin: .3em 0 1em; font-size: 1.05em; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .3em .6em; border-bottom: 1px solid #e4e4e4;
         font-size: .9em; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.state { font-weight: 600; }
.up { color: #17803d; } .down, .fail { color: #c0262d; } .pfail { color: #b36b00; }
.swatch { display: inline-block; width: .9em; height: .9em; border-radius: 2px;
          vertical-align: -.1em; margin-right: .4em; }
#strip { width: 100%; height: 40px; display: block; border: 1px solid #ccc; margin: .4em 0; }
code { font-size: .85em; }
#error { color: #c0262d; }
.muted { color: #777; font-size: .85em; }
</style></head>
<body>
<h1>ds-cluster</h1>
<div id="summary" data-nodes="" data-up="" data-slots="">loading&hellip;</div>
<div id="error"></div>
<table><thead><tr><th>node</th><th>state</th><th class="num">slots</th>
<th class="num">keys</th><th class="num">bytes</th><th class="num">epoch</th>
<th>version</th><th>addresses</th></tr></thead><tbody id="nodes"></tbody></table>
<h2 style="font-size:1.05em">slots 0&ndash;16383</h2>
<canvas id="strip" width="1024" height="40"></canvas>
<div class="muted">each colour is a node; grey: no owner</div>
<h2 style="font-size:1.05em">migrations</h2>
<ul id="migrations"><li class="muted">none</li></ul>
<div class="muted" id="updated"></div>
<script>
"use strict";
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const headers = token ? {"Authorization": "Bearer " + token} : {};
function colour(i, n) { return i < 0 ? "#bbb" : "hsl(" + Math.round(360 * i / Math.max(n, 1)) + ",65%,50%)"; }
function human(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"]; let u = 0;
  while (n >= 1024 && u < units.length - 1) { n /= 1024; u++; }
  return (u ? n.toFixed(1) : n) + " " + units[u];
}
function cell(text, cls) {
  const td = document.createElement("td"); td.textContent = text;
  if (cls) td.className = cls; return td;
}
function render(s) {
  const t = s.totals;
  const summary = document.getElementById("summary");
  summary.dataset.nodes = t.nodes; summary.dataset.up = t.up;
  summary.dataset.slots = t.slots_assigned;
  summary.textContent = t.nodes + " nodes, " + t.up + " up, " + t.slots_assigned +
    " of 16384 slots assigned, " + t.keys + " keys, " + human(t.bytes);
  const body = document.getElementById("nodes"); body.replaceChildren();
  s.nodes.forEach((n, i) => {
    const tr = document.createElement("tr"); tr.dataset.peer = n.peer; tr.dataset.state = n.state;
    const name = document.createElement("td");
    const sw = document.createElement("span"); sw.className = "swatch";
    sw.style.background = colour(i, s.nodes.length); name.appendChild(sw);
    const code = document.createElement("code"); code.textContent = n.peer; name.appendChild(code);
    if (n.peer === s.me) name.appendChild(document.createTextNode(" (this node)"));
    tr.appendChild(name);
    const state = cell(n.state, "state " + n.state);
    if (n.error) state.title = n.error;  // the full reason on hover
    tr.appendChild(state);
    tr.appendChild(cell(n.slots, "num slots"));
    tr.appendChild(cell(n.keys === null ? "-" : n.keys, "num"));
    tr.appendChild(cell(human(n.bytes), "num"));
    tr.appendChild(cell(n.epoch === null ? "-" : n.epoch, "num"));
    tr.appendChild(cell(n.version || "-"));
    tr.appendChild(cell(n.addrs.join(" ")));
    body.appendChild(tr);
  });
  const canvas = document.getElementById("strip"); const ctx = canvas.getContext("2d");
  const w = canvas.width / 16384;
  for (const [a, b, i] of s.slot_map) {
    ctx.fillStyle = colour(i, s.nodes.length);
    ctx.fillRect(a * w, 0, Math.max((b - a + 1) * w, 1), canvas.height);
  }
  const list = document.getElementById("migrations"); list.replaceChildren();
  for (const m of s.migrations) {
    const li = document.createElement("li"); li.textContent = m.node.slice(0, 16) + "...: " + m.line;
    list.appendChild(li);
  }
  if (!s.migrations.length) {
    const li = document.createElement("li"); li.className = "muted"; li.textContent = "none";
    list.appendChild(li);
  }
  document.getElementById("updated").textContent = "updated " + new Date(s.time * 1000).toLocaleTimeString();
}
async function poll() {
  try {
    const r = await fetch("status.json", {headers, cache: "no-store"});
    if (!r.ok) throw new Error((await r.text()).trim());
    render(await r.json());
    document.getElementById("error").textContent = "";
  } catch (e) {
    document.getElementById("error").textContent = "cannot read status: " + e.message;
  }
  setTimeout(poll, 1000);
}
poll();
</script>
</body></html>
"""

"""The slot table in config.json form: go-ds-cluster's `nodes` list.

The core (core/table.py) keeps the table and its CBOR form, which raise only
ProtocolError; reading a table out of a config file is the config layer's job
and raises ConfigError. The form written is::

    {"nodes": [{"id": "<peer id>",
                "slots": [{"start": 0, "end": 5460, "epoch": 0}, ...],
                "swarm": ["/ip4/127.0.0.1/tcp/4001", ...],
                "role": "data"}, ...]}

On read, "slots" may also be go-ds-cluster's single ``{"start": a, "end": b}``
object, "epoch" defaults to 0, "swarm" may be one string, "role" defaults to
"data". Client roles are not part of this form (they are cluster state, learnt
by gossip).
"""

from __future__ import annotations

from typing import Any

from dscluster.core.slots import SLOT_COUNT, SlotSet, normalize_ranges
from dscluster.core.table import Claim, NodeInfo, NodeRole, SlotTable
from dscluster.errors import ConfigError


def table_to_config(table: SlotTable) -> list[dict[str, Any]]:
    """The `nodes` list of config.json (see the module docstring)."""
    by_owner: dict[str, list[dict[str, int]]] = {}
    for start, end, epoch, owner in table.runs():
        by_owner.setdefault(owner, []).append({"start": start, "end": end, "epoch": epoch})
    out = []
    for node_id in sorted(set(table.nodes) | (set(by_owner) - {""})):
        info = table.nodes.get(node_id, NodeInfo(node_id))
        out.append({"id": node_id, "slots": by_owner.get(node_id, []),
                    "swarm": list(info.addrs), "role": info.role.value})
    return out


def table_from_config(nodes: Any) -> SlotTable:
    """Read config.json's `nodes`; raises ConfigError on anything malformed."""
    if not isinstance(nodes, list) or not nodes:
        raise ConfigError("config 'nodes' must be a non-empty list")
    claims: list[Claim | None] = [None] * SLOT_COUNT
    infos = []
    for entry in nodes:
        node_id, ranges, swarm, role = _config_node(entry)
        infos.append(NodeInfo(node_id, swarm, role, 1))
        for start, end, epoch in ranges:
            for slot in range(start, end + 1):
                if claims[slot] is not None:
                    raise ConfigError(f"slot {slot} is assigned to two nodes")
                claims[slot] = (epoch, node_id)
    missing = [s for s, c in enumerate(claims) if c is None]
    if missing:
        raise ConfigError(f"config leaves slots unassigned: {SlotSet.from_slots(missing)}")
    if len({i.id for i in infos}) != len(infos):
        raise ConfigError("config lists a node id twice")
    return SlotTable([c for c in claims if c is not None], infos)


def _config_node(entry: Any) -> tuple[str, list[tuple[int, int, int]], tuple[str, ...], NodeRole]:
    if not isinstance(entry, dict):
        raise ConfigError("each config node must be an object")
    node_id = entry.get("id")
    if not isinstance(node_id, str) or not node_id:
        raise ConfigError("config node 'id' must be a non-empty string")
    slots = entry.get("slots", [])
    if isinstance(slots, dict):  # go-ds-cluster writes one {"start", "end"} object
        slots = [slots]
    if not isinstance(slots, list):
        raise ConfigError(f"node {node_id}: 'slots' must be a list or a {{start, end}} object")
    ranges = []
    for item in slots:
        if not isinstance(item, dict):
            raise ConfigError(f"node {node_id}: each slot range must be an object")
        start, end, epoch = item.get("start"), item.get("end"), item.get("epoch", 0)
        if not (type(start) is int and type(end) is int and type(epoch) is int) or epoch < 0:
            raise ConfigError(f"node {node_id}: bad slot range {item!r}")
        try:
            normalize_ranges([(start, end)])
        except ValueError as exc:
            raise ConfigError(f"node {node_id}: {exc}") from exc
        ranges.append((start, end, epoch))
    ordered = sorted(ranges)
    for (a, b, _), (c, d, _) in zip(ordered, ordered[1:], strict=False):
        if c <= b:  # normalize_ranges would merge them silently
            raise ConfigError(f"node {node_id}: slot ranges {a}-{b} and {c}-{d} overlap")
    swarm = entry.get("swarm", [])
    if isinstance(swarm, str):
        swarm = [swarm] if swarm else []
    if not isinstance(swarm, list) or not all(isinstance(a, str) for a in swarm):
        raise ConfigError(f"node {node_id}: 'swarm' must be a string or a list of strings")
    try:
        role = NodeRole(entry.get("role", "data"))
    except ValueError as exc:
        raise ConfigError(f"node {node_id}: unknown role {entry.get('role')!r}") from exc
    return node_id, ranges, tuple(swarm), role

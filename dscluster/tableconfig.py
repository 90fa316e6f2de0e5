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

Copies (doc/copies.md). A node holding replicas of slots lists them as
``"replicas": [{"start": a, "end": b, "copy": i}, ...]``, ``i >= 1`` its place
in the slots' copy sets after the primary (whose ranges are its "slots"). The
cluster setting is the top-level config.json field ``"copies": N``
(`settings_to_config` / `settings_from_config`), absent in go-ds-cluster's
files, which read as copies 1. Both are written only when there is something
to say (replicas held, copies != 1), so a table without copies gives exactly
the go-ds-cluster-compatible form of before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dscluster.core.slots import SLOT_COUNT, SlotSet, normalize_ranges
from dscluster.core.table import (
    DEFAULT_SETTINGS,
    MAX_COPIES,
    Claim,
    ClusterSettings,
    NodeInfo,
    NodeRole,
    SlotTable,
    check_copy_set,
)
from dscluster.errors import ConfigError


def table_to_config(table: SlotTable) -> list[dict[str, Any]]:
    """The `nodes` list of config.json (see the module docstring)."""
    by_owner: dict[str, list[dict[str, int]]] = {}
    held: dict[str, list[dict[str, int]]] = {}
    for start, end, epoch, owner, reps in table.copy_runs():
        slots = by_owner.setdefault(owner, [])
        if slots and slots[-1]["end"] + 1 == start and slots[-1]["epoch"] == epoch:
            slots[-1]["end"] = end  # runs that differ only in replicas: one range here
        else:
            slots.append({"start": start, "end": end, "epoch": epoch})
        for place, node in enumerate(reps, 1):
            ranges = held.setdefault(node, [])
            if ranges and ranges[-1]["end"] + 1 == start and ranges[-1]["copy"] == place:
                ranges[-1]["end"] = end
            else:
                ranges.append({"start": start, "end": end, "copy": place})
    out = []
    for node_id in sorted(set(table.nodes) | (set(by_owner) - {""}) | set(held)):
        info = table.nodes.get(node_id, NodeInfo(node_id))
        entry: dict[str, Any] = {"id": node_id, "slots": by_owner.get(node_id, []),
                                 "swarm": list(info.addrs), "role": info.role.value}
        if node_id in held:  # only then: go-ds-cluster's form stays as it was
            entry["replicas"] = held[node_id]
        out.append(entry)
    return out


def settings_to_config(table: SlotTable) -> dict[str, Any]:
    """The top-level config.json fields for the table's settings: {} while copies is 1."""
    return {} if table.settings.copies == 1 else {"copies": table.settings.copies}


def settings_from_config(doc: Mapping[str, Any]) -> ClusterSettings:
    """Read the top-level "copies" of a config.json object (absent: 1); ConfigError."""
    copies = doc.get("copies", 1)
    if type(copies) is not int or not 1 <= copies <= MAX_COPIES:
        raise ConfigError(f"config 'copies' must be an integer from 1 to {MAX_COPIES}")
    return ClusterSettings(copies, 0)  # version 0: any change made later wins


def table_from_config(nodes: Any, settings: ClusterSettings = DEFAULT_SETTINGS) -> SlotTable:
    """Read config.json's `nodes`; raises ConfigError on anything malformed."""
    if not isinstance(nodes, list) or not nodes:
        raise ConfigError("config 'nodes' must be a non-empty list")
    claims: list[Claim | None] = [None] * SLOT_COUNT
    places: dict[int, dict[int, str]] = {}  # slot -> place in its copy set -> node
    infos = []
    for entry in nodes:
        node_id, ranges, swarm, role = _config_node(entry)
        infos.append(NodeInfo(node_id, swarm, role, 1))
        for start, end, epoch in ranges:
            for slot in range(start, end + 1):
                if claims[slot] is not None:
                    raise ConfigError(f"slot {slot} is assigned to two nodes")
                claims[slot] = (epoch, node_id)
        for start, end, place in _config_replicas(node_id, entry):
            for slot in range(start, end + 1):
                if places.setdefault(slot, {}).setdefault(place, node_id) != node_id:
                    raise ConfigError(f"slot {slot} has two copies numbered {place}")
    missing = [s for s, c in enumerate(claims) if c is None]
    if missing:
        raise ConfigError(f"config leaves slots unassigned: {SlotSet.from_slots(missing)}")
    if len({i.id for i in infos}) != len(infos):
        raise ConfigError("config lists a node id twice")
    replicas: dict[int, tuple[str, ...]] = {}
    for slot, by_place in places.items():
        if sorted(by_place) != list(range(1, len(by_place) + 1)):
            raise ConfigError(f"slot {slot}: replica copies must be numbered 1, 2, ... "
                              f"without gaps, got {sorted(by_place)}")
        reps = tuple(by_place[p] for p in sorted(by_place))
        owner = claims[slot][1]  # type: ignore[index]  # every slot is claimed (above)
        try:
            check_copy_set(owner, reps)
        except ValueError as exc:
            raise ConfigError(f"slot {slot}: {exc}") from exc
        replicas[slot] = reps
    return SlotTable([c for c in claims if c is not None], infos, (), replicas, settings)


def _config_replicas(node_id: str, entry: dict[str, Any]) -> list[tuple[int, int, int]]:
    raw = entry.get("replicas", [])
    if not isinstance(raw, list):
        raise ConfigError(f"node {node_id}: 'replicas' must be a list")
    out = []
    for item in raw:
        if not isinstance(item, dict):
            raise ConfigError(f"node {node_id}: each replica range must be an object")
        start, end, place = item.get("start"), item.get("end"), item.get("copy")
        if not (type(start) is int and type(end) is int and type(place) is int
                and 0 <= start <= end < SLOT_COUNT and 1 <= place < MAX_COPIES):
            raise ConfigError(f"node {node_id}: bad replica range {item!r}")
        out.append((start, end, place))
    return out


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

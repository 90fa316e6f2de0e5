"""Node and client configs: go-ds-cluster's config.json, plus our fields.

Theory of operation: a config is a frozen dataclass read from and written to
JSON with go-ds-cluster's field names (``identity.peer_id``, ``identity.sk``,
``addresses.swarm``, ``nodes[].id/slots/swarm``, ``disable_delete``,
``read_only_client``, ``bootstrap_node``, ``identity_list``), so either
project reads the other's files. Our additions are extra keys Go ignores:
``datastore`` (kind, path, mongodb_uri), ``join_secret_file``, the copies
(``copies`` and ``nodes[].replicas``, doc/copies.md) and, for clients,
``bootstrap_addrs``.

Loading validates everything up front and raises ``ConfigError`` naming the
file and the field (``config.json: nodes[1].slots: ...``). A node's ``slots``
is go-ds-cluster's single ``{"start": a, "end": b}`` or our list of such
ranges (a node owns several after a rebalance); both load as normalized
inclusive ranges (adjacent ones merged; overlapping ones are a ConfigError
naming the node and both ranges) and save back as a single object when there
is one range.
Files holding keys or secrets are written 0600, atomically (temp + rename).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dscluster.core.slots import SLOT_COUNT, Range, normalize_ranges
from dscluster.core.table import MAX_COPIES, ClusterSettings
from dscluster.errors import ConfigError

if TYPE_CHECKING:
    from dscluster.core.table import SlotTable
    from dscluster.net.host import Identity

# py-libp2p loads only when a key or address is checked (dscluster.net.host), so
# that `--help` and `--version` of the commands that import this stay fast.


def parse_multiaddr(text: str) -> object:
    from dscluster.net.host import parse_multiaddr as parse

    return parse(text)


def parse_peer_id(text: str) -> object:
    from dscluster.net.host import parse_peer_id as parse

    return parse(text)


def _identity_of(sk: str) -> Identity:
    from dscluster.net.host import Identity

    return Identity.from_base64(sk)

CONFIG_JSON = "config.json"  # go-ds-cluster's DefaultConfigJson
JOIN_SECRET_FILE = "join.secret"
DATASTORE_KINDS = ("flatfs", "leveldb", "hybrid", "mongo", "memory")
# The node's embedded default, chosen by measurement (doc/datastores.md, "Choosing
# the node's default"): within a small factor of the best at 256 KiB blocks,
# one to two orders of magnitude ahead of flatfs at 4 KiB values.
DEFAULT_DATASTORE = "leveldb"


@dataclass(frozen=True)
class IdentityConfig:
    peer_id: str
    sk: str  # base64 of the libp2p protobuf private key, as Go writes []byte

    def identity(self) -> Identity:
        return _identity_of(self.sk)

    @classmethod
    def of(cls, identity: Identity) -> IdentityConfig:
        return cls(identity.peer_id_str, identity.to_base64())

    @classmethod
    def generate(cls) -> IdentityConfig:
        from dscluster.net.host import Identity

        return cls.of(Identity.generate())


@dataclass(frozen=True)
class NodeEntry:
    """One cluster member as the config lists it."""

    id: str
    slots: tuple[Range, ...]
    swarm: tuple[str, ...] = ()
    replicas: tuple[tuple[int, int, int], ...] = ()  # (start, end, place in the copy sets)


@dataclass(frozen=True)
class DatastoreConfig:
    kind: str = DEFAULT_DATASTORE
    path: str = "datastore"  # relative to the config directory
    mongodb_uri: str = ""
    sync: bool = False  # acknowledge writes only once they survive power loss (dscluster --sync)


@dataclass(frozen=True)
class NodeConfig:
    identity: IdentityConfig
    swarm: tuple[str, ...]  # addresses.swarm: where this node listens
    nodes: tuple[NodeEntry, ...] = ()
    disable_delete: bool = False
    read_only_client: bool = False
    bootstrap_node: bool = False
    identity_list: tuple[IdentityConfig, ...] = ()  # bootstrap node only: others' keys
    datastore: DatastoreConfig = field(default_factory=DatastoreConfig)
    join_secret_file: str = ""  # relative to the config directory
    copies: int = 1  # the cluster's copies setting (doc/copies.md); absent in go-ds-cluster's


@dataclass(frozen=True)
class ClientConfig:
    identity: IdentityConfig
    swarm: tuple[str, ...] = ()
    nodes: tuple[NodeEntry, ...] = ()
    read_only_client: bool = False
    bootstrap_addrs: tuple[str, ...] = ()  # full /p2p/ multiaddrs of cluster nodes


# -- reading ---------------------------------------------------------------------------


_JSON_NAMES: dict[Any, str] = {
    str: "a string", int: "an integer", bool: "true or false", list: "an array",
    dict: "an object", float: "a number", (dict, list): "an object or an array of objects",
}


class _Fields:
    """Typed access to a JSON object; errors name the file and the field path."""

    def __init__(self, source: str, obj: Any, path: str = "") -> None:
        self.source = source
        self.path = path
        if not isinstance(obj, dict):
            self.fail(f"expected an object, got {_JSON_NAMES.get(type(obj), 'null')}")
        self.obj: dict[str, Any] = obj

    def fail(self, message: str, name: str = "") -> Any:
        where = ".".join(p for p in (self.path, name) if p) or "top level"
        raise ConfigError(f"{self.source}: {where}: {message}")

    def get(self, name: str, kind: Any, default: Any = None) -> Any:
        if name not in self.obj or self.obj[name] is None:
            if default is None:
                self.fail("missing", name)
            return default
        value = self.obj[name]
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            want = _JSON_NAMES.get(kind, "a value of another type")
            self.fail(f"expected {want}, got {_JSON_NAMES.get(type(value), 'null')}", name)
        return value

    def sub(self, name: str, required: bool = True) -> _Fields:
        default: dict[str, Any] | None = None if required else {}
        return _Fields(self.source, self.get(name, dict, default), self._child(name))

    def items(self, name: str, required: bool = False) -> list[tuple[str, Any]]:
        seq = self.get(name, list, None if required else [])
        return [(f"{self._child(name)}[{i}]", item) for i, item in enumerate(seq)]

    def strings(self, name: str, check: Callable[[str], object] | None = None) -> tuple[str, ...]:
        out = []
        for where, item in self.items(name):
            if not isinstance(item, str):
                raise ConfigError(f"{self.source}: {where}: expected a string")
            if check is not None:
                try:
                    check(item)
                except ConfigError as exc:
                    raise ConfigError(f"{self.source}: {where}: {exc}") from None
            out.append(item)
        return tuple(out)

    def _child(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name


def _identity(f: _Fields) -> IdentityConfig:
    peer_id = f.get("peer_id", str)
    sk = f.get("sk", str)
    try:
        ident = _identity_of(sk)
    except ConfigError as exc:
        f.fail(str(exc), "sk")
    if ident.peer_id_str != peer_id:
        f.fail(f"does not match the key in sk (which is {ident.peer_id_str})", "peer_id")
    return IdentityConfig(peer_id, sk)


def _slots(source: str, where: str, raw: Any, node_id: str = "") -> tuple[Range, ...]:
    items = raw if isinstance(raw, list) else [raw]
    ranges = []
    for item in items:
        f = _Fields(source, item, where)
        ranges.append((f.get("start", int), f.get("end", int)))
    try:
        normalized = normalize_ranges(ranges)
    except ValueError as exc:
        raise ConfigError(f"{source}: {where}: {exc} (slots are 0..{SLOT_COUNT - 1})") from None
    overlap = _overlap(ranges)
    if overlap is not None:  # adjacent ranges merge; overlapping ones are a mistake
        (a, b), (c, d) = overlap
        node = f"node {node_id}: " if node_id else ""
        raise ConfigError(f"{source}: {where}: {node}slot ranges {a}-{b} and {c}-{d} overlap")
    return normalized


def _overlap(ranges: list[Range]) -> tuple[Range, Range] | None:
    """The first two of ``ranges`` (valid inclusive ranges) sharing a slot, else None."""
    ordered = sorted(ranges)  # if any two overlap, two neighbours in start order do
    return next(((r, s) for r, s in zip(ordered, ordered[1:], strict=False) if s[0] <= r[1]),
                None)


def _nodes(f: _Fields) -> tuple[NodeEntry, ...]:
    nodes: list[NodeEntry] = []
    owner: dict[int, str] = {}
    for where, item in f.items("nodes"):
        nf = _Fields(f.source, item, where)
        node_id = nf.get("id", str)
        try:
            parse_peer_id(node_id)
        except ConfigError as exc:
            nf.fail(str(exc), "id")
        slots = _slots(f.source, f"{where}.slots", nf.get("slots", (dict, list)), node_id)
        for start, end in slots:
            for s in range(start, end + 1):
                if s in owner:
                    nf.fail(f"slot {s} is also owned by {owner[s]}", "slots")
                owner[s] = node_id
        nodes.append(NodeEntry(node_id, slots, nf.strings("swarm", parse_multiaddr),
                               _replicas(nf)))
    if len({n.id for n in nodes}) != len(nodes):
        f.fail("the same node id is listed twice", "nodes")
    return tuple(nodes)


def _replicas(nf: _Fields) -> tuple[tuple[int, int, int], ...]:
    """A node's "replicas": [{"start", "end", "copy"}] (dscluster/tableconfig.py)."""
    out = []
    for where, item in nf.items("replicas"):
        rf = _Fields(nf.source, item, where)
        start, end, place = rf.get("start", int), rf.get("end", int), rf.get("copy", int)
        if not 0 <= start <= end < SLOT_COUNT:
            rf.fail(f"bad range {start}-{end} (slots are 0..{SLOT_COUNT - 1})")
        if not 1 <= place < MAX_COPIES:
            rf.fail(f"must be from 1 to {MAX_COPIES - 1} (the primary is copy 0)", "copy")
        out.append((start, end, place))
    return tuple(out)


def _copies(f: _Fields) -> int:
    copies = f.get("copies", int, 1)
    if not 1 <= copies <= MAX_COPIES:
        f.fail(f"must be from 1 to {MAX_COPIES}", "copies")
    return copies


def _read_json(path: Path) -> tuple[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from None
    try:
        return str(path), json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None


def config_file(path: str | os.PathLike[str]) -> Path:
    """A config directory means its config.json; a file is itself."""
    p = Path(path).expanduser()
    return p / CONFIG_JSON if p.is_dir() else p


def load_node_config(path: str | os.PathLike[str]) -> NodeConfig:
    source, raw = _read_json(config_file(path))
    f = _Fields(source, raw)
    ds = f.sub("datastore", required=False)
    kind = ds.get("kind", str, DEFAULT_DATASTORE)
    if kind not in DATASTORE_KINDS:
        ds.fail(f"unknown kind {kind!r}; use one of {', '.join(DATASTORE_KINDS)}", "kind")
    uri = ds.get("mongodb_uri", str, "")
    if kind == "mongo" and not uri:
        ds.fail("required when kind is mongo", "mongodb_uri")
    cfg = NodeConfig(
        identity=_identity(f.sub("identity")),
        swarm=f.sub("addresses").strings("swarm", parse_multiaddr),
        nodes=_nodes(f),
        disable_delete=f.get("disable_delete", bool, False),
        read_only_client=f.get("read_only_client", bool, False),
        bootstrap_node=f.get("bootstrap_node", bool, False),
        identity_list=tuple(_identity(_Fields(source, item, where))
                            for where, item in f.items("identity_list")),
        datastore=DatastoreConfig(kind, ds.get("path", str, "datastore"), uri,
                                  ds.get("sync", bool, False)),
        join_secret_file=f.get("join_secret_file", str, ""),
        copies=_copies(f),
    )
    if any(n.replicas for n in cfg.nodes):  # copy sets must be whole: check them now
        try:
            table_of(cfg)
        except ConfigError as exc:
            f.fail(str(exc), "nodes")
    if not cfg.swarm:
        f.fail("a node needs at least one listen address", "addresses.swarm")
    if cfg.bootstrap_node and not cfg.identity_list:
        f.fail("a bootstrap node must hold the cluster's identities", "identity_list")
    return cfg


def load_client_config(path: str | os.PathLike[str]) -> ClientConfig:
    source, raw = _read_json(config_file(path))
    f = _Fields(source, raw)
    return ClientConfig(
        identity=_identity(f.sub("identity")),
        swarm=f.sub("addresses", required=False).strings("swarm", parse_multiaddr),
        nodes=_nodes(f),
        read_only_client=f.get("read_only_client", bool, False),
        bootstrap_addrs=f.strings("bootstrap_addrs", parse_multiaddr),
    )


# -- writing ---------------------------------------------------------------------------


def _slots_json(slots: tuple[Range, ...]) -> Any:
    ranges = [{"start": s, "end": e} for s, e in slots]
    return ranges[0] if len(ranges) == 1 else ranges


def _nodes_json(nodes: tuple[NodeEntry, ...]) -> list[dict[str, Any]]:
    return [{"id": n.id, "slots": _slots_json(n.slots), "swarm": list(n.swarm),
             **({"replicas": [{"start": a, "end": b, "copy": c} for a, b, c in n.replicas]}
                if n.replicas else {})}  # only then: go-ds-cluster's form stays as it was
            for n in nodes]


def _identity_json(i: IdentityConfig) -> dict[str, str]:
    return {"peer_id": i.peer_id, "sk": i.sk}


def node_config_json(cfg: NodeConfig) -> dict[str, Any]:
    return {
        "identity": _identity_json(cfg.identity),
        "addresses": {"swarm": list(cfg.swarm)},
        "nodes": _nodes_json(cfg.nodes),
        "disable_delete": cfg.disable_delete,
        "read_only_client": cfg.read_only_client,
        "bootstrap_node": cfg.bootstrap_node,
        "identity_list": [_identity_json(i) for i in cfg.identity_list],
        "datastore": {"kind": cfg.datastore.kind, "path": cfg.datastore.path,
                      "mongodb_uri": cfg.datastore.mongodb_uri,
                      **({"sync": True} if cfg.datastore.sync else {})},
        "join_secret_file": cfg.join_secret_file,
        **({"copies": cfg.copies} if cfg.copies != 1 else {}),
    }


def client_config_json(cfg: ClientConfig) -> dict[str, Any]:
    return {
        "identity": _identity_json(cfg.identity),
        "addresses": {"swarm": list(cfg.swarm)},
        "nodes": _nodes_json(cfg.nodes),
        "read_only_client": cfg.read_only_client,
        "bootstrap_addrs": list(cfg.bootstrap_addrs),
    }


def write_private_file(path: str | os.PathLike[str], data: str) -> None:
    """Write ``data`` to ``path`` readable by its owner only (0600), atomically."""
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise ConfigError(f"{target}: cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ConfigError(f"{target}: cannot write: {exc.strerror}") from None


def save_config(cfg: NodeConfig | ClientConfig, path: str | os.PathLike[str]) -> Path:
    """Write a config (it holds a private key: 0600, atomic); returns the file written."""
    target = Path(path).expanduser()
    if target.is_dir():
        target = target / CONFIG_JSON
    doc = node_config_json(cfg) if isinstance(cfg, NodeConfig) else client_config_json(cfg)
    write_private_file(target, json.dumps(doc, indent="\t") + "\n")
    return target


def read_join_secret(cfg: NodeConfig, config_dir: str | os.PathLike[str]) -> str:
    """The join secret a node config refers to; ConfigError if it has none or it is unreadable."""
    if not cfg.join_secret_file:
        raise ConfigError("join_secret_file: this config names no join secret")
    path = Path(config_dir) / cfg.join_secret_file
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the join secret: {exc.strerror}") from None
    if not secret:
        raise ConfigError(f"{path}: the join secret is empty")
    return secret


def table_of(cfg: NodeConfig) -> SlotTable:
    """The slot table a node config describes (every node's slots, copies and addresses)."""
    from dscluster.tableconfig import table_from_config

    return table_from_config([
        {"id": n.id, "slots": [{"start": s, "end": e} for s, e in n.slots], "swarm": list(n.swarm),
         "replicas": [{"start": a, "end": b, "copy": c} for a, b, c in n.replicas]}
        for n in cfg.nodes], ClusterSettings(cfg.copies, 0))

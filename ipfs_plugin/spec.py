"""Kubo's ``Datastore.Spec``: parse it, then open the datastore tree it describes.

Theory of operation. A Kubo repo's config names its datastore as a tree of
specs, each a JSON object with a ``type``:

    mount     {"mounts": [{"mountpoint": "/blocks", <child spec fields>}, ...]}
    measure   {"prefix": "...", "child": {...}}          metrics only: a pass-through
    flatfs    {"path": "blocks", "shardFunc": "/repo/flatfs/shard/v1/next-to-last/2",
               "sync": true}
    levelds   {"path": "datastore", "compression": "none"}
    clusterds {"cfg": "clusterds.json"}                   go-ds-cluster's plugin

Loading is two steps. ``parse_spec`` is pure: it checks the whole tree and
returns frozen values, and every mistake is a ConfigError naming where it is
(``Datastore.Spec.mounts[0].child.path: missing``), before anything is opened.
``open_spec`` then opens the leaves (paths relative to the repo) and mounts
them; if one fails, those already open are closed again. Types other than the
built-in ones (``clusterds``: the cluster client) are opened by factories
registered with ``register_datastore_type``; the spec is checked for them
only as far as "type" goes, the factory checks its own fields. ``clusterds``
registers itself on first use: its module (and the cluster client under it)
is imported only when a spec names it.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dscluster.datastore.base import Datastore
from dscluster.datastore.flatfs import DEFAULT_SHARD, FlatfsDatastore, ShardFunc
from dscluster.datastore.key import Key
from dscluster.datastore.leveldb import LevelDatastore
from dscluster.datastore.mount import MountDatastore
from dscluster.errors import ConfigError

logger = logging.getLogger(__name__)

SPEC_PATH = "Datastore.Spec"
LEVELDB_COMPRESSIONS = ("", "none", "snappy")


@dataclass(frozen=True)
class FlatfsSpec:
    path: str
    shard: ShardFunc = DEFAULT_SHARD
    sync: bool = True


@dataclass(frozen=True)
class LeveldsSpec:
    path: str
    compression: str = "none"


@dataclass(frozen=True)
class MeasureSpec:
    prefix: str
    child: Spec


@dataclass(frozen=True)
class MountSpec:
    mounts: tuple[tuple[str, Spec], ...]  # (mountpoint, child), as given


@dataclass(frozen=True)
class PluginSpec:
    """A type opened by a registered factory (e.g. clusterds); params as written."""

    type: str
    params: Mapping[str, Any]
    where: str


Spec = FlatfsSpec | LeveldsSpec | MeasureSpec | MountSpec | PluginSpec


@dataclass(frozen=True)
class SpecContext:
    """What a factory needs besides its params: the repo and where it is in the spec."""

    repo: Path
    where: str

    def resolve(self, path: str) -> Path:
        return self.repo / path

    def error(self, field: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where}.{field}: {problem}")


DatastoreFactory = Callable[[Mapping[str, Any], SpecContext], Awaitable[Datastore]]
_factories: dict[str, DatastoreFactory] = {}
# Types whose module registers them when imported: loaded on first use, so
# reading a spec costs no client imports, and no cycle (they import this module).
_LAZY_TYPES = {"clusterds": ("ipfs_plugin.clusterds", "open_clusterds")}


def register_datastore_type(name: str, factory: DatastoreFactory) -> None:
    """Let specs use ``{"type": name, ...}``; the factory opens it (later ones replace)."""
    _factories[name] = factory


def datastore_factory(name: str) -> DatastoreFactory | None:
    """The factory for a type, importing the module of a lazily registered one."""
    if name not in _factories and name in _LAZY_TYPES:
        module, attribute = _LAZY_TYPES[name]
        _factories[name] = getattr(importlib.import_module(module), attribute)
    return _factories.get(name)


# -- parsing -------------------------------------------------------------------


def _field(spec: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in spec:
        raise ConfigError(f"{where}.{name}: missing")
    value = spec[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}.{name}: expected {kind.__name__}, got {value!r}")
    return value


def _optional(spec: Mapping[str, Any], name: str, kind: type, where: str, default: Any) -> Any:
    return _field(spec, name, kind, where) if name in spec else default


def _relative_path(spec: Mapping[str, Any], where: str) -> str:
    path = _field(spec, "path", str, where)
    if not path:
        raise ConfigError(f"{where}.path: empty")
    return path


def parse_spec(spec: Any, where: str = SPEC_PATH) -> Spec:
    """Check a spec tree and return it as frozen values; ConfigError names the bad field."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected an object, got {spec!r}")
    kind = _field(spec, "type", str, where)
    if kind == "mount":
        mounts = _field(spec, "mounts", list, where)
        if not mounts:
            raise ConfigError(f"{where}.mounts: empty")
        parsed: list[tuple[str, Spec]] = []
        for i, entry in enumerate(mounts):
            at = f"{where}.mounts[{i}]"
            if not isinstance(entry, Mapping):
                raise ConfigError(f"{at}: expected an object, got {entry!r}")
            mountpoint = _field(entry, "mountpoint", str, at)
            if not mountpoint.startswith("/"):
                raise ConfigError(f"{at}.mountpoint: must start with '/', got {mountpoint!r}")
            if any(Key(mountpoint) == Key(m) for m, _ in parsed):
                raise ConfigError(f"{at}.mountpoint: {mountpoint!r} is mounted twice")
            child = {k: v for k, v in entry.items() if k != "mountpoint"}
            parsed.append((str(Key(mountpoint)), parse_spec(child, at)))
        return MountSpec(tuple(parsed))
    if kind == "measure":
        prefix = _field(spec, "prefix", str, where)
        return MeasureSpec(prefix, parse_spec(_field(spec, "child", Mapping, where), f"{where}.child"))
    if kind == "flatfs":
        shard_text = _optional(spec, "shardFunc", str, where, str(DEFAULT_SHARD))
        try:
            shard = ShardFunc.parse(shard_text)
        except ConfigError as exc:
            raise ConfigError(f"{where}.shardFunc: {exc}") from exc
        sync = _optional(spec, "sync", bool, where, True)
        return FlatfsSpec(_relative_path(spec, where), shard, sync)
    if kind == "levelds":
        compression = _optional(spec, "compression", str, where, "none")
        if compression not in LEVELDB_COMPRESSIONS:
            raise ConfigError(
                f"{where}.compression: expected one of 'none', 'snappy', got {compression!r}"
            )
        return LeveldsSpec(_relative_path(spec, where), compression or "none")
    params = {k: v for k, v in spec.items() if k != "type"}
    return PluginSpec(kind, params, where)


# -- opening -------------------------------------------------------------------


async def open_spec(spec: Spec, repo: str | Path) -> Datastore:
    """Open the datastore tree a parsed spec describes, paths relative to repo."""
    repo = Path(repo)
    if isinstance(spec, MeasureSpec):
        return await open_spec(spec.child, repo)  # metrics are not ours to keep
    if isinstance(spec, FlatfsSpec):
        return FlatfsDatastore(repo / spec.path, spec.shard, spec.sync)
    if isinstance(spec, LeveldsSpec):
        # LevelDB records compression per block, so any setting reads the same
        # data; new blocks are written uncompressed (LevelDatastore's choice).
        return LevelDatastore(repo / spec.path)
    if isinstance(spec, PluginSpec):
        factory = datastore_factory(spec.type)
        if factory is None:
            known = ", ".join(sorted({"mount", "measure", "flatfs", "levelds", *_factories,
                                      *_LAZY_TYPES}))
            raise ConfigError(
                f"{spec.where}.type: unknown datastore type {spec.type!r} (known: {known})"
            )
        return await factory(spec.params, SpecContext(repo, spec.where))
    opened: list[tuple[Key, Datastore]] = []
    try:
        for mountpoint, child in spec.mounts:
            opened.append((Key(mountpoint), await open_spec(child, repo)))
        return MountDatastore(opened)
    except BaseException:
        for _, store in opened:
            await store.close()
        raise


def blocks_spec(spec: Spec) -> Spec:
    """The part of a spec that holds blocks: Kubo keeps them under /blocks.

    A block's key there is what dscluster.blocks.block_key gives ("/" + base32
    of the multihash), so the bitswap node serves the child mounted at /blocks.
    A spec that mounts nothing at /blocks is returned whole.
    """
    if isinstance(spec, MeasureSpec):
        return blocks_spec(spec.child)
    if isinstance(spec, MountSpec):
        for mountpoint, child in spec.mounts:
            if mountpoint == "/blocks":
                return child
    return spec


def read_kubo_spec(repo: str | Path) -> Spec:
    """The parsed ``Datastore.Spec`` of a Kubo repo's ``config`` file."""
    path = Path(repo) / "config"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"no Kubo config at {path}") from exc
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read Kubo config {path}: {exc}") from exc
    if not isinstance(config, Mapping):
        raise ConfigError(f"{path}: expected a JSON object")
    datastore = config.get("Datastore")
    if not isinstance(datastore, Mapping) or "Spec" not in datastore:
        raise ConfigError(f"{path}: {SPEC_PATH}: missing")
    return parse_spec(datastore["Spec"])


async def open_kubo_datastore(repo: str | Path) -> Datastore:
    """Open the datastore a Kubo repo's config describes."""
    return await open_spec(read_kubo_spec(repo), repo)

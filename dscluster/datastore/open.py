"""Open a node's datastore backend by name (what ``dscluster --datastore KIND`` runs on)."""

from __future__ import annotations

import os

from dscluster.config import DATASTORE_KINDS
from dscluster.datastore.base import Datastore
from dscluster.datastore.memory import MemoryDatastore
from dscluster.errors import ConfigError


def open_datastore(kind: str, conf_dir: str, path: str, mongodb: str, peer_id: str,
                   sync: bool = False) -> Datastore:
    """The node's backend; ``sync`` makes an acknowledged write survive power loss
    (LevelDB fsyncs its log per write, MongoDB journals it: j=true; flatfs always syncs)."""
    if kind not in DATASTORE_KINDS:
        raise ConfigError(f"--datastore {kind!r}: use one of {', '.join(DATASTORE_KINDS)}")
    where = os.path.join(conf_dir, path)
    if kind == "leveldb":
        from dscluster.datastore.leveldb import LevelDatastore

        return LevelDatastore(where, sync=sync)
    if kind == "flatfs":  # the daemon keeps its slot index beside it (node/slotindex.py)
        from dscluster.datastore.flatfs import FlatfsDatastore

        return FlatfsDatastore(where)
    if kind == "hybrid":  # block keys in flatfs (synced), every other key in LevelDB
        from dscluster.datastore.flatfs import FlatfsDatastore
        from dscluster.datastore.hybrid import HybridDatastore
        from dscluster.datastore.leveldb import LevelDatastore

        return HybridDatastore(FlatfsDatastore(os.path.join(where, "blocks")),
                               LevelDatastore(os.path.join(where, "leveldb"), sync=sync))
    if kind == "mongo":
        if not mongodb:
            raise ConfigError("--datastore mongo needs --mongodb URI")
        from dscluster.datastore.mongo import MongoDatastore

        # One collection per node: several nodes may share one MongoDB server.
        return MongoDatastore(mongodb, "dscluster", f"node-{peer_id}", sync=sync)
    return MemoryDatastore()


def write_mode(kind: str, sync: bool) -> str:
    """What an acknowledgement of this backend survives, for the start-up line."""
    if kind == "memory":
        return "memory only"
    return "synced" if sync or kind == "flatfs" else "unsynced"

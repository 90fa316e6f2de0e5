"""Datastores: keys, queries, the async Datastore contract, backends and wrappers.

The names below are imported on first use (PEP 562), so that importing one
light module such as ``dscluster.datastore.key`` (``dsclient hashslot``) does
not load trio and every wrapper.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dscluster.datastore.base import Batch, BatchOp, BlockingDatastore, Datastore
    from dscluster.datastore.key import Key
    from dscluster.datastore.memory import MemoryDatastore
    from dscluster.datastore.mount import MountDatastore
    from dscluster.datastore.namespace import (
        KeyTransformDatastore,
        NamespaceDatastore,
        PrefixTransform,
    )
    from dscluster.datastore.query import (
        Entry,
        FilterKeyCompare,
        FilterKeyPrefix,
        FilterValueCompare,
        OrderByKey,
        OrderByKeyDescending,
        OrderByValue,
        OrderByValueDescending,
        Query,
        Results,
        naive_query,
    )
    from dscluster.datastore.sync import SyncDatastore

_HOME = {
    "Batch": "base", "BatchOp": "base", "BlockingDatastore": "base", "Datastore": "base",
    "Key": "key", "MemoryDatastore": "memory", "MountDatastore": "mount",
    "KeyTransformDatastore": "namespace", "NamespaceDatastore": "namespace",
    "PrefixTransform": "namespace", "SyncDatastore": "sync",
    **{name: "query" for name in (
        "Entry", "FilterKeyCompare", "FilterKeyPrefix", "FilterValueCompare", "OrderByKey",
        "OrderByKeyDescending", "OrderByValue", "OrderByValueDescending", "Query", "Results",
        "naive_query")},
}
__all__ = [
    "Batch",
    "BatchOp",
    "BlockingDatastore",
    "Datastore",
    "Entry",
    "FilterKeyCompare",
    "FilterKeyPrefix",
    "FilterValueCompare",
    "Key",
    "KeyTransformDatastore",
    "MemoryDatastore",
    "MountDatastore",
    "NamespaceDatastore",
    "OrderByKey",
    "OrderByKeyDescending",
    "OrderByValue",
    "OrderByValueDescending",
    "PrefixTransform",
    "Query",
    "Results",
    "SyncDatastore",
    "naive_query",
]


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'dscluster.datastore' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"dscluster.datastore.{_HOME[name]}"), name)
    globals()[name] = value
    return value

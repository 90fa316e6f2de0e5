"""Datastores: keys, queries, the async Datastore contract, backends and wrappers."""

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

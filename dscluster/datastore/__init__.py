"""Datastores: keys, queries, the async Datastore contract, backends and wrappers."""

from dscluster.datastore.base import Batch, BatchOp, BlockingDatastore, Datastore
from dscluster.datastore.key import Key
from dscluster.datastore.memory import MemoryDatastore
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
    "MemoryDatastore",
    "OrderByKey",
    "OrderByKeyDescending",
    "OrderByValue",
    "OrderByValueDescending",
    "Query",
    "Results",
    "naive_query",
]

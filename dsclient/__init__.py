"""dsclient: the ds-cluster client library (async and blocking) and the dsclient CLI.

The names below are imported on first use (PEP 562): the CLI's ``--help`` and
``hashslot`` import this package without paying for py-libp2p.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dsclient.api import AsyncClient, Client
    from dsclient.client import ClientOptions, ClusterClient, open_cluster_client

__all__ = ["AsyncClient", "Client", "ClientOptions", "ClusterClient", "open_cluster_client"]
_HOME = {"AsyncClient": "dsclient.api", "Client": "dsclient.api",
         "ClientOptions": "dsclient.client", "ClusterClient": "dsclient.client",
         "open_cluster_client": "dsclient.client"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'dsclient' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value

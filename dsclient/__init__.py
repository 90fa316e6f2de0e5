"""dsclient: the ds-cluster client library (async and blocking) and the dsclient CLI."""

from dsclient.api import AsyncClient, Client
from dsclient.client import ClientOptions, ClusterClient, open_cluster_client

__all__ = ["AsyncClient", "Client", "ClientOptions", "ClusterClient", "open_cluster_client"]

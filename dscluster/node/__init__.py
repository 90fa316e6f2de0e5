"""The data-node daemon: the cluster core driven over libp2p, a datastore, the store service."""

from dscluster.node.daemon import DataNode, NodeSettings, run_data_node

__all__ = ["DataNode", "NodeSettings", "run_data_node"]

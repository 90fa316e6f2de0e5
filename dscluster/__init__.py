"""ds-cluster: a peer-to-peer sharded key-value datastore cluster for IPFS data."""

__version__ = "0.1.0"

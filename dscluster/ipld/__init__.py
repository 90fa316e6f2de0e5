"""IPLD formats shared by the client's UnixFS code and the ipfs_plugin.

Small and dependency-light on purpose (multiformats only): ``protobuf`` reads
and writes the protobuf wire format by hand, ``dagpb`` is the dag-pb node
codec built on it, ``cids`` the fast paths for the CID shapes a UnixFS DAG
uses. Malformed input raises ProtocolError from dscluster.errors.
"""

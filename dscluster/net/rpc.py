"""Request/response over long-lived libp2p streams: the names, re-exported.

The work is split by job: ``dscluster.net.framed`` (frames and messages on a
stream), ``dscluster.net.rpc_server``, ``dscluster.net.rpc_client`` and
``dscluster.net.rpc_limits``. New code imports from those; this module keeps
the older imports working.
"""

from __future__ import annotations

from dscluster.net.framed import FramedStream
from dscluster.net.rpc_client import RpcClient, open_rpc_client
from dscluster.net.rpc_limits import STRANGER_FRAME_TIMEOUT, RpcLimits
from dscluster.net.rpc_server import RpcServer, Service, reject_stream, serve_rpc

__all__ = [
    "STRANGER_FRAME_TIMEOUT", "FramedStream", "RpcClient", "RpcLimits", "RpcServer", "Service",
    "open_rpc_client", "reject_stream", "serve_rpc",
]

"""The node's HTTP port: an IPFS path and trustless gateway, /metrics and /healthz.

app.py (the ASGI app), gateway.py (content paths, DAG walks), car.py (CARv1),
metrics.py (prometheus_client), server.py (hypercorn's trio worker). See doc/http.md.
Nothing here is imported by the node unless its HTTP port is turned on.
"""

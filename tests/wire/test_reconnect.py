"""A survivor reaches a restarted peer although it still holds the old incarnation's connection.

A peer killed and restarted under the same peer ID can leave the survivor with
a connection that py-libp2p has not noticed is dead: every stream opened on it
stalls, and py-libp2p reuses it for every later open. The faithful stand-in is
a real process that is frozen (SIGSTOP: its socket stays open, nothing
answers) while a new incarnation with the same identity starts beside it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import multiaddr
import trio

from dscluster.net.host import Identity, open_host
from dscluster.net.rpc_client import open_rpc_client
from dscluster.net.rpc_limits import RpcLimits
from dscluster.wire import messages as m

PROTO = "/dscluster/test-reconnect/1.0.0"
OPEN_TIMEOUT = 4.0

# One incarnation of the peer: a host with a given identity serving Get on PROTO.
PEER_SCRIPT = """
import sys, trio
from dscluster.net.host import Identity, open_host
from dscluster.net.rpc_server import serve_rpc
from dscluster.wire import messages as m

class Service:
    async def handle(self, peer, req):
        return m.Ok(req.id, sys.argv[2].encode())

    async def stream(self, peer, req):
        return
        yield

async def main():
    async with open_host(Identity.from_base64(sys.argv[1])) as h, \\
            serve_rpc(h.host, sys.argv[3], Service()):
        print(h.listen_addrs[0], flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


async def _start_peer(ident: Identity, name: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", PEER_SCRIPT, ident.to_base64(), name, PROTO],
        stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    addr = (await trio.to_thread.run_sync(proc.stdout.readline)).strip()
    assert addr.startswith("/ip4/127.0.0.1/tcp/"), addr
    return proc, addr


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()  # SIGKILL also ends a stopped process
    proc.wait()


async def test_stalled_connection_to_an_old_incarnation_is_dropped_and_redialed():
    ident = Identity.generate()
    procs: list[subprocess.Popen[str]] = []
    try:
        with trio.fail_after(60):
            async with open_host() as survivor, open_rpc_client(
                survivor.host, RpcLimits(open_timeout=OPEN_TIMEOUT)
            ) as client:
                old, old_addr = await _start_peer(ident, "old")
                procs.append(old)
                await survivor.connect(ident.peer_id, [old_addr])
                os.kill(old.pid, signal.SIGSTOP)

                new, new_addr = await _start_peer(ident, "new")
                procs.append(new)
                # The new incarnation's address only: the frozen process's kernel
                # would still accept TCP on the old port, a killed one does not.
                peerstore = survivor.host.get_peerstore()
                peerstore.clear_addrs(ident.peer_id)
                peerstore.add_addrs(ident.peer_id, [multiaddr.Multiaddr(new_addr)], 3600)
                answer = await client.call(ident.peer_id, PROTO, m.Get(0, "/k"), timeout=30)
                assert answer.value == b"new"
                conns = survivor.host.get_network().get_connections(ident.peer_id)
                assert conns and not any(c.is_closed for c in conns)
    finally:
        for proc in procs:
            _stop(proc)

"""Strangers (peers with no role) cost a node little, whatever they send.

A real node process; strangers are real libp2p hosts in this process that
open streams on every protocol and send frames too large, frames that stall,
garbage, and bytes beyond yamux's receive window. Meanwhile an authorized
client keeps working. The node's RSS is read from /proc before and during the
attack (dscluster/net/admission.py has the bound; doc/security.md the
figures).
"""

from __future__ import annotations

import os
import struct
import time

import pytest
import trio

from dscluster.datastore.key import Key
from dscluster.net.host import open_host, parse_peer_id
from dscluster.testing.cluster import ProcessCluster, rss_kib
from dscluster.wire import messages as wm
from dscluster.wire.framing import encode_varint

PROTOCOLS = [wm.STORE_PROTOCOL, wm.ADMIN_PROTOCOL, wm.JOIN_PROTOCOL, wm.GOSSIP_PROTOCOL]
STRANGERS = 6
STREAMS_EACH = 12  # per protocol: far beyond what a stranger may hold
YAMUX_DATA = 0  # yamux frame type


def rss_mib(pid: int) -> float:
    kib = rss_kib(pid)
    assert kib, f"process {pid} is gone"
    return kib / 1024


async def stall_in_frames(host, peer, addr: str, stats: dict[str, int]) -> None:
    """Open many streams on every protocol; in each, start a big frame and stall."""
    await host.connect(peer, [addr], timeout=10)

    async def one(protocol: str, n: int) -> None:
        with trio.move_on_after(8) as opening:
            try:
                stream = await host.host.new_stream(parse_peer_id(peer), [protocol])
            except Exception:
                stats["refused_open"] += 1
                return
        if opening.cancelled_caught:  # the node reset it unread; py-libp2p's open waits on
            stats["open_abandoned"] += 1
            return
        try:
            # Odd streams: a 16 MiB frame, 1 MiB of it sent; even: 50 of 60 KB. Then stall.
            announced, sent = (16 << 20, 1 << 20) if n % 2 else (60_000, 50_000)
            await stream.write(encode_varint(announced))
            for _ in range(0, sent, 65536):
                await stream.write(os.urandom(min(65536, sent)))
            stats["written"] += 1
            with trio.move_on_after(6):
                while await stream.read(65536):  # until the node resets or closes it
                    pass
            stats["ended_by_node"] += 1
        except Exception:
            stats["ended_by_node"] += 1

    async with trio.open_nursery() as nursery:
        for protocol in PROTOCOLS:
            for n in range(STREAMS_EACH):
                nursery.start_soon(one, protocol, n)


async def test_strangers_flooding_every_protocol_cost_little_and_clients_carry_on(tmp_path):
    from dsclient.client import open_cluster_client

    with trio.fail_after(180):
        async with ProcessCluster(tmp_path, 1) as pc:
            node = pc.procs[0]
            assert node is not None
            peer = pc.peer_id(0)
            async with open_cluster_client(pc.client_identity,
                                           bootstrap=[pc.bootstrap_addr]) as client:
                for i in range(50):
                    await client.put(Key(f"/warm/{i}"), os.urandom(4096))
                before = rss_mib(node.pid)
                stats = {"refused_open": 0, "open_abandoned": 0, "written": 0,
                         "ended_by_node": 0}
                peak = before
                latencies: list[float] = []

                async def strangers() -> None:
                    async with trio.open_nursery() as hosts:
                        async with trio.open_nursery() as nursery:
                            for _ in range(STRANGERS):
                                host = await nursery_host(hosts)
                                nursery.start_soon(stall_in_frames, host, peer,
                                                   pc.bootstrap_addr, stats)
                        hosts.cancel_scope.cancel()

                async def watch() -> None:
                    nonlocal peak
                    while True:
                        peak = max(peak, rss_mib(node.pid))
                        await trio.sleep(0.1)

                async def work() -> None:
                    for i in range(300):
                        start = time.perf_counter()
                        await client.put(Key(f"/during/{i}"), b"x" * 4096)
                        assert await client.get(Key(f"/during/{i}")) == b"x" * 4096
                        latencies.append(time.perf_counter() - start)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(watch)
                    async with trio.open_nursery() as attack:
                        attack.start_soon(strangers)
                        await trio.sleep(0.5)
                        await work()
                    nursery.cancel_scope.cancel()
            latencies.sort()
            print(f"node RSS {before:.1f} MiB before, {peak:.1f} MiB peak during the attack "
                  f"(+{peak - before:.1f}); client put+get p50 "
                  f"{latencies[len(latencies) // 2] * 1000:.1f} ms, p99 "
                  f"{latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms; {stats}")
            # Before the bounds, 16 streams stalling inside 16 MiB frames cost 244 MiB.
            assert peak - before < 48, (before, peak)
            total = STRANGERS * len(PROTOCOLS) * STREAMS_EACH
            assert stats["refused_open"] + stats["open_abandoned"] \
                + stats["ended_by_node"] == total
            assert pc.stop(0) == 0  # and it still shuts down cleanly
            log = pc.log_text(0)
            assert log.count("reset a stream of") <= STRANGERS + 1  # rate-limited per peer


async def nursery_host(nursery: trio.Nursery):
    """A stranger host that lives as long as ``nursery``."""
    ready = trio.Event()
    box = []

    async def run() -> None:
        async with open_host() as host:
            box.append(host)
            ready.set()
            await trio.sleep_forever()

    nursery.start_soon(run)
    await ready.wait()
    return box[0]


@pytest.mark.parametrize("who", ["stranger", "client"])
async def test_bytes_beyond_the_yamux_window_close_the_connection(tmp_path, who):
    """py-libp2p's yamux buffered whatever a peer sent; now the window is enforced."""
    with trio.fail_after(90):
        async with ProcessCluster(tmp_path, 1) as pc:
            node = pc.procs[0]
            assert node is not None
            before = rss_mib(node.pid)
            identity = pc.client_identity if who == "client" else None
            async with open_host(identity) as host:
                peer = pc.peer_id(0)
                await host.connect(peer, [pc.bootstrap_addr], timeout=10)
                stream = await host.host.new_stream(parse_peer_id(peer), [wm.STORE_PROTOCOL])
                muxed = stream.muxed_stream
                # A DATA frame of 4 MiB on a stream whose window is 256 KiB, written
                # under yamux's own framing but past its flow control.
                body = b"\x00" * (4 * 1024 * 1024)
                header = struct.pack("!BBHII", 0, YAMUX_DATA, 0, muxed.stream_id, len(body))
                await muxed.conn.secured_conn.write(header + body)
                with trio.fail_after(10):
                    while not muxed.conn.event_closed.is_set():
                        await trio.sleep(0.05)
            assert rss_mib(node.pid) - before < 32
            await pc.wait_for_log(0, "receive window of")
            async with open_host(identity) as again:  # the node serves on
                await again.connect(peer, [pc.bootstrap_addr], timeout=10)

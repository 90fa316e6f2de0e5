"""dscluster/net/libp2p_fixes.py: read-ahead and go-yamux window updates, on real sockets.

Every host built by net/host.py runs with the fixes, so the rest of the suite
exercises them too; these tests pin down what each one promises.
"""

from __future__ import annotations

import hashlib
import os

import pytest
import trio
from libp2p.io.trio import TrioTCPStream
from libp2p.stream_muxer.yamux.yamux import DEFAULT_WINDOW_SIZE, YamuxStream

from dscluster.net import libp2p_fixes
from dscluster.net.host import open_host

PROTO = "/dscluster/test-bulk/1.0.0"


class CountingSocketStream:
    """A real trio SocketStream that counts its receive_some calls."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.receives = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        self.receives += 1
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def aclose(self) -> None:
        await self.stream.aclose()


async def tcp_pair(nursery: trio.Nursery) -> tuple[trio.SocketStream, CountingSocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    accepted: list[trio.SocketStream] = []
    got = trio.Event()

    async def accept() -> None:
        accepted.append(await listeners[0].accept())
        got.set()

    nursery.start_soon(accept)
    client = await trio.open_tcp_stream("127.0.0.1", port)
    await got.wait()
    await listeners[0].aclose()
    return accepted[0], CountingSocketStream(client)


def setup_module() -> None:
    libp2p_fixes.install()


async def test_reads_are_served_from_one_socket_read_in_order():
    async with trio.open_nursery() as nursery:
        server, counted = await tcp_pair(nursery)
        reader = TrioTCPStream(counted)  # type: ignore[arg-type]
        frames = [os.urandom(n) for n in (2, 7, 1, 300, 4096, 2, 50_000)]  # < READ_AHEAD
        await server.send_all(b"".join(frames))
        with trio.fail_after(10):
            for frame in frames[:-1]:
                assert await reader.read(len(frame)) == frame
            assert await reader.read(None) == frames[-1]
        # Everything but what the kernel split off came in one receive, not 7.
        assert counted.receives <= 2
        await server.aclose()
        assert await reader.read(10) == b""  # end of stream, as py-libp2p reports it
        await counted.aclose()


async def test_a_read_never_returns_more_than_asked_and_zero_is_empty():
    async with trio.open_nursery() as nursery:
        server, counted = await tcp_pair(nursery)
        reader = TrioTCPStream(counted)  # type: ignore[arg-type]
        payload = os.urandom(10_000)
        await server.send_all(payload)
        got = bytearray()
        with trio.fail_after(10):
            assert await reader.read(0) == b""
            while len(got) < len(payload):
                chunk = await reader.read(333)
                assert 0 < len(chunk) <= 333
                got += chunk
        assert bytes(got) == payload
        await server.aclose()
        await counted.aclose()


async def test_slow_small_reader_gets_every_byte_with_few_window_updates():
    """2 MiB through a 256 KiB yamux window, read 4 KiB at a time.

    py-libp2p as shipped sends a WINDOW_UPDATE after nearly every read (~500
    here); go-yamux's rule credits once per half window consumed (~16). The
    writer stalls on a full window many times and must always be released.
    """
    total = 2 * 1024 * 1024
    payload = os.urandom(total)
    updates: list[int] = []
    digest = trio.Event()
    received: list[bytes] = []

    async def reader(stream) -> None:
        muxed = stream.muxed_stream
        assert isinstance(muxed, YamuxStream)
        send_update = muxed.send_window_update

        async def counted(increment: int, skip_lock: bool = False) -> None:
            updates.append(increment)
            await send_update(increment, skip_lock)

        muxed.send_window_update = counted  # type: ignore[method-assign]
        got = bytearray()
        reads = 0
        while len(got) < total:
            got += await stream.read(4096)
            reads += 1
            if reads % 64 == 0:
                await trio.sleep(0.01)  # let the writer run into its window
        received.append(bytes(got))
        digest.set()
        await stream.close()

    with trio.fail_after(60):
        async with open_host() as a, open_host() as b:
            a.host.set_stream_handler(PROTO, reader)
            await b.connect(a.peer_id, a.addrs)
            stream = await b.host.new_stream(a.peer_id, [PROTO])
            await stream.write(payload)
            await digest.wait()
            await stream.close()
    assert hashlib.sha256(received[0]).digest() == hashlib.sha256(payload).digest()
    assert sum(updates) >= total - DEFAULT_WINDOW_SIZE  # the writer was credited all it sent
    assert len(updates) <= 2 * total // DEFAULT_WINDOW_SIZE, updates


def test_switch_off_in_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(libp2p_fixes.ENV_SWITCH, "0")
    assert not libp2p_fixes.enabled()
    monkeypatch.setenv(libp2p_fixes.ENV_SWITCH, "1")
    assert libp2p_fixes.enabled()

"""RPC over real libp2p hosts on 127.0.0.1: pipelining, limits, faults, reconnects."""

from __future__ import annotations

import cbor2
import pytest
import trio

from dscluster import errors
from dscluster.net.host import Identity, open_host
from dscluster.net.rpc_client import open_rpc_client
from dscluster.net.rpc_limits import RpcLimits
from dscluster.net.rpc_server import serve_rpc
from dscluster.wire import messages as m
from dscluster.wire.framing import FrameDecoder, encode_frame, encode_varint

PROTO = "/dscluster/test-store/1.0.0"
FAST = RpcLimits(frame_timeout=0.5, request_timeout=10, open_timeout=5)


class DictService:
    """A tiny store service: what the daemon's store service will look like."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.peers: set[str] = set()
        self.active = 0
        self.max_active = 0
        self.gate: trio.Event | None = None  # when set, Get waits for it
        self.cancelled = 0
        self.queries_closed = 0

    async def handle(self, peer, req):
        self.peers.add(peer.to_base58())
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if isinstance(req, m.Put):
                self.data[req.key] = req.value
                return m.Ok(req.id)
            if isinstance(req, m.Get):
                if self.gate is not None:
                    try:
                        await self.gate.wait()
                    except trio.Cancelled:
                        self.cancelled += 1
                        raise
                await trio.sleep(0)
                if req.key == "/moved":
                    raise errors.MovedError(42, "QmOwner", ["/ip4/127.0.0.1/tcp/9"])
                if req.key == "/boom":
                    raise RuntimeError("bug with /secret/path")
                if req.key not in self.data:
                    raise errors.NotFoundError(req.key)
                return m.Ok(req.id, self.data[req.key])
            if isinstance(req, m.GetMany):
                return m.OkMany(req.id, tuple(
                    self.data.get(k) or m.ErrorInfo(m.ErrorCode.NOT_FOUND, k) for k in req.keys))
            raise errors.BadRequestError(f"unsupported {type(req).__name__}")
        finally:
            self.active -= 1

    async def stream(self, peer, req):
        keys = sorted(k for k in self.data if k.startswith(req.prefix))
        try:
            for i in range(0, len(keys), req.chunk_size):
                part = keys[i : i + req.chunk_size]
                yield m.QueryChunk(req.id, tuple(m.QueryEntry(k, self.data[k]) for k in part),
                                   i + req.chunk_size < len(keys))
        finally:
            self.queries_closed += 1


async def test_pipelined_calls_share_one_stream_and_map_errors():
    svc = DictService()
    with trio.fail_after(30):
        async with open_host() as a, open_host() as b, serve_rpc(a.host, PROTO, svc, FAST) as srv:
            await b.connect(a.peer_id, a.addrs)
            async with open_rpc_client(b.host, FAST) as client:
                async with trio.open_nursery() as n:
                    for i in range(200):
                        n.start_soon(client.call, a.peer_id, PROTO, m.Put(0, f"/k{i}", b"v%d" % i))
                assert len(svc.data) == 200
                got = {}

                async def get(i):
                    got[i] = (await client.call(a.peer_id, PROTO, m.Get(0, f"/k{i}"))).value

                async with trio.open_nursery() as n:
                    for i in range(200):
                        n.start_soon(get, i)
                assert got == {i: b"v%d" % i for i in range(200)}
                assert svc.max_active > 1  # requests really ran concurrently
                assert srv.streams_accepted == 1  # all of them on one stream
                assert svc.peers == {b.peer_id.to_base58()}  # the authenticated caller

                with pytest.raises(errors.NotFoundError, match="/nope"):
                    await client.call(a.peer_id, PROTO, m.Get(0, "/nope"))
                with pytest.raises(errors.MovedError) as moved:
                    await client.call(a.peer_id, PROTO, m.Get(0, "/moved"))
                assert (moved.value.slot, moved.value.peer_id) == (42, "QmOwner")
                with pytest.raises(m.RemoteError) as internal:
                    await client.call(a.peer_id, PROTO, m.Get(0, "/boom"))
                assert "secret" not in str(internal.value)
                with pytest.raises(errors.BadRequestError):
                    await client.call(a.peer_id, PROTO, m.Delete(0, "/k1"))
                many = await client.call(a.peer_id, PROTO, m.GetMany(0, ("/k1", "/x", "/k2")))
                assert many.results[0] == b"v1" and many.results[2] == b"v2"
                assert many.results[1].code is m.ErrorCode.NOT_FOUND
                assert srv.streams_accepted == 1


async def test_in_flight_bound_timeout_and_cancel():
    svc = DictService()
    svc.data["/k"] = b"v"
    svc.gate = trio.Event()
    limits = RpcLimits(max_in_flight=4, request_timeout=10, frame_timeout=1)
    with trio.fail_after(30):
        async with open_host() as a, open_host() as b, serve_rpc(a.host, PROTO, svc, limits):
            await b.connect(a.peer_id, a.addrs)
            async with open_rpc_client(b.host, limits) as client:
                results = []

                async def get():
                    results.append((await client.call(a.peer_id, PROTO, m.Get(0, "/k"))).value)

                async with trio.open_nursery() as n:
                    for _ in range(10):
                        n.start_soon(get)
                    while svc.active < 4:
                        await trio.sleep(0.01)
                    await trio.sleep(0.2)  # give excess calls a chance to (wrongly) get through
                    assert svc.active == 4
                    svc.gate.set()
                assert results == [b"v"] * 10

                svc.gate = trio.Event()  # now Get hangs until the deadline
                with pytest.raises(errors.UnavailableError, match="timed out"):
                    await client.call(a.peer_id, PROTO, m.Get(0, "/k"), timeout=0.3)
                while svc.cancelled < 1:  # the client's Cancel reached the handler
                    await trio.sleep(0.01)
                svc.gate.set()
                assert (await client.call(a.peer_id, PROTO, m.Get(0, "/k"))).value == b"v"


async def test_server_answers_busy_beyond_its_bound():
    svc = DictService()
    svc.data["/k"] = b"v"
    svc.gate = trio.Event()
    with trio.fail_after(30):
        async with open_host() as a, open_host() as b, \
                serve_rpc(a.host, PROTO, svc, RpcLimits(max_in_flight=2)):
            await b.connect(a.peer_id, a.addrs)
            async with open_rpc_client(b.host, RpcLimits(max_in_flight=8)) as client:
                outcomes = []

                async def get():
                    try:
                        await client.call(a.peer_id, PROTO, m.Get(0, "/k"))
                        outcomes.append("ok")
                    except errors.UnavailableError as exc:
                        outcomes.append(str(exc))

                async with trio.open_nursery() as n:
                    for _ in range(5):
                        n.start_soon(get)
                    while len(outcomes) < 3:
                        await trio.sleep(0.01)
                    svc.gate.set()
                assert outcomes.count("ok") == 2
                assert outcomes.count("too many requests in flight") == 3


async def test_query_streams_in_chunks_and_early_exit_cancels():
    svc = DictService()
    svc.data.update({f"/q/{i:03d}": b"%d" % i for i in range(25)})
    with trio.fail_after(30):
        async with open_host() as a, open_host() as b, serve_rpc(a.host, PROTO, svc, FAST):
            await b.connect(a.peer_id, a.addrs)
            async with open_rpc_client(b.host, FAST) as client:
                sizes, keys = [], []
                async with client.query(a.peer_id, PROTO, m.Query(0, "/q/", chunk_size=10)) as it:
                    async for chunk in it:
                        sizes.append(len(chunk.entries))
                        keys += [e.key for e in chunk.entries]
                assert sizes == [10, 10, 5]
                assert keys == sorted(svc.data)
                while svc.queries_closed < 1:
                    await trio.sleep(0.01)

                async with client.query(a.peer_id, PROTO, m.Query(0, "/q/", chunk_size=3)) as it:
                    async for chunk in it:
                        assert len(chunk.entries) == 3
                        break  # stop early: the server must close its iterator
                while svc.queries_closed < 2:
                    await trio.sleep(0.01)
                # The stream is still good for other calls.
                assert (await client.call(a.peer_id, PROTO, m.Get(0, "/q/001"))).value == b"1"


async def _raw_stream_is_closed(stream) -> bool:
    """Read until the server closes or resets the stream; False if it sent a frame."""
    try:
        data = await stream.read(1024)
    except Exception:
        return True  # reset
    return data == b""


@pytest.mark.parametrize(
    "garbage",
    [
        encode_frame(b"\xff\xfe not cbor"),
        encode_frame(b"\x82\x18\x63\x01"),  # [99, 1]: unknown tag
        encode_frame(m.Ok(1, b"x").encode()),  # a response sent to a server
        encode_frame(b"\x83\x01\xf5\x61k"),  # Get whose id is not an int (a bool)
        encode_varint(FAST.max_frame_size + 1) + b"x" * 100,  # oversized
        b"\xff" * 12,  # overlong varint
    ],
    ids=["cbor", "unknown-tag", "response", "unreadable-id", "oversized", "overlong-varint"],
)
async def test_garbage_closes_only_that_stream(garbage):
    svc = DictService()
    svc.data["/k"] = b"v"
    with trio.fail_after(30):
        async with open_host() as a, open_host() as bad, open_host() as good, \
                serve_rpc(a.host, PROTO, svc, FAST) as srv:
            await good.connect(a.peer_id, a.addrs)
            await bad.connect(a.peer_id, a.addrs)
            async with open_rpc_client(good.host, FAST) as client:
                assert (await client.call(a.peer_id, PROTO, m.Get(0, "/k"))).value == b"v"
                raw = await bad.host.new_stream(a.peer_id, [PROTO])
                await raw.write(garbage)
                assert await _raw_stream_is_closed(raw)
                assert srv.protocol_errors == 1
                # The good client's stream is untouched and the node serves new streams too.
                assert (await client.call(a.peer_id, PROTO, m.Get(0, "/k"))).value == b"v"
                async with open_rpc_client(bad.host, FAST) as again:
                    assert (await again.call(a.peer_id, PROTO, m.Get(0, "/k"))).value == b"v"
                assert srv.streams_accepted == 3


async def _answers(stream, decoder: FrameDecoder, count: int) -> dict[int, m.Response]:
    """The next ``count`` responses on a raw stream, by request id."""
    got: dict[int, m.Response] = {}
    while len(got) < count:
        frame = decoder.next_frame()
        if frame is None:
            data = await stream.read(65536)
            assert data, "the server closed the stream"
            decoder.feed(data)
            continue
        msg = m.decode(frame)
        assert isinstance(msg, m.Response)
        got[msg.id] = msg
    return got


async def test_a_bad_request_is_answered_alone_and_the_stream_stays_open():
    """A request whose fields break a bound (a 5,000-character key, a key of the wrong
    type) gets its own error answer; good requests pipelined around it on the same
    stream succeed, and the stream is neither reset nor counted as a protocol error."""
    svc = DictService()
    svc.data["/k"] = b"v"
    long_key = "/" + "k" * 5000
    with trio.fail_after(30):
        async with open_host() as a, open_host() as b, \
                serve_rpc(a.host, PROTO, svc, FAST) as srv:
            await b.connect(a.peer_id, a.addrs)
            raw = await b.host.new_stream(a.peer_id, [PROTO])
            frames = [
                m.Get(1, "/k").encode(),
                m.Get(2, long_key).encode(),  # the schema encodes it; the server refuses it
                m.Put(3, "/new", b"n").encode(),
                cbor2.dumps([m.Put.TAG, 4, 7, b"x"]),  # an int key
                cbor2.dumps([m.GetMany.TAG, 5, ["/k", long_key]]),
                m.Get(6, "/new").encode(),
            ]
            await raw.write(b"".join(encode_frame(f) for f in frames))
            decoder = FrameDecoder()
            got = await _answers(raw, decoder, len(frames))
            assert got[1] == m.Ok(1, b"v")
            assert got[3] == m.Ok(3)
            assert isinstance(got[6], m.Ok) and got[6].value == b"n"
            for rid, code in ((2, m.ErrorCode.BAD_KEY), (4, m.ErrorCode.BAD_REQUEST),
                              (5, m.ErrorCode.BAD_KEY)):
                fail = got[rid]
                assert isinstance(fail, m.Fail) and fail.error.code is code, (rid, fail)
            assert "longer than 4096" in got[2].error.message  # type: ignore[union-attr]
            with pytest.raises(errors.BadKeyError):
                raise got[2].error.to_exception()  # type: ignore[union-attr]
            # The same stream still serves.
            await raw.write(encode_frame(m.Get(7, "/k").encode()))
            assert (await _answers(raw, decoder, 1))[7] == m.Ok(7, b"v")
            assert srv.protocol_errors == 0 and srv.bad_requests == 3
            assert srv.streams_accepted == 1


async def test_a_bad_request_reusing_an_in_flight_id_resets_the_stream():
    """Answering it would give the in-flight request two answers: that is a violation."""
    svc = DictService()
    svc.gate = trio.Event()  # Get waits: id 1 stays in flight
    with trio.fail_after(30):
        async with open_host() as a, open_host() as b, \
                serve_rpc(a.host, PROTO, svc, FAST) as srv:
            await b.connect(a.peer_id, a.addrs)
            raw = await b.host.new_stream(a.peer_id, [PROTO])
            await raw.write(encode_frame(m.Get(1, "/k").encode()))
            while not svc.active:
                await trio.sleep(0.01)
            await raw.write(encode_frame(m.Get(1, "/" + "k" * 5000).encode()))
            assert await _raw_stream_is_closed(raw)
            assert srv.protocol_errors == 1


async def test_an_answer_the_client_cannot_read_fails_that_call_alone():
    """A newer server's answer in a form this client does not know (an unknown error
    code) fails that call with ProtocolError; other calls on the stream go on."""

    streams = []

    async def raw_server(stream) -> None:
        streams.append(stream)
        decoder = FrameDecoder()
        answered = 0
        while answered < 3:
            frame = decoder.next_frame()
            if frame is None:
                data = await stream.read(65536)
                if not data:
                    return
                decoder.feed(data)
                continue
            req = m.decode(frame)
            assert isinstance(req, m.Get)
            if req.key == "/odd":
                out = cbor2.dumps([m.Fail.TAG, req.id, ["a_code_from_the_future", "?"]])
            else:
                out = m.Ok(req.id, req.key.encode()).encode()
            await stream.write(encode_frame(out))
            answered += 1
        await trio.sleep(5)  # keep the stream open while the client checks

    with trio.fail_after(30):
        async with open_host() as a, open_host() as b:
            a.host.set_stream_handler(PROTO, raw_server)
            await b.connect(a.peer_id, a.addrs)
            async with open_rpc_client(b.host, FAST) as client:
                assert (await client.call(a.peer_id, PROTO, m.Get(0, "/a"))).value == b"/a"
                with pytest.raises(errors.ProtocolError, match="cannot read"):
                    await client.call(a.peer_id, PROTO, m.Get(0, "/odd"))
                assert (await client.call(a.peer_id, PROTO, m.Get(0, "/b"))).value == b"/b"
                assert len(streams) == 1  # all three on one stream


async def test_a_bare_length_prefix_also_hits_the_frame_deadline():
    """The prefix alone starts the frame: a sender cannot stall after it for ever."""
    svc = DictService()
    with trio.fail_after(30):
        async with open_host() as a, open_host() as b, serve_rpc(a.host, PROTO, svc, FAST):
            await b.connect(a.peer_id, a.addrs)
            raw = await b.host.new_stream(a.peer_id, [PROTO])
            frame = encode_frame(m.Get(1, "/k").encode())
            await raw.write(frame[:1])  # the whole (one-byte) prefix, no body
            assert await _raw_stream_is_closed(raw)


async def test_slow_sender_hits_the_frame_deadline():
    svc = DictService()
    svc.data["/k"] = b"v"
    with trio.fail_after(30):
        async with open_host() as a, open_host() as b, serve_rpc(a.host, PROTO, svc, FAST):
            await b.connect(a.peer_id, a.addrs)
            raw = await b.host.new_stream(a.peer_id, [PROTO])
            frame = encode_frame(m.Get(1, "/k").encode())
            await raw.write(frame[:3])  # start a frame, then stall
            assert await _raw_stream_is_closed(raw)
            # An idle stream between frames is not a slow sender: it stays open.
            raw2 = await b.host.new_stream(a.peer_id, [PROTO])
            await trio.sleep(FAST.frame_timeout * 2)
            await raw2.write(frame)
            reply = await raw2.read(1024)
            assert m.decode(reply[1:]) == m.Ok(1, b"v")


async def test_peer_restart_then_reconnect():
    ident = Identity.generate()
    svc = DictService()
    svc.data["/k"] = b"v"
    with trio.fail_after(60):
        async with open_host() as b, open_rpc_client(b.host, FAST) as client:
            async with open_host(ident) as a, serve_rpc(a.host, PROTO, svc, FAST):
                addr = a.listen_addrs[0]
                await b.connect(a.peer_id, a.addrs)
                assert (await client.call(a.peer_id, PROTO, m.Get(0, "/k"))).value == b"v"
            with pytest.raises(errors.UnavailableError, match=ident.peer_id_str):
                await client.call(ident.peer_id, PROTO, m.Get(0, "/k"), timeout=5)
            async with open_host(ident, [addr]) as a2, serve_rpc(a2.host, PROTO, svc, FAST):
                await b.connect(a2.peer_id, a2.addrs)
                assert (await client.call(a2.peer_id, PROTO, m.Get(0, "/k"))).value == b"v"


async def test_unreachable_peer_is_unavailable_naming_it():
    dead = Identity.generate()
    with trio.fail_after(30):
        async with open_host() as b, open_rpc_client(b.host, FAST) as client:
            with pytest.raises(errors.UnavailableError, match=dead.peer_id_str):
                await client.call(dead.peer_id, PROTO, m.Get(0, "/k"), timeout=5)


class BigService(DictService):
    async def handle(self, peer, req):
        if isinstance(req, m.Get) and req.key == "/big":
            return m.Ok(req.id, b"x" * 2048)
        return await super().handle(peer, req)


async def test_oversized_request_and_answer_are_bad_requests_not_broken_streams():
    svc = BigService()
    svc.data["/k"] = b"v"
    limits = RpcLimits(max_frame_size=1024)
    with trio.fail_after(30):
        async with open_host() as a, open_host() as b, serve_rpc(a.host, PROTO, svc, limits) as srv:
            await b.connect(a.peer_id, a.addrs)
            async with open_rpc_client(b.host, limits) as client:
                with pytest.raises(errors.BadRequestError, match="exceeds the frame limit"):
                    await client.call(a.peer_id, PROTO, m.Put(0, "/k", b"y" * 2000))
                with pytest.raises(errors.BadRequestError, match="exceeds the frame limit"):
                    await client.call(a.peer_id, PROTO, m.Get(0, "/big"))
                assert (await client.call(a.peer_id, PROTO, m.Get(0, "/k"))).value == b"v"
                assert srv.streams_accepted == 1 and srv.protocol_errors == 0


async def test_streams_per_peer_are_capped():
    svc = DictService()
    svc.data["/k"] = b"v"
    limits = RpcLimits(max_streams_per_peer=2)
    with trio.fail_after(30):
        async with open_host() as a, open_host() as b, serve_rpc(a.host, PROTO, svc, limits) as srv:
            await b.connect(a.peer_id, a.addrs)
            first = await b.host.new_stream(a.peer_id, [PROTO])
            second = await b.host.new_stream(a.peer_id, [PROTO])
            try:  # the reset may overtake the negotiation answer: then opening fails
                third = await b.host.new_stream(a.peer_id, [PROTO])
            except Exception:
                pass
            else:
                assert await _raw_stream_is_closed(third)
            assert srv.streams_accepted == 2  # the third was refused by the cap
            frame = encode_frame(m.Get(1, "/k").encode())
            for stream in (first, second):
                await stream.write(frame)
                assert m.decode((await stream.read(1024))[1:]) == m.Ok(1, b"v")
            await first.close()
            reply = b""
            while not reply:  # a slot is free again once the first stream is done
                await trio.sleep(0.05)
                try:
                    fourth = await b.host.new_stream(a.peer_id, [PROTO])
                    await fourth.write(frame)
                    reply = await fourth.read(1024)
                except Exception:
                    continue  # refused: the first stream was not yet closed on the server
            assert m.decode(reply[1:]) == m.Ok(1, b"v")
            assert srv.streams_accepted >= 3


async def test_closed_server_resets_new_streams_and_keeps_its_handler():
    # py-libp2p indexes its handlers after an await during negotiation: a removed
    # handler would raise KeyError inside the host, so close() replaces it.
    svc = DictService()
    svc.data["/k"] = b"v"
    with trio.fail_after(30):
        async with open_host() as a, open_host() as b, open_rpc_client(b.host, FAST) as client:
            async with serve_rpc(a.host, PROTO, svc, FAST):
                await b.connect(a.peer_id, a.addrs)
                assert (await client.call(a.peer_id, PROTO, m.Get(0, "/k"))).value == b"v"
            assert PROTO in a.host.get_mux().handlers
            with pytest.raises(errors.UnavailableError):
                await client.call(a.peer_id, PROTO, m.Get(0, "/k"), timeout=5)
            async with serve_rpc(a.host, PROTO, svc, FAST):  # serving again works
                assert (await client.call(a.peer_id, PROTO, m.Get(0, "/k"))).value == b"v"

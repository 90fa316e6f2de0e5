"""Raw py-libp2p baselines over loopback, two processes.

What any ds-cluster figure should be read against: the same machine, the
same run, bare libp2p streams (Noise + yamux, our host's connection settings)
without our framing, messages or datastores, and without our fixes to
py-libp2p (dscluster/net/libp2p_fixes.py): py-libp2p as shipped. Run alone,
it also measures the same with the fixes, side by side.

- bulk: one stream, MB/s;
- seq: 4 KiB request / 4 KiB response, one at a time on one open stream, req/s
  and latency p50/p99;
- concurrent: 64 streams each doing 4 KiB echoes at once, total req/s;
- rpc (ours, for comparison): 4 KiB Get over dscluster.net.rpc, sequential and
  64 in flight on one pipelined stream.

Other benches import ``run_baseline()`` (or ``measure_now`` inside trio)
and print ``Baseline.lines()`` beside their figures. Alone:
``python -m bench.p2p_baseline [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import trio

ECHO = "/dscluster/bench-echo/1.0.0"
SINK = "/dscluster/bench-sink/1.0.0"
RPC = "/dscluster/bench-rpc/1.0.0"
MSG = 4096


@dataclass(frozen=True)
class Baseline:
    bulk_mb_s: float
    seq_req_s: float
    seq_p50_ms: float
    seq_p99_ms: float
    concurrent_req_s: float
    concurrency: int
    rpc_seq_req_s: float | None = None
    rpc_pipelined_req_s: float | None = None

    def lines(self) -> list[str]:
        out = [
            f"p2p baseline: bulk one stream          {self.bulk_mb_s:9.1f} MB/s",
            f"p2p baseline: 4 KiB req/resp, 1 stream {self.seq_req_s:9.0f} req/s"
            f"  (p50 {self.seq_p50_ms:.3f} ms, p99 {self.seq_p99_ms:.3f} ms)",
            f"p2p baseline: 4 KiB echo, {self.concurrency} streams   "
            f"{self.concurrent_req_s:9.0f} req/s",
        ]
        if self.rpc_seq_req_s is not None and self.rpc_pipelined_req_s is not None:
            out += [
                f"rpc: 4 KiB Get, sequential           {self.rpc_seq_req_s:9.0f} req/s"
                f"  ({self.rpc_seq_req_s / self.seq_req_s:.2f}x raw)",
                f"rpc: 4 KiB Get, {self.concurrency} in flight, 1 stream "
                f"{self.rpc_pipelined_req_s:9.0f} req/s"
                f"  ({self.rpc_pipelined_req_s / self.concurrent_req_s:.2f}x raw {self.concurrency}"
                " streams)",
            ]
        return out


# -- server process ------------------------------------------------------------------


async def _read_exactly(stream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.read(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


async def _echo(stream) -> None:
    try:
        while True:
            await stream.write(await _read_exactly(stream, MSG))
    except Exception:
        pass  # the client closed the stream: the end of this measurement
    finally:
        await stream.close()


async def _sink(stream) -> None:
    """Count bytes until EOF, then answer with one byte."""
    try:
        while True:
            if not await stream.read(1 << 20):
                break
    except Exception:
        pass
    try:
        await stream.write(b"\x01")
    finally:
        await stream.close()


class _BenchService:
    value = b"v" * MSG

    async def handle(self, peer, request):
        from dscluster.wire.messages import Ok

        return Ok(request.id, self.value)

    def stream(self, peer, request):
        raise NotImplementedError


async def _serve() -> None:
    from dscluster.net.host import open_host
    from dscluster.net.rpc import serve_rpc

    async with open_host() as handle, serve_rpc(handle.host, RPC, _BenchService()):
        handle.host.set_stream_handler(ECHO, _echo)
        handle.host.set_stream_handler(SINK, _sink)
        print(handle.addrs[0], flush=True)
        # Serve until the parent closes our stdin.
        await trio.to_thread.run_sync(sys.stdin.read)


# -- client side ------------------------------------------------------------------------


async def _bulk(host, peer, total: int) -> float:
    stream = await host.new_stream(peer, [SINK])
    block = b"\xab" * (1 << 20)
    start = time.perf_counter()
    for _ in range(total // len(block)):
        await stream.write(block)
    await stream.close()  # half-close: the sink answers after EOF
    await _read_exactly(stream, 1)
    return total / (time.perf_counter() - start) / 1e6


async def _seq(host, peer, count: int) -> tuple[float, list[float]]:
    stream = await host.new_stream(peer, [ECHO])
    msg = b"\x01" * MSG
    lat = []
    start = time.perf_counter()
    for _ in range(count):
        t = time.perf_counter()
        await stream.write(msg)
        await _read_exactly(stream, MSG)
        lat.append(time.perf_counter() - t)
    rate = count / (time.perf_counter() - start)
    await stream.close()
    return rate, lat


async def _concurrent(host, peer, streams: int, per_stream: int) -> float:
    opened = [await host.new_stream(peer, [ECHO]) for _ in range(streams)]
    msg = b"\x02" * MSG

    async def run(stream) -> None:
        for _ in range(per_stream):
            await stream.write(msg)
            await _read_exactly(stream, MSG)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for s in opened:
            nursery.start_soon(run, s)
    rate = streams * per_stream / (time.perf_counter() - start)
    for s in opened:
        await s.close()
    return rate


async def _rpc(host, peer, count: int, in_flight: int) -> tuple[float, float]:
    from dscluster.net.rpc import open_rpc_client
    from dscluster.wire.messages import Get

    async with open_rpc_client(host) as client:
        await client.call(peer, RPC, Get(0, "/warm"))
        start = time.perf_counter()
        for _ in range(count):
            await client.call(peer, RPC, Get(0, "/k"))
        seq = count / (time.perf_counter() - start)

        async def worker(n: int) -> None:
            for _ in range(n):
                await client.call(peer, RPC, Get(0, "/k"))

        total = count * 4
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(in_flight):
                nursery.start_soon(worker, total // in_flight)
        pipelined = (total // in_flight) * in_flight / (time.perf_counter() - start)
    return seq, pipelined


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure_baseline(server_addr: str, quick: bool = False, rpc: bool = True,
                           fixes: bool = False) -> Baseline:
    """Measure against a server started by ``start_server`` (inside trio).

    The measuring host runs in a child process, so that the figures are those
    of py-libp2p as shipped (``fixes=False``) even when this process already
    applied dscluster/net/libp2p_fixes.py (which is process-wide).
    """
    args = [sys.executable, "-m", "bench.p2p_baseline", "--measure", server_addr]
    args += ["--quick"] if quick else []
    args += [] if rpc else ["--no-rpc"]
    done = await trio.run_process(args, capture_stdout=True, env=_env(fixes))
    return Baseline(**json.loads(done.stdout.decode().splitlines()[-1]))


async def _measure_here(server_addr: str, quick: bool, rpc: bool) -> Baseline:
    from dscluster.net.host import open_host, parse_peer_id

    peer_id = server_addr.rsplit("/p2p/", 1)[1]
    bulk_bytes = (32 if quick else 256) << 20
    seq_count = 500 if quick else 3000
    per_stream = 20 if quick else 100
    concurrency = 64
    async with open_host() as handle:
        await handle.connect(peer_id, [server_addr])
        peer = parse_peer_id(peer_id)
        await _seq(handle.host, peer, 50)  # warm up
        bulk = await _bulk(handle.host, peer, bulk_bytes)
        seq_rate, lat = await _seq(handle.host, peer, seq_count)
        conc = await _concurrent(handle.host, peer, concurrency, per_stream)
        rpc_seq = rpc_pipe = None
        if rpc:
            rpc_seq, rpc_pipe = await _rpc(handle.host, peer, seq_count, concurrency)
    return Baseline(
        bulk_mb_s=bulk, seq_req_s=seq_rate,
        seq_p50_ms=statistics.median(lat) * 1e3, seq_p99_ms=_percentile(lat, 0.99) * 1e3,
        concurrent_req_s=conc, concurrency=concurrency,
        rpc_seq_req_s=rpc_seq, rpc_pipelined_req_s=rpc_pipe,
    )


def _env(fixes: bool) -> dict[str, str]:
    from dscluster.net.libp2p_fixes import ENV_SWITCH

    return {**os.environ, ENV_SWITCH: "1" if fixes else "0"}


def start_server(fixes: bool = False) -> tuple[subprocess.Popen[str], str]:
    """Start the echo/sink/rpc server in a child process; returns it and its multiaddr."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.p2p_baseline", "--serve"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env(fixes),
    )
    assert proc.stdout is not None
    addr = proc.stdout.readline().strip()
    if "/p2p/" not in addr:
        proc.kill()
        raise RuntimeError(f"baseline server did not start (got {addr!r})")
    return proc, addr


def stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def measure_now(quick: bool = False, rpc: bool = True, fixes: bool = False) -> Baseline:
    """Start a server process, measure from another, stop the server (inside trio).

    ``fixes=False`` (the baseline every bench compares with): py-libp2p as
    shipped, with our host's connection settings; ``True``: with
    dscluster/net/libp2p_fixes.py, as our nodes and clients run it.
    """
    proc, addr = await trio.to_thread.run_sync(start_server, fixes)
    try:
        return await measure_baseline(addr, quick, rpc, fixes)
    finally:
        await trio.to_thread.run_sync(stop_server, proc)


def run_baseline(quick: bool = False, rpc: bool = True, fixes: bool = False) -> Baseline:
    """``measure_now`` outside trio."""
    return trio.run(measure_now, quick, rpc, fixes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (a few seconds)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", metavar="ADDR", help=argparse.SUPPRESS)
    parser.add_argument("--no-rpc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(_serve)
        return
    if args.measure:
        figures = trio.run(_measure_here, args.measure, args.quick, not args.no_rpc)
        print(json.dumps(asdict(figures)))
        return
    shipped = run_baseline(quick=args.quick)
    print("py-libp2p as shipped (the baseline of every bench):")
    for line in shipped.lines():
        print("  " + line)
    fixed = run_baseline(quick=args.quick, fixes=True)
    print("with dscluster/net/libp2p_fixes.py (read-ahead, go-yamux window updates):")
    for line in fixed.lines():
        print("  " + line)
    print(f"fixes vs shipped: bulk {fixed.bulk_mb_s / shipped.bulk_mb_s:.2f}x, "
          f"4 KiB req/resp {fixed.seq_req_s / shipped.seq_req_s:.2f}x, "
          f"64-stream echo {fixed.concurrent_req_s / shipped.concurrent_req_s:.2f}x")


if __name__ == "__main__":
    main()

"""4 KiB puts and gets through a 3-node cluster, beside raw py-libp2p and Redis, one run.

    python -m bench.cluster [--tasks 64] [--ops 200] [--mib 256] [--no-redis]

A ProcessCluster (3 real ``dscluster`` daemons on loopback, LevelDB) and one
ClusterClient in this process:

- throughput: ``--tasks`` concurrent tasks each put ``--ops`` 4 KiB values,
  then get them all back (ops/s), beside the raw py-libp2p 64-stream 4 KiB
  echo rate (bench.p2p_baseline, py-libp2p as shipped), in ``--rounds``
  rounds that each measure the raw echo and then the cluster, so that both
  sides of a ratio see the same moment of a noisy machine (medians reported,
  every round printed); and beside Redis
  Cluster's redis-benchmark SET/GET (bench.redis_baseline, same run);
- latency: single 4 KiB gets one after another (low load), p50/p99 beside
  the raw py-libp2p sequential round trip;
- memory: each daemon's peak anonymous RSS (RssAnon, sampled every 0.2 s:
  what the node holds) and peak RSS (VmHWM, which also counts the page cache
  of LevelDB's mmapped table files, about 1:1 with the data stored, which
  the kernel reclaims under pressure), and a client in a
  child process adding then reading back a ``--mib`` file generated on the
  fly (random bytes, never on disk; default 256 MiB to keep ``make bench``
  within minutes, the target is stated for 1 GiB: pass ``--mib 1024``).

Targets (issue 9): put/get >= 3x the raw 64-stream echo, on the way to 0.25x
Redis; p99 within 3x the raw round trip; node RSS < 250 MiB; client RSS
< 200 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from bench import report
from bench.p2p_baseline import Baseline, measure_now
from dscluster.testing.cluster import ProcessCluster

VALUE = 4096
MiB = 1024 * 1024
NODE_RSS_LIMIT_MIB = 250
CLIENT_RSS_LIMIT_MIB = 200


@dataclass(frozen=True)
class ClusterFigures:
    put_ops: float  # medians over the rounds
    get_ops: float
    echo_req_s: float  # the raw 64-stream echo, median of the rounds between them
    seq_p99_ms: float  # the raw sequential round trip's p99, median of the rounds
    rounds: list[tuple[float, float, float]]  # (echo, put, get) of each round
    get_p50_ms: float
    get_p99_ms: float
    node_rss_mib: list[float]  # peak VmHWM: includes LevelDB's mmapped table files
    node_anon_mib: list[float]  # peak RssAnon, sampled: the memory the node itself holds
    node_file_mib: list[float]  # RssFile at the end: page cache of mmapped files
    messages: int  # batched messages the client sent for the put+get load
    ops: int


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident set size (VmHWM), MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def rss_parts_mib(pid: int) -> tuple[float, float]:
    """(RssAnon, RssFile) of the process now, MiB."""
    parts = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(("RssAnon:", "RssFile:")):
                parts[line.split(":")[0]] = int(line.split()[1]) / 1024
    return parts["RssAnon"], parts["RssFile"]


async def sample_anon(pids: list[int], peaks: list[float], interval: float = 0.2) -> None:
    """Keep peaks[i] at the largest RssAnon seen of pids[i], until cancelled."""
    while True:
        for i, pid in enumerate(pids):
            peaks[i] = max(peaks[i], rss_parts_mib(pid)[0])
        await trio.sleep(interval)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def kv_load(client, tasks: int, ops: int) -> tuple[float, float]:
    """(puts/s, gets/s) of ``tasks`` concurrent tasks doing ``ops`` each."""
    from dscluster.datastore.key import Key

    value = os.urandom(VALUE)
    keys = [[Key(f"/bench/{t}/{i}") for i in range(ops)] for t in range(tasks)]

    async def putter(mine: list[Key]) -> None:
        for k in mine:
            await client.put(k, value)

    async def getter(mine: list[Key]) -> None:
        for k in mine:
            if len(await client.get(k)) != VALUE:
                raise RuntimeError(f"{k}: wrong value length")

    rates = []
    for worker in (putter, getter):
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for mine in keys:
                nursery.start_soon(worker, mine)
        rates.append(tasks * ops / (time.perf_counter() - started))
    return rates[0], rates[1]


async def single_gets(client, count: int) -> list[float]:
    """Seconds of each of ``count`` gets issued one after another."""
    from dscluster.datastore.key import Key

    keys = [Key(f"/bench/0/{i % 64}") for i in range(count)]
    lat = []
    for k in keys:
        t = time.perf_counter()
        await client.get(k)
        lat.append(time.perf_counter() - t)
    return lat


async def measure(tasks: int, ops: int, latency_count: int, mib: int, rounds: int
                  ) -> tuple[ClusterFigures, dict[str, float]]:
    from dsclient.client import open_cluster_client

    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        async with started(ProcessCluster(tmp, 3, datastore="leveldb")) as pc, \
                trio.open_nursery() as sampler:
            pids = [p.pid for p in pc.procs if p is not None]
            anon = [0.0] * len(pids)
            sampler.start_soon(sample_anon, pids, anon)
            with trio.fail_after(600):
                async with open_cluster_client(pc.client_identity,
                                               bootstrap=[pc.bootstrap_addr]) as client:
                    await single_gets_warmup(client)
                    sent_before = client.messages_sent
                    per_round: list[tuple[float, float, float]] = []
                    raws: list[Baseline] = []
                    for _ in range(rounds):  # interleaved: both sides see the same noise
                        raws.append(await measure_now(quick=True, rpc=False))
                        per_round.append((raws[-1].concurrent_req_s,
                                          *await kv_load(client, tasks, ops)))
                    messages = client.messages_sent - sent_before
                    lat = await single_gets(client, latency_count)
                file_figures = await trio.to_thread.run_sync(
                    run_file_client, pc.client_identity.to_base64(), pc.bootstrap_addr, mib)
            sampler.cancel_scope.cancel()
            node_rss = [peak_rss_mib(pid) for pid in pids]
            node_file = [rss_parts_mib(pid)[1] for pid in pids]
    figures = ClusterFigures(
        statistics.median(r[1] for r in per_round), statistics.median(r[2] for r in per_round),
        statistics.median(r[0] for r in per_round),
        statistics.median(b.seq_p99_ms for b in raws), per_round,
        statistics.median(lat) * 1e3, _percentile(lat, 0.99) * 1e3,
        node_rss, anon, node_file, messages, 2 * tasks * ops * rounds)
    return figures, file_figures


@asynccontextmanager
async def started(pc: ProcessCluster) -> AsyncIterator[ProcessCluster]:
    """``async with pc``, also stopping the nodes already started if the start fails
    (ProcessCluster.__aenter__ leaves them running when a later node times out)."""
    try:
        await pc.__aenter__()
    except BaseException:
        for i in range(pc.n):
            pc.stop(i)
        raise
    try:
        yield pc
    finally:
        await pc.__aexit__(None, None, None)


async def single_gets_warmup(client) -> None:
    from dscluster.datastore.key import Key

    for i in range(64):  # every node dialed, keys for the latency pass
        await client.put(Key(f"/bench/0/{i}"), os.urandom(VALUE))


# -- the file client (a child process, so its RSS is the client's alone) ----------------


def run_file_client(identity_b64: str, bootstrap: str, mib: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.cluster", "--file-client", bootstrap, "--mib", str(mib)],
        env={**os.environ, "DSC_BENCH_IDENTITY": identity_b64},
        capture_output=True, text=True, timeout=1800, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"file client failed ({out.returncode}): {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


async def file_client(bootstrap: str, mib: int) -> dict[str, float]:
    from dsclient import unixfs
    from dsclient.api import AsyncClient
    from dscluster.net.host import Identity

    identity = Identity.from_base64(os.environ["DSC_BENCH_IDENTITY"])

    def pieces():
        for _ in range(mib):
            yield os.urandom(MiB)

    async with AsyncClient.connect([bootstrap], identity=identity) as client:
        started = time.perf_counter()
        cid = await unixfs.add_stream(pieces(), client.blocks)
        add_s = time.perf_counter() - started
        add_rss = peak_rss_mib(os.getpid())
        started = time.perf_counter()
        total = 0
        async for piece in client.cat(cid):
            total += len(piece)
        cat_s = time.perf_counter() - started
    if total != mib * MiB:
        raise RuntimeError(f"read back {total} bytes, added {mib * MiB}")
    return {"add_s": add_s, "cat_s": cat_s, "add_rss_mib": add_rss,
            "peak_rss_mib": peak_rss_mib(os.getpid())}


# -- main ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=64, help="concurrent client tasks")
    parser.add_argument("--ops", type=int, default=200, help="puts (then gets) per task")
    parser.add_argument("--rounds", type=int, default=3,
                        help="raw echo then put/get load, this many times; medians reported")
    parser.add_argument("--latency-count", type=int, default=1000, help="single gets timed")
    parser.add_argument("--mib", type=int, default=256,
                        help="file size for the client RSS check (target stated for 1024)")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis baseline")
    parser.add_argument("--file-client", metavar="BOOTSTRAP", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.file_client:
        print(json.dumps(trio.run(file_client, args.file_client, args.mib)))
        return

    from bench import redis_baseline

    redis = None if args.no_redis else redis_baseline.measured()
    figures, files = trio.run(measure, args.tasks, args.ops, args.latency_count, args.mib,
                              args.rounds)
    mb = args.mib * MiB / 1e6

    for i, (echo, put, get) in enumerate(figures.rounds, 1):
        print(f"round {i}: raw py-libp2p 4 KiB echo, 64 streams {echo:7,.0f} req/s; cluster "
              f"put {put:7,.0f} ops/s ({put / echo:.2f}x), get {get:7,.0f} ops/s "
              f"({get / echo:.2f}x)")
    print(f"raw py-libp2p: 4 KiB echo, 64 streams {figures.echo_req_s:9,.0f} req/s (median); "
          f"sequential round trip p99 {figures.seq_p99_ms:.3f} ms (median)")
    if redis is not None:
        print(f"redis cluster: 4 KiB SET {redis.set_ops:,.0f} ops/s, GET {redis.get_ops:,.0f} "
              "ops/s")
    print(f"cluster, {args.tasks} tasks: 4 KiB put {figures.put_ops:9,.0f} ops/s, get "
          f"{figures.get_ops:9,.0f} ops/s (medians; {figures.ops} ops in {figures.messages} messages, "
          f"{figures.ops / max(1, figures.messages):.1f} ops/message)")
    print(f"cluster single get: p50 {figures.get_p50_ms:.3f} ms, p99 {figures.get_p99_ms:.3f} ms")
    print("node peak anonymous RSS: " + ", ".join(f"{r:.0f} MiB" for r in figures.node_anon_mib)
          + "; peak RSS (VmHWM) " + ", ".join(f"{r:.0f}" for r in figures.node_rss_mib)
          + " MiB, of which file-backed at the end (LevelDB's mmapped tables, page cache) "
          + ", ".join(f"{r:.0f}" for r in figures.node_file_mib) + " MiB")
    print(f"client add {args.mib} MiB: {mb / files['add_s']:.1f} MB/s, "
          f"cat {mb / files['cat_s']:.1f} MB/s; client peak RSS after add "
          f"{files['add_rss_mib']:.0f} MiB, after add+cat "
          f"{files['peak_rss_mib']:.0f} MiB")

    conc = figures.echo_req_s
    report.record(f"cluster: 4 KiB put, {args.tasks} tasks", figures.put_ops, "ops/s", conc, 3,
                  baseline_name="raw 64-stream")
    report.record(f"cluster: 4 KiB get, {args.tasks} tasks", figures.get_ops, "ops/s", conc, 3,
                  baseline_name="raw 64-stream")
    if redis is not None:
        report.record("cluster: 4 KiB put vs Redis SET", figures.put_ops, "ops/s",
                      redis.set_ops, 0.25, baseline_name="redis SET")
        report.record("cluster: 4 KiB get vs Redis GET", figures.get_ops, "ops/s",
                      redis.get_ops, 0.25, baseline_name="redis GET")
    report.record("cluster: single 4 KiB get p99", figures.get_p99_ms, "ms", figures.seq_p99_ms, 3,
                  baseline_name="raw p99", lower_is_better=True)
    report.record("cluster: node peak anonymous RSS (largest of 3)", max(figures.node_anon_mib),
                  "MiB", NODE_RSS_LIMIT_MIB, 1, baseline_name="limit", lower_is_better=True)
    report.record("cluster: node peak RSS incl. mmapped LevelDB files", max(figures.node_rss_mib),
                  "MiB", NODE_RSS_LIMIT_MIB, baseline_name="limit", lower_is_better=True)
    report.record(f"cluster: client peak RSS, add+cat {args.mib} MiB", files["peak_rss_mib"],
                  "MiB", CLIENT_RSS_LIMIT_MIB, 1, baseline_name="limit", lower_is_better=True)
    report.record(f"cluster: client add {args.mib} MiB", mb / files["add_s"], "MB/s")
    report.record(f"cluster: client cat {args.mib} MiB", mb / files["cat_s"], "MB/s")


if __name__ == "__main__":
    main()

"""Data nodes: the embedded datastore choice, then a 3-node cluster under load.

Part 1, ``datastores`` (in this process): the node's workload through the
Datastore contract on each ``dscluster --datastore`` kind, opened as the CLI
opens it — leveldb, flatfs (synced) and hybrid (block keys in synced flatfs,
the rest in LevelDB) — plus unsynced flatfs for reference. Puts come
in batches of ``--batch`` as the store service commits a client's coalesced
Batch; gets are single awaited calls as the service's fast path makes them.
Three workloads: 4 KiB values under block keys ("/CIQ..."), 256 KiB values
under block keys, 4 KiB values under path keys ("/meta/..."). Leveldb is the
baseline of the ratios.

Part 2, ``cluster``: a 3-node cluster of real ``dscluster`` processes on
loopback (``ProcessCluster``), ``--tasks`` concurrent client tasks doing 4 KiB
puts then gets through one ``ClusterClient`` (which coalesces concurrent calls
into batched requests per node): ops/s and p50/p99 latency per call, printed
beside the raw py-libp2p request/response baseline measured in the same run
(``bench.p2p_baseline``), and each daemon's RSS from /proc.

``python -m bench node`` (both, well under 2 minutes); alone:
``python -m bench.node [--part datastores|cluster] [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

import trio

from bench import report
from bench.p2p_baseline import Baseline, measure_now
from dscluster.datastore import Datastore

KIB = 1024


# -- part 1: the embedded datastore ------------------------------------------------------


def _candidates(root: str) -> dict[str, Callable[[], Datastore]]:
    """The ``--datastore`` kinds exactly as ``dscluster`` opens them, and unsynced flatfs."""
    from dscluster.datastore.flatfs import FlatfsDatastore
    from dscluster.datastore.open import open_datastore

    def kind(name: str) -> Callable[[], Datastore]:
        return lambda: open_datastore(name, root, name, "", "bench")

    return {
        "leveldb": kind("leveldb"),
        "flatfs": kind("flatfs"),  # synced: power-loss safe
        "hybrid": kind("hybrid"),  # flatfs synced + LevelDB
        "flatfs sync=False": lambda: FlatfsDatastore(os.path.join(root, "nosync"), sync=False),
    }


def _keys(form: str, n: int) -> list[str]:
    # Block keys look like base32 multihash keys: spread over flatfs's shard dirs.
    if form == "block":
        return [f"/CIQ{(i * 2654435761) % (1 << 32):010d}X{i:06d}" for i in range(n)]
    return [f"/meta/{i:06d}" for i in range(n)]


async def put_in_batches(ds: Datastore, keys: list[str], value: bytes, batch: int) -> float:
    """Put ``value`` under every key, ``batch`` keys per datastore batch; keys/s."""
    start = time.perf_counter()
    for i in range(0, len(keys), batch):
        b = await ds.batch()
        for k in keys[i : i + batch]:
            b.put(k, value)
        await b.commit()
    return len(keys) / (time.perf_counter() - start)


async def _workload(ds: Datastore, keys: list[str], size: int, batch: int
                    ) -> tuple[float, float]:
    """Batched puts, then single gets; (puts/s, gets/s)."""
    puts = await put_in_batches(ds, keys, os.urandom(size), batch)
    start = time.perf_counter()
    for k in keys:
        await ds.get(k)
    gets = len(keys) / (time.perf_counter() - start)
    return puts, gets


async def bench_datastores(batch: int, quick: bool) -> None:
    workloads = [  # (name, key form, value size, key count)
        ("4 KiB, block keys", "block", 4 * KIB, 500 if quick else 2000),
        ("256 KiB, block keys", "block", 256 * KIB, 100 if quick else 300),
        ("4 KiB, path keys", "path", 4 * KIB, 500 if quick else 2000),
    ]
    print(f"datastores: puts in batches of {batch}, then single gets; ratio = / leveldb")
    for name, form, size, n in workloads:
        keys = _keys(form, n)
        with tempfile.TemporaryDirectory(prefix="bench-node-ds-") as root:
            figures: dict[str, tuple[float, float]] = {}
            for label, make in _candidates(root).items():
                if form == "path" and label.startswith("flatfs"):
                    continue  # flatfs cannot hold path keys
                ds = make()
                try:
                    figures[label] = await _workload(ds, keys, size, batch)
                finally:
                    await ds.close()
            base_put, base_get = figures["leveldb"]
            for label, (puts, gets) in figures.items():
                print(f"  {name:20} {label:18} put {puts:9,.0f}/s ({puts / base_put:5.2f})"
                      f"  get {gets:9,.0f}/s ({gets / base_get:5.2f})", flush=True)


# -- part 2: a 3-node cluster -------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _drive(client: Datastore, tasks: int, per_task: int, op: str) -> tuple[float, list[float]]:
    value = os.urandom(4 * KIB)
    latencies: list[float] = []

    async def worker(t: int) -> None:
        for i in range(per_task):
            key = f"/bench/t{t}/k{i}"
            start = time.perf_counter()
            if op == "put":
                await client.put(key, value)
            else:
                await client.get(key)
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for t in range(tasks):
            nursery.start_soon(worker, t)
    return tasks * per_task / (time.perf_counter() - start), latencies


async def bench_cluster(tasks: int, per_task: int, datastore: str, quick: bool) -> None:
    from dsclient.client import open_cluster_client
    from dscluster.testing.cluster import ProcessCluster, rss_kib

    with tempfile.TemporaryDirectory(prefix="bench-node-") as base, trio.fail_after(110):
        baseline: Baseline = await measure_now(quick=True, rpc=False)
        async with ProcessCluster(base, 3, datastore=datastore) as cluster, \
                open_cluster_client(cluster.client_identity,
                                    bootstrap=[cluster.bootstrap_addr]) as client:
            await client.put("/bench/warm", b"x")  # dial and learn the table
            print(f"cluster: 3 {datastore} nodes, {tasks} client tasks x {per_task} ops, "
                  "4 KiB values, one ClusterClient")
            for op in ("put", "get"):
                rate, lat = await _drive(client, tasks, per_task, op)
                print(f"  {op:4} {rate:9,.0f} ops/s  p50 {statistics.median(lat) * 1e3:7.2f} ms"
                      f"  p99 {_percentile(lat, 0.99) * 1e3:7.2f} ms"
                      f"  ({rate / baseline.seq_req_s:.2f}x raw sequential, "
                      f"{rate / baseline.concurrent_req_s:.2f}x raw {baseline.concurrency} "
                      "streams)", flush=True)
                report.record(f"node: 4 KiB {op}, {tasks} tasks, 3 processes", rate, "ops/s",
                              baseline.concurrent_req_s,
                              baseline_name=f"raw p2p, {baseline.concurrency} streams")
            for line in baseline.lines():
                print("  " + line)
            for i, proc in enumerate(cluster.procs):
                if proc is not None:
                    print(f"  node {i} (pid {proc.pid}) RSS {rss_kib(proc.pid) / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("datastores", "cluster", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--batch", type=int, default=8, help="puts per datastore batch")
    parser.add_argument("--tasks", type=int, default=32, help="concurrent client tasks")
    parser.add_argument("--ops", type=int, default=0, help="ops per task (default: 40, quick 20)")
    parser.add_argument("--datastore", default="leveldb", help="the nodes' --datastore")
    args = parser.parse_args()
    if args.part in ("datastores", "all"):
        trio.run(bench_datastores, args.batch, args.quick)
    if args.part in ("cluster", "all"):
        trio.run(bench_cluster, args.tasks, args.ops or (20 if args.quick else 40),
                 args.datastore, args.quick)


if __name__ == "__main__":
    main()

"""Slot migration throughput and the latency clients see while slots move.

Two in-process nodes on LevelDB (loopback libp2p, the daemon's real
Migrator). For 4 KiB and 256 KiB values: load N keys into a range of slots
owned by node 0, measure p50/p99 of a reader's gets on those keys, then
migrate the range to node 1 while the reader keeps going (following ASK).
Prints slots, keys/s and MB/s moved, and p99 during against before, beside
raw py-libp2p bulk stream throughput measured in the same run
(bench/p2p_baseline.py).

``python -m bench.migrate [--quick]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import trio

from bench import report
from bench.p2p_baseline import run_baseline
from dscluster.core.slots import SlotSet, key_slot
from dscluster.datastore.leveldb import LevelDatastore
from dscluster.errors import DSClusterError
from dscluster.testing.cluster import local_cluster, store_client
from dscluster.wire import messages as wm

SLOTS = (0, 2047)  # the moving range (owned by node 0 in a 2-node cluster)


def _keys(n: int) -> list[str]:
    out, i = [], 0
    while len(out) < n:
        k = f"/bench/migrate/{i}"
        if SLOTS[0] <= key_slot(k) <= SLOTS[1]:
            out.append(k)
        i += 1
    return out


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 2 else float("nan")


async def _one(size: int, count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with local_cluster(tmp, 2, datastore=lambda i: LevelDatastore(
                os.path.join(tmp, f"ds{i}"))) as cluster:
            src, dst = cluster.nodes
            keys = _keys(count)
            value = os.urandom(size)
            async with store_client(cluster.client_identity, cluster.table) as client:
                for i in range(0, count, 64):
                    part = tuple((k, value) for k in keys[i:i + 64])
                    await client.call_node(src.peer_id, wm.Batch(0, part, (), False), timeout=60)
                before: list[float] = []
                for k in keys[:200]:
                    t = time.perf_counter()
                    await client.get(k)
                    before.append(time.perf_counter() - t)

                during: list[float] = []
                done = trio.Event()

                async def reader() -> None:
                    i = 0
                    while not done.is_set():
                        t = time.perf_counter()
                        try:
                            await client.get(keys[i % len(keys)])
                        except DSClusterError:
                            pass
                        during.append(time.perf_counter() - t)
                        i += 1

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(reader)
                    start = time.perf_counter()
                    await src.start_migration(SlotSet((SLOTS,)), dst.peer_id)
                    while src.core.migrations:
                        await trio.sleep(0.01)
                    secs = time.perf_counter() - start
                    done.set()
            moved = sum(src.migrator.moved.values())
            assert moved == count, (moved, count)
    return {"keys_s": count / secs, "mb_s": count * size / secs / 1e6, "secs": secs,
            "p50_before": _pct(before, 50), "p99_before": _pct(before, 99),
            "p50_during": _pct(during, 50), "p99_during": _pct(during, 99),
            "reads_during": len(during)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.migrate")
    parser.add_argument("--quick", action="store_true", help="fewer keys")
    args = parser.parse_args()
    base = report.memo("p2p_baseline", lambda: run_baseline(quick=True))
    for line in base.lines()[:1]:
        print(line)
    nslots = SLOTS[1] - SLOTS[0] + 1
    for size, count in ((4096, 1000 if args.quick else 5000), (262144, 40 if args.quick else 200)):
        r = trio.run(_one, size, count)
        label = f"{size // 1024} KiB"
        print(f"migrate {label}: {nslots} slots, {count} keys in {r['secs']:.2f} s: "
              f"{r['keys_s']:.0f} keys/s, {r['mb_s']:.1f} MB/s "
              f"({r['mb_s'] / base.bulk_mb_s:.3f}x raw bulk stream)")
        print(f"migrate {label}: client get p50/p99 before {r['p50_before']:.2f}/"
              f"{r['p99_before']:.2f} ms, during {r['p50_during']:.2f}/{r['p99_during']:.2f} ms "
              f"({r['reads_during']:.0f} reads; p99 {r['p99_during'] / r['p99_before']:.1f}x)")
        report.record(f"migrate {label} MB/s", r["mb_s"], "MB/s", base.bulk_mb_s,
                      baseline_name="p2p bulk one stream")
        report.record(f"migrate {label} get p99 during", r["p99_during"], "ms",
                      r["p99_before"], baseline_name="p99 before migration",
                      lower_is_better=True)


if __name__ == "__main__":
    main()

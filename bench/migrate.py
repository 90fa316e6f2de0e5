"""Slot migration throughput and the latency clients see while slots move.

Two ``dscluster`` daemons as processes on LevelDB (loopback libp2p), this
process being their client and admin. For 4 KiB and 256 KiB values: load N keys spread over all
slots (each to its owner), measure p50/p99 of a reader's gets on the keys
that will move, then migrate 1/4 of the slots (0-4095, all owned by node 0)
to node 1 while the reader keeps going (following ASK). Prints slots, keys/s
and MB/s moved, and p99 during against before, beside raw py-libp2p bulk
stream throughput and, for 4 KiB, Redis Cluster's reshard of 1/4 of the
slots of 200,000 keys (bench.redis_baseline), measured in the same run.

``python -m bench.migrate [--quick] [--keys N] [--no-redis]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import trio

from bench import report
from bench.cluster import started
from bench.p2p_baseline import run_baseline
from dsclient.admin import open_admin
from dscluster.core.slots import SLOT_COUNT, SlotSet, key_slot
from dscluster.errors import DSClusterError
from dscluster.testing.cluster import ProcessCluster, store_client
from dscluster.wire import messages as wm

SLOTS = (0, SLOT_COUNT // 4 - 1)  # the moving quarter (owned by node 0 in a 2-node cluster)
LOAD_BYTES = 4 * 1024 * 1024  # values per loading Batch (a frame holds 16 MiB)


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] * 1000 if len(values) > 2 else float("nan")


async def _one(size: int, count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with started(ProcessCluster(tmp, 2, admin_client=True)) as cluster:
            assert cluster.table is not None
            src, dst = cluster.peer_id(0), cluster.peer_id(1)
            value = os.urandom(size)
            by_owner: dict[str, list[str]] = {}
            for i in range(count):
                k = f"/bench/migrate/{i}"
                by_owner.setdefault(cluster.table.owner(key_slot(k)) or "", []).append(k)
            assert set(by_owner) <= {src, dst}
            keys = [k for k in by_owner[src] if SLOTS[0] <= key_slot(k) <= SLOTS[1]]
            async with store_client(cluster.client_identity, cluster.table) as client, \
                    open_admin(cluster.client_identity, cluster.seeds()) as admin:
                step = max(1, min(64, LOAD_BYTES // size))
                for owner, owned in by_owner.items():
                    for i in range(0, len(owned), step):
                        part = tuple((k, value) for k in owned[i:i + step])
                        await client.call_node(owner, wm.Batch(0, part, (), False), timeout=60)
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
                    mid = await admin.migrate(src, SlotSet((SLOTS,)), dst)
                    await admin.wait_migration(src, mid)
                    secs = time.perf_counter() - start
                    done.set()
                moved, _ = (await admin.status(src)).moved[mid]
                assert moved == len(keys), (moved, len(keys))
                assert await client.get(keys[-1]) == value
    return {"moved": moved, "keys_s": moved / secs, "mb_s": moved * size / secs / 1e6,
            "secs": secs,
            "p50_before": _pct(before, 50), "p99_before": _pct(before, 99),
            "p50_during": _pct(during, 50), "p99_during": _pct(during, 99),
            "reads_during": len(during)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.migrate")
    parser.add_argument("--quick", action="store_true", help="fewer keys (20,000 and 200)")
    parser.add_argument("--keys", type=int, default=200_000,
                        help="4 KiB keys loaded; 1/4 of them move (default 200000)")
    parser.add_argument("--no-redis", action="store_true", help="skip the Redis reshard baseline")
    args = parser.parse_args()
    base = report.memo("p2p_baseline", lambda: run_baseline(quick=True))
    for line in base.lines()[:1]:
        print(line)
    redis = None
    if not args.no_redis:
        from bench import redis_baseline

        redis = redis_baseline.measured()
        if redis is not None:
            print(f"redis reshard 1/4 of the slots: {redis.reshard_keys:,} keys of 4 KiB in "
                  f"{redis.reshard_keys / redis.reshard_keys_s:.1f} s: "
                  f"{redis.reshard_keys_s:,.0f} keys/s")
    nslots = SLOTS[1] - SLOTS[0] + 1
    counts = ((4096, 20_000 if args.quick else args.keys), (262144, 200 if args.quick else 800))
    for size, count in counts:
        r = trio.run(_one, size, count)
        label = f"{size // 1024} KiB"
        print(f"migrate {label}: {nslots} slots, {r['moved']:,.0f} of {count:,} keys in "
              f"{r['secs']:.2f} s: {r['keys_s']:,.0f} keys/s, {r['mb_s']:.1f} MB/s "
              f"({r['mb_s'] / base.bulk_mb_s:.3f}x raw bulk stream)")
        print(f"migrate {label}: client get p50/p99 before {r['p50_before']:.2f}/"
              f"{r['p99_before']:.2f} ms, during {r['p50_during']:.2f}/{r['p99_during']:.2f} ms "
              f"({r['reads_during']:.0f} reads; p99 {r['p99_during'] / r['p99_before']:.1f}x)")
        report.record(f"migrate {label} MB/s", r["mb_s"], "MB/s", base.bulk_mb_s,
                      baseline_name="p2p bulk one stream")
        if size == 4096 and redis is not None:
            report.record(f"migrate 1/4 of slots, {count:,} x 4 KiB", r["keys_s"], "keys/s",
                          redis.reshard_keys_s, 1.0, baseline_name="Redis reshard")
        report.record(f"migrate {label} get p99 during", r["p99_during"], "ms",
                      r["p99_before"], baseline_name="p99 before migration",
                      lower_is_better=True)


if __name__ == "__main__":
    main()

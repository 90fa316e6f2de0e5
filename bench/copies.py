"""What a second copy costs: 4 KiB puts and gets with copies 2 beside copies 1.

Three ``dscluster`` daemons as processes on LevelDB, a fresh cluster for each
setting, this process their client; ``--tasks`` concurrent tasks each put
then get ``--ops`` 4 KiB values (bench/cluster.py's kv_load). With copies 2
every put is applied by its primary and then confirmed by the slot's second
copy before it is acknowledged (node/replicator.py), so the put figure is
expected below copies 1's; gets are served by the primary alone either way.
The settings alternate over ``--rounds`` rounds (the machine is shared).

``python -m bench.copies [--rounds 2] [--tasks 64] [--ops 60]``
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile

import trio

from bench import report
from bench.cluster import kv_load, started
from dsclient.client import open_cluster_client
from dscluster.procs import ProcessCluster


async def _round(copies: int, tasks: int, ops: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with started(ProcessCluster(tmp, 3, copies=copies)) as cluster, \
                open_cluster_client(cluster.client_identity,
                                    bootstrap=[cluster.bootstrap_addr]) as client:
            await kv_load(client, 8, 20)  # connections up, tables learned
            return await kv_load(client, tasks, ops)


def main() -> None:
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(prog="python -m bench.copies")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--ops", type=int, default=60)
    args = parser.parse_args()
    figures: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for n in range(args.rounds):
        for copies in (1, 2):
            puts, gets = trio.run(_round, copies, args.tasks, args.ops)
            figures[copies].append((puts, gets))
            print(f"round {n + 1}, copies {copies}: {puts:,.0f} puts/s, {gets:,.0f} gets/s "
                  f"({args.tasks} tasks x {args.ops} x 4 KiB)", flush=True)
    put1, put2 = (statistics.median(p for p, _ in figures[c]) for c in (1, 2))
    get1, get2 = (statistics.median(g for _, g in figures[c]) for c in (1, 2))
    for row in (report.record("4 KiB put, copies 2 (median)", put2, "ops/s", put1, None,
                              baseline_name="copies 1, same run"),
                report.record("4 KiB get, copies 2 (median)", get2, "ops/s", get1, None,
                              baseline_name="copies 1, same run")):
        print(report.format_row(row))


if __name__ == "__main__":
    main()

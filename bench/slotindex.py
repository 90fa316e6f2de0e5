"""The slot index: what it costs on writes and what it saves when a migration lists keys.

One LevelDB of N block keys (default 200,000 of 4 KiB) written through the node's
SlotIndexedDatastore, beside the same keys in a plain LevelDatastore in the
same run. Prints:

- write rate, 64-key batches, indexed against plain (the index's cost);
- listing the keys of 1/4 of the slots (what adding a 4th node to 3 moves)
  and of one slot through the index, against the keys-only full scan that
  finding them would take without it.

``python -m bench.slotindex [--keys N] [--value-size BYTES]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from base64 import b32encode
from hashlib import sha256

import trio

from bench import report
from bench.node import put_in_batches
from dscluster.core.slots import SLOT_COUNT, key_slot
from dscluster.datastore import Datastore, Query
from dscluster.datastore.leveldb import LevelDatastore
from dscluster.node.slotindex import SlotIndexedDatastore

BATCH = 64


async def _scan_for(ds: Datastore, slots: range) -> tuple[int, float]:
    started = time.perf_counter()
    found = 0
    results = await ds.query(Query(keys_only=True))
    async for entry in results:
        found += key_slot(entry.key) in slots
    await results.aclose()
    return found, time.perf_counter() - started


async def _list(ds: SlotIndexedDatastore, slots: range) -> tuple[int, float]:
    started = time.perf_counter()
    found = len(await ds.keys_in_slots(slots[0], slots[-1], 1 << 30))
    return found, time.perf_counter() - started


async def run(count: int, size: int) -> None:
    # block-shaped keys in hash order, as the cluster stores them (sequential
    # keys would flatter plain LevelDB: its compactions then never overlap)
    keys = [f"/CIQ{b32encode(sha256(str(i).encode()).digest()).decode().rstrip('=')}"
            for i in range(count)]
    value = os.urandom(size)
    quarter = range(0, SLOT_COUNT // 4)
    one = range(key_slot(keys[0]), key_slot(keys[0]) + 1)
    with tempfile.TemporaryDirectory() as tmp:
        plain = LevelDatastore(os.path.join(tmp, "plain"))
        indexed = SlotIndexedDatastore(LevelDatastore(os.path.join(tmp, "indexed")))
        try:
            await indexed.ensure_index()
            plain_rate = await put_in_batches(plain, keys, value, BATCH)
            indexed_rate = await put_in_batches(indexed, keys, value, BATCH)
            print(f"writes, {count:,} keys of {size} B in {BATCH}-key batches: "
                  f"indexed {indexed_rate:,.0f} keys/s, plain {plain_rate:,.0f} keys/s "
                  f"({indexed_rate / plain_rate:.2f}x)")
            report.record("slot index: batched 4 KiB writes", indexed_rate, "keys/s",
                          plain_rate, baseline_name="plain LevelDB")
            for name, slots in (("1/4 of the slots", quarter), ("one slot", one)):
                n_scan, t_scan = await _scan_for(indexed, slots)
                n_index, t_index = await _list(indexed, slots)
                assert n_scan == n_index, (n_scan, n_index)
                print(f"list {name} ({n_index:,} keys): index {t_index * 1000:,.1f} ms, "
                      f"full keys-only scan {t_scan * 1000:,.1f} ms "
                      f"({t_scan / max(t_index, 1e-9):,.1f}x faster)")
                report.record(f"slot index: list {name}", t_index * 1000, "ms",
                              t_scan * 1000, baseline_name="full scan",
                              lower_is_better=True)
        finally:
            await plain.close()
            await indexed.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--value-size", type=int, default=4096)
    args = parser.parse_args()
    trio.run(run, args.keys, args.value_size)


if __name__ == "__main__":
    main()

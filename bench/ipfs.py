"""Kubo downloading a file from our bitswap node, beside Kubo downloading it from Kubo.

    python -m bench.ipfs [--size-mib 64] [--timeout 300]

One run, three Kubo nodes in child processes (dscluster.testing.kubo):
A adds a random file; B downloads it from A (the baseline); our node fetches
the DAG from A into a flatfs directory, then serves it and C downloads it from
us. Prints seconds and MB/s for each and the ratio ours/baseline; every step
is bounded by --timeout.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import trio

from dscluster.blocks import parse_cid
from dscluster.datastore.flatfs import FlatfsDatastore
from dscluster.testing.kubo import open_kubo
from ipfs_plugin.node import open_node

MiB = 1024 * 1024


async def kubo_download(addr: str, cid: str, workdir: Path, timeout: float) -> float:
    """Seconds a fresh Kubo takes to download cid from the peer at addr."""
    dest = workdir / "downloaded"
    plan = {"connect": [addr], "download": [[cid, str(dest)]]}
    async with open_kubo(plan, workdir, timeout=timeout) as child:
        await child.result()
        if not (await child.result())["ok"]:
            raise SystemExit(f"Kubo could not connect to {addr}")
        result = await child.result()
    if not result["ok"]:
        raise SystemExit(f"Kubo could not download {cid} from {addr}")
    dest.unlink()
    return float(result["seconds"])


async def run(size: int, timeout: float) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-ipfs-") as tmp:
        root = Path(tmp)
        source = root / "file.bin"
        source.write_bytes(os.urandom(size))
        for name in ("a", "b", "c"):
            (root / name).mkdir()
        plan = {"add": [str(source)], "wait_stdin": True}
        async with open_kubo(plan, root / "a", timeout=4 * timeout) as kubo_a:
            addr_a = await kubo_a.multiaddr()
            cid = (await kubo_a.result())["cid"]
            baseline = await kubo_download(addr_a, cid, root / "b", timeout)
            async with FlatfsDatastore(root / "ours", sync=False) as store:
                async with open_node(store) as node:
                    peer = await node.connect(addr_a)
                    start = time.perf_counter()
                    with trio.fail_after(timeout):
                        stats = await node.bitswap.fetch_dag(parse_cid(cid), peer)
                    fetch = time.perf_counter() - start
                    ours = await kubo_download(node.multiaddrs[0], cid, root / "c", timeout)
    mb = size / 1e6
    print(f"file: {size // MiB} MiB, {stats.blocks} blocks, CID {cid}")
    print(f"Kubo <- Kubo (baseline): {baseline:7.2f} s  {mb / baseline:7.1f} MB/s")
    print(f"Kubo <- ours:            {ours:7.2f} s  {mb / ours:7.1f} MB/s")
    print(f"ours <- Kubo (fetch):    {fetch:7.2f} s  {mb / fetch:7.1f} MB/s")
    print(f"ratio ours/baseline (serving): {ours / baseline:.2f}x the time")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ipfs")
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per step")
    args = parser.parse_args()
    trio.run(run, args.size_mib * MiB, args.timeout)


if __name__ == "__main__":
    main()

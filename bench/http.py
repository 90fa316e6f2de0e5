"""The HTTP gateway beside dsclient in the same run: a big file, its CAR, small raw blocks.

    python -m bench.http [--mib 256] [--blocks 2000] [--requests 4000] [--datastore flatfs]

Same run, same machine: a ProcessCluster (3 real ``dscluster`` daemons with
``--http 127.0.0.1:0``). The file is added with ``dsclient add``; then
``dsclient cat CID`` (a child process, as a user runs it, to /dev/null) is the
baseline for node 0's gateway ``GET /ipfs/CID`` and ``GET /ipfs/CID?format=car``
(httpx, streamed and discarded; the CAR is checked to be complete). Small
blocks: ``--blocks`` 4 KiB raw blocks, then ``--requests`` ``?format=raw`` GETs
from 64 concurrent HTTP clients against 64 concurrent ``AsyncClient.get`` of
the same blocks over libp2p (the baseline). Prints MB/s, requests/s and ratios.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

from bench import report
from bench.add_unixfs import write_random_file
from dscluster.config import ClientConfig, IdentityConfig, save_config

CLI_TIMEOUT = 1800
CONCURRENCY = 64


def dsclient(conf: Path, *args: str, stdout: int | None = subprocess.PIPE) -> tuple[str, float]:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "dsclient.cli", "--conf", str(conf), *args],
                         stdout=stdout, stderr=subprocess.PIPE, text=True,
                         timeout=CLI_TIMEOUT, check=False)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"dsclient {' '.join(args)} failed: {out.stderr.strip()}")
    return (out.stdout or "").strip(), seconds


async def stream_get(client: httpx.AsyncClient, url: str) -> tuple[int, float]:
    started = time.perf_counter()
    n = 0
    async with client.stream("GET", url) as r:
        if r.status_code != 200:
            raise RuntimeError(f"GET {url}: {r.status_code}")
        async for piece in r.aiter_raw():
            n += len(piece)
    return n, time.perf_counter() - started


async def many(n: int, concurrency: int, one: object) -> float:
    """Run ``one(i)`` for i in range(n) with ``concurrency`` tasks; seconds taken."""
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            await one(i)  # type: ignore[operator]

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return time.perf_counter() - started


def http_url(out_file: Path) -> str:
    for line in out_file.read_text().splitlines():
        if "dscluster: HTTP on " in line:
            return line.split("HTTP on ", 1)[1].split()[0]
    raise RuntimeError(f"no HTTP line in {out_file}")


async def run(tmp: Path, path: Path, size: int, args: argparse.Namespace) -> dict[str, float]:
    from dsclient.api import AsyncClient
    from dscluster.testing.cluster import ProcessCluster

    out: dict[str, float] = {}
    async with ProcessCluster(str(tmp / "cluster"), 3, datastore=args.datastore,
                              extra_args=["--http", "127.0.0.1:0"]) as pc:
        url = http_url(Path(pc.base) / "n0.out")
        conf = tmp / "client"
        save_config(ClientConfig(identity=IdentityConfig.of(pc.client_identity),
                                 bootstrap_addrs=(pc.bootstrap_addr,)), conf / "config.json")
        cid, _ = await trio.to_thread.run_sync(dsclient, conf, "add", "-q", str(path))
        with open(os.devnull, "w") as null:
            _, cat_s = await trio.to_thread.run_sync(
                lambda: dsclient(conf, "cat", cid, stdout=null.fileno()))
        out["cat"] = size / cat_s / 1e6
        limits = httpx.Limits(max_connections=CONCURRENCY)
        async with httpx.AsyncClient(timeout=600, limits=limits) as http:
            n, get_s = await stream_get(http, f"{url}/ipfs/{cid}")
            assert n == size, (n, size)
            out["get"] = size / get_s / 1e6
            n, car_s = await stream_get(http, f"{url}/ipfs/{cid}?format=car")
            assert n > size, (n, size)
            out["car"] = n / car_s / 1e6
            async with AsyncClient.connect([pc.bootstrap_addr],
                                           identity=pc.client_identity) as c:
                cids = [await c.put(os.urandom(4096)) for _ in range(args.blocks)]

                async def by_libp2p(i: int) -> None:
                    await c.get(cids[i % len(cids)])

                out["libp2p_rps"] = args.requests / await many(args.requests, CONCURRENCY,
                                                                by_libp2p)

            async def by_http(i: int) -> None:
                r = await http.get(f"{url}/ipfs/{cids[i % len(cids)]}?format=raw")
                if r.status_code != 200 or len(r.content) != 4096:
                    raise RuntimeError(f"raw GET: {r.status_code}")

            out["http_rps"] = args.requests / await many(args.requests, CONCURRENCY, by_http)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="file size in MiB (default 256)")
    parser.add_argument("--blocks", type=int, default=2000, help="4 KiB blocks to read")
    parser.add_argument("--requests", type=int, default=4000, help="small-block requests")
    parser.add_argument("--datastore", default="flatfs", help="the nodes' datastore")
    args = parser.parse_args()
    size = args.mib * 1024 * 1024
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "data"
        write_random_file(path, size)
        r = trio.run(run, tmp, path, size, args)
    rows = [
        report.record(f"gateway GET {args.mib} MiB file", r["get"], "MB/s", r["cat"],
                      baseline_name="dsclient cat"),
        report.record(f"gateway GET {args.mib} MiB as CAR", r["car"], "MB/s", r["cat"],
                      baseline_name="dsclient cat"),
        report.record(f"gateway ?format=raw 4 KiB, {CONCURRENCY} clients", r["http_rps"],
                      "req/s", r["libp2p_rps"], baseline_name="AsyncClient.get"),
    ]
    for row in rows:
        print(report.format_row(row), flush=True)


if __name__ == "__main__":
    main()

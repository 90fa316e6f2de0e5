"""Redis Cluster on this machine, the same run: the figures ds-cluster is read against.

    python -m bench.redis_baseline [--requests 100000] [--keys 200000] [--no-install]

Starts Debian's ``redis-server`` as 3 cluster masters on 127.0.0.1 high ports
in a temporary directory (no persistence), joins them with ``redis-cli
--cluster create``, then:

- ``redis-benchmark --cluster``: 50 clients, 4 KiB values, SET and GET, no
  pipelining, ``--requests`` each (ops/s);
- reshard: loads ``--keys`` values of 4 KiB (each master gets its own keys
  through ``redis-cli --pipe``), moves 1/4 of the slots (4096) from the first
  master to the second with ``redis-cli --cluster reshard`` and reports keys/s
  and MB/s of the keys that moved.

Everything is stopped at the end, every step has a timeout. If the Redis
tools are missing and we run as root, they are installed with apt-get (as
``make bench`` wants); otherwise the bench says how and records nothing.
Other benches call ``measure()`` (memoized per run through bench.report).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

from bench import report

VALUE = 4096
SLOTS = 16384
RESHARD_SLOTS = SLOTS // 4
INSTALL = "apt-get update && apt-get install -y redis-server redis-tools"
TOOLS = ("redis-server", "redis-cli", "redis-benchmark")


@dataclass(frozen=True)
class RedisFigures:
    set_ops: float
    get_ops: float
    reshard_keys: int  # keys that moved
    reshard_keys_s: float
    reshard_mb_s: float


# -- Redis's key slots (CRC16/XMODEM, not the IBM CRC go-ds-cluster uses) -------------


def _xmodem_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_XMODEM = _xmodem_table()


def redis_slot(key: bytes) -> int:
    """The Redis Cluster slot of a key without hash tags."""
    crc = 0
    for byte in key:
        crc = ((crc << 8) & 0xFFFF) ^ _XMODEM[((crc >> 8) ^ byte) & 0xFF]
    return crc % SLOTS


# -- processes -------------------------------------------------------------------------


def ensure_tools(install: bool) -> bool:
    """True if the Redis tools are here (installing them as root when allowed)."""
    if all(shutil.which(t) for t in TOOLS):
        return True
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"redis: installing the Redis tools: {INSTALL}", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-qq", "redis-server", "redis-tools"],
                       check=False, env=env, timeout=600)
        if all(shutil.which(t) for t in TOOLS):
            return True
    print(f"redis: redis-server/redis-cli/redis-benchmark not found; install them with:\n"
          f"    {INSTALL}")
    return False


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(n: int) -> list[int]:
    """n ports whose cluster-bus ports (+10000) are free too."""
    ports: list[int] = []
    candidate = 30000 + os.getpid() % 10000 // 10 * 10
    while len(ports) < n:
        candidate += 1
        if candidate + 10000 > 65535:
            candidate = 30001
        if _port_free(candidate) and _port_free(candidate + 10000):
            ports.append(candidate)
    return ports


def cli(port: int, *args: str, timeout: float = 60, stdin: bytes | None = None) -> str:
    out = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                         input=stdin, capture_output=True, timeout=timeout, check=True)
    return out.stdout.decode()


class RedisCluster:
    """3 (or n) masters in ``workdir``; ``with RedisCluster(...) as rc``."""

    def __init__(self, workdir: str, n: int = 3) -> None:
        self.workdir = workdir
        self.ports = free_ports(n)
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> RedisCluster:
        try:
            for port in self.ports:
                d = os.path.join(self.workdir, str(port))
                os.makedirs(d)
                self.procs.append(subprocess.Popen(
                    ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                     "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--dir", d, "--save", "", "--appendonly", "no",
                     "--protected-mode", "no", "--daemonize", "no",
                     "--logfile", os.path.join(d, "redis.log")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for port in self.ports:
                self._wait_ping(port)
            subprocess.run(["redis-cli", "--cluster", "create",
                            *[f"127.0.0.1:{p}" for p in self.ports], "--cluster-yes"],
                           capture_output=True, timeout=60, check=True)
            self._wait_ok()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _wait_ping(self, port: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if cli(port, "ping", timeout=5).strip() == "PONG":
                    return
            except subprocess.CalledProcessError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {port} did not start")
            time.sleep(0.05)

    def _wait_ok(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not all("cluster_state:ok" in cli(p, "cluster", "info") for p in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("the Redis cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def masters(self) -> list[tuple[str, int, list[tuple[int, int]]]]:
        """(node id, port, slot ranges) of each master, from CLUSTER NODES."""
        out = []
        for line in cli(self.ports[0], "cluster", "nodes").splitlines():
            parts = line.split()
            if "master" not in parts[2]:
                continue
            port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
            ranges = []
            for r in parts[8:]:
                if r.startswith("["):
                    continue  # a slot being migrated
                lo, _, hi = r.partition("-")
                ranges.append((int(lo), int(hi or lo)))
            out.append((parts[0], port, ranges))
        return sorted(out, key=lambda m: m[1])


# -- measurements ------------------------------------------------------------------------


def benchmark(port: int, requests: int, clients: int = 50, timeout: float = 300
              ) -> tuple[float, float]:
    """redis-benchmark's SET and GET ops/s (4 KiB, no pipelining)."""
    out = subprocess.run(
        ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "--cluster", "-c",
         str(clients), "-n", str(requests), "-d", str(VALUE), "-t", "set,get", "--csv"],
        capture_output=True, timeout=timeout, check=True).stdout.decode()
    rates = {row[0]: float(row[1]) for row in csv.reader(io.StringIO(out))
             if len(row) > 1 and row[0] in ("SET", "GET")}
    return rates["SET"], rates["GET"]


def _resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def load(rc: RedisCluster, keys: int, timeout: float = 600) -> None:
    """``keys`` 4 KiB values, each streamed to the master serving its slot (redis-cli --pipe)."""
    owner = [0] * SLOTS
    masters = rc.masters()
    for i, (_, _, ranges) in enumerate(masters):
        for lo, hi in ranges:
            owner[lo:hi + 1] = [i] * (hi - lo + 1)
    value = os.urandom(VALUE)
    pipes = [subprocess.Popen(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--pipe"],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
             for _, port, _ in masters]
    try:
        for n in range(keys):  # streamed: the bench holds one command at a time, not 800 MB
            key = b"bench:%d" % n
            stdin = pipes[owner[redis_slot(key)]].stdin
            assert stdin is not None
            stdin.write(_resp(b"SET", key, value))
    finally:
        for proc in pipes:
            if proc.stdin is not None:
                proc.stdin.close()
        for proc in pipes:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    failed = [p.returncode for p in pipes if p.returncode != 0]
    if failed:
        raise RuntimeError(f"redis-cli --pipe failed ({failed})")


def reshard(rc: RedisCluster, timeout: float = 900) -> tuple[int, float]:
    """Move 1/4 of the slots from the first master to the second: (keys moved, seconds)."""
    masters = rc.masters()
    (src_id, src_port, src_ranges), (dst_id, _, _) = masters[0], masters[1]
    if sum(hi - lo + 1 for lo, hi in src_ranges) < RESHARD_SLOTS:
        raise RuntimeError("the first master holds fewer slots than the reshard moves")
    before = int(cli(src_port, "dbsize"))
    started = time.perf_counter()
    subprocess.run(["redis-cli", "--cluster", "reshard", f"127.0.0.1:{src_port}",
                    "--cluster-from", src_id, "--cluster-to", dst_id,
                    "--cluster-slots", str(RESHARD_SLOTS), "--cluster-yes"],
                   capture_output=True, timeout=timeout, check=True)
    seconds = time.perf_counter() - started
    keys = before - int(cli(src_port, "dbsize"))
    return keys, seconds


def measure(requests: int = 100_000, keys: int = 200_000) -> RedisFigures | None:
    """Start a cluster, measure, stop it; None if Redis is not installed."""
    if not ensure_tools(install=True):
        return None
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        with RedisCluster(tmp) as rc:
            set_ops, get_ops = benchmark(rc.ports[0], requests)
            cli(rc.ports[0], "--cluster", "call", f"127.0.0.1:{rc.ports[0]}", "flushall")
            load(rc, keys)
            moved, seconds = reshard(rc)
    return RedisFigures(set_ops, get_ops, moved, moved / seconds, moved * VALUE / seconds / 1e6)


def measured(requests: int = 100_000, keys: int = 200_000) -> RedisFigures | None:
    """``measure`` once per run (shared by every bench that compares against Redis)."""
    return report.memo("redis", lambda: measure(requests, keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000,
                        help="redis-benchmark requests per test (default 100000)")
    parser.add_argument("--keys", type=int, default=200_000,
                        help="4 KiB keys loaded before the reshard (default 200000)")
    parser.add_argument("--no-install", action="store_true",
                        help="do not apt-get install Redis when it is missing")
    args = parser.parse_args()
    if args.no_install and not ensure_tools(install=False):
        return
    figures = measured(args.requests, args.keys)
    if figures is None:
        return
    print(f"redis cluster 3 masters, 50 clients, 4 KiB SET: {figures.set_ops:10,.0f} ops/s")
    print(f"redis cluster 3 masters, 50 clients, 4 KiB GET: {figures.get_ops:10,.0f} ops/s")
    print(f"redis reshard 1/4 of the slots ({figures.reshard_keys:,} keys of 4 KiB moved): "
          f"{figures.reshard_keys_s:,.0f} keys/s, {figures.reshard_mb_s:.1f} MB/s")
    report.record("redis: 4 KiB SET, 50 clients (baseline)", figures.set_ops, "ops/s")
    report.record("redis: 4 KiB GET, 50 clients (baseline)", figures.get_ops, "ops/s")
    report.record("redis: reshard 1/4 slots (baseline)", figures.reshard_keys_s, "keys/s")


if __name__ == "__main__":
    main()

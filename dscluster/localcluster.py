"""Run a local cluster of real dscluster processes: what `make run` starts.

    python -m dscluster.localcluster [--nodes 3] [--copies 2] [--dir DIR] [--datastore KIND]

Runs `dscfg cluster` (which writes an operator client at DIR/client, admin
and read-write on every node), starts the bootstrap node, then the others
joining with --bootstrapper/--identity/--join-secret-file (DIR/n0/join.secret:
the secret itself is never on a command line, where `ps` shows it to every
user), prints every node's multiaddr and the dsclient commands to paste, and
stops them all cleanly on Ctrl-C. DIR (default a new temp dir) keeps the
configs, the data and each node's log (n<i>.log) after the stop: run it again
with --dir DIR to start the same cluster again.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import tempfile

import trio

from dscluster.core.table import default_copies
from dscluster.procs import ProcessCluster, script

CLIENT_DIR = "client"


class LocalCluster(ProcessCluster):
    """A ProcessCluster that starts again from DIR when DIR already holds one."""

    async def __aenter__(self) -> LocalCluster:
        if not os.path.exists(os.path.join(self.conf(0), "config.json")):
            await super().__aenter__()
            return self
        from dscluster.config import load_node_config

        self.bootstrap_addr = f"{load_node_config(self.conf(0)).swarm[0]}/p2p/{self.peer_id(0)}"
        await self.start_all()
        return self


def instructions(base: str) -> list[str]:
    """The lines telling a person what to paste next."""
    client = shlex.quote(os.path.join(base, CLIENT_DIR))
    path = script("dsclient")  # the venv's, which may not be on PATH
    dsclient = "dsclient" if shutil.which("dsclient") == path else shlex.quote(path)
    return [
        f"client config (admin): {client}; in another terminal try:",
        f"  {dsclient} --conf {client} add FILE",
        f"  {dsclient} --conf {client} status",
        f"  {dsclient} --conf {client} cluster status",
        f"(or export DSCLIENT_CONF={client}); authorize another client with "
        f"{dsclient} cluster auth add PEER read-write",
    ]


async def _run(nodes: int, base: str, datastore: str, copies: int) -> None:
    client = os.path.join(base, CLIENT_DIR)
    async with LocalCluster(base, nodes, datastore=datastore, tick=0.5,
                            operator_client=client, copies=copies) as cluster:
        copy_word = "copy" if copies == 1 else "copies"
        print(f"ds-cluster: {nodes} nodes, {copies} {copy_word} of every slot; "
              f"configs, data and logs in {base}")
        for i in range(nodes):
            addrs = cluster.listening_addrs(i)
            print(f"  node {i}: {addrs[-1] if addrs else '?'}")
        print(f"bootstrap: {cluster.bootstrap_addr}")
        for line in instructions(base):
            print(line)
        print("Ctrl-C stops every node (the directory stays)", flush=True)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                break
        print("stopping every node...", flush=True)
    print(f"stopped; {base} is kept (start it again with --dir {shlex.quote(base)})",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dscluster.localcluster")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--dir", default="", help="default: a new directory under /tmp")
    parser.add_argument("--datastore", default="leveldb")
    parser.add_argument("--copies", type=int, default=None,
                        help="copies of every slot, on distinct nodes (doc/copies.md); "
                             "default 2, or 1 with one node")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    if args.copies is None:
        args.copies = default_copies(args.nodes)
    if not 1 <= args.copies <= args.nodes:
        parser.error(f"--copies must be between 1 and --nodes ({args.nodes})")
    base = os.path.abspath(args.dir) if args.dir else tempfile.mkdtemp(prefix="dscluster-")
    os.makedirs(base, exist_ok=True)
    try:
        trio.run(_run, args.nodes, base, args.datastore, args.copies)
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:  # a node did not start: its log says why
        print(f"localcluster: error: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

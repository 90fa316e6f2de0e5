"""``python -m ipfs_plugin serve|fetch``: the bitswap node from a shell.

    python -m ipfs_plugin serve --flatfs DIR [--listen MA ...]
        serve the blocks in a flatfs directory; prints the node's multiaddr
    python -m ipfs_plugin fetch CID --from MA --flatfs DIR [--timeout S]
        pull the DAG under CID from the peer at MA into the flatfs directory

The dsclient CLI wires the same functions (ipfs_plugin.node.serve / fetch_dag)
to the cluster client; this entry point serves a local flatfs directory.
"""

from __future__ import annotations

import argparse
import signal
import sys

import trio

from dscluster.datastore.flatfs import FlatfsDatastore
from dscluster.errors import DSClusterError
from ipfs_plugin.node import DEFAULT_LISTEN, fetch_dag, serve


async def _serve(args: argparse.Namespace) -> None:
    async with FlatfsDatastore(args.flatfs, sync=False) as store:
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(serve, store, None, args.listen or list(DEFAULT_LISTEN))
            print(addr, flush=True)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break


async def _fetch(args: argparse.Namespace) -> None:
    async with FlatfsDatastore(args.flatfs, sync=True) as store:
        try:
            with trio.fail_after(args.timeout):
                stats = await fetch_dag(store, args.cid, args.peer)
        except trio.TooSlowError:
            raise DSClusterError(f"fetch of {args.cid} timed out after {args.timeout} s") from None
    print(f"{args.cid}: {stats.blocks} blocks, {stats.fetched} fetched ({stats.bytes_fetched} bytes)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ipfs_plugin")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="serve a flatfs directory over bitswap")
    serve_cmd.add_argument("--flatfs", required=True, help="flatfs directory (created if missing)")
    serve_cmd.add_argument("--listen", action="append", help="multiaddr to listen on (repeatable)")
    fetch_cmd = commands.add_parser("fetch", help="pull a DAG from a peer into a flatfs directory")
    fetch_cmd.add_argument("cid")
    fetch_cmd.add_argument("--from", dest="peer", required=True, help="peer multiaddr with /p2p/")
    fetch_cmd.add_argument("--flatfs", required=True, help="flatfs directory (created if missing)")
    fetch_cmd.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    args = parser.parse_args(argv)
    try:
        trio.run(_serve if args.command == "serve" else _fetch, args)
    except DSClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

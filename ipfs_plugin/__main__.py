"""``python -m ipfs_plugin serve|fetch``: the bitswap node from a shell.

    python -m ipfs_plugin serve (--repo KUBO_REPO | --flatfs DIR) [--listen MA ...]
        serve the blocks; prints the node's multiaddr
    python -m ipfs_plugin fetch CID --from MA (--repo KUBO_REPO | --flatfs DIR) [--timeout S]
        pull the DAG under CID from the peer at MA into that store

``--repo`` opens what the repo's ``config`` names as its ``Datastore.Spec``
and uses the part mounted at /blocks: with go-ds-cluster's spec, that is the
cluster (``clusterds``). ``--flatfs`` uses a bare flatfs directory. The
dsclient CLI wires the same functions (ipfs_plugin.node.serve / fetch_dag) to
the cluster client of its own config.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from dscluster.datastore.base import Datastore
from dscluster.datastore.flatfs import FlatfsDatastore
from dscluster.errors import DSClusterError
from ipfs_plugin.node import DEFAULT_LISTEN, fetch_dag, serve
from ipfs_plugin.spec import blocks_spec, open_spec, read_kubo_spec


@asynccontextmanager
async def _blockstore(args: argparse.Namespace, sync: bool) -> AsyncIterator[Datastore]:
    if args.repo is None:
        store: Datastore = FlatfsDatastore(args.flatfs, sync=sync)
    else:
        store = await open_spec(blocks_spec(read_kubo_spec(args.repo)), args.repo)
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await store.close()


async def _serve(args: argparse.Namespace) -> None:
    async with _blockstore(args, sync=False) as store:
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(serve, store, None, args.listen or list(DEFAULT_LISTEN))
            print(addr, flush=True)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break


async def _fetch(args: argparse.Namespace) -> None:
    async with _blockstore(args, sync=True) as store:
        try:
            with trio.fail_after(args.timeout):
                stats = await fetch_dag(store, args.cid, args.peer)
        except trio.TooSlowError:
            raise DSClusterError(f"fetch of {args.cid} timed out after {args.timeout} s") from None
    print(f"{args.cid}: {stats.blocks} blocks, {stats.fetched} fetched ({stats.bytes_fetched} bytes)")


def _store_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--repo", help="Kubo repo: its config's Datastore.Spec, the /blocks mount")
    where.add_argument("--flatfs", help="flatfs directory (created if missing)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ipfs_plugin")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="serve a store's blocks over bitswap")
    _store_options(serve_cmd)
    serve_cmd.add_argument("--listen", action="append", help="multiaddr to listen on (repeatable)")
    fetch_cmd = commands.add_parser("fetch", help="pull a DAG from a peer into a store")
    fetch_cmd.add_argument("cid")
    fetch_cmd.add_argument("--from", dest="peer", required=True, help="peer multiaddr with /p2p/")
    _store_options(fetch_cmd)
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

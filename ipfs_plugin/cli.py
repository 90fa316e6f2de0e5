"""``dsclient ipfs serve|fetch``: the bitswap node over the cluster of dsclient's --conf.

A typer sub-app that dsclient/cli.py mounts as ``dsclient ipfs``; it uses
dsclient's client config, swarm key and error handling (``dsclient.cli``,
imported when a command runs, so that ``dsclient --help`` stays light).
``python -m ipfs_plugin`` is the same node over a Kubo repo or a flatfs dir.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import typer

log = logging.getLogger(__name__)

app = typer.Typer(help="Serve the cluster's blocks to IPFS peers, or fetch DAGs from them.",
                  no_args_is_help=True, rich_markup_mode=None)


@app.command("serve")
def ipfs_serve(
    listen: Annotated[list[str] | None, typer.Option(
        help="Listen multiaddr (repeatable).")] = None,
) -> None:
    """Serve the cluster's blocks over bitswap until interrupted (prints the multiaddr)."""
    import signal
    import sys

    import trio

    from dsclient.cli import open_client, run
    from ipfs_plugin.node import serve

    async def go() -> None:
        # SIGTERM (a service manager's stop) ends it as cleanly as Ctrl-C: exit status 0.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with open_client() as client, trio.open_nursery() as nursery:
                addr = await nursery.start(serve, client.cluster, None,
                                           tuple(listen or ("/ip4/127.0.0.1/tcp/0",)))
                typer.echo(addr)
                sys.stdout.flush()
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    try:
        run(go, what="ipfs serve")
    except KeyboardInterrupt:
        pass


def _positive(value: float) -> float:
    if not value > 0:
        raise typer.BadParameter(f"{value}: must be above 0")
    return value


@app.command("fetch")
def ipfs_fetch(
    cid: Annotated[str, typer.Argument(help="Root CID of the DAG to fetch.")],
    peer: Annotated[str, typer.Option("--from", help="The IPFS peer's multiaddr (with /p2p/).")],
    timeout: Annotated[float, typer.Option(
        callback=_positive, help="Give up after this many seconds.")] = 300,
) -> None:
    """Fetch a whole DAG from an IPFS peer over bitswap into the cluster."""
    import trio

    from dsclient.cli import open_client, run
    from dscluster.blocks import parse_cid
    from dscluster.cliutil import UserError
    from dscluster.errors import UnavailableError
    from ipfs_plugin.node import fetch_dag

    parse_cid(cid)
    if "/p2p/" not in peer:
        raise typer.BadParameter(f"{peer}: needs the peer's /p2p/<peer id>",
                                 param_hint="'--from'")

    async def go() -> Any:
        # The deadline is outside the client's nursery: a TooSlowError raised in
        # there would come out wrapped in an exception group.
        with trio.move_on_after(timeout) as deadline:
            async with open_client() as client:
                try:
                    return await fetch_dag(client.cluster, cid, peer)
                except UnavailableError as exc:  # the IPFS peer, not the cluster
                    log.debug("ipfs fetch from %s failed", peer, exc_info=exc)
                    raise UserError(f"cannot connect to the IPFS peer {peer.rsplit('/p2p/')[0]}"
                                    f": is it running there? (--log-level debug shows why)"
                                    ) from None
        assert deadline.cancelled_caught
        raise UserError(f"ipfs fetch of {cid} timed out after {timeout:g}s: is the peer up, "
                        "and does it have the DAG? (--timeout S waits longer)")

    stats = run(go, what="ipfs fetch")
    typer.echo(f"fetched {cid}: {stats.blocks} blocks, {stats.fetched} new "
               f"({stats.bytes_fetched} bytes)")

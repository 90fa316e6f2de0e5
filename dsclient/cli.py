"""dsclient: store and fetch files in a ds-cluster as IPFS UnixFS DAGs, and manage keys.

Every command reads the client config in ``--conf DIR`` (``DIR/config.json``,
written by ``dsclient init`` or ``dscfg client``), connects to the cluster,
does one thing and exits. User errors (bad CID, missing file, unreachable
cluster, node down, unauthorized client) print one line on stderr and exit
with status 1; usage errors exit with 2. Progress bars go to stderr, and
only when stderr is a terminal.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import trio
import typer

from dsclient.api import AsyncClient
from dsclient.client import ClusterClient, config_table, parse_bootstrap
from dsclient.cluster_cli import app as cluster_app
from dsclient.progress import Progress
from dsclient.unixfs import NodeType
from dscluster.blocks import block_key, parse_cid
from dscluster.cliutil import USER_ERRORS, UserError, run_app
from dscluster.config import (
    CONFIG_JSON,
    ClientConfig,
    IdentityConfig,
    NodeEntry,
    config_file,
    load_client_config,
    save_config,
)
from dscluster.core.slots import key_slot
from dscluster.datastore.key import Key
from dscluster.datastore.query import FilterKeyPrefix, OrderByKey, Query
from dscluster.errors import BadKeyError, UnauthorizedError

app = typer.Typer(
    name="dsclient",
    help="Store and fetch files in a ds-cluster (IPFS-compatible CIDs), and manage keys.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
ipfs_app = typer.Typer(help="Serve the cluster's blocks to IPFS peers, or fetch DAGs from them.",
                       no_args_is_help=True)
app.add_typer(ipfs_app, name="ipfs")
app.add_typer(cluster_app, name="cluster")

DEFAULT_CONF = Path(".dsclient")


class _State:
    conf: Path = DEFAULT_CONF


state = _State()


@app.callback()
def _options(
    conf: Annotated[Path, typer.Option(
        help="Client config directory (holds config.json).")] = DEFAULT_CONF,
    log_level: Annotated[str, typer.Option(
        help="Log to stderr at debug, info, warning or error (default: errors only).")] = "error",
) -> None:
    state.conf = conf.expanduser()
    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        raise UserError(f"--log-level {log_level!r}: use debug, info, warning or error")
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level > logging.DEBUG:
        # py-libp2p logs every failed dial attempt at WARNING, over many lines; the
        # error the client reports already says which node could not be reached.
        logging.getLogger("libp2p").setLevel(logging.CRITICAL)


@asynccontextmanager
async def _client() -> AsyncIterator[AsyncClient]:
    path = config_file(state.conf)
    if not path.exists():
        raise UserError(f"no client config at {path}: run dsclient --conf {state.conf} init "
                        "--bootstrapper MA")
    async with AsyncClient.connect(config=path) as client:
        yield client


def _run(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return trio.run(fn, *args)


# -- init -----------------------------------------------------------------------------------


@app.command()
def init(
    bootstrapper: Annotated[list[str], typer.Option(
        help="Multiaddr (with /p2p/) of a cluster node; repeat for several.")],
    read_only: Annotated[bool, typer.Option(help="Mark this client read-only.")] = False,
) -> None:
    """Fetch the cluster's slot table from a node and write the client config.

    An existing config in --conf keeps its identity (e.g. one written by
    `dscfg client`). The nodes serve only clients listed in their `clients`
    file: if this client is not there yet, the config is still written and
    the peer ID to authorize is printed.
    """
    parse_bootstrap(bootstrapper)
    path = config_file(state.conf) if state.conf.is_dir() else state.conf / CONFIG_JSON
    old = load_client_config(path) if path.exists() else None
    identity = old.identity if old else IdentityConfig.generate()

    async def fetch() -> ClusterClient | None:
        async with trio.open_nursery() as nursery:
            try:
                client = await ClusterClient.start(nursery, identity.identity(),
                                                   bootstrap=bootstrapper)
            except UnauthorizedError:
                return None
            await client.close()
            return client

    client = _run(fetch)
    nodes: tuple[NodeEntry, ...] = ()
    if client is not None:
        nodes = tuple(NodeEntry(p, client.table.ranges_of(p), client.table.addrs.get(p, ()))
                      for p in sorted(client.table.addrs))
    cfg = ClientConfig(identity=identity, nodes=nodes, read_only_client=read_only,
                       bootstrap_addrs=tuple(bootstrapper))
    written = save_config(cfg, path)
    if client is None:
        raise UserError(
            f"wrote {written}, but the cluster does not know client {identity.peer_id} yet: "
            "add that peer ID to each node's clients file, restart the nodes, and run init again")
    known = sum(len(range(s, e + 1)) for n in nodes for s, e in n.slots)
    typer.echo(f"wrote {written} for client {identity.peer_id}: {len(nodes)} nodes, "
               f"{known} of 16384 slots known")


# -- files -----------------------------------------------------------------------------------


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


@app.command()
def add(
    path: Annotated[Path, typer.Argument(help="File (or, with -r, directory) to add.")],
    recursive: Annotated[bool, typer.Option("-r", "--recursive", help="Add a directory.")] = False,
    cid_version: Annotated[int, typer.Option(help="0 (ipfs add's default) or 1.")] = 0,
    raw_leaves: Annotated[bool | None, typer.Option(
        "--raw-leaves/--no-raw-leaves",
        help="Leaves as raw blocks (default: yes for CIDv1, no for CIDv0).")] = None,
    chunker: Annotated[str, typer.Option(help="size-N: N-byte chunks.")] = "size-262144",
    hidden: Annotated[bool, typer.Option(help="Include files starting with a dot.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print only the CID.")] = False,
) -> None:
    """Add a file or directory as a UnixFS DAG; prints its CID (the one `ipfs add` gives)."""
    if not os.path.lexists(path):
        raise UserError(f"{path}: no such file or directory")
    bar = Progress("add", _tree_size(path), enabled=None if not quiet else False)

    async def go() -> Any:
        async with _client() as client:
            return await client.add(path, recursive=recursive, cid_version=cid_version,
                                    raw_leaves=raw_leaves, chunker=chunker, hidden=hidden,
                                    progress=bar)

    try:
        cid = _run(go)
    finally:
        bar.close()
    typer.echo(str(cid) if quiet else f"added {cid} {path.name}")


async def _write_file(client: AsyncClient, cid: Any, dest: Path, bar: Progress) -> None:
    part = dest.with_name(dest.name + ".part")
    done = 0
    f = await trio.to_thread.run_sync(open, part, "wb")
    try:
        try:
            async for piece in client.cat(cid):
                await trio.to_thread.run_sync(f.write, piece)
                done += len(piece)
                bar(done)
        finally:
            f.close()
        await trio.to_thread.run_sync(os.replace, part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


@app.command()
def get(
    cid: Annotated[str, typer.Argument(help="CID of a file or directory.")],
    out: Annotated[Path | None, typer.Argument(help="Where to write it (default: ./CID).")] = None,
) -> None:
    """Fetch a file or directory into OUT, every block checked against its CID."""
    root = parse_cid(cid)
    dest = out or Path(cid)
    if os.path.lexists(dest):
        raise UserError(f"{dest} already exists")

    async def go() -> None:
        async with _client() as client:
            st = await client.stat(root)
            if st.type in (NodeType.FILE, NodeType.RAW):
                bar = Progress("get", st.size)
                try:
                    await _write_file(client, root, dest, bar)
                finally:
                    bar.close()
            else:
                await client.get_file(root, dest)

    _run(go)


@app.command()
def cat(cid: Annotated[str, typer.Argument(help="CID of a file.")]) -> None:
    """Write a file's bytes to stdout."""
    root = parse_cid(cid)
    out = sys.stdout.buffer

    async def go() -> None:
        async with _client() as client:
            async for piece in client.cat(root):
                await trio.to_thread.run_sync(out.write, piece)
        out.flush()

    _run(go)


@app.command()
def stat(cid: Annotated[str, typer.Argument(help="CID of a file or directory.")]) -> None:
    """Type, size, cumulative size, blocks and links of a DAG's root."""
    root = parse_cid(cid)

    async def go() -> Any:
        async with _client() as client:
            return await client.stat(root)

    st = _run(go)
    typer.echo(f"{st.cid}\ntype: {st.type.value}\nsize: {st.size}\n"
               f"cumulative size: {st.cumulative_size}\nblocks: {st.blocks}")
    for link in st.links:
        typer.echo(f"link: {link.cid} {link.tsize} {link.name}")


# -- keys -----------------------------------------------------------------------------------


def _key_of(text: str) -> str:
    """A CID names its block's key; anything starting with / is a datastore key."""
    if text.startswith("/"):
        return str(Key(text))
    try:
        return block_key(parse_cid(text))
    except BadKeyError:
        raise UserError(f"{text!r} is neither a CID nor a key starting with /") from None


@app.command()
def hashslot(item: Annotated[str, typer.Argument(help="A datastore key (/...) or a CID.")]) -> None:
    """The datastore key, hash slot and owning node of a key or CID."""
    key = _key_of(item)
    slot = key_slot(key)
    cfg_path = config_file(state.conf)
    owner = "unknown (no client config)"
    if cfg_path.exists():
        owner = config_table(load_client_config(cfg_path)).owner(slot) or "unknown"
    typer.echo(f"key: {key}\nslot: {slot}\nnode: {owner}")


@app.command()
def put(
    key: Annotated[str, typer.Argument(help="Datastore key, e.g. /notes/today.")],
    file: Annotated[str, typer.Argument(help="File with the value, or - for stdin.")] = "-",
) -> None:
    """Store a value under a key."""
    if file == "-":
        value = sys.stdin.buffer.read()
    else:
        try:
            value = Path(file).read_bytes()
        except OSError as exc:
            raise UserError(f"{file}: {exc.strerror}") from None

    async def go() -> None:
        async with _client() as client:
            await client.put_key(key, value)

    _run(go)


@app.command("get-key")
def get_key(key: Annotated[str, typer.Argument(help="Datastore key.")]) -> None:
    """Write the value of a key to stdout."""
    async def go() -> bytes:
        async with _client() as client:
            return await client.get_key(key)

    sys.stdout.buffer.write(_run(go))
    sys.stdout.buffer.flush()


@app.command()
def rm(key: Annotated[str, typer.Argument(help="Datastore key.")]) -> None:
    """Delete a key (a missing key is not an error)."""
    async def go() -> None:
        async with _client() as client:
            await client.delete_key(key)

    _run(go)


@app.command()
def ls(
    prefix: Annotated[str, typer.Argument(help="Only keys starting with this string.")] = "/",
    sizes: Annotated[bool, typer.Option("--sizes", "-s", help="Show value sizes.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many keys (0: all).")] = 0,
) -> None:
    """List keys, in order, from every node."""
    async def go() -> None:
        async with _client() as client:
            q = Query(filters=(FilterKeyPrefix(prefix),), keys_only=True, returns_sizes=sizes,
                      orders=(OrderByKey(),), limit=limit)
            async with await client.cluster.query(q) as results:
                async for e in results:
                    typer.echo(f"{e.size:>10} {e.key}" if sizes else e.key)

    _run(go)


@app.command()
def status() -> None:
    """One line per node: peer, up/down, slots, keys, bytes, migrations, epoch, version,
    addresses; then one line per migration in progress.

    Keys and bytes come from each node's last keys-only scan (once a minute),
    "-" before its first one.
    """
    async def go() -> Any:
        async with _client() as client:
            return client.cluster.table, await client.cluster.status()

    table, nodes = _run(go)
    typer.echo(f"{'PEER':<54} {'STATE':<5} {'SLOTS':>6} {'KEYS':>9} {'BYTES':>9} {'MIGR':>4} "
               f"{'EPOCH':>6} {'VERSION':<8} ADDRESSES")
    migrations: list[str] = []
    down = 0
    for node in nodes:
        if node.info is None:
            down += 1
            count = sum(e - s + 1 for s, e in table.ranges_of(node.peer_id))
            reason = node.error.strip().splitlines()[0] if node.error.strip() else "no answer"
            typer.echo(f"{node.peer_id:<54} {'down':<5} {count:>6} {'-':>9} {'-':>9} {'-':>4} "
                       f"{'-':>6} {'-':<8} {' '.join(node.addrs)}  ({reason})")
            continue
        info = node.info
        count = sum(e - s + 1 for s, e in info.slots)
        keys = str(info.key_count) if info.key_count >= 0 else "-"
        size = _human_bytes(info.byte_count) if info.byte_count >= 0 else "-"
        migrations += [f"{node.peer_id}: {m}" for m in info.migrations]
        typer.echo(f"{node.peer_id:<54} {'up':<5} {count:>6} {keys:>9} {size:>9} "
                   f"{len(info.migrations):>4} {info.epoch:>6} {info.version:<8} {' '.join(node.addrs)}")
    for line in migrations:
        typer.echo(f"migration {line}")
    if down:
        raise UserError(f"{down} of {len(nodes)} nodes are down")


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n}"


# -- IPFS -------------------------------------------------------------------------------------


@ipfs_app.command("serve")
def ipfs_serve(
    listen: Annotated[list[str] | None, typer.Option(
        help="Listen multiaddr (repeatable).")] = None,
) -> None:
    """Serve the cluster's blocks over bitswap until interrupted (prints the multiaddr)."""
    from ipfs_plugin.node import serve

    async def go() -> None:
        # SIGTERM (a service manager's stop) ends it as cleanly as Ctrl-C: exit status 0.
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with _client() as client, trio.open_nursery() as nursery:
                addr = await nursery.start(serve, client.cluster, None,
                                           tuple(listen or ("/ip4/127.0.0.1/tcp/0",)))
                typer.echo(addr)
                sys.stdout.flush()
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    try:
        _run(go)
    except KeyboardInterrupt:
        pass


@ipfs_app.command("fetch")
def ipfs_fetch(
    cid: Annotated[str, typer.Argument(help="Root CID of the DAG to fetch.")],
    peer: Annotated[str, typer.Option("--from", help="The IPFS peer's multiaddr (with /p2p/).")],
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 300,
) -> None:
    """Fetch a whole DAG from an IPFS peer over bitswap into the cluster."""
    from ipfs_plugin.node import fetch_dag

    parse_cid(cid)

    async def go() -> Any:
        async with _client() as client:
            with trio.fail_after(timeout):
                return await fetch_dag(client.cluster, cid, peer)

    try:
        stats = _run(go)
    except trio.TooSlowError:
        raise UserError(f"fetching {cid} from {peer} took longer than {timeout}s") from None
    typer.echo(f"fetched {cid}: {stats.blocks} blocks, {stats.fetched} new "
               f"({stats.bytes_fetched} bytes)")


# -- entry point ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    return run_app(app, "dsclient", argv, (*USER_ERRORS, OSError))



if __name__ == "__main__":
    sys.exit(main())

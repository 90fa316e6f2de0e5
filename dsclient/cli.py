"""dsclient: store and fetch files in a ds-cluster as IPFS UnixFS DAGs, and manage keys.

Every command reads the client config in ``--conf DIR`` (default
$DSCLIENT_CONF, else ./.dsclient; ``DIR/config.json``, written by ``dsclient
init``, ``dscfg client`` or ``dscfg cluster``), connects to the cluster, does
one thing and exits. User errors (bad CID, missing file, unreachable cluster,
node down, unauthorized client, a timeout) print one line on stderr and exit
with status 1, the details under ``--log-level debug``; usage errors (unknown
option, a bad ``--cid-version``, ``--chunker`` or ``--log-level``) are one
line too and exit 2, before anything connects; Ctrl-C exits 130. Progress
bars go to stderr, and only when stderr is a terminal. ``--json`` gives
``status``, ``stat`` and ``ls`` (and ``cluster status|members|check``)
machine-readable output.

Import cost: ``--help``, ``--version`` and ``hashslot`` must not pay for
py-libp2p and trio (over a second): this module imports only typer and the
light parts at the top; every command imports what it needs when it runs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dsclient.cluster_cli import app as cluster_app
from dsclient.progress import Progress
from dscluster.cliutil import (
    USER_ERRORS,
    VERSION_HELP,
    UserError,
    log_level_of,
    one_line,
    run_app,
    version_callback,
)
from ipfs_plugin.cli import app as ipfs_app

if TYPE_CHECKING:
    from dsclient.api import AsyncClient
    from dsclient.client import ClientOptions

app = typer.Typer(
    name="dsclient",
    help="Store and fetch files in a ds-cluster (IPFS-compatible CIDs), and manage keys.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(ipfs_app, name="ipfs")
app.add_typer(cluster_app, name="cluster")

DEFAULT_CONF = Path(".dsclient")
CONF_ENV = "DSCLIENT_CONF"
CONFIG_JSON = "config.json"  # dscluster.config.CONFIG_JSON (not imported: it pulls libp2p)
DEFAULT_TIMEOUT = 30.0


class _State:
    conf: Path = DEFAULT_CONF
    swarm_key: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    log_level: int = logging.ERROR


state = _State()
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


@app.callback()
def _options(
    conf: Annotated[Path, typer.Option(
        envvar=CONF_ENV, show_envvar=True,
        help="Client config directory (holds config.json).")] = DEFAULT_CONF,
    log_level: Annotated[str, typer.Option(
        help="Log to stderr at debug, info, warning or error (default: errors only).")] = "error",
    swarm_key: Annotated[Path | None, typer.Option(
        help="The private network's swarm.key (default: the one in --conf DIR, if any).")
    ] = None,
    timeout: Annotated[float, typer.Option(
        help="Seconds one operation may take, retries included (and to wait for a connection).")
    ] = DEFAULT_TIMEOUT,
    version: Annotated[bool, typer.Option(
        "--version", callback=version_callback("dsclient"), is_eager=True,
        help=VERSION_HELP)] = False,
) -> None:
    level = log_level_of(log_level)
    if not timeout > 0:
        raise typer.BadParameter(f"{timeout}: must be above 0", param_hint="'--timeout'")
    if swarm_key is not None and not swarm_key.expanduser().is_file():
        raise typer.BadParameter(f"{swarm_key}: no such file", param_hint="'--swarm-key'")
    state.conf = conf.expanduser()
    state.swarm_key = swarm_key.expanduser() if swarm_key is not None else None
    state.timeout = timeout
    state.log_level = level
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def quiet_libp2p() -> None:
    """Call once py-libp2p is imported (it sets its loggers up at import): below debug,
    silence it — it logs every failed dial, over many lines, and the error the client
    reports already says which node could not be reached; at debug, log it our way."""
    libp2p_log = logging.getLogger("libp2p")
    if state.log_level > logging.DEBUG:
        libp2p_log.setLevel(logging.CRITICAL)
    else:
        libp2p_log.setLevel(logging.NOTSET)
        libp2p_log.propagate = True


# -- plumbing shared with `dsclient cluster` and `dsclient ipfs` ---------------------------


def config_path(conf: Path | None = None) -> Path:
    """DIR/config.json, or the file --conf names; UserError naming `init` if absent."""
    where = conf or state.conf
    path = where if where.is_file() else where / CONFIG_JSON
    if not path.exists():
        raise UserError(f"no client config at {path}: run dsclient init --bootstrapper MA "
                        "(or dscfg client)")
    return path


def swarm_key(conf: Path | None = None) -> bytes | None:
    """--swarm-key's key, else DIR/swarm.key's, else None (no private network)."""
    from dscluster.net.pnet import load_swarm_key, swarm_key_of

    if state.swarm_key is not None:
        return load_swarm_key(state.swarm_key)
    return swarm_key_of(config_path(conf).parent)


def client_options() -> ClientOptions:
    from dsclient.client import ClientOptions

    return ClientOptions(request_timeout=state.timeout, swarm_key=swarm_key())


@asynccontextmanager
async def open_client() -> AsyncIterator[AsyncClient]:
    """A connected client for the config in --conf."""
    from dsclient.api import AsyncClient

    quiet_libp2p()
    path = config_path()
    async with AsyncClient.connect(config=path, options=client_options()) as client:
        yield client


def run(fn: Callable[..., Awaitable[Any]], *args: Any, what: str = "") -> Any:
    """trio.run(fn, *args), its errors made one line: a timeout says what timed out,
    a connection failure says which nodes and why."""
    import trio

    from dscluster.cliutil import user_error

    try:
        return trio.run(fn, *args)
    except BaseException as exc:
        if user_error(exc, (KeyboardInterrupt,)) is not None:
            raise KeyboardInterrupt from None
        if user_error(exc, (trio.TooSlowError,)) is not None:
            raise UserError(f"{what or 'the command'} timed out after {state.timeout:g}s "
                            "(raise it with --timeout S)") from exc
        raise


def explain(err: BaseException) -> str | None:
    """A shorter message for an error whose own text is long or says nothing to do."""
    from dscluster.errors import UnauthorizedError, UnavailableError

    text = one_line(err)
    if isinstance(err, UnavailableError) and (
            text.startswith("no cluster node answered") or text.startswith("no node answered")):
        addrs = _config_addrs()
        count = len(addrs) or 1
        nodes = f"{count} cluster node{'s' if count != 1 else ''}"
        reason = _why_unreachable(addrs, text)
        return f"cannot reach any of {nodes} ({reason}): {_hint(reason, 'are they')}"
    one = re.search(r"node (\S+)(?: serving slot \d+)? is unavailable", text)
    if isinstance(err, UnavailableError) and one is not None:
        reason = _why_unreachable({one[1]: _config_addrs().get(one[1], [])}, text)
        return f"{text[:one.end()]} ({reason}): {_hint(reason, 'is it')}"
    if isinstance(err, UnauthorizedError):
        peer = _own_peer_id() or "PEER"
        more = re.search(r"peer \S+ is ([\w-]+): ([\w-]+) needed", text)
        if more is not None:
            return (f"this client is {more[1]}, {more[2]} needed: an admin runs dsclient "
                    f"cluster auth add {peer} {more[2]}")
        if re.search(r"peer \S+ is not (authorized|an admin)", text):
            role = "admin" if "admin" in text else "read-write"
            return (f"this client is not authorized: an admin runs dsclient cluster auth add "
                    f"{peer} {role}")
    return None


def _config_json() -> dict[str, Any]:
    try:
        with open(config_path(), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError, UserError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _own_peer_id() -> str:
    ident = _config_json().get("identity")
    return str(ident.get("peer_id", "")) if isinstance(ident, dict) else ""


def _config_addrs() -> dict[str, list[str]]:
    """peer ID -> multiaddrs, from the client config's nodes and bootstrap addresses."""
    doc = _config_json()
    out: dict[str, list[str]] = {}
    for node in doc.get("nodes") or ():
        if isinstance(node, dict) and isinstance(node.get("id"), str):
            out.setdefault(node["id"], []).extend(a for a in node.get("swarm") or ()
                                                  if isinstance(a, str))
    for addr in doc.get("bootstrap_addrs") or ():
        if isinstance(addr, str) and "/p2p/" in addr:
            base, peer = addr.rsplit("/p2p/", 1)
            out.setdefault(peer, []).append(base)
    return out


def _tcp_target(addr: str) -> tuple[str, int] | None:
    parts = addr.strip("/").split("/")
    if len(parts) >= 4 and parts[0] in ("ip4", "ip6", "dns", "dns4", "dns6") \
            and parts[2] == "tcp" and parts[3].isdigit():
        return parts[1], int(parts[3])
    return None


NO_HANDSHAKE = "no libp2p handshake"
NO_ANSWER = "accepts connections, then no answer"


def _hint(reason: str, subject: str) -> str:
    if reason == NO_HANDSHAKE:
        return "is that a cluster node, with this swarm key? (--log-level debug shows why)"
    if reason == NO_ANSWER:
        return f"{subject} hung or overloaded? (--timeout S waits longer)"
    return f"{subject} running? (--log-level debug shows each failure)"


def _why_unreachable(addrs: dict[str, list[str]], text: str) -> str:
    """Why the nodes could not be reached, by a plain TCP connect to each address."""
    reasons: set[str] = set()
    for target in filter(None, (_tcp_target(a) for a_list in addrs.values() for a in a_list)):
        try:
            socket.create_connection(target, timeout=min(2.0, state.timeout)).close()
            # the port answers: libp2p is what failed, slowly (a hung node) or at once
            reasons.add(NO_ANSWER if "timed out" in text else NO_HANDSHAKE)
        except ConnectionRefusedError:
            reasons.add("connection refused")
        except TimeoutError:
            reasons.add("connection timed out")
        except OSError as exc:
            reasons.add(exc.strerror or type(exc).__name__)
    if not reasons:
        return "timed out" if "timed out" in text or "timeout" in text else "no connection"
    return ", ".join(sorted(reasons))


def _echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=None, separators=(",", ":")))


# -- init -----------------------------------------------------------------------------------


@app.command()
def init(
    bootstrapper: Annotated[list[str], typer.Option(
        help="Multiaddr (with /p2p/) of a cluster node; repeat for several.")],
    read_only: Annotated[bool, typer.Option(help="Mark this client read-only.")] = False,
) -> None:
    """Fetch the cluster's slot table from a node and write the client config.

    An existing config in --conf keeps its identity (e.g. one written by
    `dscfg client`). The nodes serve only authorized clients: if this one is
    not yet, the config is still written and the command an admin runs to
    authorize it is printed (`dsclient cluster auth add PEER read-write`).
    """
    import trio

    from dsclient.client import ClusterClient, parse_bootstrap
    from dscluster.config import (
        ClientConfig,
        IdentityConfig,
        NodeEntry,
        load_client_config,
        save_config,
    )
    from dscluster.errors import UnauthorizedError

    quiet_libp2p()
    parse_bootstrap(bootstrapper)
    conf = state.conf
    path = conf if conf.is_file() else conf / CONFIG_JSON
    old = load_client_config(path) if path.exists() else None
    identity = old.identity if old else IdentityConfig.generate()
    from dsclient.client import ClientOptions
    from dscluster.net.pnet import load_swarm_key, swarm_key_of

    key = load_swarm_key(state.swarm_key) if state.swarm_key else swarm_key_of(path.parent)
    options = ClientOptions(request_timeout=state.timeout, swarm_key=key)

    async def fetch() -> ClusterClient | None:
        async with trio.open_nursery() as nursery:
            try:
                client = await ClusterClient.start(nursery, identity.identity(),
                                                   bootstrap=bootstrapper, options=options)
            except UnauthorizedError:
                return None
            await client.close()
            return client

    client = run(fetch, what="init")
    nodes: tuple[NodeEntry, ...] = ()
    if client is not None:
        nodes = tuple(NodeEntry(p, client.table.ranges_of(p), client.table.addrs.get(p, ()))
                      for p in sorted(client.table.addrs))
    cfg = ClientConfig(identity=identity, nodes=nodes, read_only_client=read_only,
                       bootstrap_addrs=tuple(bootstrapper))
    written = save_config(cfg, path)
    if client is None:
        typer.echo(f"wrote {written} for client {identity.peer_id}")
        role = "read-only" if read_only else "read-write"
        raise UserError(f"client not authorized yet: an admin runs dsclient cluster auth add "
                        f"{identity.peer_id} {role}, then run init again")
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


def _cid_version(value: int) -> int:
    if value not in (0, 1):
        raise typer.BadParameter(f"{value}: use 0 or 1")
    return value


def _chunker(value: str) -> str:
    from dsclient.unixfs.chunker import parse_chunker
    from dscluster.errors import BadRequestError

    try:
        parse_chunker(value)
    except BadRequestError as exc:
        raise typer.BadParameter(one_line(exc)) from None
    return value


class _HashOnly:
    """A block store that keeps nothing: ``add --only-hash`` computes the CIDs alone."""

    async def put_many(self, blocks: list[Any]) -> None:
        pass

    async def get(self, cid: Any) -> bytes:
        from dscluster.errors import NotFoundError

        raise NotFoundError(f"block {cid}: --only-hash keeps no blocks")

    async def has(self, cid: Any) -> bool:
        return False


@app.command()
def add(
    path: Annotated[Path, typer.Argument(
        help="File (or, with -r, directory) to add; - reads stdin.")],
    recursive: Annotated[bool, typer.Option("-r", "--recursive", help="Add a directory.")] = False,
    cid_version: Annotated[int, typer.Option(
        callback=_cid_version, help="0 (ipfs add's default) or 1.")] = 0,
    raw_leaves: Annotated[bool | None, typer.Option(
        "--raw-leaves/--no-raw-leaves",
        help="Leaves as raw blocks (default: yes for CIDv1, no for CIDv0).")] = None,
    chunker: Annotated[str, typer.Option(
        callback=_chunker, help="size-N: N-byte chunks.")] = "size-262144",
    hidden: Annotated[bool, typer.Option(help="Include files starting with a dot.")] = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print only the CID.")] = False,
    only_hash: Annotated[bool, typer.Option(
        "-n", "--only-hash",
        help="Only compute the CID (as ipfs add -n); store nothing, connect to nothing.")
    ] = False,
) -> None:
    """Add a file or directory as a UnixFS DAG; prints its CID (the one `ipfs add` gives)."""
    from dsclient import unixfs

    stdin = str(path) == "-"
    if stdin and recursive:
        raise typer.BadParameter("- (stdin) is one file: leave out -r", param_hint="'PATH'")
    if not stdin and not os.path.lexists(path):
        raise UserError(f"{path}: no such file or directory")
    total = None if stdin else _tree_size(path)
    bar = Progress("add", total, enabled=False if quiet or stdin else None)
    opts: dict[str, Any] = {"cid_version": cid_version, "raw_leaves": raw_leaves,
                            "chunker": chunker, "progress": bar}

    async def to(store: Any) -> Any:
        if stdin:
            return await unixfs.add_stream(sys.stdin.buffer, store, **opts)
        return await unixfs.add_path(path, store, recursive=recursive, hidden=hidden, **opts)

    async def go() -> Any:
        if only_hash:
            return await to(_HashOnly())
        async with open_client() as client:
            return await to(client.blocks)

    try:
        cid = run(go, what="add")
    finally:
        bar.close()
    name = str(cid) if stdin else path.name
    typer.echo(str(cid) if quiet else f"added {cid} {name}")


async def _write_file(client: AsyncClient, cid: Any, dest: Path, bar: Progress) -> None:
    import trio

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
    from dsclient.unixfs import NodeType
    from dscluster.blocks import parse_cid

    root = parse_cid(cid)
    dest = out or Path(cid)
    if os.path.lexists(dest):
        raise UserError(f"{dest} already exists")

    async def go() -> None:
        async with open_client() as client:
            st = await client.stat(root)
            if st.type in (NodeType.FILE, NodeType.RAW):
                bar = Progress("get", st.size)
                try:
                    await _write_file(client, root, dest, bar)
                finally:
                    bar.close()
            else:
                await client.get_file(root, dest)

    run(go, what="get")


@app.command()
def cat(cid: Annotated[str, typer.Argument(help="CID of a file.")]) -> None:
    """Write a file's bytes to stdout."""
    import trio

    from dscluster.blocks import parse_cid

    root = parse_cid(cid)
    out = sys.stdout.buffer

    async def go() -> None:
        async with open_client() as client:
            async for piece in client.cat(root):
                await trio.to_thread.run_sync(out.write, piece)
        out.flush()

    run(go, what="cat")


@app.command()
def stat(cid: Annotated[str, typer.Argument(help="CID of a file or directory.")],
         as_json: JsonOption = False) -> None:
    """Type, size, cumulative size, blocks and links of a DAG's root."""
    from dscluster.blocks import parse_cid

    root = parse_cid(cid)

    async def go() -> Any:
        async with open_client() as client:
            return await client.stat(root)

    st = run(go, what="stat")
    if as_json:
        _echo_json({"cid": str(st.cid), "type": st.type.value, "size": st.size,
                    "cumulative_size": st.cumulative_size, "blocks": st.blocks,
                    "links": [{"cid": str(link.cid), "tsize": link.tsize, "name": link.name}
                              for link in st.links]})
        return
    typer.echo(f"{st.cid}\ntype: {st.type.value}\nsize: {st.size}\n"
               f"cumulative size: {st.cumulative_size}\nblocks: {st.blocks}")
    for link in st.links:
        typer.echo(f"link: {link.cid} {link.tsize} {link.name}")


# -- keys -----------------------------------------------------------------------------------


def _key_of(text: str) -> str:
    """A CID names its block's key; anything starting with / is a datastore key."""
    if text.startswith("/"):
        from dscluster.datastore.key import clean_path

        return clean_path(text)
    from dscluster.blocks import block_key, parse_cid
    from dscluster.errors import BadKeyError

    try:
        return block_key(parse_cid(text))
    except BadKeyError:
        raise UserError(f"{text!r} is neither a CID nor a key starting with /") from None


def _owner_in_config(slot: int) -> str:
    """The slot's owner in the client config's saved table, read without libp2p."""
    doc = _config_json()
    for node in doc.get("nodes") or ():
        ranges = node.get("slots") if isinstance(node, dict) else None
        for r in [ranges] if isinstance(ranges, dict) else (ranges or ()):
            if isinstance(r, dict) and r.get("start", 1) <= slot <= r.get("end", 0):
                return str(node.get("id", "unknown"))
    return "unknown" if doc else "unknown (no client config)"


@app.command()
def hashslot(item: Annotated[str, typer.Argument(help="A datastore key (/...) or a CID.")]) -> None:
    """The datastore key, hash slot and owning node of a key or CID (offline)."""
    from dscluster.core.slots import key_slot

    key = _key_of(item)
    slot = key_slot(key)
    typer.echo(f"key: {key}\nslot: {slot}\nnode: {_owner_in_config(slot)}")


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
        async with open_client() as client:
            await client.put_key(key, value)

    run(go, what="put")


@app.command("get-key")
def get_key(key: Annotated[str, typer.Argument(help="Datastore key.")]) -> None:
    """Write the value of a key to stdout."""
    async def go() -> bytes:
        async with open_client() as client:
            return await client.get_key(key)

    sys.stdout.buffer.write(run(go, what="get-key"))
    sys.stdout.buffer.flush()


@app.command()
def rm(key: Annotated[str, typer.Argument(help="Datastore key.")]) -> None:
    """Delete a key (a missing key is not an error)."""
    async def go() -> None:
        async with open_client() as client:
            await client.delete_key(key)

    run(go, what="rm")


@app.command()
def ls(
    prefix: Annotated[str, typer.Argument(help="Only keys starting with this string.")] = "/",
    sizes: Annotated[bool, typer.Option("--sizes", "-s", help="Show value sizes.")] = False,
    limit: Annotated[int, typer.Option(help="At most this many keys (0: all).")] = 0,
    as_json: Annotated[bool, typer.Option(
        "--json", help="One JSON object per key: {\"key\": ..., \"size\": ...}.")] = False,
) -> None:
    """List keys, in order, from every node."""
    from dscluster.datastore.query import FilterKeyPrefix, OrderByKey, Query

    def show(key: str, size: int) -> None:
        if as_json:
            _echo_json({"key": key, **({"size": size} if sizes else {})})
        else:
            typer.echo(f"{size:>10} {key}" if sizes else key)

    async def go() -> None:
        async with open_client() as client:
            q = Query(filters=(FilterKeyPrefix(prefix),), keys_only=True, returns_sizes=sizes,
                      orders=(OrderByKey(),), limit=limit)
            async with await client.cluster.query(q) as results:
                async for e in results:
                    show(e.key, e.size)

    run(go, what="ls")


@app.command()
def status(as_json: JsonOption = False) -> None:
    """One line per node: peer, up/down, slots (as primary), copies (replica slots
    held), keys, bytes, migrations, epoch, version, addresses; then one line per
    migration in progress.

    Keys and bytes come from each node's last keys-only scan (once a minute),
    "-" before its first one. Exit 1 if a node is down.
    """
    async def go() -> Any:
        async with open_client() as client:
            return client.cluster.table, await client.cluster.status()

    table, nodes = run(go, what="status")
    down = sum(1 for node in nodes if node.info is None)
    if as_json:
        _echo_json([_status_json(table, node) for node in nodes])
    else:
        _print_status(table, nodes)
    if down:
        raise UserError(f"{down} of {len(nodes)} nodes are down")


def _status_json(table: Any, node: Any) -> dict[str, Any]:
    if node.info is None:
        reason = node.error.strip().splitlines()[0] if node.error.strip() else "no answer"
        return {"peer": node.peer_id, "state": "down", "addrs": list(node.addrs),
                "slots": sum(e - s + 1 for s, e in table.ranges_of(node.peer_id)),
                "error": reason}
    info = node.info
    return {"peer": node.peer_id, "state": "up", "addrs": list(node.addrs),
            "slots": sum(e - s + 1 for s, e in info.slots),
            "ranges": [[s, e] for s, e in info.slots],
            "copies": sum(e - s + 1 for s, e in info.replicas),
            "copy_ranges": [[s, e] for s, e in info.replicas],
            "keys": info.key_count if info.key_count >= 0 else None,
            "bytes": info.byte_count if info.byte_count >= 0 else None,
            "migrations": [str(m) for m in info.migrations], "epoch": info.epoch,
            "version": info.version}


def _print_status(table: Any, nodes: Any) -> None:
    typer.echo(f"{'PEER':<54} {'STATE':<5} {'SLOTS':>6} {'COPIES':>6} {'KEYS':>9} {'BYTES':>9} "
               f"{'MIGR':>4} {'EPOCH':>6} {'VERSION':<8} ADDRESSES")
    migrations: list[str] = []
    for node in nodes:
        if node.info is None:
            count = sum(e - s + 1 for s, e in table.ranges_of(node.peer_id))
            reason = node.error.strip().splitlines()[0] if node.error.strip() else "no answer"
            typer.echo(f"{node.peer_id:<54} {'down':<5} {count:>6} {'-':>6} {'-':>9} {'-':>9} "
                       f"{'-':>4} {'-':>6} {'-':<8} {' '.join(node.addrs)}  ({reason})")
            continue
        info = node.info
        count = sum(e - s + 1 for s, e in info.slots)
        keys = str(info.key_count) if info.key_count >= 0 else "-"
        size = _human_bytes(info.byte_count) if info.byte_count >= 0 else "-"
        migrations += [f"{node.peer_id}: {m}" for m in info.migrations]
        held = sum(e - s + 1 for s, e in info.replicas)
        typer.echo(f"{node.peer_id:<54} {'up':<5} {count:>6} {held:>6} {keys:>9} {size:>9} "
                   f"{len(info.migrations):>4} {info.epoch:>6} {info.version:<8} "
                   f"{' '.join(node.addrs)}")
    for line in migrations:
        typer.echo(f"migration {line}")


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n}"


# -- gateway -------------------------------------------------------------------------------


@app.command()
def gateway(
    listen: Annotated[str, typer.Option(
        help="HOST:PORT to serve HTTP on; a non-loopback HOST needs --http-token.")
    ] = "127.0.0.1:8080",
    http_token: Annotated[str, typer.Option(
        envvar="DSCLIENT_HTTP_TOKEN", show_envvar=True,
        help="Bearer token HTTP clients must send (all but /healthz); prefer the "
             "environment variable (a command line is visible in ps).")] = "",
) -> None:
    """Serve the cluster's content over HTTP as an IPFS path and trustless gateway.

    GET /ipfs/CID[/path] (files, Range, directory listings), ?format=raw (a block),
    ?format=car (a CARv1), /metrics, /healthz and a status page at /; see doc/http.md.
    It only reads: authorize this client's peer ID as read-only on the nodes. Ctrl-C
    stops it.
    """
    from dscluster.http.server import check_bind

    check_bind(listen, http_token or None)  # one line, before connecting

    async def go() -> None:
        import signal

        import trio

        from dsclient.unixfs import DatastoreBlockStore
        from dscluster.http.server import serve_client_http

        async with open_client() as client, serve_client_http(
                DatastoreBlockStore(client.cluster), listen, token=http_token or None,
                cluster=client.cluster) as urls:
            for url in urls:
                typer.echo(f"dsclient: gateway on {url} (/ipfs/CID, /metrics, /healthz)")
            sys.stdout.flush()
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break

    run(go, what="gateway")


# -- entry point ---------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    return run_app(app, "dsclient", argv, (*USER_ERRORS, OSError), explain=explain)


if __name__ == "__main__":
    # `python -m dsclient.cli`: run the imported module, not this __main__ copy, so that
    # `dsclient ipfs` (ipfs_plugin/cli.py imports dsclient.cli) shares one --conf state.
    from dsclient import cli as _cli

    sys.exit(_cli.main())

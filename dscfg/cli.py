"""dscfg: write the configs of a new cluster and of its clients.

``dscfg cluster --cluster-node-number=N DIR`` writes DIR/config.json for the
bootstrap node: its own identity, every node's peer ID, slot ranges and listen
addresses, and (as go-ds-cluster's ``identity_list``) the other nodes'
identities, which only the bootstrap node hands out, to joiners that present
the join secret. The secret is printed and stored in DIR/join.secret. Both
files are 0600. The first line printed is the bootstrap multiaddr, as
go-ds-cluster prints it.

It also writes an operator client config in DIR/client (``--client-dir``;
``--no-client`` for none) whose peer ID is an admin in DIR/clients: joiners
copy that file, so the operator is authorized on every node from the start
(``dsclient --conf DIR/client status``). More clients are authorized with
``dsclient cluster auth add PEER ROLE``.

``dscfg cluster --copies N`` places N copies of every slot on distinct nodes
(primary first, the replicas spread over the others; doc/copies.md). The
default is 2 copies (1 for a one-node cluster): a new cluster survives a dead
node or disk. ``--copies 1`` is go-ds-cluster's behaviour.

``dscfg client FILE`` writes a client config: its own identity, no slots.

``dscfg cluster --private-network`` also writes DIR/swarm.key (Kubo's
format, 0600): nodes and clients holding that file form a private network
that strangers cannot even connect to (see dscluster/net/pnet.py).

``dscfg auth add|remove|list PEER ROLE --conf DIR`` edits a node's clients
file (read-only, read-write or admin); a running node picks the change up
within a second. Each node has its own file: run it for every node's DIR.
"""

from __future__ import annotations

import random
import secrets
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from dscluster.cliutil import VERSION_HELP, UserError, run_app, version_callback
from dscluster.config import (
    CONFIG_JSON,
    JOIN_SECRET_FILE,
    ClientConfig,
    IdentityConfig,
    NodeConfig,
    NodeEntry,
    parse_multiaddr,
    parse_peer_id,
    save_config,
    write_private_file,
)
from dscluster.core.planner import with_copies
from dscluster.core.slots import SLOT_COUNT, initial_ranges
from dscluster.core.table import MAX_COPIES, SlotTable, default_copies
from dscluster.roles import Role, format_clients, load_clients, save_clients

app = typer.Typer(
    name="dscfg",
    help="Generate ds-cluster configs: a new cluster's bootstrap node, or a client.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
OPERATOR_DIR = "client"  # dscfg cluster DIR: the operator's client config in DIR/client


@app.callback()
def _options(version: Annotated[bool, typer.Option(
        "--version", callback=version_callback("dscfg"), is_eager=True,
        help=VERSION_HELP)] = False) -> None:
    pass


FIRST_PORT = 10000  # free ports are picked from here up to the OS's ephemeral range


def _ephemeral_low() -> int:
    """The lowest port the OS hands out for outgoing connections and port 0 (Linux)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _free_tcp_ports(host: str, count: int) -> list[int]:
    """Ports free right now, below the ephemeral range where one can: there, no
    outgoing connection and no other program's port-0 bind takes a port between
    this choice and the node's start (seen with tests running side by side)."""
    low = _ephemeral_low()
    rng = random.SystemRandom()
    pool = list(range(FIRST_PORT, low)) if low - FIRST_PORT >= 1000 else []
    rng.shuffle(pool)
    socks: list[socket.socket] = []
    try:
        for port in pool[:count * 50]:
            if len(socks) == count:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((host, port))
            except OSError:
                s.close()
                continue
            socks.append(s)
        while len(socks) < count:  # no such range here: whatever the OS gives
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    except OSError as exc:
        raise UserError(f"cannot find free ports on {host}: {exc.strerror}") from None
    finally:
        for s in socks:
            s.close()


@app.command()
def cluster(
    directory: Annotated[Path, typer.Argument(help="Where to write config.json and join.secret.")],
    nodes: Annotated[int, typer.Option(
        "--cluster-node-number", "--nn", "-n", help="How many data nodes the cluster starts with.",
    )],
    host: Annotated[str, typer.Option(help="IPv4 address every node listens on.")] = "127.0.0.1",
    base_port: Annotated[int, typer.Option(
        help="TCP port of node 0; node i listens on base-port + i. Default: free ports.",
    )] = 0,
    force: Annotated[bool, typer.Option(help="Overwrite an existing config.")] = False,
    private_network: Annotated[bool, typer.Option(
        help="Also write swarm.key: only holders of the key can connect.")] = False,
    client_dir: Annotated[Path | None, typer.Option(
        help=f"Where to write the operator's client config (default: DIR/{OPERATOR_DIR}).")
    ] = None,
    operator: Annotated[bool, typer.Option(
        "--client/--no-client",
        help="Write an operator client config, admin (and read-write) on every node.")] = True,
    copies: Annotated[int | None, typer.Option(
        help="Copies of every slot, on distinct nodes: the cluster then loses no "
             "acknowledged write with copies-1 disks gone, and fails a dead primary over "
             "when a majority of nodes is alive (doc/copies.md). Default: 2 (1 for a "
             "one-node cluster); 1 is go-ds-cluster's behaviour.",
        show_default=False,
    )] = None,
) -> None:
    """Write the bootstrap node's config for a new cluster and print its multiaddr.

    Also writes an operator client (DIR/client/config.json) that every node
    authorizes from the start, so `dsclient --conf DIR/client add FILE` works
    once the nodes run; authorize more clients with `dsclient cluster auth add`.
    """
    if not 1 <= nodes <= SLOT_COUNT:
        raise UserError(f"--cluster-node-number must be between 1 and {SLOT_COUNT}, got {nodes}")
    if base_port < 0 or base_port + nodes - 1 > 65535:
        raise UserError(f"--base-port {base_port} leaves no room for {nodes} ports")
    if copies is None:
        copies = default_copies(nodes)
    if not 1 <= copies <= min(nodes, MAX_COPIES):
        raise UserError(f"--copies must be between 1 and {min(nodes, MAX_COPIES)} "
                        f"(at most one copy per node), got {copies}")
    parse_multiaddr(f"/ip4/{host}/tcp/1")  # ConfigError for a bad address
    target = directory.expanduser()
    if (target / CONFIG_JSON).exists() and not force:
        raise UserError(f"{target / CONFIG_JSON} exists; use --force to overwrite it")
    operator_dir = (client_dir or target / OPERATOR_DIR).expanduser()
    if operator and (operator_dir / CONFIG_JSON).exists() and not force:
        raise UserError(f"{operator_dir / CONFIG_JSON} exists; use --force to overwrite it")
    ports = (list(range(base_port, base_port + nodes)) if base_port
             else _free_tcp_ports(host, nodes))
    identities = [IdentityConfig.generate() for _ in range(nodes)]
    entries = _entries([i.peer_id for i in identities], [f"/ip4/{host}/tcp/{p}" for p in ports],
                       copies)
    cfg = NodeConfig(
        identity=identities[0],
        swarm=entries[0].swarm,
        nodes=entries,
        bootstrap_node=True,
        identity_list=tuple(identities),
        join_secret_file=JOIN_SECRET_FILE,
        copies=copies,
    )
    secret = secrets.token_urlsafe(32)
    write_private_file(target / JOIN_SECRET_FILE, secret + "\n")
    written = save_config(cfg, target / CONFIG_JSON)
    bootstrap = f"{entries[0].swarm[0]}/p2p/{entries[0].id}"
    typer.echo(bootstrap)
    typer.echo(f"join secret: {secret}")
    typer.echo(f"wrote {written} and {target / JOIN_SECRET_FILE} (keep both private)")
    from dscluster.net.pnet import SWARM_KEY_FILE, format_swarm_key, new_swarm_key

    swarm_key = format_swarm_key(new_swarm_key()) if private_network else ""
    if private_network:
        write_private_file(target / SWARM_KEY_FILE, swarm_key)
        typer.echo(f"wrote {target / SWARM_KEY_FILE} (copy it to every node and client)")
    if operator:
        seeds = [f"{e.swarm[0]}/p2p/{e.id}" for e in entries]
        peer = _write_operator(target, operator_dir, seeds, swarm_key)
        typer.echo(f"wrote {operator_dir / CONFIG_JSON}: client {peer}, admin on every node; "
                   f"try: dsclient --conf {operator_dir} status")


def _entries(ids: list[str], addrs: list[str], copies: int) -> tuple[NodeEntry, ...]:
    """go-ds-cluster's initial split, with each slot's replicas spread over the others."""
    table = SlotTable.initial(ids)
    if copies > 1:
        table = with_copies(table, copies)
    held: dict[str, list[tuple[int, int, int]]] = {}
    for start, end, _epoch, _owner, replicas in table.copy_runs():
        for place, node in enumerate(replicas, 1):
            ranges = held.setdefault(node, [])
            if ranges and ranges[-1][1] + 1 == start and ranges[-1][2] == place:
                ranges[-1] = (ranges[-1][0], end, place)
            else:
                ranges.append((start, end, place))
    return tuple(NodeEntry(node, (slots,), (addr,), tuple(held.get(node, ())))
                 for node, slots, addr in zip(ids, initial_ranges(len(ids)), addrs, strict=True))


def _write_operator(node_dir: Path, where: Path, seeds: list[str], swarm_key: str) -> str:
    """An admin client config in ``where``, listed in the bootstrap node's clients file
    (joiners copy that file; the role is then gossiped cluster state); its peer ID.
    It names every node (``seeds``), so it still finds the cluster with the
    bootstrap node down."""
    cfg = ClientConfig(identity=IdentityConfig.generate(), bootstrap_addrs=tuple(seeds))
    where.mkdir(parents=True, exist_ok=True)
    save_config(cfg, where / CONFIG_JSON)
    if swarm_key:
        from dscluster.net.pnet import SWARM_KEY_FILE

        write_private_file(where / SWARM_KEY_FILE, swarm_key)
    clients = load_clients(str(node_dir))
    clients[cfg.identity.peer_id] = Role.ADMIN
    save_clients(str(node_dir), format_clients(clients))
    return cfg.identity.peer_id


@app.command()
def client(
    file: Annotated[Path, typer.Argument(help="The client config file to write.")],
    read_only: Annotated[bool, typer.Option(help="Mark the client read-only.")] = False,
    bootstrap: Annotated[list[str] | None, typer.Option(
        help="Multiaddr (with /p2p/) of a cluster node; repeat for several.",
    )] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a client config: a new identity, no slots."""
    target = file.expanduser()
    if target.is_dir():
        target = target / CONFIG_JSON
    if target.exists() and not force:
        raise UserError(f"{target} exists; use --force to overwrite it")
    addrs = tuple(bootstrap or ())
    for addr in addrs:
        parse_multiaddr(addr)
        if "/p2p/" not in addr:
            raise UserError(f"--bootstrap {addr}: needs the node's /p2p/<peer id>")
    cfg = ClientConfig(identity=IdentityConfig.generate(), read_only_client=read_only,
                       bootstrap_addrs=addrs)
    written = save_config(cfg, target)
    typer.echo(f"wrote {written} for client {cfg.identity.peer_id}")


auth_app = typer.Typer(help="Client roles of a node: read-only, read-write or admin.",
                       no_args_is_help=True)
app.add_typer(auth_app, name="auth")
ConfOption = Annotated[Path, typer.Option("--conf", help="The node's config directory.")]


def _conf_dir(conf: Path) -> str:
    if not (conf / CONFIG_JSON).exists():
        raise UserError(f"{conf / CONFIG_JSON} does not exist: --conf names a node's directory")
    return str(conf)


@auth_app.command("add")
def auth_add(
    peer: Annotated[str, typer.Argument(help="The client's peer ID.")],
    role: Annotated[str, typer.Argument(help="read-only, read-write or admin.")],
    conf: ConfOption = Path(".dscluster"),
) -> None:
    """Give PEER the ROLE (replacing its old role)."""
    where = _conf_dir(conf)
    parse_peer_id(peer)
    try:
        granted = Role.parse(role)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    clients = load_clients(where)
    clients[peer] = granted
    save_clients(where, format_clients(clients))
    typer.echo(f"{peer} {granted.value}")


@auth_app.command("remove")
def auth_remove(
    peer: Annotated[str, typer.Argument(help="The client's peer ID.")],
    role: Annotated[str, typer.Argument(help="Its role (optional; checked if given).")] = "",
    conf: ConfOption = Path(".dscluster"),
) -> None:
    """Take every role from PEER."""
    where = _conf_dir(conf)
    clients = load_clients(where)
    if peer not in clients:
        raise UserError(f"{peer} is not a client of this node")
    if role and clients[peer].value != role:
        raise UserError(f"{peer} is {clients[peer].value}, not {role}")
    del clients[peer]
    save_clients(where, format_clients(clients))
    typer.echo(f"removed {peer}")


@auth_app.command("list")
def auth_list(conf: ConfOption = Path(".dscluster")) -> None:
    """Print every client and its role."""
    for line in format_clients(load_clients(_conf_dir(conf))):
        typer.echo(line)


def main(argv: list[str] | None = None) -> int:
    return run_app(app, "dscfg", argv)



if __name__ == "__main__":
    sys.exit(main())

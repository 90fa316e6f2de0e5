"""``dsclient cluster ...``: grow, shrink, rebalance, check and fix a running cluster.

Every command reads the client config in ``--conf DIR`` (its identity must be
an admin of the cluster: a member, an ``admin`` line in the nodes' clients
file, or a line in their DIR/admins) and talks to the nodes' admin protocol
through dsclient.admin. Progress goes to stderr, results to stdout; a user
error prints one line and exits 1; ``check`` exits 2 when the cluster is not
consistent. With DIR/swarm.key the admin client is in that private network.

``auth add|remove`` record a client role change on one member (the roles are
cluster state: gossip brings the change to every member, one that is down
included once it is back), then wait up to ``--wait`` seconds and print one
line per member: it shows the change, not yet, or unreachable. Exit 0 once a
member recorded it, 1 if none could. ``auth list`` prints each member's view
and exits 2 when they differ (gossip still on its way), 1 if one failed.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import trio
import typer

from dsclient.admin import AdminClient, CheckReport, Progress, open_admin
from dscluster.cliutil import run_app
from dscluster.config import config_file, load_client_config
from dscluster.core.table import NodeRole
from dscluster.errors import ConfigError, DSClusterError
from dscluster.net.host import parse_peer_id
from dscluster.net.pnet import swarm_key_of
from dscluster.roles import Role

app = typer.Typer(name="cluster", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False,
                  help="Grow, shrink, rebalance, check and fix the cluster (admins only).")


class _State:
    conf: Path | None = None


state = _State()


@app.callback()
def _options(conf: Annotated[Path | None, typer.Option(
        help="Client config directory (default: dsclient's --conf).")] = None) -> None:
    state.conf = conf.expanduser() if conf is not None else None


def _conf() -> Path:
    if state.conf is not None:
        return state.conf
    try:
        from dsclient.cli import state as dsclient_state  # the parent app's --conf

        return Path(dsclient_state.conf)
    except ImportError:
        return Path(".dsclient")


def _with_admin(fn: Callable[[AdminClient], Awaitable[Any]]) -> Any:
    path = config_file(_conf())
    if not path.exists():
        raise ConfigError(f"no client config at {path}: run dsclient init first")
    cfg = load_client_config(path)
    seeds = {n.id: list(n.swarm) for n in cfg.nodes if n.swarm}
    for addr in cfg.bootstrap_addrs:
        if "/p2p/" in addr:
            base, peer = addr.rsplit("/p2p/", 1)
            seeds.setdefault(peer, []).append(base)

    async def main() -> Any:
        async with open_admin(cfg.identity.identity(), seeds, swarm_key_of(path.parent)) as admin:
            return await fn(admin)

    return trio.run(main)


def _progress(p: Progress) -> None:
    print(f"\r{p.line()}", end="", file=sys.stderr, flush=True)


def _done(p: Progress) -> None:
    print(f"\r{p.line()}", file=sys.stderr, flush=True)


@app.command()
def status() -> None:
    """Each member's slots and migrations."""
    async def run(admin: AdminClient) -> None:
        table = await admin.table()
        for peer, st in sorted((await admin.statuses()).items()):
            if isinstance(st, DSClusterError):
                print(f"{peer}  unreachable: {st}")
                continue
            slots = table.slots_of(peer)
            print(f"{peer}  {len(slots)} slots  {slots}  epoch {st.epoch}")
            for m in st.migrations:
                print(f"  migration {m.mid} {m.phase}: {m.source} -> {m.target} "
                      f"({m.keys_moved} keys moved)")
    _with_admin(run)


@app.command("add-node")
def add_node(
    peer: Annotated[str, typer.Argument(help="Peer ID of the new node.")],
    addr: Annotated[list[str] | None, typer.Option(
        help="Its listen multiaddr, if it did not join through the bootstrap node.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for it.")] = 60,
) -> None:
    """Wait until a node started with ``dscluster --bootstrapper MA --join`` is a member.

    Start the new node first (it prints its peer ID):
    ``dscluster --conf DIR --bootstrapper MA --join --join-secret-file F``.
    It joins owning no slots; ``dsclient cluster rebalance`` then gives it its share.
    """
    async def run(admin: AdminClient) -> None:
        if addr:
            await admin.add_member(peer, addr)
        st = await admin.wait_member(peer, timeout)
        print(f"{peer} is a member with {len(st.table.slots_of(peer))} slots; "
              "run: dsclient cluster rebalance")
    _with_admin(run)


@app.command()
def rebalance(
    dry_run: Annotated[bool, typer.Option(help="Only print the plan.")] = False,
    parallel: Annotated[int, typer.Option(help="Migrations at a time (one per source).")] = 1,
) -> None:
    """Spread the slots evenly over the members; resumable (re-run after an interruption)."""
    async def run(admin: AdminClient) -> None:
        if not dry_run:
            await admin.wait_idle(_progress)
        moves = await admin.plan_rebalance()
        for m in moves:
            print(f"move {len(m.slots)} slots {m.slots}: {m.source} -> {m.target}")
        if not moves:
            print("balanced: nothing to move")
            return
        if dry_run:
            return
        _done(await admin.execute(moves, parallel=parallel, on_progress=_progress))
        print("rebalance done")
    _with_admin(run)


@app.command("remove-node")
def remove_node(peer: Annotated[str, typer.Argument(help="Peer ID of the node to retire.")],
                parallel: Annotated[int, typer.Option(help="Migrations at a time.")] = 1) -> None:
    """Drain a node's slots to the others, then retire it (stop its process afterwards)."""
    async def run(admin: AdminClient) -> None:
        _done(await admin.drain(peer, parallel=parallel, on_progress=_progress))
        print(f"{peer} retired: it owns no slots; stop it now")
    _with_admin(run)


@app.command()
def reshard(
    slots: Annotated[int, typer.Option(help="How many slots to move.")],
    source: Annotated[str, typer.Option("--from", help="Peer ID giving the slots.")],
    target: Annotated[str, typer.Option("--to", help="Peer ID receiving them.")],
) -> None:
    """Move N slots (the tail of its highest ranges) from one node to another."""
    async def run(admin: AdminClient) -> None:
        _done(await admin.reshard(slots, source, target, on_progress=_progress))
        print(f"moved {slots} slots from {source} to {target}")
    _with_admin(run)


def _print_report(report: CheckReport) -> None:
    if report.ok:
        print(f"ok: {report.nodes} members agree on the table, no slot migrating, "
              f"{report.keys} keys all on their owners")
    else:
        print(f"NOT CONSISTENT ({len(report.problems)} problems):")
        for p in report.problems:
            print(f"  {p}")


@app.command()
def check() -> None:
    """Do all members agree on the table, with no slot half-moved and no key off its owner?"""
    report: CheckReport = _with_admin(lambda admin: admin.check())
    _print_report(report)
    if not report.ok:
        raise typer.Exit(2)


@app.command()
def fix() -> None:
    """Roll back migrations that moved nothing yet, let the others finish, then check."""
    async def run(admin: AdminClient) -> CheckReport:
        for line in await admin.fix(_progress):
            print(line)
        return await admin.check()
    report: CheckReport = _with_admin(run)
    _print_report(report)
    if not report.ok:
        raise typer.Exit(2)


@app.command()
def members() -> None:
    """List the members (data nodes) and retired nodes."""
    async def run(admin: AdminClient) -> None:
        table = await admin.table()
        for node in sorted(table.nodes.values(), key=lambda n: n.id):
            role = "data" if node.role is NodeRole.DATA else "retired"
            print(f"{node.id}  {role}  {len(table.slots_of(node.id))} slots  "
                  f"{' '.join(node.addrs)}")
    _with_admin(run)


auth_app = typer.Typer(name="auth", no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False,
                       help="Client roles (read-only, read-write, admin): cluster state.")
app.add_typer(auth_app)


def _role(name: str) -> str:
    try:
        return Role.parse(name).value
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _spread(views: dict[str, Any], what: str) -> None:
    """One line per member on whether it shows the change yet; a summary line."""
    have = 0
    for peer, view in views.items():
        if isinstance(view, DSClusterError):
            print(f"{peer}  unreachable ({' '.join(str(view).split())}): "
                  "it learns the change from gossip when it is back")
        elif view:
            have += 1
            print(f"{peer}  {what}")
        else:
            print(f"{peer}  not yet: gossip is still bringing the change")
    print(f"{have} of {len(views)} members show it", file=sys.stderr)


WaitOption = Annotated[float, typer.Option(
    help="Seconds to wait for every member to show the change (0: do not wait).")]


@auth_app.command("add")
def auth_add(peer: Annotated[str, typer.Argument(help="The client's peer ID.")],
             role: Annotated[str, typer.Argument(help="read-only, read-write or admin.")],
             wait: WaitOption = 10.0) -> None:
    """Give a client a role in the whole cluster (replacing the role it had)."""
    parse_peer_id(peer)
    name = _role(role)

    async def run(admin: AdminClient) -> None:
        change = await admin.grant(peer, name)
        print(f"{peer} {name}: recorded by {change.via} (version {change.version})")
        if wait > 0:
            _spread(await admin.wait_roles(peer, name, wait), f"{peer} {name}")
    _with_admin(run)


@auth_app.command("remove")
def auth_remove(peer: Annotated[str, typer.Argument(help="The client's peer ID.")],
                role: Annotated[str | None, typer.Argument(
                    help="Only if it holds this role.")] = None,
                wait: WaitOption = 10.0) -> None:
    """Take a client's role away in the whole cluster."""
    parse_peer_id(peer)
    name = _role(role) if role else ""

    async def run(admin: AdminClient) -> None:
        change = await admin.revoke(peer, name)
        if not change.changed:
            print(f"{peer} had no such role (on {change.via})")
            return
        print(f"{peer} removed: recorded by {change.via}")
        if wait > 0:
            _spread(await admin.wait_roles(peer, None, wait), f"{peer} removed")
    _with_admin(run)


@auth_app.command("list")
def auth_list() -> None:
    """Each member's view of the client roles; exit 2 if they differ yet."""
    views: dict[str, Any] = _with_admin(lambda admin: admin.roles())
    good = {p: v for p, v in views.items() if not isinstance(v, DSClusterError)}
    for peer, view in views.items():
        if isinstance(view, DSClusterError):
            print(f"{peer}  FAILED: {' '.join(str(view).split())}")
            continue
        print(f"{peer}  {len(view)} clients")
        for client, role in sorted(view.items()):
            print(f"  {client} {role}")
    distinct = {tuple(sorted(v.items())) for v in good.values()}
    if len(distinct) > 1:
        every = set().union(*(v.keys() for v in good.values()))
        differ = sorted(c for c in every if len({v.get(c) for v in good.values()}) > 1)
        print(f"DISAGREE: the nodes differ on {len(differ)} clients: {', '.join(differ)} "
              "(gossip has not brought every change everywhere yet: run it again)")
        raise typer.Exit(2)
    if len(good) < len(views):
        raise typer.Exit(1)
    print(f"agree: {len(good)} nodes, {len(next(iter(good.values()), {}))} clients")


def main(argv: list[str] | None = None) -> int:
    """``python -m dsclient.cluster_cli``: the sub-app alone (same errors as dsclient)."""
    return run_app(app, "dsclient cluster", argv)



if __name__ == "__main__":
    sys.exit(main())

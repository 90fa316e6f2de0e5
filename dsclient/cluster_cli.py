"""``dsclient cluster ...``: grow, shrink, rebalance, check and fix a running cluster.

Every command reads the client config in ``--conf DIR`` (its identity must be
an admin of the cluster: a member, an ``admin`` line in the nodes' clients
file, or a line in their DIR/admins) and talks to the nodes' admin protocol
through dsclient.admin. Progress goes to stderr, results to stdout; a user
error prints one line and exits 1; ``check`` exits 2 when the cluster is not
consistent. With DIR/swarm.key the admin client is in that private network.

``set-copies N`` changes how many copies of every slot the cluster keeps
and waits (with progress) until every slot has them.

``auth add|remove`` record a client role change on one member (the roles are
cluster state: gossip brings the change to every member, one that is down
included once it is back), then wait up to ``--wait`` seconds and print one
line per member: it shows the change, not yet, or unreachable. Exit 0 once a
member recorded it, 1 if none could. ``auth list`` prints each member's view
and exits 2 when they differ (gossip still on its way), 1 if one failed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dscluster.cliutil import UserError, run_app
from dscluster.errors import DSClusterError

if TYPE_CHECKING:  # imported when a command runs: they pull py-libp2p (dsclient --help)
    from dsclient.admin import AdminClient, CheckReport, Progress

app = typer.Typer(name="cluster", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Grow, shrink, rebalance, check and fix the cluster (admins only).")
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


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


def _with_admin(fn: Callable[[AdminClient], Awaitable[Any]], what: str = "") -> Any:
    from dsclient.admin import open_admin
    from dsclient.cli import config_path, quiet_libp2p, run, swarm_key
    from dscluster.config import load_client_config

    quiet_libp2p()
    path = config_path(_conf())
    cfg = load_client_config(path)
    seeds = {n.id: list(n.swarm) for n in cfg.nodes if n.swarm}
    for addr in cfg.bootstrap_addrs:
        if "/p2p/" in addr:
            base, peer = addr.rsplit("/p2p/", 1)
            seeds.setdefault(peer, []).append(base)
    key = swarm_key(_conf())

    async def main() -> Any:
        async with open_admin(cfg.identity.identity(), seeds, key) as admin:
            return await fn(admin)

    return run(main, what=f"cluster {what}".strip())


def _echo_json(value: Any) -> None:
    print(json.dumps(value, separators=(",", ":")))


def _progress(p: Progress) -> None:
    print(f"\r{p.line()}", end="", file=sys.stderr, flush=True)


def _done(p: Progress) -> None:
    print(f"\r{p.line()}", file=sys.stderr, flush=True)


@app.command()
def status(as_json: JsonOption = False) -> None:
    """Each member's slots and migrations."""
    async def run(admin: AdminClient) -> None:
        table = await admin.table()
        out: list[dict[str, Any]] = []
        for peer, st in sorted((await admin.statuses()).items()):
            if isinstance(st, DSClusterError):
                out.append({"peer": peer, "state": "unreachable",
                            "error": " ".join(str(st).split())})
                if not as_json:
                    print(f"{peer}  unreachable: {' '.join(str(st).split())}")
                continue
            slots = table.slots_of(peer)
            migrations = [{"id": m.mid, "phase": str(m.phase), "source": m.source,
                           "target": m.target, "keys_moved": m.keys_moved}
                          for m in st.migrations]
            out.append({"peer": peer, "state": "up", "slots": len(slots),
                        "ranges": [[start, end] for start, end in slots.ranges],
                        "epoch": st.epoch, "migrations": migrations})
            if as_json:
                continue
            print(f"{peer}  {len(slots)} slots  {slots}  epoch {st.epoch}")
            for m in st.migrations:
                print(f"  migration {m.mid} {m.phase}: {m.source} -> {m.target} "
                      f"({m.keys_moved} keys moved)")
        if as_json:
            _echo_json(out)
    _with_admin(run, "status")


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


@app.command("forget-node")
def forget_node(peer: Annotated[str, typer.Argument(help="Peer ID of the dead node.")]) -> None:
    """Retire a node that is gone for good (a dead machine, a lost disk).

    Its slots fail over to their copies, then every slot it held a copy of gets
    a new one on the others (with progress). Refused while the node answers
    (use remove-node) or while it holds the only copy of a slot."""
    _peer(peer)  # a bad peer ID: a one-line error before connecting

    def progress(done: int, total: int) -> None:
        print(f"\r{done} of {total} slots have all their copies", end="", file=sys.stderr,
              flush=True)

    async def run(admin: AdminClient) -> None:
        await admin.forget(peer, progress)
        print(file=sys.stderr)
        print(f"{peer} forgotten: every slot has its copies on the other nodes")
    _with_admin(run)


@app.command("set-copies")
def set_copies(
    copies: Annotated[int, typer.Argument(help="Copies of every slot, on distinct nodes.")],
    wait: Annotated[bool, typer.Option(
        "--wait/--no-wait", help="Wait until every slot has that many copies.")] = True,
) -> None:
    """Change how many copies of every slot the cluster keeps (doc/copies.md).

    Primaries fill new copies on other nodes while clients read and write, or
    drop extra ones, each change agreed by a majority of the nodes.
    """
    if copies < 1:
        raise UserError(f"copies must be at least 1, got {copies}")

    def progress(done: int, total: int) -> None:
        print(f"\r{done} of {total} slots have {copies} copies", end="", file=sys.stderr,
              flush=True)

    async def run(admin: AdminClient) -> None:
        await admin.set_copies(copies)
        if wait:
            await admin.wait_copies(copies, progress)
            print(file=sys.stderr)
        print(f"copies set to {copies}" + ("; every slot has them" if wait else ""))
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
def check(as_json: JsonOption = False) -> None:
    """Do all members agree on the table, with no slot half-moved and no key off its owner?

    Exit 2 when they do not."""
    report: CheckReport = _with_admin(lambda admin: admin.check(), "check")
    if as_json:
        _echo_json({"ok": report.ok, "members": report.nodes, "keys": report.keys,
                    "problems": [str(p) for p in report.problems]})
    else:
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
def members(as_json: JsonOption = False) -> None:
    """List the members (data nodes) and retired nodes."""
    from dscluster.core.table import NodeRole

    async def run(admin: AdminClient) -> None:
        table = await admin.table()
        out: list[dict[str, Any]] = []
        for node in sorted(table.nodes.values(), key=lambda n: n.id):
            role = "data" if node.role is NodeRole.DATA else "retired"
            slots = len(table.slots_of(node.id))
            out.append({"peer": node.id, "role": role, "slots": slots,
                        "addrs": list(node.addrs)})
            if not as_json:
                print(f"{node.id}  {role}  {slots} slots  {' '.join(node.addrs)}")
        if as_json:
            _echo_json(out)
    _with_admin(run, "members")


auth_app = typer.Typer(name="auth", no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False,
                       help="Client roles (read-only, read-write, admin): cluster state.")
app.add_typer(auth_app)


def _role(name: str) -> str:
    from dscluster.roles import Role

    try:
        return Role.parse(name).value
    except ValueError as exc:
        raise UserError(str(exc)) from None


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


def _peer(peer: str) -> None:
    from dscluster.net.host import parse_peer_id

    parse_peer_id(peer)


WaitOption = Annotated[float, typer.Option(
    help="Seconds to wait for every member to show the change (0: do not wait).")]


@auth_app.command("add")
def auth_add(peer: Annotated[str, typer.Argument(help="The client's peer ID.")],
             role: Annotated[str, typer.Argument(help="read-only, read-write or admin.")],
             wait: WaitOption = 10.0) -> None:
    """Give a client a role in the whole cluster (replacing the role it had)."""
    name = _role(role)
    _peer(peer)

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
    name = _role(role) if role else ""
    _peer(peer)

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
    from dsclient.cli import explain

    return run_app(app, "dsclient cluster", argv, explain=explain)



if __name__ == "__main__":
    sys.exit(main())
